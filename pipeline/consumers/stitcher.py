"""The stitcher: one per watched mosaic. Newest frame of every tile on a steady clock, labels,
dead-source tiles, one H.264 encode, and from it: CMAF parts for Low-Latency HLS (the default)
or MPEG-TS segments, the live playlist into KV, and each picture to WebRTC (WHEP) viewers.

Data flow::

    frames.<sid> (core NATS) ─┬─► newest frame per source (newest wins, replaced ones counted)
    shared-memory slots ──────┘       │ every 1/fps s, on absolute deadlines
                                      ▼
        executor thread: compose (compositor) ─► encode (encoder) ─► mux (cmaf or ts)
                                      │ each picture ──────────────► WHEP viewers (whep)
                                      │ completed parts or segments: bounded outbox
                                      ▼
        cmaf: stream PARTS parts.<fp>.<name> ─► KV `manifests` <fp> (LL-HLS) ─┐
        ts:   object store `segments` <fp>/<seq>.ts ─► KV `manifests` <fp> ───┴► segments.<fp>

Its parts: :mod:`~pipeline.consumers.intake` takes frames in (NATS subscriptions, seeds from
``FRAMES``, shared-memory slots); at each tick of the clock (:mod:`~pipeline.consumers.clock`)
the stitcher decides what every tile shows (:func:`~pipeline.consumers.newest.tile_views`) and
has the :class:`~pipeline.consumers.render.MosaicRenderer` compose and encode the picture in
one dedicated executor thread, never on the loop; :mod:`~pipeline.consumers.parts` (CMAF) or
:mod:`~pipeline.consumers.publisher` (MPEG-TS) stores what it completed and writes the
playlist, and :mod:`~pipeline.consumers.whep` sends each picture to WebRTC viewers. Unless
``audio=off``, :mod:`~pipeline.consumers.sound` takes the chosen tile's audio from
``audio.<sid>`` and each picture's render call also encodes its AAC frames
(:mod:`~pipeline.consumers.aac`), a second track in the same parts or segments. This module is
the service that runs them.

Clock: a tick found more than one period late is skipped, not made up (``late_frames`` counts
them). When the outbox is full the clock waits (and counts late frames): segments are never
dropped for being slow, only when they cannot be stored.

Media sequence across restarts: at start the stitcher reads its previous playlist from KV
``manifests`` (either format) and continues after its last segment (CMAF: after a
discontinuity, with the previous parts still listed). The encoder's timestamps are derived from
the sequence number (``seq * frames_per_segment``), so a restarted stitcher continues the
previous timeline too. When there is no previous playlist (a new mosaic, the 5-minute TTL, or
a restarted nats-server that lost its memory buckets) it starts at the number of whole segment
durations since the mosaic was created: a stitcher makes at most one segment per segment
duration, so that number is above any an earlier stitcher of this mosaic used, and a segment
URI (which players, HTTP caches and the gateway keep as immutable) never names other media.
This assumes the machines' wall clocks agree to within a segment or so.

Errors: :class:`StitcherError` (a :class:`~pipeline.errors.TesseraError`) when the JetStream
buckets are missing; :class:`~pipeline.consumers.encoder.EncoderError` for bad encoder
settings. NATS trouble while running is logged and counted (``publish_errors``), not fatal; a
task of the stitcher that fails makes it fail (:meth:`Stitcher.wait` raises the error).

Stop: heartbeat "not ready", then its tasks (the clock, the publisher, the slot follower), the
subscriptions and the encoder, in that order; the unfinished segment is dropped, never
published. ``stop()`` is safe twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from pipeline.consumers.aac import RATE
from pipeline.consumers.clock import TickClock, TickMeter
from pipeline.consumers.cmaf import PART_DURATION, CmafMuxer
from pipeline.consumers.encoder import EncoderSettings
from pipeline.consumers.intake import FrameIntake
from pipeline.consumers.newest import tile_views
from pipeline.consumers.parts import PartPublisher
from pipeline.consumers.publisher import SegmentPublisher
from pipeline.consumers.render import HlsFormat, MosaicRenderer, Output, RenderedPart
from pipeline.consumers.sound import MosaicSound
from pipeline.consumers.tilemarks import TileMarks
from pipeline.errors import TesseraError
from pipeline.messages.heartbeats import StitcherStats, WorkerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.heartbeat import Heartbeater
from pipeline.nats.topology import MANIFESTS, PARTS, SEGMENTS
from pipeline.runtime.tasks import Tasks
from pipeline.segments import manifest
from pipeline.segments.llhls import LowLatencyPlaylist
from pipeline.segments.playlist import PlaylistWindow
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import audio_tile, layout_of, source_ids

if TYPE_CHECKING:
    from pipeline.consumers.whep import MosaicWhep

log = logging.getLogger("tessera.stitcher")

OUTBOX_SECONDS = 2.0
"""Seconds of completed segments or parts that may wait for NATS. When full the clock waits
(and counts late frames): media is never dropped for being slow, only when it cannot be
stored."""

_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


class StitcherError(TesseraError):
    """The stitcher cannot run (its buckets are missing)."""


class Status(enum.Enum):
    """Where a stitcher is in its life."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Stitcher:
    """Stitches the tiles of ``mosaic`` into a live HLS stream under ``fp``."""

    def __init__(
        self,
        *,
        nc: Client,
        js: JetStreamContext,
        fp: str,
        mosaic: MosaicState,
        worker_id: str,
        segment_duration: float = 1.0,
        dead_after: float = 5.0,
        window: int = 6,
        heartbeat_interval: float = 1.0,
        preset: str = "veryfast",
        crf: int = 23,
        bitrate: int | None = None,
        threads: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        frame_slots: Callable[[str], Path | None] | None = None,
        hls_format: HlsFormat = "cmaf",
        whep_viewers: int = 0,
        ice_servers: Sequence[Mapping[str, object]] = (),
    ) -> None:
        """``frame_slots``: source id -> its shared-memory slot, read at every tick (the
        grabbers on this machine write there; NATS then carries a seed a second).
        ``whep_viewers``: WebRTC viewers it takes at once (0: no WHEP output), with
        ``ice_servers`` (TURN) for them."""
        if not mosaic.tiles:
            raise ValueError(f"mosaic {fp} has no tiles")
        if not dead_after > 0:
            raise ValueError(f"dead_after={dead_after}: must be > 0 seconds")
        if window < 1:
            raise ValueError(f"window={window}: a playlist lists at least 1 segment")
        self._nc = nc
        self._js = js
        self.fp = subjects.token(fp)
        self.mosaic = mosaic
        self.worker_id = subjects.token(worker_id)
        self.dead_after = dead_after
        self._clock = clock
        self._wall = wall_clock
        self._heartbeat_interval = heartbeat_interval
        self.layout = layout_of(mosaic)
        # Each tile's source at that tile's size (a focus layout's tiles differ in size).
        self.tile_sources: tuple[str, ...] = source_ids(mosaic)
        self.settings = EncoderSettings(
            width=mosaic.width,
            height=mosaic.height,
            fps=mosaic.fps,
            segment_duration=segment_duration,
            preset=preset,
            crf=crf,
            bitrate=bitrate,
            threads=threads,
        )
        self._intake = FrameIntake(
            nc=nc,
            js=js,
            tile_sources=self.tile_sources,
            tile_sizes=tuple(rect.size for rect in self.layout.rects),
            dead_after=dead_after,
            clock=clock,
            wall=wall_clock,
            frame_slots=frame_slots,
        )
        self.hls_format: HlsFormat = hls_format
        self._window = window
        self._publisher: SegmentPublisher | PartPublisher = SegmentPublisher(
            js=js,
            fp=self.fp,
            window=PlaylistWindow.for_segments(self.settings.exact_segment_duration, window),
            wall=wall_clock,
            on_listed=self._listed,
        )
        # Alarm borders and audio meters on the tiles (tilemarks.py).
        self._marks = TileMarks(nc, js, mosaic, self.tile_sources, clock)
        # The sound of one tile (audio=), unless it is off: sound.py, aac.py.
        tile = audio_tile(mosaic.audio)
        self._sound = (
            None
            if tile is None
            else MosaicSound(
                nc=nc, tile_sources=self.tile_sources, tile=tile, clock=clock, wall=wall_clock
            )
        )
        self._whep: MosaicWhep | None = None
        if whep_viewers > 0:
            from pipeline.consumers.whep import MosaicWhep

            self._whep = MosaicWhep(
                nc=nc,
                fp=self.fp,
                settings=self.settings,
                max_viewers=whep_viewers,
                ice_servers=ice_servers,
                heartbeat_interval=heartbeat_interval,
                wall=wall_clock,
                sound=self._sound is not None,
            )

        self._status = Status.NEW
        self._closing = False
        self._closed = asyncio.Event()
        """Set when shutdown is complete."""
        self._finished = asyncio.Event()
        """Set when the stitcher stopped or failed (what :meth:`wait` waits for)."""
        self._error: BaseException | None = None
        self._ready = False
        self._started_at = 0.0
        self._tasks = Tasks(f"stitcher {self.fp}", on_failure=self._task_failed)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._renderer: MosaicRenderer | None = None
        per_second = 1 if hls_format == "ts" else math.ceil(1 / PART_DURATION)
        self._outbox: asyncio.Queue[Output] = asyncio.Queue(
            max(2, math.ceil(OUTBOX_SECONDS / self.settings.exact_segment_duration * per_second))
        )
        self._heartbeater: Heartbeater | None = None

        # Stats.
        self._late = 0
        self._dead_tiles = 0
        self._meter = TickMeter()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """Where the stitcher is in its life."""
        return self._status

    @property
    def ready(self) -> bool:
        """True once a segment and the playlist naming it are stored."""
        return self._ready

    @property
    def error(self) -> BaseException | None:
        """Why the stitcher failed, if it did."""
        return self._error

    async def start(self) -> None:
        """Subscribe, seed, and start the clock, the publisher and the heartbeat.

        Returns once all run; raises (after cleaning up) if any could not start. A second call
        does nothing.
        """
        if self._status is not Status.NEW or self._closing:
            return
        self._status = Status.STARTING
        loop = asyncio.get_running_loop()
        try:
            kv = await self._bucket(MANIFESTS.name, "KV")
            first_seq, previous = await self._resume(kv)
            if self.hls_format == "cmaf":
                publisher = PartPublisher(
                    js=self._js,
                    fp=self.fp,
                    start=self._empty_playlist(first_seq),
                    previous=previous,
                    wall=self._wall,
                    on_listed=self._listed,
                )
                await self._bucket(PARTS.name, "stream")
                await publisher.open(kv)
                self._publisher = publisher
            else:
                assert isinstance(self._publisher, SegmentPublisher)
                self._publisher.open(await self._bucket(SEGMENTS.name, "object store"), kv)
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"stitcher-{self.fp[:8]}"
            )
            # Opening x264 and rendering labels take a few ms: not on the loop either.
            self._renderer = await loop.run_in_executor(
                self._executor, self._make_renderer, first_seq
            )
            await self._intake.start()
            await self._marks.start()
            if self._sound is not None:
                await self._sound.start()
            if self._whep is not None:
                await self._whep.start()
            self._started_at = self._clock()
            self._heartbeater = Heartbeater(
                self._nc,
                subjects.worker_heartbeat(self.worker_id),
                self._beat,
                interval=self._heartbeat_interval,
            )
            self._tasks.spawn(self._publish_loop(), name="publisher")
            self._tasks.spawn(self._tick_loop(), name="clock")
            if self._intake.has_slots:
                self._tasks.spawn(self._intake.follow_slots(), name="slots")
            if self._sound is not None:
                self._tasks.spawn(self._sound.follow(), name="sound")
            await self._heartbeater.start()
        except BaseException:
            self._closing = True
            self._status = Status.STOPPING
            try:
                await self._shutdown()
            finally:
                self._status = Status.FAILED
                self._closed.set()
                self._finished.set()
            raise
        self._status = Status.RUNNING
        log.info(
            "stitcher started",
            extra={
                "fp": self.fp,
                "tiles": len(self.mosaic.tiles),
                "first_seq": first_seq,
                "hls": self.hls_format,
            },
        )

    async def stop(self) -> None:
        """Stop everything; the unfinished segment is dropped. Safe to call twice (a second
        caller waits for the first). Not to be called while :meth:`start` is still running:
        cancel the start instead, which cleans up the same way."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        failed = self._status is Status.FAILED
        self._status = Status.STOPPING
        try:
            await self._shutdown()
        finally:
            self._status = Status.FAILED if failed else Status.STOPPED
            self._closed.set()
            self._finished.set()
        log.info("stitcher stopped", extra={"fp": self.fp, "segments": self._publisher.segments})

    async def wait(self) -> None:
        """Return when the stitcher stopped or failed; raise the failure, if any."""
        await self._finished.wait()
        if self._error is not None:
            raise self._error

    async def _shutdown(self) -> None:
        """Reverse order of start; each step tolerates the ones before not having run."""
        heartbeater, self._heartbeater = self._heartbeater, None
        self._ready = False
        if heartbeater is not None:
            with contextlib.suppress(*_NATS_ERRORS):
                await heartbeater.stop(last=self._beat())
        await self._tasks.close()
        if self._whep is not None:
            await self._whep.stop()
        await self._intake.unsubscribe()
        if self._sound is not None:
            await self._sound.unsubscribe()
        await self._marks.stop()
        executor, self._executor = self._executor, None
        if executor is not None:
            renderer, self._renderer = self._renderer, None
            if renderer is not None:
                # Queued behind any picture still being encoded, so the encoder is idle when
                # it closes; the unfinished segment dies with it.
                await asyncio.get_running_loop().run_in_executor(executor, renderer.close)
            executor.shutdown(wait=False)
        self._intake.close()

    def _task_failed(self, task: str, exc: BaseException) -> None:
        """A task of the stitcher failed (:class:`Tasks` has logged its traceback): the
        stitcher has failed."""
        if self._status in (Status.STOPPING, Status.STOPPED):
            return
        log.error("stitcher failed", extra={"fp": self.fp, "task": task, "error": repr(exc)})
        if self._error is None:
            self._error = exc
        self._ready = False
        self._status = Status.FAILED
        self._finished.set()

    async def _bucket(self, name: str, kind: str) -> Any:
        """The KV bucket, object store or stream ``name``; StitcherError if it is missing."""
        try:
            if kind == "KV":
                return await self._js.key_value(name)
            if kind == "object store":
                return await self._js.object_store(name)
            return await self._js.stream_info(name)
        except NotFoundError as exc:
            raise StitcherError(
                f"JetStream {kind} {name!r} must exist: provision the topology first "
                "(`tessera up` does)"
            ) from exc

    def _make_renderer(self, first_seq: int) -> MosaicRenderer:
        return MosaicRenderer(
            self.mosaic.tiles,
            self.settings,
            cols=self.mosaic.cols,
            layout=self.mosaic.layout,
            first_index=first_seq,
            hls_format=self.hls_format,
            audio=self._sound is not None,
            clock=self.mosaic.clock,
        )

    def _empty_playlist(self, first_seq: int) -> LowLatencyPlaylist:
        return LowLatencyPlaylist.start(
            part_target=CmafMuxer(self.settings).part_target,  # the settings decide it alone
            segment_duration=self.settings.exact_segment_duration,
            first_msn=first_seq,
            window=self._window,
            after_unknown=True,
        )

    async def _resume(self, kv: KeyValue) -> tuple[int, manifest.LiveManifest | None]:
        """The media sequence to start at: after the previous playlist's last segment, or,
        without one, past every number this mosaic can have used (see the module's doc); and
        the previous CMAF manifest, which a CMAF run continues."""
        try:
            entry = await kv.get(self.fp)
        except NotFoundError:
            return self._fresh_sequence(), None
        if not entry.value:
            return self._fresh_sequence(), None
        try:
            first = manifest.next_sequence(entry.value)
            previous = manifest.decode(entry.value) if manifest.is_cmaf(entry.value) else None
        except ValueError as exc:
            log.warning("previous playlist unreadable; starting past it",
                        extra={"fp": self.fp, "error": str(exc)})  # fmt: skip
            return self._fresh_sequence(), None
        return first, previous

    def _fresh_sequence(self) -> int:
        """One more than the whole segment durations since the mosaic was created (0 when that
        is unknown): an earlier stitcher may be building (and, with CMAF, listing parts of)
        the segment of that number right now."""
        if self.mosaic.created_at <= 0:
            return 0
        age = self._wall() - self.mosaic.created_at
        return max(0, int(age / self.settings.exact_segment_duration) + 1)

    # --- the clock and the publisher ------------------------------------------------------

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = TickClock(self.settings.fps, self._clock())
        while True:
            delay, missed = ticks.wait(self._clock())
            if delay > 0:
                await asyncio.sleep(delay)
            self._late += missed
            now = self._clock()
            self._intake.poll(now)
            warming = now - self._started_at < self.dead_after
            plain, self._dead_tiles = tile_views(
                self._intake.tiles, now, warming=warming, dead_after=self.dead_after
            )
            renderer = self._renderer
            assert renderer is not None and self._executor is not None
            views = self._marks.mark(plain, self._wall())
            sound = () if self._sound is None else self._sound.drain()
            opus = self._whep is not None and self._whep.viewers > 0  # Opus while watched
            done = await loop.run_in_executor(
                self._executor, renderer.render, views, self._wall(), sound, opus
            )
            ticks.ticked()
            self._meter.note(self._clock(), renderer.last_ms)
            if self._whep is not None:
                self._whep.feed(done.frames, done.sound)
            for output in done.outputs:
                await self._outbox.put(output)

    async def _publish_loop(self) -> None:
        # Ends at a stop even when its cancellation went missing: one that lands as a NATS
        # reply arrives is swallowed (asyncio.wait_for in Python 3.11, inside nats-py), and the
        # loop would then wait for ever on an outbox that the stopped clock no longer fills.
        while not self._closing:
            rendered = await self._outbox.get()
            publisher = self._publisher
            if isinstance(publisher, PartPublisher):
                assert isinstance(rendered, RenderedPart)
                await publisher.publish(rendered)
            else:
                assert not isinstance(rendered, RenderedPart)
                await publisher.publish(rendered)

    def _listed(self) -> None:
        """A playlist naming a new segment is stored: the stitcher is ready."""
        if not self._ready:
            self._ready = True
            if self._heartbeater is not None:
                self._heartbeater.poke()

    # --- reporting ------------------------------------------------------------------------

    @property
    def subscribed(self) -> frozenset[str]:
        """The frame subjects this stitcher takes from NATS now."""
        return self._intake.subscribed

    @property
    def playlist(self) -> PlaylistWindow | LowLatencyPlaylist:
        """The playlist as last written: a window of MPEG-TS segments, or the LL-HLS state."""
        publisher = self._publisher
        return publisher.state if isinstance(publisher, PartPublisher) else publisher.window

    @property
    def viewers(self) -> int:
        """WebRTC viewers connected now."""
        return 0 if self._whep is None else self._whep.viewers

    def stats(self) -> StitcherStats:
        """What the stitcher reports in its heartbeat. ``segment_bytes`` is the size of the
        newest segment; ``encode_ms`` a moving average of compose + encode per picture."""
        publisher = self._publisher
        renderer = self._renderer
        return StitcherStats(
            fps=round(self._meter.fps(self._clock()), 2),
            late_frames=self._late,
            encode_ms=round(self._meter.encode_ms, 2),
            segments=publisher.segments,
            segment_bytes=publisher.segment_bytes,
            dead_tiles=self._dead_tiles,
            media_sequence=publisher.media_sequence,
            tiles=len(self.mosaic.tiles),
            replaced_frames=self._intake.replaced,
            # Refused where they came, and JPEG frames that did not decode (render thread).
            bad_frames=self._intake.bad + (renderer.jpeg.bad if renderer is not None else 0),
            publish_errors=publisher.errors,
            hls=self.hls_format,
            parts=publisher.parts if isinstance(publisher, PartPublisher) else 0,
            webrtc_viewers=self.viewers,
            webrtc_dropped=0 if self._whep is None else self._whep.dropped,
            tiles_in_alarm=sum(1 for kinds in self._marks.kinds(self._wall()) if kinds),
            **self._sound_stats(),
        )

    def _sound_stats(self) -> dict[str, Any]:
        """The sound's part of the stats (the counters are the executor thread's: ints, read
        as they are)."""
        sound = self._sound
        renderer = self._renderer
        if sound is None:
            return {}
        carried = sound.choice.carried
        tile = -1 if carried is None else self.tile_sources.index(carried)
        encoder = None if renderer is None else renderer.sound
        if encoder is None:
            return {"audio_tile": tile}
        return {
            "audio_tile": tile,
            "audio_silent": round(encoder.playout.silent / RATE, 2),
            "audio_late": round(encoder.playout.late / RATE, 2),
        }

    def _beat(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            at=self._wall(),
            worker_id=self.worker_id,
            kind="stitcher",
            target=self.fp,
            ready=self._ready,
            stats=self.stats(),
        )
