"""Subject names: the only place that spells them. Pure functions of ids.

Ids that go into a subject token must match :data:`TOKEN_RE` (letters, digits, ``_`` and ``-``),
because ``.``, ``*``, ``>`` and white space have meaning in NATS subjects.
"""

from __future__ import annotations

import re

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

EVENTS_ALL = "events.>"
HEARTBEATS_ALL = "hb.>"
FRAMES_ALL = "frames.>"
LEVELS_ALL = "levels.>"
AUDIO_ALL = "audio.>"
SEGMENTS_ALL = "segments.>"
PARTS_ALL = "parts.>"
AUDIT_ALL = "audit.>"

ENTITIES = ("mosaic", "source", "session", "instance", "worker")


def token(value: str) -> str:
    """Return ``value`` if it is safe as one subject token, else raise ValueError naming it."""
    if not TOKEN_RE.match(value):
        raise ValueError(
            f"{value!r} cannot be a subject token: use 1-128 letters, digits, '_' or '-'"
        )
    return value


def event(entity: str, entity_id: str) -> str:
    """``events.<entity>.<id>``: the facts about one entity."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}: one of {', '.join(ENTITIES)}")
    return f"events.{entity}.{token(entity_id)}"


def viewer_heartbeat(scope: str, entity_id: str) -> str:
    """``hb.viewer.<scope>.<id>``: someone is watching a mosaic or a session."""
    if scope not in ("mosaic", "session"):
        raise ValueError(f"unknown viewer scope {scope!r}: mosaic or session")
    return f"hb.viewer.{scope}.{token(entity_id)}"


def worker_heartbeat(worker_id: str) -> str:
    """``hb.worker.<id>``: a worker (grabber, stitcher, jit) is alive, with its stats."""
    return f"hb.worker.{token(worker_id)}"


def instance_heartbeat(instance_id: str) -> str:
    """``hb.instance.<id>``: an instance's agent is alive, with its capacity."""
    return f"hb.instance.{token(instance_id)}"


def service_heartbeat(service: str, service_id: str) -> str:
    """``hb.service.<service>.<id>``: a control-plane service (projector, controller, gateway)."""
    return f"hb.service.{token(service)}.{token(service_id)}"


def frames(source_id: str) -> str:
    """``frames.<source_id>``: tile-sized frames of one source."""
    return f"frames.{token(source_id)}"


def levels(source_id: str) -> str:
    """``levels.<source_id>``: audio levels of one source (core NATS, not stored)."""
    return f"levels.{token(source_id)}"


def audio(source_id: str) -> str:
    """``audio.<source_id>``: a source's decoded audio, PCM chunks (core NATS, not stored)."""
    return f"audio.{token(source_id)}"


def audio_wanted(source_id: str) -> str:
    """``ctl.audio.<source_id>``: a stitcher that plays a source's audio says so, about once a
    second (core NATS); its grabber publishes ``audio.<source_id>`` only while it hears that."""
    return f"ctl.audio.{token(source_id)}"


def segments(fp: str) -> str:
    """``segments.<fp>``: a notice per segment a stitcher stored for mosaic ``fp``."""
    return f"segments.{token(fp)}"


def agent_control(instance_id: str) -> str:
    """``ctl.agent.<instance_id>``: request/reply commands to an instance's agent."""
    return f"ctl.agent.{token(instance_id)}"


def worker_control(worker_id: str) -> str:
    """``ctl.worker.<worker_id>``: request/reply commands to a running worker (a grabber's
    :class:`~pipeline.messages.control.Retile`)."""
    return f"ctl.worker.{token(worker_id)}"


def session_control(session_id: str) -> str:
    """``ctl.session.<id>``: request/reply playback control of a JIT session."""
    return f"ctl.session.{token(session_id)}"


def session_signal(session_id: str) -> str:
    """``ctl.signal.<id>``: WHEP signalling (SDP offer/answer) relayed to a JIT worker."""
    return f"ctl.signal.{token(session_id)}"


def mosaic_signal(fp: str) -> str:
    """``ctl.mosaic.<fp>``: WHEP signalling (SDP offer/answer) relayed to a mosaic's stitcher."""
    return f"ctl.mosaic.{token(fp)}"


def part(fp: str, uri: str) -> str:
    """``parts.<fp>.<name>``: one CMAF part or init section of a mosaic on stream ``PARTS``;
    ``name`` is its URI with ``.`` as ``-`` (``12.3.m4s`` -> ``12-3-m4s``)."""
    return f"parts.{token(fp)}.{token(uri.replace('.', '-'))}"


def audit(action: str) -> str:
    """``audit.<action>``: one entry of the audit trail (stream ``AUDIT``), e.g.
    ``audit.mosaic-create``."""
    return f"audit.{token(action)}"
