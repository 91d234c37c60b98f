"""The stitcher: one per watched mosaic. Newest frame of every tile on a steady clock, labels,
dead-source tiles, H.264, MPEG-TS segments into the object store, the live playlist into KV.

Data flow::

    frames.<sid> (core NATS) ─┬─► newest frame per source (newest wins, replaced ones counted)
    shared-memory slots ──────┘       │ every 1/fps s, on absolute deadlines
                                      ▼
        executor thread: compose (compositor) ─► encode (encoder) ─► completed segment
                                      │ bounded outbox (2)
                                      ▼
        object store `segments` <fp>/<seq>.ts ─► KV `manifests` <fp> ─► notice on segments.<fp>

Its parts: :mod:`~pipeline.consumers.intake` takes frames in (NATS subscriptions, seeds from
``FRAMES``, shared-memory slots); at each tick of the clock (:mod:`~pipeline.consumers.clock`)
the stitcher decides what every tile shows (:func:`~pipeline.consumers.newest.tile_views`) and
has the :class:`~pipeline.consumers.render.MosaicRenderer` compose and encode the picture in
one dedicated executor thread, never on the loop; :mod:`~pipeline.consumers.publisher` stores
each completed segment and writes the playlist. This module is the service that runs them.

Clock: a tick found more than one period late is skipped, not made up (``late_frames`` counts
them). When the outbox is full the clock waits (and counts late frames): segments are never
dropped for being slow, only when they cannot be stored.

Media sequence across restarts: at start the stitcher reads its previous playlist from KV
``manifests`` and continues after its last segment. The encoder's timestamps are derived from
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
import time
from collections.abc import Callable
from pathlib import Path

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from pipeline.consumers.clock import TickClock, TickMeter
from pipeline.consumers.encoder import EncoderSettings
from pipeline.consumers.intake import FrameIntake
from pipeline.consumers.newest import tile_views
from pipeline.consumers.publisher import SegmentPublisher
from pipeline.consumers.render import MosaicRenderer, RenderedSegment
from pipeline.errors import TesseraError
from pipeline.messages.heartbeats import StitcherStats, WorkerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.heartbeat import Heartbeater
from pipeline.nats.topology import MANIFESTS, SEGMENTS
from pipeline.runtime.tasks import Tasks
from pipeline.segments.playlist import PlaylistWindow, next_sequence
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import layout, source_id

log = logging.getLogger("tessera.stitcher")

OUTBOX_SIZE = 2
"""Completed segments waiting for NATS. When full the clock waits (and counts late frames):
segments are never dropped for being slow, only when they cannot be stored."""

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
    ) -> None:
        """``frame_slots``: source id -> its shared-memory slot, read at every tick (the
        grabbers on this machine write there; NATS then carries a seed a second)."""
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
        self.layout = layout(len(mosaic.tiles), mosaic.width, mosaic.height, mosaic.cols)
        tw, th = self.layout.tile_width, self.layout.tile_height
        self.tile_sources: tuple[str, ...] = tuple(source_id(t.url, tw, th) for t in mosaic.tiles)
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
            tile_width=tw,
            tile_height=th,
            dead_after=dead_after,
            clock=clock,
            wall=wall_clock,
            frame_slots=frame_slots,
        )
        self._publisher = SegmentPublisher(
            js=js,
            fp=self.fp,
            window=PlaylistWindow.for_segments(self.settings.exact_segment_duration, window),
            wall=wall_clock,
            on_listed=self._listed,
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
        self._outbox: asyncio.Queue[RenderedSegment] = asyncio.Queue(OUTBOX_SIZE)
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
            obj, kv = await self._buckets()
            self._publisher.open(obj, kv)
            first_seq = await self._resume_sequence(kv)
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"stitcher-{self.fp[:8]}"
            )
            # Opening x264 and rendering labels take a few ms: not on the loop either.
            self._renderer = await loop.run_in_executor(
                self._executor, self._make_renderer, first_seq
            )
            await self._intake.start()
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
            extra={"fp": self.fp, "tiles": len(self.mosaic.tiles), "first_seq": first_seq},
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
        await self._intake.unsubscribe()
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

    async def _buckets(self) -> tuple[ObjectStore, KeyValue]:
        try:
            return (
                await self._js.object_store(SEGMENTS.name),
                await self._js.key_value(MANIFESTS.name),
            )
        except NotFoundError as exc:
            raise StitcherError(
                f"JetStream buckets {SEGMENTS.name!r} (objects) and {MANIFESTS.name!r} (KV) "
                "must exist: provision the topology first (`tessera up` does)"
            ) from exc

    def _make_renderer(self, first_seq: int) -> MosaicRenderer:
        return MosaicRenderer(
            self.mosaic.tiles, self.settings, cols=self.mosaic.cols, first_index=first_seq
        )

    async def _resume_sequence(self, kv: KeyValue) -> int:
        """The media sequence to start at: after the previous playlist's last segment, or,
        without one, past every number this mosaic can have used (see the module's doc)."""
        try:
            entry = await kv.get(self.fp)
        except NotFoundError:
            return self._fresh_sequence()
        if not entry.value:
            return self._fresh_sequence()
        return next_sequence(entry.value.decode("utf-8", errors="replace"))

    def _fresh_sequence(self) -> int:
        """Whole segment durations since the mosaic was created (0 when that is unknown)."""
        if self.mosaic.created_at <= 0:
            return 0
        age = self._wall() - self.mosaic.created_at
        return max(0, int(age / self.settings.exact_segment_duration))

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
            views, self._dead_tiles = tile_views(
                self._intake.tiles, now, warming=warming, dead_after=self.dead_after
            )
            renderer = self._renderer
            assert renderer is not None and self._executor is not None
            done = await loop.run_in_executor(self._executor, renderer.render, views, self._wall())
            ticks.ticked()
            self._meter.note(self._clock(), renderer.last_ms)
            if done is not None:
                await self._outbox.put(done)

    async def _publish_loop(self) -> None:
        # Ends at a stop even when its cancellation went missing: one that lands as a NATS
        # reply arrives is swallowed (asyncio.wait_for in Python 3.11, inside nats-py), and the
        # loop would then wait for ever on an outbox that the stopped clock no longer fills.
        while not self._closing:
            rendered = await self._outbox.get()
            await self._publisher.publish(rendered)

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
    def playlist(self) -> PlaylistWindow:
        """The playlist window as last written."""
        return self._publisher.window

    def stats(self) -> StitcherStats:
        """What the stitcher reports in its heartbeat. ``segment_bytes`` is the size of the
        newest segment; ``encode_ms`` a moving average of compose + encode per picture."""
        publisher = self._publisher
        return StitcherStats(
            fps=round(self._meter.fps(self._clock()), 2),
            late_frames=self._late,
            encode_ms=round(self._meter.encode_ms, 2),
            segments=publisher.segments,
            segment_bytes=publisher.segment_bytes,
            dead_tiles=self._dead_tiles,
            media_sequence=publisher.window.media_sequence,
            tiles=len(self.mosaic.tiles),
            replaced_frames=self._intake.replaced,
            bad_frames=self._intake.bad,
            publish_errors=publisher.errors,
        )

    def _beat(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            at=self._wall(),
            worker_id=self.worker_id,
            kind="stitcher",
            target=self.fp,
            ready=self._ready,
            stats=self.stats(),
        )
