"""The grabber: one live source, decoded, fitted to its tile and published as frames.

There is one grabber per unique source, a URL at one tile size
(:func:`pipeline.state.mosaic.source_id`), however many mosaics show it. It publishes packed yuv420p
tiles (:mod:`pipeline.messages.frames`) with core NATS on ``frames.<source_id>``; the
``FRAMES`` stream keeps the newest few, so a stitcher that starts later still gets a picture at
once. Waiting for a JetStream ack per frame would only add latency to the hot path.

Moving parts:

- a **decode thread** (``grabber-<source_id>``) owns the PyAV container, the decoder and the
  scaler. It opens the URL (:func:`~pipeline.sources.opener.open_input`: policy, allow-lists,
  timeouts), demuxes, decodes, drops frames over the fps cap *before* scaling, paces by
  timestamps (:mod:`pipeline.producers.timing`), scales into the tile
  (:class:`~pipeline.producers.scale.TileScaler`) and packs the message. Its only contact with
  the event loop is ``loop.call_soon_threadsafe``.
- a **release thread** (``release-<source_id>``) for paced sources: the decode thread decodes
  and scales up to :data:`AHEAD` frames ahead of their time, in bursts with warm caches, and
  this thread hands each on when it is due (into the shared-memory slot when there is one, see
  :mod:`pipeline.frames.slot`, else to NATS). Unpaced sources hand frames on from the decode
  thread at once.
- a **publisher task** takes packed frames from a queue of 2; when the queue is full the
  oldest frame is dropped and counted (a live mosaic wants the newest frame, not all of them).
- a :class:`~pipeline.nats.heartbeat.Heartbeater` on ``hb.worker.<worker_id>`` with
  :class:`~pipeline.messages.heartbeats.GrabberStats`; a state change beats at once.

Failures (open refused or failed, read timeout, end of a live stream, persistent decode errors)
never end the grabber: it logs the one-line reason once per change of state, waits with
exponential backoff and jitter (reset after ``healthy_after`` seconds of good frames) and
reconnects, forever. A finite source (a file, an ended VOD playlist) is played again from the
start when it ends, and counted in ``loops``.

Pacing: RTSP and RTMP arrive at their own pace and are published as they come. Everything
fetched over HTTP is paced by its timestamps against the wall clock: a file would otherwise be
read as fast as the CPU allows, and live HLS hands over a whole segment at once, which a
stitcher showing the newest frame would turn into one picture per segment. A source is finite
when FFmpeg knows its duration (an MP4, an ended playlist); an MPEG-TS file from a server
without range requests has no known duration, so its end counts as a live stream's end
(reconnect with backoff) rather than a loop.

Stopping: FFmpeg must not have its container closed from another thread, so ``stop()`` sets a
flag that the thread checks between packets, and every blocking FFmpeg call is bounded by PyAV's
interrupt callback (``open_timeout`` for the open, ``read_timeout`` for each read). ``stop()``
therefore returns within about ``max(open_timeout, read_timeout)``, plus a DNS lookup at worst.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import av
import av.container
import msgspec
import nats.errors
from av.video.codeccontext import VideoCodecContext
from nats.aio.client import Client

from pipeline.errors import ConfigError
from pipeline.frames.slot import SlotWriter
from pipeline.messages.frames import FrameHeader, pack_frame
from pipeline.messages.heartbeats import GrabberStats, WorkerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.heartbeat import Heartbeater
from pipeline.producers.scale import TileScaler
from pipeline.producers.timing import Backoff, FpsCap, PtsClock, StaleGuard
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.sources.opener import MAX_PIXELS, describe, open_input
from pipeline.sources.policy import SourceError, SourcePolicy, SourceRefused, redact

log = logging.getLogger("tessera.grabber")

QUEUE_SIZE = 2
AHEAD = 25
"""Paced frames the decode thread may decode and scale ahead of their time (1 s at 25 fps): it
then decodes in bursts of ``AHEAD // 2`` with warm caches instead of waking for every frame
(measured, 720p -> 320x180: 2.47 ms of thread CPU a frame waking per frame, 2.04 with 8
ahead, 1.98 with 25). Memory: 25 tile frames (2 MB at 320x180)."""
SEED_INTERVAL = 1.0
"""With a shared-memory slot, seconds between the frames still sent on NATS (``FRAMES`` keeps a
picture for a stitcher elsewhere or a late one)."""
"""Packed frames waiting for the publisher: the newest, and the one being replaced."""

MAX_DECODE_ERRORS = 25
"""Decode errors in a row (about 1 s of a 25 fps source) after which the grabber reconnects:
one corrupt packet is not worth a new connection, a broken stream is."""

MIN_LOOP_PERIOD = 1.0
"""Seconds: a finite source is reopened at most this often when it loops."""

LIVE_SCHEMES = frozenset({"rtsp", "rtmp", "rtmps"})
"""Sources that arrive at their own pace and never end: not paced, never looped."""

# Decoder settings, measured on a 1280x720 H.264 source (4 Mbit/s, testsrc2 with noise) scaled
# to 320x180, one thread (ms of CPU per frame, best of 3):
#   default decode 2.54 ms; skip_loop_filter=all 1.71 ms (-33 %); flags2=+fast 2.52 ms (no
#   gain, not used); both 1.73 ms.
# Skipping the deblocking filter differs from a full decode by 60 dB PSNR at tile size (54.5 dB
# at full size): invisible in a tile. skip_frame=NONREF would drop B-frames we may want and
# saves nothing on cameras (no B-frames), so it is not used. One decoder thread: a host runs
# many grabbers, and frame threads would add a frame of latency each.
DECODER_OPTIONS = {"skip_loop_filter": "all", "max_pixels": str(MAX_PIXELS)}


class GrabberState(enum.Enum):
    """Where a grabber is in its life."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"
    """Backing off after a failure, before the next connection attempt."""


class GrabberSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a grabber grabs: the part of its configuration that comes from a mosaic."""

    source_id: str
    url: str
    width: int
    height: int
    fps: float = 25.0


class _End(enum.Enum):
    STOPPED = "stopped"
    FILE_END = "file end"
    FAILED = "failed"


@dataclass(frozen=True)
class _Carry:
    """Pacing carried from one pass of a looping file to the next."""

    clock: PtsClock
    last_due: float
    step: float


@dataclass
class _Result:
    """How one connection ended."""

    end: _End
    reason: str = ""
    refused: bool = False
    frames: int = 0
    healthy_for: float = 0.0
    lasted: float = 0.0


class Grabber:
    """Grabs one source into ``frames.<source_id>``. ``await start()``, ``await stop()``."""

    def __init__(
        self,
        *,
        nc: Client,
        source_id: str,
        url: str,
        width: int,
        height: int,
        fps: float,
        worker_id: str,
        policy: SourcePolicy,
        heartbeat_interval: float = 1.0,
        open_timeout: float = 5.0,
        read_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        healthy_after: float = 10.0,
        instance_id: str = "",
        frame_slot: Path | None = None,
        on_stuck: Callable[[str], None] | None = None,
    ) -> None:
        subjects.token(source_id)
        subjects.token(worker_id)
        if not fps > 0:
            raise ValueError(f"fps must be greater than 0, not {fps}")
        if open_timeout <= 0 or read_timeout <= 0:
            raise ValueError("open_timeout and read_timeout must be greater than 0")
        self._nc = nc
        self.source_id = source_id
        self.url = url
        self.width = width
        self.height = height
        self.fps = fps
        self.worker_id = worker_id
        self.instance_id = instance_id
        self.policy = policy
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.healthy_after = healthy_after
        self._scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        self._scaler = TileScaler(width, height)  # validates the tile size
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._stale = StaleGuard()
        self.stale = 0
        """Frames of a live source dropped as repeats after a reconnect (a frozen playlist)."""
        self._subject = subjects.frames(source_id)
        self.frame_slot = frame_slot
        """Where frames also go in shared memory (:mod:`pipeline.frames.slot`); NATS then only
        carries a seed frame per :data:`SEED_INTERVAL`. None: every frame on NATS."""
        self._slot: SlotWriter | None = None
        self.on_stuck = on_stuck
        """Called (on the event loop) when the decode thread made no progress for
        :attr:`stuck_after` s: every FFmpeg call and read has a timeout, so that is a hang
        nothing else will end. The worker process exits there (its provider restarts it)."""
        self.stuck_after = max(open_timeout, read_timeout) * 2 + 10.0
        self._busy_since: float | None = None
        """When the decode thread's current step began (None: waiting on purpose)."""
        self._watchdog: asyncio.Task[None] | None = None
        self._release: _Releaser | None = None
        self._last_seed = 0.0
        self.slot_written = 0
        self._heartbeater = Heartbeater(
            nc, subjects.worker_heartbeat(worker_id), self._beat, interval=heartbeat_interval
        )
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._publisher: asyncio.Task[None] | None = None
        # Written by the decode thread, read by the loop (single writer per field).
        self.state = GrabberState.STOPPED
        self.decoded = 0
        self.packed = 0
        self.handed = 0
        """Frames the decode thread handed on (numbers them; the release thread may hold a
        second of them before they are packed)."""
        self.reconnects = 0
        self.decode_errors = 0
        self.loops = 0
        self.last_error = ""
        self.connected = False
        self._carry: _Carry | None = None
        # Written by the loop only.
        self.published = 0
        self.dropped = 0
        self._publish_error = ""
        self._rate_mark = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)

    @classmethod
    def from_spec(
        cls, spec: GrabberSpec, *, nc: Client, worker_id: str, policy: SourcePolicy, **options: Any
    ) -> Grabber:
        """A grabber for ``spec``; ``options`` are the timing keyword arguments."""
        return cls(
            nc=nc,
            source_id=spec.source_id,
            url=spec.url,
            width=spec.width,
            height=spec.height,
            fps=spec.fps,
            worker_id=worker_id,
            policy=policy,
            **options,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start decoding and publishing in the background. Safe to call twice."""
        if self._thread is not None:
            return
        limit = self._nc.max_payload
        size = self._scaler.frame_size + 256  # 256: room for the frame header
        if limit and size > limit:
            raise ConfigError(
                f"tile {self.width}x{self.height} makes {size}-byte frames, over the NATS "
                f"max_payload of {limit} bytes: use smaller tiles or raise max_payload "
                "(TESSERA_NATS_MAX_PAYLOAD)"
            )
        if self.frame_slot is not None:
            self._slot = SlotWriter(self.frame_slot, self.width, self.height)
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopping.clear()
        self._done = loop.create_future()
        self._publisher = asyncio.create_task(
            self._publish_loop(), name=f"grabber publish {self.source_id}"
        )
        self._thread = threading.Thread(
            target=self._run, name=f"grabber-{self.source_id}", daemon=True
        )
        self.state = GrabberState.CONNECTING
        self._thread.start()
        self._watchdog = asyncio.create_task(
            self._watch_thread(), name=f"grabber watchdog {self.source_id}"
        )
        await self._heartbeater.start()
        log.info(
            "grabber started",
            extra={"source": self.source_id, "url": redact(self.url), "worker": self.worker_id},
        )

    async def stop(self) -> None:
        """Stop the thread, the publisher and the heartbeat; send a last "stopped" beat.

        Safe to call twice. Returns once the decode thread has ended (within about
        ``max(open_timeout, read_timeout)``).
        """
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        done = self._done
        assert done is not None
        deadline = max(self.open_timeout, self.read_timeout) + 5.0
        try:
            await asyncio.wait_for(asyncio.shield(done), deadline)
        except TimeoutError:
            log.warning(
                "grabber thread still busy after stop; it ends at its next timeout",
                extra={"source": self.source_id, "waited": deadline},
            )
        else:
            thread.join()  # it has returned from its work: only its exit remains
            if self._release is not None:
                self._release.join()  # it sees the same stop flag
                self._release = None
        publisher, self._publisher = self._publisher, None
        await cancel_and_wait(publisher)
        watchdog, self._watchdog = self._watchdog, None
        await cancel_and_wait(watchdog)
        slot, self._slot = self._slot, None
        if slot is not None and not thread.is_alive():
            slot.close()  # (a thread still busy keeps it: it may write once more)
        self.state = GrabberState.STOPPED
        self.connected = False
        await self._heartbeater.stop(last=self._beat())
        log.info("grabber stopped", extra={"source": self.source_id})

    async def __aenter__(self) -> Grabber:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- status ---------------------------------------------------------------------------------

    @property
    def status(self) -> GrabberState:
        """The grabber's state now."""
        return self.state

    def stats(self) -> GrabberStats:
        """What the grabber reports in its heartbeat (rates over the last ~heartbeat)."""
        now = time.monotonic()
        t0, decoded0, published0 = self._rate_mark
        # Frames out: on NATS, or (a seed on NATS aside) in the shared-memory slot.
        published = self.slot_written or self.published
        if now - t0 >= 0.5:
            self._rates = (
                (self.decoded - decoded0) / (now - t0),
                (published - published0) / (now - t0),
            )
            self._rate_mark = (now, self.decoded, published)
        return GrabberStats(
            fps_in=round(self._rates[0], 2),
            fps_out=round(self._rates[1], 2),
            frames=published,
            reconnects=self.reconnects,
            decode_errors=self.decode_errors,
            dropped=self.dropped,
            last_error=self.last_error or self._publish_error,
            connected=self.connected,
            loops=self.loops,
            state=self.state.value,
        )

    def _beat(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            at=time.time(),
            worker_id=self.worker_id,
            kind="grabber",
            target=self.source_id,
            instance_id=self.instance_id,
            ready=self.connected,
            stats=self.stats(),
        )

    # -- the loop side --------------------------------------------------------------------------

    def _to_loop(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the event loop (from the decode thread)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody listens
            loop.call_soon_threadsafe(callback, *args)

    def _offer(self, payload: bytes) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(payload)

    async def _publish_loop(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._nc.publish(self._subject, payload)
            except nats.errors.Error as exc:
                # Not connected to NATS, or over its limits: this frame is lost, the next one
                # may go through. Logged once per different reason.
                self.dropped += 1
                reason = f"publish failed: {exc}"
                if reason != self._publish_error:
                    log.warning(reason, extra={"source": self.source_id})
                    self._publish_error = reason
            else:
                self.published += 1
                self._publish_error = ""

    async def _watch_thread(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            since = self._busy_since
            if since is None or time.monotonic() - since < self.stuck_after:
                continue
            log.error(
                "decode thread stuck: no progress for %.0f s",
                time.monotonic() - since,
                extra={"source": self.source_id, "url": redact(self.url)},
            )
            if self.on_stuck is not None:
                self.on_stuck(f"decode thread stuck for {self.stuck_after:g} s")
            self._busy_since = None  # said once per hang

    def _thread_done(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # -- the decode thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._work()
        finally:
            self._to_loop(self._thread_done)

    def _attempt(self, *, looping: bool = False) -> _Result:
        """One connection, whatever goes wrong in it."""
        try:
            return self._connect_once(looping=looping)
        except Exception as exc:  # noqa: BLE001 - a surprise (a bug, an odd stream): say it, retry
            log.exception("grabber failed unexpectedly", extra={"source": self.source_id})
            return _Result(_End.FAILED, f"{redact(self.url)}: internal error: {exc!r}")

    def _work(self) -> None:
        first = True
        while not self._stopping.is_set():
            if not first:
                self.reconnects += 1
            first = False
            self.state = GrabberState.CONNECTING
            self._busy_since = time.monotonic()
            result = self._attempt()
            while result.end is _End.FILE_END and result.frames and not self._stopping.is_set():
                # A finite source ended: play it again at once, but never reopen it more than
                # once a second (a file of one frame would otherwise be hammered).
                self.loops += 1
                self._busy_since = None
                if self._stopping.wait(max(0.0, MIN_LOOP_PERIOD - result.lasted)):
                    return
                self._busy_since = time.monotonic()
                result = self._attempt(looping=True)
            if self._stopping.is_set() or result.end is _End.STOPPED:
                return
            if result.end is _End.FILE_END:
                result.reason = f"{redact(self.url)}: no video frames"
            if result.healthy_for >= self.healthy_after:
                self._backoff.reset()
            # A refusal does not change by retrying soon: wait the longest.
            delay = self._backoff.maximum if result.refused else self._backoff.next()
            self.state = GrabberState.WAITING
            self._set_failed(result.reason)
            log.debug(
                "reconnecting later",
                extra={"source": self.source_id, "in_s": round(delay, 2), "why": result.reason},
            )
            self._busy_since = None
            if self._stopping.wait(delay):
                return

    def _set_connected(self) -> None:
        self.state = GrabberState.CONNECTED
        if not self.connected:
            self.connected = True
            log.info("source connected", extra={"source": self.source_id})
            self._to_loop(self._heartbeater.poke)

    def _set_failed(self, reason: str) -> None:
        changed = self.connected or reason != self.last_error
        self.connected = False
        if changed:
            log.warning("source failed: %s", reason, extra={"source": self.source_id})
            self.last_error = reason
            self._to_loop(self._heartbeater.poke)
        else:
            log.debug("source still failing: %s", reason, extra={"source": self.source_id})

    def _connect_once(self, *, looping: bool = False) -> _Result:
        try:
            container = open_input(
                self.url,
                self.policy,
                open_timeout=self.open_timeout,
                read_timeout=self.read_timeout,
                cancelled=self._stopping.is_set,
            )
        except SourceRefused as exc:
            return _Result(_End.FAILED, str(exc), refused=True)
        except SourceError as exc:
            return _Result(_End.FAILED, str(exc))
        with container:
            result = self._pump(container, looping=looping)
        if result.end is not _End.FILE_END and self._release is not None:
            self._release.drain()  # a lost connection's early frames: not shown late
        return result

    def _pump(self, container: av.container.InputContainer, *, looping: bool) -> _Result:
        stream = container.streams.video[0]
        ctx = stream.codec_context  # its size was checked by open_input
        ctx.thread_count = 1
        ctx.options = dict(DECODER_OPTIONS)
        live = self._scheme in LIVE_SCHEMES
        finite = not live and bool(container.duration and container.duration > 0)
        session = _Session(
            self, ctx, pace=not live, looping=looping, stale=None if finite else self._stale
        )
        # A generator: closed below, before the container, whichever way the loop ends.
        packets = cast("Generator[av.Packet[Any], None, None]", container.demux(stream))
        try:
            errors_in_row = 0
            for packet in packets:
                self._busy_since = time.monotonic()
                if self._stopping.is_set():
                    return session.result(_End.STOPPED)
                try:
                    frames = ctx.decode(packet)
                except av.FFmpegError as exc:
                    self.decode_errors += 1
                    errors_in_row += 1
                    if errors_in_row >= MAX_DECODE_ERRORS:
                        reason = f"{errors_in_row} decode errors in a row ({describe(exc)})"
                        return session.result(_End.FAILED, f"{redact(self.url)}: {reason}")
                    continue
                errors_in_row = 0
                for frame in frames:
                    if not session.handle(frame):
                        return session.result(_End.STOPPED)
        except av.FFmpegError as exc:
            reason = describe(exc, timeout=f"no data for {self.read_timeout:g} s")
            return session.result(_End.FAILED, f"{redact(self.url)}: read: {reason}")
        except SourceError as exc:
            # From our HTTP layer (a refused redirect or playlist entry, a stalled body).
            if self._stopping.is_set():
                return session.result(_End.STOPPED)
            return session.result(_End.FAILED, str(exc))
        finally:
            packets.close()
        if finite:
            return session.result(_End.FILE_END)
        # FFmpeg's HLS reader turns "no new segment within the read timeout" (a frozen
        # playlist) into an end of stream too.
        reason = f"the stream ended or stopped advancing for {self.read_timeout:g} s"
        return session.result(_End.FAILED, f"{redact(self.url)}: {reason}")

    def _releaser(self) -> _Releaser:
        """The thread that hands paced frames on at their time (made on first use)."""
        if self._release is None:
            self._release = _Releaser(
                self._emit, self._stopping, self._scaler.frame_size, f"release-{self.source_id}"
            )
        return self._release

    def _emit(self, header: FrameHeader, pixels: bytes | bytearray | memoryview) -> None:
        """Hand one frame on (decode thread): into the slot at once, and to NATS (all of them,
        or with a slot one seed per :data:`SEED_INTERVAL`) through the event loop."""
        self.packed += 1
        slot = self._slot
        if slot is not None:
            slot.write(header.seq, header.pts, header.wall, pixels)
            self.slot_written += 1
            if header.wall - self._last_seed < SEED_INTERVAL:
                return
            self._last_seed = header.wall
        self._to_loop(self._offer, pack_frame(header, pixels))


class _Releaser:
    """Hands paced frames on at their due time, from a thread of its own.

    The decode thread puts ``(due, header, pixels)`` (copied into a buffer of the releaser's
    own) and may run up to :data:`AHEAD` frames ahead; the releaser thread sleeps until each
    frame is due and emits it. Frames keep their order and their times; only the decoding
    moves earlier. ``drain()`` drops what is queued (a new connection, a stop)."""

    def __init__(
        self,
        emit: Callable[[FrameHeader, bytes | bytearray | memoryview], None],
        stopping: threading.Event,
        frame_size: int,
        name: str,
    ) -> None:
        self._emit = emit
        self._stopping = stopping
        self._queue: queue.Queue[tuple[float, FrameHeader, bytearray]] = queue.Queue(AHEAD)
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(AHEAD + 2):  # queued, one being emitted, one being filled
            self._free.put(bytearray(frame_size))
        self._generation = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, due: float, header: FrameHeader, pixels: bytes | memoryview) -> None:
        """Queue a frame (decode thread); waits while :data:`AHEAD` are queued."""
        buf: bytearray | None = None
        while buf is None:
            if self._stopping.is_set():
                return
            try:
                buf = self._free.get(timeout=0.2)
            except queue.Empty:
                continue
        buf[:] = pixels
        while True:
            if self._stopping.is_set():
                self._free.put(buf)
                return
            try:
                self._queue.put((due, header, buf), timeout=0.2)
                break
            except queue.Full:
                continue
        if self._queue.qsize() >= AHEAD:
            # Full: sleep until about half is out, then decode the next burst.
            half = (AHEAD // 2) / 25.0
            self._stopping.wait(max(0.0, due - time.monotonic() - half))

    def drain(self) -> None:
        """Drop the frames not yet due (decode thread)."""
        while True:
            try:
                _, _, buf = self._queue.get_nowait()
            except queue.Empty:
                return
            self._free.put(buf)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                due, header, buf = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            wait = due - time.monotonic()
            if wait <= 0 or not self._stopping.wait(wait):
                self._emit(header, buf)
            self._free.put(buf)

    def join(self) -> None:
        """Wait for the thread (after ``stopping`` is set)."""
        self._thread.join()


class _Session:
    """One connection's frame handling: cap, pace, scale, pack. Runs in the decode thread."""

    def __init__(
        self,
        grabber: Grabber,
        ctx: VideoCodecContext,
        *,
        pace: bool,
        looping: bool,
        stale: StaleGuard | None = None,
    ) -> None:
        self.g = grabber
        self.stale = stale
        self.ctx = ctx
        self.pace = pace
        self.cap = FpsCap(grabber.fps)
        # A file that loops keeps its pacing: the next pass starts one frame after the last.
        carried, grabber._carry = grabber._carry, None
        self._continue = carried if looping else None
        self.clock = self._continue.clock if self._continue else PtsClock()
        self.opened = time.monotonic()
        self.first_ok: float | None = None
        self.frames = 0
        self.last_t = 0.0
        self.last_due = self.opened
        self.step = 1.0 / 25

    def handle(self, frame: av.VideoFrame) -> bool:
        """Process one decoded frame; False when the grabber is stopping."""
        g = self.g
        g.decoded += 1
        wall = time.time()
        now = time.monotonic()
        t = frame.time if frame.time is not None else now - self.opened
        if self.stale is not None and frame.time is not None and not self.stale.fresh(t):
            g.stale += 1  # a repeat of what was shown before the reconnect
            return True
        if self.frames and t > self.last_t:
            self.step = min(1.0, t - self.last_t)
        if not self.cap.keep(t):
            self.last_t = t
            return True
        if self.first_ok is None:
            self.first_ok = now
            g._set_connected()
        # Scale now, while the decoded picture is still in the CPU's caches, not after the
        # pacing wait (measured: 0.43 ms a frame after the wait; see bench case 1).
        pixels = g._scaler.scale(frame, self.ctx.sample_aspect_ratio)
        if self.pace:
            if self._continue is not None:
                self.clock.anchor(t, self._continue.last_due + self._continue.step)
                self._continue = None
            due = self.clock.due(t, now)
            self.last_due = due
        self.frames += 1
        self.last_t = t
        g.handed += 1
        header = FrameHeader(
            source_id=g.source_id,
            seq=g.handed - 1,
            pts=float(t),
            wall=wall,
            width=g.width,
            height=g.height,
        )
        if self.pace:
            g._releaser().put(due, header, pixels)
            g._busy_since = time.monotonic()  # a wait for a frame's time is on purpose
            return not g._stopping.is_set()
        g._emit(header, pixels)
        return True

    def result(self, end: _End, reason: str = "") -> _Result:
        now = time.monotonic()
        healthy = 0.0 if self.first_ok is None else now - self.first_ok
        if end is _End.FILE_END and self.pace:
            self.g._carry = _Carry(self.clock, self.last_due, self.step)
        return _Result(
            end, reason, frames=self.frames, healthy_for=healthy, lasted=now - self.opened
        )
