"""Facts on stream ``EVENTS``, subjects ``events.<entity>.<id>``: the only source of truth.

Every event is a frozen, tagged :class:`msgspec.Struct`. The tag is ``<entity>.<fact>/<version>``;
a new field always gets a default, a field never changes type, and an event that must change
incompatibly gets a new tag version (and an upcaster in :mod:`pipeline.messages.codec`).
Times are Unix seconds (float) of the writer's wall clock.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    at: float
    """When the fact happened, Unix seconds."""


# --- mosaics ---------------------------------------------------------------------------------


class Tile(msgspec.Struct, frozen=True):
    """One tile of a mosaic: a source URL and the name drawn on it ("" means none)."""

    url: str
    name: str = ""


class MosaicCreated(_Event, frozen=True, tag="mosaic.created/1"):
    """A mosaic config was stored under its fingerprint (appended once per fingerprint)."""

    fp: str
    tiles: tuple[Tile, ...]
    width: int
    height: int
    fps: int
    cols: int | None = None
    title: str = ""
    alarms: str = ""
    """The mosaic's alarm holds as canonical ``alarms=`` text
    (:func:`pipeline.monitoring.alarms.canonical`); "" (and every event written before the
    field existed) means the defaults."""


# --- JIT sessions ----------------------------------------------------------------------------


class SessionInput(msgspec.Struct, frozen=True):
    """One input of a session: the first is the video, the others audio."""

    url: str
    channel_count: int | None = None
    id: str | None = None


class SessionOptions(msgspec.Struct, frozen=True):
    """The JIT options of the original program, with its defaults (None: from the input)."""

    lowres: int = 0
    sample_aspect_num: int | None = None
    sample_aspect_den: int | None = None
    colorspace: str | None = None
    threads: int = 1
    thread_type: Literal["slice", "frame", "auto"] = "slice"
    width: int | None = None
    height: int | None = None
    frame_rate_num: int | None = None
    frame_rate_den: int | None = None
    bt2100_tone_mapping: bool = False
    duration: int | None = None
    region: str | None = None
    bitrate: int | None = None
    channels: int | None = None
    cho: int = 0


class SessionRequested(_Event, frozen=True, tag="session.requested/1"):
    """A client asked for a JIT session."""

    session_id: str
    inputs: tuple[SessionInput, ...]
    options: SessionOptions = SessionOptions()
    client: str = ""


class SessionStarted(_Event, frozen=True, tag="session.started/1"):
    """A JIT worker serves the session at ``endpoint``."""

    session_id: str
    worker_id: str
    instance_id: str = ""
    endpoint: str = ""


class SessionEnded(_Event, frozen=True, tag="session.ended/1"):
    """The session ended normally (``reason``: deleted, idle, timeout, ...)."""

    session_id: str
    reason: str


class SessionFailed(_Event, frozen=True, tag="session.failed/1"):
    """The session could not run; ``cause`` is one line such as "input 2: no audio stream"."""

    session_id: str
    cause: str


# --- instances -------------------------------------------------------------------------------


class InstanceLaunched(_Event, frozen=True, tag="instance.launched/1"):
    """A provider launched an instance (a process group, container, VM or Nomad alloc)."""

    instance_id: str
    provider: str
    external_id: str = ""
    capacity: dict[str, int] = msgspec.field(default_factory=dict)


class InstanceReady(_Event, frozen=True, tag="instance.ready/1"):
    """The instance's agent registered and accepts work."""

    instance_id: str
    address: str = ""


class InstanceTerminated(_Event, frozen=True, tag="instance.terminated/1"):
    """The instance is gone (``reason``: idle, max-up-time, lost, stopped, ...)."""

    instance_id: str
    reason: str


# --- workers ---------------------------------------------------------------------------------

WorkerKind = Literal["grabber", "stitcher", "jit"]


class WorkerStarted(_Event, frozen=True, tag="worker.started/1"):
    """A worker process started for ``target`` (a source id, a mosaic fp or a session id)."""

    worker_id: str
    kind: WorkerKind
    target: str
    instance_id: str = ""
    pid: int | None = None


class WorkerStopped(_Event, frozen=True, tag="worker.stopped/1"):
    """A worker process ended (``reason``: not-needed, crashed, heartbeat-lost, shutdown)."""

    worker_id: str
    reason: str
    exit_code: int | None = None


Event = (
    MosaicCreated
    | SessionRequested
    | SessionStarted
    | SessionEnded
    | SessionFailed
    | InstanceLaunched
    | InstanceReady
    | InstanceTerminated
    | WorkerStarted
    | WorkerStopped
)
"""Every event type on ``EVENTS``."""

EVENT_TYPES: tuple[type[Event], ...] = (
    MosaicCreated,
    SessionRequested,
    SessionStarted,
    SessionEnded,
    SessionFailed,
    InstanceLaunched,
    InstanceReady,
    InstanceTerminated,
    WorkerStarted,
    WorkerStopped,
)


def entity_of(event: Event) -> tuple[str, str]:
    """The ``(entity, id)`` an event is about: it goes to ``events.<entity>.<id>``."""
    match event:
        case MosaicCreated(fp=fp):
            return "mosaic", fp
        case SessionRequested(session_id=sid) | SessionStarted(session_id=sid):
            return "session", sid
        case SessionEnded(session_id=sid) | SessionFailed(session_id=sid):
            return "session", sid
        case InstanceLaunched(instance_id=iid) | InstanceReady(instance_id=iid):
            return "instance", iid
        case InstanceTerminated(instance_id=iid):
            return "instance", iid
        case WorkerStarted(worker_id=wid) | WorkerStopped(worker_id=wid):
            return "worker", wid
    raise TypeError(f"not an event: {event!r}")
