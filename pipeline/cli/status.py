"""``tessera status``: what runs, read from projected state and heartbeats.

:func:`gather` reads a :class:`Snapshot` (I/O); :func:`render` turns it into rich tables (pure,
tested on its text). ``--watch`` redraws every second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from pipeline.control.parking import ParkedEvent, read_parked
from pipeline.control.read import read_bucket
from pipeline.errors import MessageError
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import (
    GrabberStats,
    Heartbeat,
    JitStats,
    StitcherStats,
    ViewerHeartbeat,
    WorkerHeartbeat,
)
from pipeline.nats import subjects
from pipeline.nats.topology import HEARTBEATS, INSTANCES, MOSAICS, SESSIONS, WORKERS
from pipeline.state.model import InstanceState, MosaicState, SessionState, WorkerState
from pipeline.state.mosaic import outputs


@dataclass
class Snapshot:
    """Everything ``tessera status`` shows, at time ``at``."""

    at: float
    mosaics: list[MosaicState] = field(default_factory=list)
    sessions: list[SessionState] = field(default_factory=list)
    workers: list[WorkerState] = field(default_factory=list)
    instances: list[InstanceState] = field(default_factory=list)
    beats: dict[str, Heartbeat] = field(default_factory=dict)
    """Subject → newest heartbeat, for the entities above."""
    parked_total: int = 0
    """Events the projector parked (stream ``PARKED``)."""
    parked: list[ParkedEvent] = field(default_factory=list)
    """The newest of them, newest first."""


async def _last_beat(js: JetStreamContext, subject: str) -> Heartbeat | None:
    try:
        msg = await js.get_last_msg(HEARTBEATS.name, subject)
        return decode_heartbeat(msg.data or b"", subject)
    except (NotFoundError, MessageError):
        return None


async def gather(js: JetStreamContext) -> Snapshot:
    """Read the projected state and the heartbeats that go with it."""
    snap = Snapshot(at=time.time())
    snap.mosaics = [s for s in (await read_bucket(js, MOSAICS.name)).values()
                    if isinstance(s, MosaicState)]  # fmt: skip
    snap.sessions = [s for s in (await read_bucket(js, SESSIONS.name)).values()
                     if isinstance(s, SessionState)]  # fmt: skip
    snap.workers = [s for s in (await read_bucket(js, WORKERS.name)).values()
                    if isinstance(s, WorkerState)]  # fmt: skip
    snap.instances = [s for s in (await read_bucket(js, INSTANCES.name)).values()
                      if isinstance(s, InstanceState)]  # fmt: skip
    wanted = [subjects.viewer_heartbeat("mosaic", m.fp) for m in snap.mosaics]
    wanted += [subjects.viewer_heartbeat("session", s.session_id) for s in snap.sessions]
    wanted += [subjects.worker_heartbeat(w.worker_id) for w in snap.workers
               if w.phase == "running"]  # fmt: skip
    for subject in wanted:
        beat = await _last_beat(js, subject)
        if beat is not None:
            snap.beats[subject] = beat
    snap.parked_total, snap.parked = await read_parked(js, limit=10)
    return snap


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    seconds = max(0.0, now - then)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _health(now: float, beat: Heartbeat | None, stale_after: float) -> str:
    if beat is None:
        return "[yellow]no heartbeat[/]"
    if now - beat.at > stale_after:
        return f"[red]silent {now - beat.at:.0f}s[/]"
    if isinstance(beat, WorkerHeartbeat) and not beat.ready:
        return "[yellow]starting[/]"
    return "[green]ok[/]"


def render(snap: Snapshot, stale_after: float = 10.0) -> Group:
    """The status tables."""
    now = snap.at
    running = [w for w in snap.workers if w.phase == "running"]
    by_target = {(w.kind, w.target): w for w in running}

    mosaics = Table(title=f"Mosaics ({len(snap.mosaics)})", title_justify="left")
    columns = ("fingerprint", "title", "tiles", "last viewer", "stitcher", "fps", "dead tiles",
               "in alarm", "sound", "hls", "webrtc viewers")  # fmt: skip
    for col in columns:
        mosaics.add_column(col)
    # Mosaics that differ only in their titles share the earliest one's stitcher.
    shared = outputs({m.fp: m for m in snap.mosaics})
    for m in sorted(snap.mosaics, key=lambda m: m.created_at):
        viewer = snap.beats.get(subjects.viewer_heartbeat("mosaic", m.fp))
        stitcher = by_target.get(("stitcher", shared.get(m.fp, m.fp)))
        beat = snap.beats.get(subjects.worker_heartbeat(stitcher.worker_id)) if stitcher else None
        stats = beat.stats if isinstance(beat, WorkerHeartbeat) else None
        fps = f"{stats.fps:.1f}" if isinstance(stats, StitcherStats) else "-"
        dead = str(stats.dead_tiles) if isinstance(stats, StitcherStats) else "-"
        hls = stats.hls if isinstance(stats, StitcherStats) else "-"
        rtc = str(stats.webrtc_viewers) if isinstance(stats, StitcherStats) else "-"
        alarmed = str(stats.tiles_in_alarm) if isinstance(stats, StitcherStats) else "-"
        sound = "off" if m.audio == "off" else "-"
        if isinstance(stats, StitcherStats) and stats.audio_tile >= 0:
            sound = f"tile {stats.audio_tile}"
        state = _health(now, beat, stale_after) if stitcher else "idle"
        mosaics.add_row(
            m.fp[:12], m.title or "-", str(len(m.tiles)),
            _ago(now, viewer.at if isinstance(viewer, ViewerHeartbeat) else None),
            state, fps, dead, alarmed, sound, hls, rtc,
        )  # fmt: skip

    sources = Table(title="Sources", title_justify="left")
    for col in ("source", "state", "tiles", "fps in/out", "decode", "reconnects", "alarms",
                "last error"):  # fmt: skip
        sources.add_column(col)
    for w in sorted((w for w in running if w.kind == "grabber"), key=lambda w: w.target):
        beat = snap.beats.get(subjects.worker_heartbeat(w.worker_id))
        stats = beat.stats if isinstance(beat, WorkerHeartbeat) else None
        if isinstance(stats, GrabberStats):
            rates = f"{stats.fps_in:.1f}/{stats.fps_out:.1f}"
            health = _health(now, beat, stale_after)
            if not stats.connected and stats.reconnects and "silent" not in health:
                health = "[red]reconnecting[/]"
            alarms = ", ".join(stats.alarms) or "-"
            decode = ", ".join(x for x in (stats.rendition, stats.reduced) if x) or "-"
            tiles = ", ".join(stats.sizes) or "-"
            sources.add_row(w.target, health, tiles, rates, decode, str(stats.reconnects),
                            f"[red]{alarms}[/]" if stats.alarms else alarms,
                            stats.last_error or "-")  # fmt: skip
        else:
            sources.add_row(w.target, _health(now, beat, stale_after), "-", "-", "-", "-", "-",
                            "-")  # fmt: skip

    sessions = Table(title=f"Sessions ({len(snap.sessions)})", title_justify="left")
    for col in ("id", "state", "video", "viewer", "position", "since", "reason"):
        sessions.add_column(col)
    for s in sorted(snap.sessions, key=lambda s: s.requested_at, reverse=True):
        worker = by_target.get(("jit", s.session_id))
        beat = snap.beats.get(subjects.worker_heartbeat(worker.worker_id)) if worker else None
        stats = beat.stats if isinstance(beat, WorkerHeartbeat) else None
        position = str(stats.position) if isinstance(stats, JitStats) else "-"
        viewer = snap.beats.get(subjects.viewer_heartbeat("session", s.session_id))
        video = s.inputs[0].url if s.inputs else "-"
        sessions.add_row(
            s.session_id[:12], s.phase, video[-40:],
            _ago(now, viewer.at if viewer else None), position, _ago(now, s.requested_at),
            s.reason or "-",
        )  # fmt: skip

    instances = Table(title=f"Instances ({len(snap.instances)})", title_justify="left")
    for col in ("id", "provider", "state", "address", "up since"):
        instances.add_column(col)
    for i in sorted(snap.instances, key=lambda i: i.launched_at):
        instances.add_row(i.instance_id, i.provider, i.phase, i.address or "-",
                          _ago(now, i.launched_at))  # fmt: skip
    if not snap.parked_total:
        return Group(mosaics, sources, sessions, instances)
    # Only when there are some: a parked event is something to deal with, not a steady state.
    parked = Table(title=f"[red]Parked events ({snap.parked_total})[/]", title_justify="left")
    for col in ("seq", "subject", "deliveries", "parked", "error"):
        parked.add_column(col)
    for p in snap.parked:
        parked.add_row(str(p.seq), escape(p.subject), str(p.deliveries),
                       _ago(now, p.at or None), escape(p.error))  # fmt: skip
    return Group(mosaics, sources, sessions, instances, parked)
