"""Projected state: what the KV buckets ``mosaics``, ``alarms``, ``sessions``, ``instances`` and
``workers`` hold, one entry per entity, each the fold of that entity's events.

How an entry is stored (the state with the ``EVENTS`` stream sequence of the last event folded
into it) is :mod:`pipeline.state.stored`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pipeline.messages.events import SessionInput, SessionOptions, Tile


class MosaicState(msgspec.Struct, frozen=True, kw_only=True):
    """A stored mosaic config."""

    fp: str
    tiles: tuple[Tile, ...]
    width: int
    height: int
    fps: int
    cols: int | None = None
    title: str = ""
    alarms: str = ""
    """Canonical ``alarms=`` text; "" means the default holds."""
    audio: str = ""
    """Canonical ``audio=`` text: "" the first tile with audio, ``off``, or a tile index."""
    clock: bool = False
    """The picture carries a UTC time-code clock."""
    layout: str = ""
    """Canonical ``layout=`` text: "" the grid, ``focus`` one large tile and small ones."""
    created_at: float = 0.0
    version: int = 0
    """How many events were folded into this state."""


class ActiveAlarm(msgspec.Struct, frozen=True, kw_only=True):
    """A source's condition that is raised and not cleared."""

    kind: str
    onset: float
    """Source time it began, seconds."""
    onset_wall: float
    """Wall-clock time it began, Unix seconds."""
    raised_at: float
    """When the grabber raised it (onset + the debounce, plus the detection path)."""
    value: float


class ClearedAlarm(msgspec.Struct, frozen=True, kw_only=True):
    """A source's condition that was raised and has ended."""

    kind: str
    onset: float
    onset_wall: float
    raised_at: float
    end: float
    """Source time it ended."""
    end_wall: float
    value: float
    worst: float
    reason: str = "ended"


RECENT_ALARMS = 20
"""Cleared alarms a source keeps in its state, newest first."""


class SourceState(msgspec.Struct, frozen=True, kw_only=True):
    """A source URL's alarms (KV ``alarms``, key: the source key ``sha256(url)[:20]``):
    the conditions raised now, one per kind, and the last :data:`RECENT_ALARMS` cleared."""

    source: str
    url: str = ""
    """The URL without credentials, as the last raise gave it."""
    active: tuple[ActiveAlarm, ...] = ()
    recent: tuple[ClearedAlarm, ...] = ()
    """Newest first."""
    raised_by_kind: dict[str, int] = msgspec.field(default_factory=dict)
    """Alarms raised on this source since its first event, per kind (counters: they never go
    down)."""
    version: int = 0

    @property
    def raised(self) -> int:
        """Alarms raised on this source since its first event, of every kind."""
        return sum(self.raised_by_kind.values())


SessionPhase = Literal["requested", "running", "ended", "failed"]


class SessionState(msgspec.Struct, frozen=True, kw_only=True):
    """A JIT session."""

    session_id: str
    phase: SessionPhase = "requested"
    inputs: tuple[SessionInput, ...] = ()
    options: SessionOptions = SessionOptions()
    client: str = ""
    worker_id: str = ""
    instance_id: str = ""
    endpoint: str = ""
    requested_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    version: int = 0


InstancePhase = Literal["launched", "ready", "terminated"]


class InstanceState(msgspec.Struct, frozen=True, kw_only=True):
    """An instance (a local process group, container, VM or Nomad allocation)."""

    instance_id: str
    phase: InstancePhase = "launched"
    provider: str = ""
    external_id: str = ""
    capacity: dict[str, int] = msgspec.field(default_factory=dict)
    address: str = ""
    launched_at: float = 0.0
    ready_at: float | None = None
    terminated_at: float | None = None
    reason: str = ""
    version: int = 0


WorkerPhase = Literal["running", "stopped"]


class WorkerState(msgspec.Struct, frozen=True, kw_only=True):
    """A worker process (grabber, stitcher, jit)."""

    worker_id: str
    kind: str = ""
    target: str = ""
    instance_id: str = ""
    pid: int | None = None
    phase: WorkerPhase = "running"
    started_at: float = 0.0
    stopped_at: float | None = None
    reason: str = ""
    exit_code: int | None = None
    version: int = 0


State = MosaicState | SourceState | SessionState | InstanceState | WorkerState
