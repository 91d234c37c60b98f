"""Encoders and decoders built once. Events and heartbeats are JSON (readable with the ``nats``
CLI and ``tessera events tail``); frames are binary (:mod:`pipeline.messages.frames`).

An event whose tag this version does not know is a :class:`~pipeline.errors.MessageError` naming
the subject; upcasters for old tag versions would go in :func:`decode_event`.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from pipeline.errors import MessageError
from pipeline.messages.control import (
    AgentCommand,
    CommandReply,
    Retile,
    SessionCommand,
    SignalRequest,
)
from pipeline.messages.events import Event
from pipeline.messages.heartbeats import Heartbeat
from pipeline.messages.workers import WorkerSpec

T = TypeVar("T")

_json = msgspec.json.Encoder()
_events: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)
_heartbeats: msgspec.json.Decoder[Heartbeat] = msgspec.json.Decoder(Heartbeat)
_session_commands: msgspec.json.Decoder[SessionCommand] = msgspec.json.Decoder(SessionCommand)
_agent_commands: msgspec.json.Decoder[AgentCommand] = msgspec.json.Decoder(AgentCommand)
_worker_commands: msgspec.json.Decoder[Retile] = msgspec.json.Decoder(Retile)
_replies: msgspec.json.Decoder[CommandReply] = msgspec.json.Decoder(CommandReply)
_worker_specs: msgspec.json.Decoder[WorkerSpec] = msgspec.json.Decoder(WorkerSpec)
_signal_requests: msgspec.json.Decoder[SignalRequest] = msgspec.json.Decoder(SignalRequest)


def encode(message: msgspec.Struct) -> bytes:
    """JSON bytes of any Tessera message."""
    return _json.encode(message)


def _decode(decoder: msgspec.json.Decoder[T], data: bytes, what: str, subject: str) -> T:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        where = f" on {subject}" if subject else ""
        raise MessageError(f"cannot decode {what}{where}: {exc}") from exc


def decode_event(data: bytes, subject: str = "") -> Event:
    """Decode an event from ``EVENTS``."""
    return _decode(_events, data, "event", subject)


def decode_heartbeat(data: bytes, subject: str = "") -> Heartbeat:
    """Decode a heartbeat from ``HEARTBEATS``."""
    return _decode(_heartbeats, data, "heartbeat", subject)


def decode_session_command(data: bytes, subject: str = "") -> SessionCommand:
    """Decode a playback command."""
    return _decode(_session_commands, data, "session command", subject)


def decode_agent_command(data: bytes, subject: str = "") -> AgentCommand:
    """Decode an agent command."""
    return _decode(_agent_commands, data, "agent command", subject)


def decode_worker_command(data: bytes, subject: str = "") -> Retile:
    """Decode a command to a running worker (``ctl.worker.<worker_id>``)."""
    return _decode(_worker_commands, data, "worker command", subject)


def decode_reply(data: bytes, subject: str = "") -> CommandReply:
    """Decode a command reply."""
    return _decode(_replies, data, "reply", subject)


def decode_signal_request(data: bytes) -> SignalRequest:
    """Decode a WHEP signalling request (an offer or a hangup), to a JIT worker or a stitcher."""
    return _decode(_signal_requests, data, "the signalling request", "")


def decode_worker_spec(data: bytes) -> WorkerSpec:
    """Decode a worker spec (what ``tessera worker --spec`` is given)."""
    return _decode(_worker_specs, data, "worker spec", "")
