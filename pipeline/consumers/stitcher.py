"""The stitcher: one per watched mosaic. Newest frame of every tile on a steady clock, labels,
dead-source tiles, H.264, MPEG-TS segments into the object store, the live playlist into KV.

Data flow::

    frames.<sid> (core NATS) ──► one slot per source (newest frame wins, replaced ones counted)
                                      │ every 1/fps s, on absolute deadlines
                                      ▼
        executor thread: compose (compositor) ─► encode (encoder) ─► completed segment
                                      │ bounded outbox (2)
                                      ▼
        object store `segments` <fp>/<seq>.ts ─► KV `manifests` <fp> ─► notice on segments.<fp>

Start-up order matters: subscribe to every ``frames.<sid>`` first, then seed each empty slot
with the last frame the ``FRAMES`` stream holds for it, so a new stitcher shows every running
source at once and a live frame that raced the seed is never replaced by an older one.

Tile states, decided on the event loop at each tick with the injectable ``clock``: no frame yet
→ "waiting" for the first ``dead_after`` seconds after start, the dead tile after that; newest
frame older than ``dead_after`` → the dead tile; otherwise the newest frame. A seeded frame is
aged by the stream's timestamp, so a source that died just before start shows dead at once.

Clock: tick ``n`` is due at ``start + n / fps`` (absolute deadlines, no drift). A tick found
more than one period late is skipped, not made up (``late_frames`` counts them): a live
mosaic wants the present, and the encoded timeline stays one frame per ``1/fps`` regardless.
Composing and encoding run in one dedicated executor thread, never on the loop.

Ordering of writes (a playlist never names a segment that is not stored): object first, then
the playlist, then the notice. A segment that cannot be stored is dropped; the next one starts
a new playlist run (see :mod:`pipeline.segments.playlist`). Segments that left the playlist
are deleted once no player can still need them (RFC 8216 §6.2.2); the bucket's TTL catches any
that a crash leaves behind.

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
settings. NATS trouble while running is logged and counted (``publish_errors``), not fatal.

Stop: heartbeat "not ready", then the clock, the publisher, the subscriptions and the encoder,
in that order; the unfinished segment is dropped, never published. ``stop()`` is safe twice.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from pipeline.consumers.compositor import DEAD, WAITING, TileKind, TileView
from pipeline.consumers.encoder import EncoderSettings
from pipeline.consumers.render import MosaicRenderer, RenderedSegment
from pipeline.errors import MessageError, TesseraError
from pipeline.frames.slot import SlotReader
from pipeline.messages.codec import encode
from pipeline.messages.frames import FrameHeader, unpack_frame
from pipeline.messages.heartbeats import StitcherStats, WorkerHeartbeat
from pipeline.messages.segments import SegmentNotice
from pipeline.nats import subjects
from pipeline.nats.heartbeat import Heartbeater
from pipeline.nats.topology import FRAMES, MANIFESTS, SEGMENTS
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.segments.playlist import PlaylistWindow, SegmentEntry, next_sequence, segment_uri
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import layout, source_id

log = logging.getLogger("tessera.stitcher")

OUTBOX_SIZE = 2
"""Completed segments waiting for NATS. When full the clock waits (and counts late frames):
segments are never dropped for being slow, only when they cannot be stored."""
PENDING_FRAMES = 4
"""Frames of one source a subscription may hold before nats-py drops more (and reports a slow
consumer). Only the newest frame of a source is ever used, so a few are plenty; the callback
only swaps a reference, so even these are only reached if the loop was held up. With the
byte limit that goes with it, what a stalled stitcher can buffer is a few frames per tile,
not the backlog (the nats-server itself cuts off a client that stops reading for long)."""
FRAME_HEADER_ROOM = 1024
SLOT_CHECK = 1.0
"""Seconds between checks of which tiles' shared-memory slots are live (their NATS frame
subscriptions are dropped meanwhile, and taken again within two checks of a slot stopping)."""
"""Bytes allowed for a frame message's header on top of its yuv420p pixels."""
FPS_WINDOW = 2.0
"""Seconds of recent pictures the reported output fps is measured over."""
ENCODE_MS_SMOOTHING = 0.1
"""Weight of the newest picture in the moving average of compose + encode time."""

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


@dataclass
class _Slot:
    """The newest frame of one source."""

    header: FrameHeader | None = None
    pixels: memoryview | None = None
    serial: int = 0
    """Frames received so far; names the picture in the slot."""
    arrived: float = 0.0
    """``clock()`` time the frame arrived (or its stream age, for a seeded one)."""
    composed: int = 0
    """Serial last taken for a picture."""
    reader: SlotReader | None = None
    """The source's shared-memory slot, when frames come that way (:mod:`pipeline.frames.slot`)."""
    slot_seen: float = -1e9
    """``clock()`` time the slot last gave a new frame."""


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
        self._window = PlaylistWindow.for_segments(self.settings.exact_segment_duration, window)
        self._slots = {subjects.frames(sid): _Slot() for sid in self.tile_sources}
        self._tile_slots = tuple(self._slots[subjects.frames(sid)] for sid in self.tile_sources)
        if frame_slots is not None:
            for sid in self.tile_sources:
                path = frame_slots(sid)
                slot = self._slots[subjects.frames(sid)]
                if path is not None and slot.reader is None:
                    slot.reader = SlotReader(path)

        self._status = Status.NEW
        self._closing = False
        self._closed = asyncio.Event()
        """Set when shutdown is complete."""
        self._finished = asyncio.Event()
        """Set when the stitcher stopped or failed (what :meth:`wait` waits for)."""
        self._error: BaseException | None = None
        self._ready = False
        self._started_at = 0.0
        self._by_subject: dict[str, Subscription] = {}
        """The frame subscriptions in force (none for a tile whose slot is live)."""
        self._follower: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._renderer: MosaicRenderer | None = None
        self._outbox: asyncio.Queue[RenderedSegment] = asyncio.Queue(OUTBOX_SIZE)
        self._ticker: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._heartbeater: Heartbeater | None = None
        self._obj: ObjectStore | None = None
        self._kv: KeyValue | None = None
        self._stored: collections.deque[int] = collections.deque()

        # Stats.
        self._late = 0
        self._replaced = 0
        self._bad = 0
        self._publish_errors = 0
        self._segments = 0
        self._segment_bytes = 0
        self._dead_tiles = 0
        self._encode_ms = 0.0
        self._rendered: collections.deque[float] = collections.deque()

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
            self._obj, self._kv = await self._buckets()
            first_seq = await self._resume_sequence()
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"stitcher-{self.fp[:8]}"
            )
            # Opening x264 and rendering labels take a few ms: not on the loop either.
            self._renderer = await loop.run_in_executor(
                self._executor, self._make_renderer, first_seq
            )
            for subject in self._slots:
                await self._subscribe(subject)
            await self._nc.flush()
            await self._seed()
            self._started_at = self._clock()
            self._heartbeater = Heartbeater(
                self._nc,
                subjects.worker_heartbeat(self.worker_id),
                self._beat,
                interval=self._heartbeat_interval,
            )
            self._publisher = asyncio.create_task(
                self._publish_loop(), name=f"stitcher {self.fp} publisher"
            )
            self._ticker = asyncio.create_task(self._tick_loop(), name=f"stitcher {self.fp} clock")
            tasks = [self._publisher, self._ticker]
            if any(slot.reader is not None for slot in self._tile_slots):
                self._follower = asyncio.create_task(
                    self._follow_slots(), name=f"stitcher {self.fp} slots"
                )
                tasks.append(self._follower)
            for task in tasks:
                task.add_done_callback(self._task_done)
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
        log.info("stitcher stopped", extra={"fp": self.fp, "segments": self._segments})

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
        await cancel_and_wait(self._follower)
        await cancel_and_wait(self._ticker)
        await cancel_and_wait(self._publisher)
        for sub in self._by_subject.values():
            with contextlib.suppress(*_NATS_ERRORS):
                await sub.unsubscribe()
        self._by_subject.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            renderer, self._renderer = self._renderer, None
            if renderer is not None:
                # Queued behind any picture still being encoded, so the encoder is idle when
                # it closes; the unfinished segment dies with it.
                await asyncio.get_running_loop().run_in_executor(executor, renderer.close)
            executor.shutdown(wait=False)
        for slot in self._tile_slots:
            if slot.reader is not None:
                slot.reader.close()  # its frames are copies: nothing still points into it

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._status in (Status.STOPPING, Status.STOPPED):
            return
        exc = task.exception()
        if exc is None:
            return
        log.error(
            "stitcher failed",
            exc_info=exc,
            extra={"fp": self.fp, "task": task.get_name()},
        )
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

    async def _resume_sequence(self) -> int:
        """The media sequence to start at: after the previous playlist's last segment, or,
        without one, past every number this mosaic can have used (see the module's doc)."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(self.fp)
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

    # --- frames ---------------------------------------------------------------------------

    def _accept(self, subject: str, payload: bytes, arrived: float, *, seed: bool) -> None:
        slot = self._slots.get(subject)
        if slot is None:
            return
        try:
            header, pixels = unpack_frame(payload)
        except MessageError as exc:
            self._bad += 1
            log.debug("bad frame", extra={"subject": subject, "error": str(exc)})
            return
        tw, th = self.layout.tile_width, self.layout.tile_height
        size = tw * th * 3 // 2 if header.pix_fmt == "yuv420p" else tw * th
        if (header.width, header.height) != (tw, th) or header.encoding != "raw":
            self._bad += 1
            return
        if len(pixels) != size:
            self._bad += 1
            return
        if seed and slot.serial:
            return  # a live frame beat the seed: it is newer
        if slot.header is not None and header.wall < slot.header.wall:
            return  # a seed from NATS older than what the shared-memory slot gave
        self._take(slot, header, pixels, arrived)

    def _take(self, slot: _Slot, header: FrameHeader, pixels: memoryview, arrived: float) -> None:
        if slot.serial > slot.composed:
            self._replaced += 1
        slot.header, slot.pixels = header, pixels
        slot.serial += 1
        slot.arrived = arrived

    @property
    def subscribed(self) -> frozenset[str]:
        """The frame subjects this stitcher takes from NATS now."""
        return frozenset(self._by_subject)

    async def _subscribe(self, subject: str) -> None:
        tw, th = self.layout.tile_width, self.layout.tile_height
        frame_bytes = tw * th * 3 // 2 + FRAME_HEADER_ROOM
        sub = await self._nc.subscribe(
            subject,
            cb=self._on_frame,
            pending_msgs_limit=PENDING_FRAMES,
            pending_bytes_limit=PENDING_FRAMES * frame_bytes,
        )
        self._by_subject[subject] = sub

    async def _follow_slots(self) -> None:
        """While a tile's slot gives frames, take none of its frames from NATS (the seeds would
        only cost the server and this process a copy); subscribe again when the slot stops."""
        while True:
            await asyncio.sleep(SLOT_CHECK)
            now = self._clock()
            for subject, slot in self._slots.items():
                if slot.reader is None:
                    continue
                live = now - slot.slot_seen < SLOT_CHECK * 2
                sub = self._by_subject.get(subject)
                try:
                    if live and sub is not None:
                        del self._by_subject[subject]
                        await sub.unsubscribe()
                    elif not live and sub is None:
                        await self._subscribe(subject)
                except _NATS_ERRORS as exc:
                    log.debug("frame subscription not changed", extra={"error": repr(exc)})

    def _poll_slots(self, now: float) -> None:
        """Take the newest frame of every tile whose grabber writes to shared memory."""
        tw, th = self.layout.tile_width, self.layout.tile_height
        wall = self._wall()
        for sid, slot in zip(self.tile_sources, self._tile_slots, strict=True):
            if slot.reader is None:
                continue
            frame = slot.reader.read()
            if frame is None or (frame.width, frame.height) != (tw, th):
                continue
            if wall - frame.wall > self.dead_after:
                continue  # a dead grabber's last frame: not live
            if slot.header is not None and frame.wall < slot.header.wall:
                continue
            header = FrameHeader(
                source_id=sid,
                seq=frame.seq,
                pts=frame.pts,
                wall=frame.wall,
                width=frame.width,
                height=frame.height,
            )
            self._take(slot, header, memoryview(frame.pixels), now)
            slot.slot_seen = now

    async def _on_frame(self, msg: Msg) -> None:
        self._accept(msg.subject, msg.data, self._clock(), seed=False)

    async def _seed(self) -> None:
        """Fill each empty slot with the last frame ``FRAMES`` holds for it."""
        for subject in self._slots:
            try:
                raw = await self._js.get_last_msg(FRAMES.name, subject)
            except NotFoundError:
                continue
            if not raw.data:
                continue
            age = 0.0
            if raw.time is not None:
                age = min(max(0.0, self._wall() - raw.time.timestamp()), self.dead_after * 2)
            self._accept(subject, raw.data, self._clock() - age, seed=True)

    # --- clock ----------------------------------------------------------------------------

    def _views(self, now: float) -> tuple[TileView, ...]:
        self._poll_slots(now)
        views = []
        dead = 0
        warming = now - self._started_at < self.dead_after
        for slot in self._tile_slots:
            if slot.header is None:
                view = WAITING if warming else DEAD
            elif now - slot.arrived > self.dead_after:
                view = DEAD
            else:
                view = TileView(TileKind.LIVE, slot.serial, slot.header, slot.pixels)
            slot.composed = slot.serial
            dead += view.kind is TileKind.DEAD
            views.append(view)
        self._dead_tiles = dead
        return tuple(views)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.settings.fps
        start = self._clock()
        tick = 0
        while True:
            delay = start + tick * period - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay >= period:
                missed = int(-delay / period)
                tick += missed
                self._late += missed
            views = self._views(self._clock())
            renderer = self._renderer
            assert renderer is not None and self._executor is not None
            done = await loop.run_in_executor(self._executor, renderer.render, views, self._wall())
            tick += 1
            self._note_render(renderer.last_ms)
            if done is not None:
                await self._outbox.put(done)

    def _note_render(self, ms: float) -> None:
        now = self._clock()
        self._rendered.append(now)
        while self._rendered and self._rendered[0] < now - FPS_WINDOW:
            self._rendered.popleft()
        if self._encode_ms:
            self._encode_ms += ENCODE_MS_SMOOTHING * (ms - self._encode_ms)
        else:
            self._encode_ms = ms

    # --- segments -------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        while True:
            rendered = await self._outbox.get()
            await self._publish(rendered)

    async def _publish(self, rendered: RenderedSegment) -> None:
        assert self._obj is not None and self._kv is not None
        segment = rendered.segment
        key = f"{self.fp}/{segment_uri(segment.index)}"
        try:
            await self._obj.put(key, segment.data)
        except _NATS_ERRORS as exc:
            self._publish_errors += 1
            log.warning("segment not stored", extra={"key": key, "error": repr(exc)})
            return
        self._stored.append(segment.index)
        if not await self._listed_still_stored():
            # The store lost what the playlist lists (a restarted nats-server's memory store):
            # listing it would send players to missing segments, so start a new run.
            log.warning("listed segments are gone from the store; starting a new run",
                        extra={"fp": self.fp})  # fmt: skip
            self._window = self._window.restart()
        self._window, _ = self._window.push(
            SegmentEntry(segment.index, segment.duration, rendered.start_wall)
        )
        try:
            await self._kv.put(self.fp, self._window.render().encode())
        except _NATS_ERRORS as exc:
            self._publish_errors += 1
            log.warning("playlist not written", extra={"fp": self.fp, "error": repr(exc)})
            return
        self._segments += 1
        self._segment_bytes = len(segment.data)
        if not self._ready:
            self._ready = True
            if self._heartbeater is not None:
                self._heartbeater.poke()
        notice = SegmentNotice(
            fp=self.fp,
            seq=segment.index,
            key=key,
            duration=segment.duration,
            size=len(segment.data),
            at=self._wall(),
            first_wall=rendered.first_wall,
        )
        try:
            await self._js.publish(subjects.segments(self.fp), encode(notice))
        except _NATS_ERRORS as exc:
            self._publish_errors += 1
            log.warning("segment notice not sent", extra={"key": key, "error": repr(exc)})
        await self._expire()

    async def _listed_still_stored(self) -> bool:
        """True if the oldest listed segment is still in the object store (one cheap look-up
        per segment: it can only be gone if the store lost data)."""
        assert self._obj is not None
        if not self._window.entries:
            return True
        key = f"{self.fp}/{segment_uri(self._window.entries[0].seq)}"
        try:
            await self._obj.get_info(key)
        except NotFoundError:
            return False
        except _NATS_ERRORS:
            return True  # cannot tell now: keep the run; the next segment checks again
        return True

    async def _expire(self) -> None:
        """Delete stored segments no player can still need."""
        assert self._obj is not None
        keep_from = self._window.keep_from
        while self._stored and self._stored[0] < keep_from:
            key = f"{self.fp}/{segment_uri(self._stored.popleft())}"
            try:
                await self._obj.delete(key)
            except NotFoundError:
                pass  # expired by the bucket's TTL already
            except _NATS_ERRORS as exc:
                log.debug("segment not deleted", extra={"key": key, "error": repr(exc)})

    # --- reporting ------------------------------------------------------------------------

    @property
    def playlist(self) -> PlaylistWindow:
        """The playlist window as last written."""
        return self._window

    def stats(self) -> StitcherStats:
        """What the stitcher reports in its heartbeat. ``segment_bytes`` is the size of the
        newest segment; ``encode_ms`` a moving average of compose + encode per picture."""
        times = self._rendered
        fps = 0.0
        if len(times) >= 2 and self._clock() - times[-1] < FPS_WINDOW / 2:
            fps = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
        return StitcherStats(
            fps=round(fps, 2),
            late_frames=self._late,
            encode_ms=round(self._encode_ms, 2),
            segments=self._segments,
            segment_bytes=self._segment_bytes,
            dead_tiles=self._dead_tiles,
            media_sequence=self._window.media_sequence,
            tiles=len(self.mosaic.tiles),
            replaced_frames=self._replaced,
            bad_frames=self._bad,
            publish_errors=self._publish_errors,
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
