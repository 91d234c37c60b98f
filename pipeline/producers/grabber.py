"""The grabber: one live source, decoded, fitted to its tiles and published as frames.

There is one grabber per source URL, however many mosaics show it and at whatever tile sizes:
it decodes the source once and makes a tile of each size the mosaics want (each size has its
source id, :func:`pipeline.state.mosaic.source_id`, its subject and its shared-memory slot, so
a stitcher reads the size it shows and nothing else). It publishes packed yuv420p
tiles (:mod:`pipeline.messages.frames`), or their JPEG (``frame_encoding="jpeg"``, for
stitchers on other machines: a tenth of the bytes, :mod:`pipeline.frames.tilecodec`, encoded in
the thread that hands the frame on, each size its own), with core NATS on
``frames.<source_id>``; the
``FRAMES`` stream keeps the newest few, so a stitcher that starts later still gets a picture at
once. Waiting for a JetStream ack per frame would only add latency to the hot path.

Moving parts:

- the **decode thread** (:class:`~pipeline.producers.decode.DecodeThread`,
  ``grabber-<source_id>``) opens the source, decodes, caps, paces, scales and hands frames on,
  reconnecting forever; for a paced source its **release thread**
  (:class:`~pipeline.producers.release.Releaser`, ``release-<source_id>``) hands each frame on
  when it is due. A frame handed on goes into the shared-memory slot when there is one (see
  :mod:`pipeline.frames.slot`), and to NATS through the event loop (``loop.call_soon_threadsafe``).
- a **publisher task** takes packed frames from a queue of 2 per tile size; when the queue is
  full the oldest frame is dropped and counted (a live mosaic wants the newest frame, not all
  of them).
- a source with audio has it metered in the decode thread (see
  :mod:`pipeline.producers.levels`); each reading, ten a second, waits in a deque of
  :data:`LEVELS_QUEUE_SIZE` (oldest dropped) for the alarm watch's next tick (every 0.2 s),
  which publishes what waits, combined into one
  :class:`~pipeline.messages.levels.SourceLevels`, with core NATS on
  ``levels.<source_id>`` of each tile size (not stored in a stream: the newest reading is what
  matters; a stitcher reads the subjects of the sizes it shows). One
  wake-up of the loop serves the watch and the readings, and they leave in one write: a queue
  and a task of their own cost a grabber more than the watch (measured, bench case 10).
- the source's audio, decoded, goes out as s16 chunks (:mod:`pipeline.messages.audio`) with core
  NATS on ``audio.<source_id>`` for a stitcher that plays it, through a queue of
  :data:`AUDIO_QUEUE_SIZE` (oldest dropped when full) — only while one says it does (on
  ``ctl.audio.<source_id>``, within :data:`AUDIO_WANTED_FOR` s), and only to the sizes asked
  for: 47 chunks a second that nobody plays would cost every source CPU and the bus bandwidth
  for one tile's sound.
- **alarms**: every picture kept (at the first, largest, tile size: once per frame, not
  per size) is measured for black and freeze in the decode thread: the samples the probe reads
  are taken right after scaling, while the pixels are in the caches, and measured in runs
  (:class:`~pipeline.monitoring.watch.PictureProbe`, about 15 us a tile; the watch takes it
  when it is handed on), every
  reading for silence and loudness, and the
  :class:`~pipeline.producers.alarming.AlarmReporter` raises and clears the source's alarms as
  events on ``events.source.<key>`` (once per source: one grabber per URL), checking for lost
  pictures and audio on a tick of its own.
- a **watchdog task** reports a decode thread that stopped making progress (``on_stuck``).
- a :class:`~pipeline.nats.heartbeat.Heartbeater` on ``hb.worker.<worker_id>`` with
  :class:`~pipeline.messages.heartbeats.GrabberStats` (the target is the source key, the stats
  name the sizes); a state change beats at once.

Stopping: the decode thread ends at its next check of the stop flag, and every blocking FFmpeg
call is bounded by a timeout (see :mod:`pipeline.producers.decode`). ``stop()`` therefore
returns within about ``max(open_timeout, read_timeout)``, plus a DNS lookup at worst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from pipeline.errors import ConfigError, MessageError
from pipeline.frames import tilecodec
from pipeline.frames.slot import SlotWriter
from pipeline.messages.audio import AudioHeader, pack_audio
from pipeline.messages.codec import decode_worker_command, encode
from pipeline.messages.control import CommandReply
from pipeline.messages.frames import FrameHeader, pack_frame
from pipeline.messages.heartbeats import GrabberStats, WorkerHeartbeat
from pipeline.messages.levels import SourceLevels, encode_levels
from pipeline.messages.workers import GrabberSpec
from pipeline.monitoring.watch import absence_gap
from pipeline.nats import subjects
from pipeline.nats.heartbeat import Heartbeater
from pipeline.producers.alarming import AlarmReporter
from pipeline.producers.decode import DecodeThread, GrabberState
from pipeline.producers.levels import Reading, combine
from pipeline.producers.pcm import Pcm
from pipeline.producers.release import Pixels
from pipeline.runtime.tasks import Tasks, cancel_and_wait
from pipeline.sources.policy import SourcePolicy, redact
from pipeline.state.mosaic import key_of_source

log = logging.getLogger("tessera.grabber")

QUEUE_SIZE = 2
"""Packed frames per tile size waiting for the publisher: the newest, and the one being
replaced."""
LEVELS_QUEUE_SIZE = 10
"""Audio readings waiting for the levels publisher: a second of them (NATS being slow)."""
AUDIO_WANTED_FOR = 3.0
"""Seconds the grabber keeps sending audio after the last ``ctl.audio`` request (stitchers ask
about once a second)."""
AUDIO_QUEUE_SIZE = 25
"""Audio chunks waiting for the publisher: about half a second (NATS being slow)."""
SEED_INTERVAL = 1.0
"""With a shared-memory slot, seconds between the frames still sent on NATS (``FRAMES`` keeps a
picture for a stitcher elsewhere or a late one)."""


@dataclass(frozen=True)
class TileOut:
    """One more tile size a grabber makes of its source: published on ``frames.<source_id>``
    (and ``levels.``, ``audio.``), and written to ``slot`` when there is one."""

    source_id: str
    width: int
    height: int
    slot: Path | None = None
    """Where its frames also go in shared memory (:mod:`pipeline.frames.slot`); NATS then only
    carries a seed frame per :data:`SEED_INTERVAL`. None: every frame on NATS."""


class _Out:
    """What the grabber keeps per tile size: its subjects, slot and audio listeners."""

    def __init__(self, nc: Client, tile: TileOut) -> None:
        self.tile = tile
        self.frames = subjects.frames(tile.source_id)
        self.levels = subjects.levels(tile.source_id)
        self.wanted = subjects.audio_wanted(tile.source_id)
        self.audio = _SideChannel(nc, subjects.audio(tile.source_id), AUDIO_QUEUE_SIZE)
        """Decoded audio to ``audio.<source_id>``."""
        self.wanted_until = 0.0
        """Until when (monotonic) a stitcher of this size wants the decoded audio."""
        self.slot: SlotWriter | None = None
        self.last_seed = 0.0
        self.sender: asyncio.Task[None] | None = None
        """The task publishing :attr:`audio`."""
        self.want: Any = None
        """The subscription to :attr:`wanted`."""


class Grabber:
    """Grabs one source into ``frames.<source_id>`` of each tile size. ``await start()``,
    ``await stop()``."""

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
        monitoring: bool = True,
        frame_encoding: Literal["raw", "jpeg"] = "raw",
        jpeg_quality: int = tilecodec.QUALITY,
        also: Sequence[TileOut] = (),
        key: str = "",
    ) -> None:
        """``source_id``, ``width``, ``height`` and ``frame_slot``: the first tile size (the
        largest); ``also``: more sizes of the same source. ``key``: the source key, what the
        grabber works on (its heartbeat's target, its alarms'); "" means the key
        ``source_id`` starts with. ``monitoring``: decode the source's audio (levels, chunks
        for mosaic audio) and raise alarms; without it the grabber only makes frames
        (``TESSERA_MONITORING``). ``frame_encoding``: what the frames on NATS carry, the
        planes or their JPEG at ``jpeg_quality`` (``TESSERA_FRAME_ENCODING``; the
        shared-memory slot is always raw)."""
        subjects.token(source_id)
        subjects.token(worker_id)
        for more in also:
            subjects.token(more.source_id)
        if not fps > 0:
            raise ValueError(f"fps must be greater than 0, not {fps}")
        if open_timeout <= 0 or read_timeout <= 0:
            raise ValueError("open_timeout and read_timeout must be greater than 0")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1 to 100, not {jpeg_quality}")
        self._nc = nc
        self.key = key or key_of_source(source_id)
        subjects.token(self.key)
        self.url = url
        first = TileOut(source_id, width, height, frame_slot)
        self._outs = [_Out(nc, tile) for tile in (first, *also)]
        """Every tile size made, the first (largest) first: the tiles' subjects and slots."""
        self._by_source = {out.tile.source_id: out for out in self._outs}
        """The same by source id (what the decode and release threads look a frame's up in)."""
        self.fps = fps
        self.worker_id = worker_id
        self.instance_id = instance_id
        self.policy = policy
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.healthy_after = healthy_after
        self.alarms = AlarmReporter(
            js=nc.jetstream(),
            key=self.key,
            url=redact(url),
            fps=fps,
            worker_id=worker_id,
            has_audio=lambda: self.decoder.has_audio,
            on_tick=self._send_levels,
        )
        """The source's alarms (raised and cleared as events)."""
        self.decoder = DecodeThread(
            source_id=source_id,
            url=url,
            width=width,
            height=height,
            fps=fps,
            policy=policy,
            open_timeout=open_timeout,
            read_timeout=read_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            healthy_after=healthy_after,
            emit=self._emit,
            changed=lambda: self._to_loop(self._heartbeater.poke),
            ended=lambda: self._to_loop(self._thread_done),
            levels=self._emit_levels if monitoring else None,
            audio=self._emit_audio if monitoring else None,
            pictures=self.alarms if monitoring else None,
            also=[(t.source_id, t.width, t.height) for t in also],
        )
        """The decode thread; its counters (``reconnects``, ``loops``, ``stale``, ...) are the
        grabber's."""
        self._levels_pending: deque[tuple[Reading, int, float]] = deque(maxlen=LEVELS_QUEUE_SIZE)
        """(reading, its number, wall time) waiting for the tick (any thread appends, the loop
        takes)."""
        self._slots: Callable[[str], Path | None] = lambda _: None
        """The shared-memory slot of a new tile size's source id (:meth:`from_spec`)."""
        self._retired: list[_Out] = []
        """Tile sizes no longer made whose slots wait for :meth:`retile`'s next call or the
        stop: the decode and release threads may still hand on a frame of theirs."""
        self._control: Any = None
        """The subscription to ``ctl.worker.<worker_id>`` (:meth:`retile`)."""
        self.retiles = 0
        """Times the tile sizes or fps changed while running."""
        self.monitoring = monitoring
        self.frame_encoding = frame_encoding
        self.jpeg_quality = jpeg_quality
        self.on_stuck = on_stuck
        """Called (on the event loop) when the decode thread made no progress for
        :attr:`stuck_after` s: every FFmpeg call and read has a timeout, so that is a hang
        nothing else will end. The worker process exits there (its provider restarts it)."""
        self.stuck_after = max(open_timeout, read_timeout) * 2 + 10.0
        self._heartbeater = Heartbeater(
            nc, subjects.worker_heartbeat(worker_id), self._beat, interval=heartbeat_interval
        )
        self._running = False
        self._done: asyncio.Future[None] | None = None
        """Resolved when the decode thread's work has returned (what ``stop()`` waits for)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[_Out, bytes]] = asyncio.Queue()
        """Bounded by :meth:`_offer`: :data:`QUEUE_SIZE` a tile size."""
        self.levels_sent = 0
        self.levels_dropped = 0
        """Readings not sent: the deque was full (the loop stalled) or NATS refused them."""
        self._tasks = Tasks(f"grabber {self.key}")
        # Written by the one thread that hands frames on (decode, or release when paced).
        self.packed = 0
        """Frames handed on (counted at the first size)."""
        self.slot_written = 0
        """Frames written to the first size's slot."""
        # Written by the loop only.
        self.published = 0
        """Frames of the first size published on NATS (every size is handed on alike)."""
        self.published_bytes = 0
        """Bytes of frame messages published, every size (what the frames cost the network)."""
        self.dropped = 0
        self._publish_error = ""
        self._rate_mark = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)

    @classmethod
    def from_spec(
        cls, spec: GrabberSpec, *, nc: Client, worker_id: str, policy: SourcePolicy, **options: Any
    ) -> Grabber:
        """The grabber a worker spec describes; ``options`` are the constructor's other keyword
        arguments (timing, watchdog), and ``frame_slots``: the shared-memory slot of a source
        id, None for none (by default none; asked again for the sizes :meth:`retile` adds)."""
        if not spec.sizes:
            raise ConfigError(f"grabber {spec.key} has no tile size: give at least one")
        slots: Callable[[str], Path | None] = options.pop("frame_slots", lambda _: None)
        (width, height), *more = spec.sizes
        first, *others = spec.source_ids
        also = [TileOut(sid, w, h, slots(sid)) for sid, (w, h) in zip(others, more, strict=True)]
        grabber = cls(
            nc=nc,
            source_id=first,
            url=spec.url,
            width=width,
            height=height,
            fps=spec.fps,
            worker_id=worker_id,
            policy=policy,
            frame_slot=slots(first),
            also=also,
            key=spec.key,
            **options,
        )
        grabber._slots = slots
        return grabber

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start decoding and publishing in the background. Safe to call twice."""
        if self._running:
            return
        self._check_payload(self.tiles)
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = loop.create_future()
        self._tasks.spawn(self._publish_loop(), name="publish")
        if self.monitoring:
            await self.alarms.start()
        for out in self._outs:
            await self._open(out)
        self._control = await self._nc.subscribe(
            subjects.worker_control(self.worker_id), cb=self._on_control
        )
        self._running = True
        self.decoder.start()
        self._tasks.spawn(self._watch_thread(), name="watchdog")
        await self._heartbeater.start()
        log.info(
            "grabber started",
            extra={
                "source": self.key,
                "url": redact(self.url),
                "worker": self.worker_id,
                "sizes": self.sizes,
            },
        )

    async def stop(self) -> None:
        """Stop the threads, the tasks and the heartbeat; send a last "stopped" beat.

        Safe to call twice. Returns once the decode thread has ended (within about
        ``max(open_timeout, read_timeout)``).
        """
        if not self._running:
            return
        self._running = False
        self.decoder.stop()
        done = self._done
        assert done is not None
        deadline = max(self.open_timeout, self.read_timeout) + 5.0
        try:
            await asyncio.wait_for(asyncio.shield(done), deadline)
        except TimeoutError:
            log.warning(
                "grabber thread still busy after stop; it ends at its next timeout",
                extra={"source": self.key, "waited": deadline},
            )
        else:
            self.decoder.join()  # it has returned from its work: only its exit remains
        await self.alarms.stop()
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(nats.errors.Error):
                await control.unsubscribe()
        for out in (*self._outs, *self._retired):
            await self._close(out, slot=not self.decoder.alive)
        self._retired.clear()
        await self._tasks.close()
        self.decoder.stopped()
        await self._heartbeater.stop(last=self._beat())
        log.info("grabber stopped", extra={"source": self.key})

    def _check_payload(self, tiles: Sequence[TileOut]) -> None:
        """``ConfigError`` when the largest of ``tiles`` makes frames NATS does not take."""
        limit = self._nc.max_payload
        big = max(tiles, key=lambda t: t.width * t.height)
        size = big.width * big.height * 3 // 2 + 256  # yuv420p, and room for the header
        if limit and size > limit:
            raise ConfigError(
                f"tile {big.width}x{big.height} makes {size}-byte frames, over the NATS "
                f"max_payload of {limit} bytes: use smaller tiles or raise max_payload "
                "(TESSERA_NATS_MAX_PAYLOAD)"
            )

    # -- tile sizes -----------------------------------------------------------------------------

    async def retile(self, spec: GrabberSpec) -> None:
        """Make ``spec``'s tile sizes at its fps from now on, in this process and, where the
        source allows, on the same connection (:meth:`DecodeThread.retile
        <pipeline.producers.decode.DecodeThread.retile>`): a size that stays keeps its
        subject, slot and listeners, a new one gets them (its slot as :meth:`from_spec` was
        told), a size that goes stops at once (its slot file is closed and removed at the next
        change or the stop: a frame of it may still be on its way). ``ConfigError`` when
        ``spec`` is another source's or its tiles cannot be made; the grabber then goes on as
        it was (so it does on any other error, which is raised)."""
        if not self._running:
            raise ConfigError(f"grabber {self.key} is not running")
        if (spec.key, spec.url) != (self.key, self.url):
            raise ConfigError(
                f"grabber {self.key} pulls {redact(self.url)}, not {redact(spec.url)}: "
                "start a grabber of its own"
            )
        if not spec.sizes:
            raise ConfigError(f"grabber {spec.key} has no tile size: give at least one")
        if not spec.fps > 0:
            raise ConfigError(f"fps must be greater than 0, not {spec.fps}")
        # A size given back that went at the last change is taken up again, slot and all.
        known = {out.tile.source_id: out for out in (*self._retired, *self._outs)}
        tiles = [
            known[sid].tile if sid in known else TileOut(sid, w, h, self._slots(sid))
            for sid, (w, h) in zip(spec.source_ids, spec.sizes, strict=True)
        ]
        self._check_payload(tiles)
        outs = [known.get(t.source_id) or _Out(self._nc, t) for t in tiles]
        new = [out for out in outs if out.sender is None]
        # The new sizes' outputs first, the decode thread last: whatever fails before leaves
        # the grabber as it was.
        try:
            for out in new:
                await self._open(out)
            self.decoder.retile([(t.source_id, t.width, t.height) for t in tiles], spec.fps)
        except BaseException as exc:
            for out in new:
                await self._close(out, slot=True)
            if isinstance(exc, ValueError):
                raise ConfigError(f"grabber {self.key}: {exc}") from exc
            raise
        kept = {out.tile.source_id for out in outs}
        for out in self._retired:
            if out.tile.source_id not in kept:
                await self._close(out, slot=True)  # gone a change ago: no frame of it is left
        self._retired = [out for out in self._outs if out.tile.source_id not in kept]
        for out in self._retired:
            await self._close(out, slot=False)
        # New lists, not changed ones: the decode and release threads read them meanwhile.
        self._by_source = {out.tile.source_id: out for out in outs}
        self._outs = outs
        self.fps = spec.fps
        self.alarms.watch.gap = absence_gap(spec.fps)
        self.retiles += 1
        log.info(
            "grabber retiled",
            extra={"source": self.key, "sizes": self.sizes, "fps": spec.fps},
        )
        self._heartbeater.poke()

    async def _open(self, out: _Out) -> None:
        """Start one tile size's slot, audio sender and audio-wanted subscription."""
        tile = out.tile
        if tile.slot is not None and out.slot is None:
            out.slot = SlotWriter(tile.slot, tile.width, tile.height)
        out.sender = self._tasks.spawn(out.audio.run(), name=f"audio {tile.source_id}")
        if self.monitoring:
            out.want = await self._nc.subscribe(out.wanted, cb=self._audio_wanted)

    async def _close(self, out: _Out, *, slot: bool) -> None:
        """Stop one tile size's subscription and sender; close its slot (and remove its file)
        too when ``slot``, else keep it for a later call with ``slot``: a thread still busy
        may write it once more."""
        want, out.want = out.want, None
        if want is not None:
            with contextlib.suppress(nats.errors.Error):
                await want.unsubscribe()
        sender, out.sender = out.sender, None
        await cancel_and_wait(sender)
        if slot:
            writer, out.slot = out.slot, None
            if writer is not None:
                writer.close()

    async def _on_control(self, msg: Msg) -> None:
        """``ctl.worker.<worker_id>``: a :class:`~pipeline.messages.control.Retile`, answered
        with a :class:`~pipeline.messages.control.CommandReply`."""
        try:
            command = decode_worker_command(msg.data, msg.subject)
            if not isinstance(command.spec, GrabberSpec):
                raise ConfigError(f"a grabber cannot become a {command.spec.kind} worker")
            await self.retile(command.spec)
        except (MessageError, ConfigError) as exc:
            reply = CommandReply(ok=False, error=str(exc))
            log.warning("retile refused: %s", exc, extra={"source": self.key})
        except Exception as exc:  # noqa: BLE001 - a slot or NATS failed: unchanged, say so
            reply = CommandReply(ok=False, error=f"grabber {self.key}: retile failed: {exc}")
            log.exception("retile failed", extra={"source": self.key})
        else:
            reply = CommandReply(ok=True)
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(encode(reply))

    async def __aenter__(self) -> Grabber:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- status ---------------------------------------------------------------------------------

    @property
    def tiles(self) -> tuple[TileOut, ...]:
        """Every tile size made, the first (largest) first."""
        return tuple(out.tile for out in self._outs)

    @property
    def source_id(self) -> str:
        """The first (largest) tile size's source id."""
        return self._outs[0].tile.source_id

    @property
    def sizes(self) -> tuple[str, ...]:
        """The tile sizes made, ``WxH``, the first first."""
        return tuple(f"{t.width}x{t.height}" for t in self.tiles)

    @property
    def status(self) -> GrabberState:
        """The grabber's state now."""
        return self.decoder.state

    def stats(self) -> GrabberStats:
        """What the grabber reports in its heartbeat (rates over the last ~heartbeat)."""
        d = self.decoder
        now = time.monotonic()
        t0, decoded0, published0 = self._rate_mark
        # Frames out: on NATS, or (a seed on NATS aside) in the shared-memory slot.
        published = self.slot_written or self.published
        if now - t0 >= 0.5:
            self._rates = (
                (d.decoded - decoded0) / (now - t0),
                (published - published0) / (now - t0),
            )
            self._rate_mark = (now, d.decoded, published)
        return GrabberStats(
            fps_in=round(self._rates[0], 2),
            fps_out=round(self._rates[1], 2),
            frames=published,
            reconnects=d.reconnects,
            decode_errors=d.decode_errors,
            dropped=self.dropped,
            last_error=d.last_error or self._publish_error,
            connected=d.connected,
            loops=d.loops,
            state=d.state.value,
            has_audio=d.has_audio,
            audio_readings=d.audio_readings,
            audio_errors=d.audio_errors,
            alarms=tuple(sorted(k.value for k in self.alarms.watch.active)),
            alarms_raised=self.alarms.raised,
            rendition=d.rendition,
            reduced=d.reduced,
            sizes=self.sizes,
        )

    def _beat(self) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            at=time.time(),
            worker_id=self.worker_id,
            kind="grabber",
            target=self.key,
            instance_id=self.instance_id,
            ready=self.decoder.connected,
            stats=self.stats(),
        )

    # -- frames handed on -----------------------------------------------------------------------

    def _emit(self, header: FrameHeader, pixels: Pixels) -> None:
        """Hand one frame on at one tile size (decode or release thread): into its slot at
        once, and to NATS (all of them, or with a slot one seed per :data:`SEED_INTERVAL`)
        through the loop."""
        out = self._by_source.get(header.source_id)
        if out is None:
            return  # a size no longer made (retile), queued before it changed
        first = out is self._outs[0]
        if first:
            self.packed += 1
        slot = out.slot
        if slot is not None:
            slot.write(header.seq, header.pts, header.wall, pixels)
            if first:
                self.slot_written += 1
            if header.wall - out.last_seed < SEED_INTERVAL:
                return
            out.last_seed = header.wall
        self._to_loop(self._offer, out, self._pack(header, pixels))

    def _pack(self, header: FrameHeader, pixels: Pixels) -> bytes:
        """The frame message (decode or release thread): the planes, or their JPEG. A JPEG
        that would be larger than the planes (noise at a high quality) is not sent."""
        if self.frame_encoding == "jpeg":
            data = tilecodec.encode(pixels, header.width, header.height, self.jpeg_quality)
            if len(data) < len(pixels):
                return pack_frame(msgspec.structs.replace(header, encoding="jpeg"), data)
        return pack_frame(header, pixels)

    def _emit_audio(self, pcm: Pcm, seq: int) -> None:
        """Hand one chunk of samples on (decode or release thread) to NATS through the loop,
        on the subject of each tile size whose stitcher asked for it lately."""
        now, wall = time.monotonic(), time.time()
        for out in self._outs:
            if out.wanted_until < now:
                continue
            header = AudioHeader(
                source_id=out.tile.source_id,
                seq=seq,
                pts=pcm.pts,
                wall=wall,
                rate=pcm.rate,
                channels=pcm.channels,
                layout=pcm.layout,
                samples=pcm.samples,
            )
            self._to_loop(out.audio.offer, pack_audio(header, pcm.data))

    def _emit_levels(self, reading: Reading, seq: int, wall: float) -> None:
        """Hand one audio reading on (decode or release thread): to the alarm watch, and to
        wait for the tick that sends it."""
        self.alarms.audio(reading.t, time.time(), reading.peak_db, reading.short_term_lufs)
        pending = self._levels_pending
        if len(pending) == pending.maxlen:
            self.levels_dropped += 1
        pending.append((reading, seq, wall))

    async def _send_levels(self) -> None:
        """Send the readings handed on since the last tick (on the loop, at the tick): as one
        message per tile size, their windows combined (:func:`~pipeline.producers.levels.
        combine`: the highest peaks, the newest loudness). The watch saw each reading; a meter
        needs no more than one message a tick, and every message costs the grabber, NATS and
        each stitcher that reads it (bench case 10)."""
        pending = self._levels_pending
        if not pending:
            return
        readings = []
        while pending:
            readings.append(pending.popleft())
        reading, seq, wall = readings[-1]
        if len(readings) > 1:
            reading = combine([r for r, _, _ in readings])
        message = SourceLevels(
            source_id=self.source_id,
            seq=seq,
            t=reading.t,
            wall=wall,
            # 0.1 dB: finer than a meter draws or a detector's threshold needs.
            peak_db=tuple(round(x, 1) for x in reading.peak_db),
            rms_db=tuple(round(x, 1) for x in reading.rms_db),
            momentary_lufs=_tenth(reading.momentary_lufs),
            short_term_lufs=_tenth(reading.short_term_lufs),
            channels=reading.channels,
            layout=reading.layout,
        )
        for out in self._outs:
            sized = msgspec.structs.replace(message, source_id=out.tile.source_id)
            try:
                await self._nc.publish(out.levels, encode_levels(sized))
            except nats.errors.Error as exc:
                self.levels_dropped += 1
                log.debug("levels not sent: %s", exc, extra={"source": self.key})
            else:
                self.levels_sent += 1

    def _to_loop(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the event loop (from the decode or release thread)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody listens
            loop.call_soon_threadsafe(callback, *args)

    # -- the loop side --------------------------------------------------------------------------

    def _offer(self, out: _Out, payload: bytes) -> None:
        if self._queue.qsize() >= QUEUE_SIZE * len(self._outs):
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait((out, payload))

    async def _publish_loop(self) -> None:
        while True:
            out, payload = await self._queue.get()
            try:
                await self._nc.publish(out.frames, payload)
            except nats.errors.Error as exc:
                # Not connected to NATS, or over its limits: this frame is lost, the next one
                # may go through. Logged once per different reason.
                self.dropped += 1
                reason = f"publish failed: {exc}"
                if reason != self._publish_error:
                    log.warning(reason, extra={"source": self.key})
                    self._publish_error = reason
            else:
                if out is self._outs[0]:  # (the first size may change: retile)
                    self.published += 1
                self.published_bytes += len(payload)
                self._publish_error = ""

    async def _audio_wanted(self, msg: Any) -> None:
        """A stitcher plays this source's audio at one tile size: send it on that size's
        subject for the next few seconds."""
        out = next((o for o in self._outs if o.wanted == msg.subject), None)
        if out is None:
            return
        out.wanted_until = time.monotonic() + AUDIO_WANTED_FOR
        self.decoder.audio_wanted = True

    async def _watch_thread(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self.decoder.audio_wanted and all(o.wanted_until < now for o in self._outs):
                self.decoder.audio_wanted = False  # nobody asked lately
            since = self.decoder.busy_since
            if since is None or time.monotonic() - since < self.stuck_after:
                continue
            log.error(
                "decode thread stuck: no progress for %.0f s",
                time.monotonic() - since,
                extra={"source": self.key, "url": redact(self.url)},
            )
            if self.on_stuck is not None:
                self.on_stuck(f"decode thread stuck for {self.stuck_after:g} s")
            self.decoder.busy_since = None  # said once per hang

    def _thread_done(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)


def _tenth(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class _SideChannel:
    """Small messages beside the frames (audio readings, decoded audio) to one core NATS
    subject, through a bounded queue: the oldest is dropped when it is full, as a listener wants
    what is live. Lost messages are counted, not logged each (the frames' publisher says why
    NATS refuses, on the same connection)."""

    def __init__(self, nc: Client, subject: str, size: int) -> None:
        self._nc = nc
        self.subject = subject
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=size)
        self.published = 0
        self.dropped = 0
        """Dropped: the queue was full, or NATS refused them."""

    def offer(self, payload: bytes) -> None:
        """Queue one message (on the loop)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(payload)

    async def run(self) -> None:
        """Publish what is queued, for ever (a task of the grabber)."""
        while True:
            payload = await self._queue.get()
            try:
                await self._nc.publish(self.subject, payload)
            except nats.errors.Error as exc:
                self.dropped += 1
                log.debug("publish to %s failed: %s", self.subject, exc)
            else:
                self.published += 1
