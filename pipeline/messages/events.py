"""Facts on stream ``EVENTS``, subjects ``events.<entity>.<id>``: the only source of truth.

Every event is a frozen, tagged :class:`msgspec.Struct`. The tag is ``<entity>.<fact>/<version>``;
a new field always gets a default, a field never changes type, and an event that must change
incompatibly gets a new tag version (and an upcaster in :mod:`pipeline.messages.codec`).
Times are Unix seconds (float) of the writer's wall clock.
"""

from __future__ import annotations

from typing import Literal, get_args

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
    audio: str = ""
    """Which tile's audio the mosaic carries, canonical ``audio=`` text
    (:func:`pipeline.state.mosaic.canonical_audio`): "" the first tile with audio, ``off`` none,
    else a 0-based tile index."""
    clock: bool = False
    """Whether the picture carries a clock (UTC time code, ``clock=utc``)."""
    layout: str = ""
    """Where the tiles go, canonical ``layout=`` text
    (:func:`pipeline.state.layouts.canonical_layout`): "" the grid, ``focus`` one large tile and
    small ones around it."""


# --- sources (alarms) ------------------------------------------------------------------------


class AlarmRaised(_Event, frozen=True, tag="alarm.raised/1"):
    """A source's condition (a picture black, frozen, silence, ...) has lasted the detection
    debounce (:data:`pipeline.monitoring.detect.DEBOUNCE`). Mosaic-independent: one per source
    URL however many mosaics show it; each mosaic shows it once it has lasted the mosaic's hold.

    Appended by the grabber with ``Nats-Msg-Id`` ``alarm-<source>-<kind>-<onset ms>``, so a
    second grabber of the same URL (another tile size) that saw the same onset is dropped."""

    source: str
    """The source key, ``sha256(url)[:20]`` (:func:`pipeline.state.mosaic.source_key`)."""
    kind: str
    """An :class:`~pipeline.monitoring.alarms.AlarmKind` value: black, freeze, silence, ..."""
    onset: float
    """Source time the condition began, seconds (the frames' ``pts`` clock)."""
    onset_wall: float
    """Wall-clock time the condition began, Unix seconds (``at`` is when it was raised)."""
    value: float
    """The measurement at onset (see :func:`pipeline.monitoring.detect.severity`)."""
    url: str = ""
    """The source URL with any credentials removed, for people reading the event."""
    worker_id: str = ""


class AlarmCleared(_Event, frozen=True, tag="alarm.cleared/1"):
    """A raised condition ended (``reason``: ``ended``, the measurement is good again;
    ``stopped``, its grabber stopped; ``not-seen``, a restarted grabber did not see it)."""

    source: str
    kind: str
    onset: float
    """The onset of the condition that ended (as raised)."""
    end: float
    """Source time it ended, seconds."""
    end_wall: float
    worst: float
    """The worst measurement while it lasted."""
    reason: str = "ended"
    worker_id: str = ""


# --- JIT sessions ----------------------------------------------------------------------------


CompareMode = Literal["side-by-side", "wipe", "difference"]
"""How an A/B compare session composes its two videos into one picture
(:mod:`pipeline.producers.jit.compare`)."""


class SessionInput(msgspec.Struct, frozen=True):
    """One input of a session: the first is the video, the others audio (in an A/B compare,
    the first two are the videos A and B)."""

    url: str
    channel_count: int | None = None
    id: str | None = None


MAX_COMPARE_OFFSET = 1_000_000
"""Frames B of an A/B compare may be ahead of or behind A (11 hours at 25 fps): beyond it, a
typo. The gateway refuses more in a request, the worker in a ``compare/1`` command."""


class SessionOptions(msgspec.Struct, frozen=True):
    """The JIT options of the original program, with its defaults (None: from the input), but
    for ``threads``."""

    lowres: int = 0
    sample_aspect_num: int | None = None
    sample_aspect_den: int | None = None
    colorspace: str | None = None
    threads: int | None = None
    """Decoder threads (0: FFmpeg's choice); None (the default): chosen for the video
    (:func:`~pipeline.producers.jit.decoder.decode_threads`: two frame threads above 720p, else
    one, the original program's default)."""
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
    compare: CompareMode | Literal[""] = ""
    """An A/B compare session: the first two inputs are the videos A and B, played
    frame-locked and composed into one picture this way; "" (the default) one video."""
    compare_offset: int = 0
    """In an A/B compare: frames B is ahead of A (B's frame n + offset goes with A's frame n);
    changed while playing with ``compare/1``."""


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


class WorkerRetiled(_Event, frozen=True, tag="worker.retiled/1"):
    """A running grabber makes other tile sizes, or at another fps, from now on: told in place
    (``ctl.worker.<worker_id>``), without a new process."""

    worker_id: str
    sizes: tuple[str, ...]
    """The tile sizes it makes now, ``WxH``, largest first."""
    fps: float


class WorkerStopped(_Event, frozen=True, tag="worker.stopped/1"):
    """A worker process ended (``reason``: not-needed, crashed, heartbeat-lost, shutdown)."""

    worker_id: str
    reason: str
    exit_code: int | None = None


Event = (
    MosaicCreated
    | AlarmRaised
    | AlarmCleared
    | SessionRequested
    | SessionStarted
    | SessionEnded
    | SessionFailed
    | InstanceLaunched
    | InstanceReady
    | InstanceTerminated
    | WorkerStarted
    | WorkerRetiled
    | WorkerStopped
)
"""Every event type on ``EVENTS``."""

EVENT_TYPES: tuple[type[Event], ...] = get_args(Event)
"""Every event type, in :data:`Event`'s order (one list: a type added there is known to the
projector's parking and to the docs' check at once)."""


def entity_of(event: Event) -> tuple[str, str]:
    """The ``(entity, id)`` an event is about: it goes to ``events.<entity>.<id>``."""
    match event:
        case MosaicCreated(fp=fp):
            return "mosaic", fp
        case AlarmRaised(source=key) | AlarmCleared(source=key):
            return "source", key
        case SessionRequested(session_id=sid) | SessionStarted(session_id=sid):
            return "session", sid
        case SessionEnded(session_id=sid) | SessionFailed(session_id=sid):
            return "session", sid
        case InstanceLaunched(instance_id=iid) | InstanceReady(instance_id=iid):
            return "instance", iid
        case InstanceTerminated(instance_id=iid):
            return "instance", iid
        case WorkerStarted(worker_id=wid) | WorkerRetiled(worker_id=wid):
            return "worker", wid
        case WorkerStopped(worker_id=wid):
            return "worker", wid
    raise TypeError(f"not an event: {event!r}")
