"""Response bodies of the HTTP API, as msgspec Structs: the handlers build these, and
``/openapi.json`` is generated from the same types."""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.messages.events import SessionInput, SessionOptions


class ErrorBody(msgspec.Struct, frozen=True):
    """Every 4xx/5xx: one line saying what is wrong and, where it can, the fix."""

    error: str


class SessionView(msgspec.Struct, frozen=True, kw_only=True):
    """A JIT session as the API shows it."""

    id: str
    state: str
    """requested, running, ended or failed."""
    inputs: tuple[SessionInput, ...]
    options: SessionOptions
    requested_at: float
    started_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    whep_url: str
    """POST an SDP offer here (WHEP) to watch the session."""
    control_url: str
    """POST a command here: play, pause, seek, step, rate, channels."""
    view_url: str = ""
    """A review page in the browser, when the gateway serves one."""
    ice_servers: tuple[dict[str, Any], ...] = ()
    stats: dict[str, Any] | None = None


class SessionList(msgspec.Struct, frozen=True):
    """``GET /session``."""

    sessions: tuple[SessionView, ...]
