"""Liveness on stream ``HEARTBEATS`` (last message per subject): the dead-man switch is the
age of the last heartbeat on a subject.

- ``hb.viewer.<scope>.<id>``: :class:`ViewerHeartbeat`, someone watches a mosaic or session.
- ``hb.worker.<id>``: :class:`WorkerHeartbeat`, with per-kind stats.
- ``hb.instance.<id>``: :class:`InstanceHeartbeat`, an agent's capacity and workers.
- ``hb.service.<service>.<id>``: :class:`ServiceHeartbeat`, control-plane services; and
  ``hb.service.placement.<owner id>``: :class:`PlacementHeartbeat`, the room the controller's
  instance pool has left on its agents.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pipeline.messages.control import CompareState
from pipeline.messages.workers import WorkerSpec


class _Heartbeat(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    at: float
    """Wall-clock time of the beat, Unix seconds."""


class ViewerHeartbeat(_Heartbeat, frozen=True, tag="hb.viewer/1"):
    """A viewer asked for a playlist or is connected to a session."""

    scope: Literal["mosaic", "session"]
    id: str
    client: str = ""


class GrabberStats(msgspec.Struct, frozen=True, tag="grabber/1"):
    """What a grabber reports about its source."""

    fps_in: float = 0.0
    fps_out: float = 0.0
    frames: int = 0
    reconnects: int = 0
    decode_errors: int = 0
    dropped: int = 0
    last_error: str = ""
    connected: bool = False
    loops: int = 0
    """Times a finite source (a file, an ended VOD playlist) ended and was played again."""
    state: str = ""
    """connecting, connected, waiting (backing off before a reconnect) or stopped."""
    has_audio: bool = False
    """The current (or last) connection has an audio stream, metered on ``levels.<source_id>``."""
    audio_readings: int = 0
    """Audio level readings measured (about ten a second while there is audio)."""
    audio_errors: int = 0
    """Audio packets that did not decode, and meters given up on: never a reason to reconnect."""
    alarms: tuple[str, ...] = ()
    """The source's conditions raised now (alarm kinds), as this grabber sees them."""
    alarms_raised: int = 0
    """Alarms this grabber raised since it started."""
    rendition: str = ""
    """The variant of an HLS master playlist chosen for the tile (its size, bit rate and
    codecs, e.g. ``640x360 0.8 Mbit/s avc1.4d401e``); "" when the source is not a master."""
    reduced: str = ""
    """How the decode is cut to the tile: ``lowres 1/4`` (decoded at a quarter of the size),
    ``non-ref skipped`` (frames the fps cap drops are not decoded), both, or ""."""
    sizes: tuple[str, ...] = ()
    """The tile sizes the grabber makes of its source (``320x180``, largest first), each
    published on its own ``frames.<source_id>``; () from an older grabber."""


class StitcherStats(msgspec.Struct, frozen=True, tag="stitcher/1"):
    """What a stitcher reports about its mosaic."""

    fps: float = 0.0
    late_frames: int = 0
    encode_ms: float = 0.0
    segments: int = 0
    segment_bytes: int = 0
    dead_tiles: int = 0
    media_sequence: int = 0
    tiles: int = 0
    replaced_frames: int = 0
    """Source frames overwritten by a newer one before they were composed (newest wins)."""
    bad_frames: int = 0
    """Frame messages ignored: undecodable, or not the tile's size and format."""
    publish_errors: int = 0
    """Segments, parts, playlists or notices that could not be written to NATS."""
    hls: str = "ts"
    """Its HLS output: ``cmaf`` (Low-Latency HLS) or ``ts``."""
    parts: int = 0
    """CMAF parts stored and listed."""
    webrtc_viewers: int = 0
    """WHEP viewers connected now."""
    webrtc_dropped: int = 0
    """Frames dropped for WHEP viewers that fell behind (each then waits for a keyframe)."""
    audio_tile: int = -1
    """The tile whose sound the mosaic carries now (-1: none: ``audio=off``, or no tile has
    sent audio yet)."""
    audio_silent: float = 0.0
    """Seconds of the sound track filled with silence (nothing came in time)."""
    audio_late: float = 0.0
    """Seconds of received audio dropped because they came after their time."""
    tiles_in_alarm: int = 0
    """Tiles showing an alarm now (borders drawn)."""


class JitStats(msgspec.Struct, frozen=True, tag="jit/1"):
    """What a JIT worker reports about its session."""

    position: int = 0
    playing: bool = False
    viewers: int = 0
    fps: float = 0.0
    seeks: int = 0
    rate: float = 1.0
    """Playback rate (1.0: real time)."""
    frames: int = 0
    """Video pictures sent since the worker started (once per picture, whatever the viewers;
    a seek's proxy picture and its exact one are two)."""
    frame_count: int = 0
    """Frames in the video (its exclusive end); 0 while unknown."""
    late_frames: int = 0
    """Frames skipped to keep real time because decoding fell behind."""
    dropped: int = 0
    """Frames and audio packets dropped in viewers' queues (their encoders were behind)."""
    read_errors: int = 0
    """Decode or read failures past the probe (the last one is logged)."""
    start_timecode: str | None = None
    """The video's source time code: the label of frame 0 as the file records it (a MOV's
    ``tmcd`` track, an MXF's start time code), e.g. ``01:00:00:00`` or ``00:59:59;28``
    (drop-frame); None when it records none (labels count from ``00:00:00:00``)."""
    channel_inputs: tuple[int, ...] = ()
    """The session input number of each audio channel (0-based across all audio inputs)."""
    channel_names: tuple[str, ...] = ()
    """The name of each audio channel as its file lays it out (FFmpeg's: ``FL``, ``FR``,
    ``FC``, ``LFE``, ``BL``, ``BR``, ...; ``""`` when not known)."""
    routes: tuple[tuple[tuple[int, float], ...], ...] = ()
    """The audio routing matrix in force: for each output channel (L, R), its
    ``(source channel, gain)`` pairs (see ``RouteChannels``)."""
    compare: CompareState | None = None
    """An A/B compare session's settings in force (mode, split, offset, show); None for a
    session of one video."""
    frame_count_b: int = 0
    """In an A/B compare, the frames in video B; 0 while unknown or with one video."""
    proxy: str = ""
    """The seek proxy's builder: ``building``, ``playing`` (it waits while the session
    plays), ``done``, ``full`` (the disk bound is reached: it covers the chunks nearest the
    playhead), ``skipped`` (GOPs short enough for seeks to be cheap without one), ``failed``,
    ``stopped``; ``""`` without a proxy."""
    proxy_frames: int = 0
    """Frames the seek proxy has now."""
    proxy_bytes: int = 0
    """Bytes of the seek proxy on disk now."""
    proxy_pictures: int = 0
    """Proxy pictures sent (each a seek's or step's first picture, before its exact one)."""


Stats = GrabberStats | StitcherStats | JitStats


class WorkerHeartbeat(_Heartbeat, frozen=True, tag="hb.worker/1"):
    """A worker is alive; ``ready`` once it does its job."""

    worker_id: str
    kind: Literal["grabber", "stitcher", "jit"]
    target: str
    instance_id: str = ""
    ready: bool = False
    stats: Stats | None = None


class InstanceHeartbeat(_Heartbeat, frozen=True, tag="hb.instance/1"):
    """An agent is alive: capacity per worker kind, what it runs, since when, and the cores
    and memory its machine gives its workers."""

    instance_id: str
    capacity: dict[str, int] = msgspec.field(default_factory=dict)
    used: dict[str, int] = msgspec.field(default_factory=dict)
    workers: tuple[str, ...] = ()
    started_at: float = 0.0
    idle_since: float | None = None
    cores: float = 0.0
    """CPU cores the agent's workers may use (detected, or ``TESSERA_AGENT_CORES``); 0: not
    said (an older agent), and placement counts only workers per kind there."""
    memory_mb: int = 0
    """Memory its workers may use, MiB (detected, or ``TESSERA_AGENT_MEMORY_MB``); 0: not said."""
    specs: tuple[WorkerSpec, ...] = ()
    """The whole spec of each worker it runs, as its start command carried it: a restarted
    controller adopts them as they are instead of restarting them as changed (a worker id
    does not say a grabber's URL or tile size)."""


class AgentRoom(msgspec.Struct, frozen=True, kw_only=True):
    """One agent as the controller's placement counts it: what it advertises and what the
    workers it runs, was sent or is promised cost (:mod:`pipeline.state.costs`)."""

    instance_id: str
    ready: bool = True
    """False: launched and not heard from yet (its cores and memory are not known)."""
    cores: float = 0.0
    """Advertised cores (0: not advertised: no limit but the per-kind capacity)."""
    memory_mb: int = 0
    """Advertised memory, MiB (0: not advertised)."""
    cores_used: float = 0.0
    memory_used_mb: float = 0.0
    capacity: dict[str, int] = msgspec.field(default_factory=dict)
    """Workers of each kind it may run."""
    used: dict[str, int] = msgspec.field(default_factory=dict)
    """Workers of each kind it runs, was sent or is promised."""


class PlacementHeartbeat(_Heartbeat, frozen=True, tag="hb.placement/1"):
    """The controller's instance pool: the room left on every agent it may place workers on,
    and whether its provider can launch another instance when none has room. Read by the
    gateway, which answers ``503`` with the reason when a new mosaic or session cannot be
    placed (``gateway/capacity.py``)."""

    provider: str
    can_launch: bool = True
    """False: the provider launches nothing (agents register themselves): a full cluster stays
    full until someone adds an agent."""
    ceiling: float = 1.0
    """The share of an agent's cores and memory placement fills (``TESSERA_PLACEMENT_CEILING``)."""
    agents: tuple[AgentRoom, ...] = ()
    every: float = 1.0
    """Seconds between beats: one older than a few of these is stale (the controller stopped)."""
    unplaced: tuple[str, ...] = ()
    """Workers the controller wants that no agent has room for, and no launch could bring."""
    reason: str = ""
    """Why the last of them found no room."""


class ServiceHeartbeat(_Heartbeat, frozen=True, tag="hb.service/1"):
    """A control-plane service is alive; ``position`` is how far it read ``EVENTS``."""

    service: str
    id: str
    position: int = 0
    caught_up: bool = False
    running: bool = True
    """False in the last beat of a service that stopped gracefully."""


Heartbeat = (
    ViewerHeartbeat | WorkerHeartbeat | InstanceHeartbeat | ServiceHeartbeat | PlacementHeartbeat
)
