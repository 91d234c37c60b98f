"""A stitcher's frame intake: the newest frame of every tile's source, from NATS and from
shared-memory slots.

Frames come three ways, all into one :class:`~pipeline.consumers.newest.NewestFrame` per
source (newest wins):

- a core NATS subscription to ``frames.<sid>`` per source, holding at most
  :data:`PENDING_FRAMES` (the callback only swaps a reference);
- at start, the last frame the ``FRAMES`` stream holds for each source (a *seed*), aged by the
  stream's timestamp;
- at every tick, the source's shared-memory slot (:mod:`pipeline.frames.slot`) when its grabber
  runs on this machine. While a slot gives frames, its NATS subscription is dropped (the seeds
  sent there a second would only cost the server and this process a copy), and it is taken
  again within two checks of the slot stopping.

Frames come raw (the planes) or, from grabbers on other machines, as JPEG
(:mod:`pipeline.frames.tilecodec`): a JPEG frame is kept as it came, once its header says it is
a 4:2:0 picture of the tile's size (a few µs; anything else is dropped, logged and counted),
and decoded only if a picture shows it, in the render thread
(:mod:`~pipeline.consumers.jpegtiles`).

Start-up order matters (:meth:`FrameIntake.start`): subscribe to every ``frames.<sid>`` first,
then seed each source that has no frame yet, so a new stitcher shows every running source at
once and a live frame that raced the seed is never replaced by an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from pipeline.consumers.jpegtiles import DropLog
from pipeline.consumers.newest import NewestFrame, fits_tile
from pipeline.errors import MessageError
from pipeline.frames.slot import SlotReader
from pipeline.frames.tilecodec import TileCodecError, jpeg_size
from pipeline.messages.frames import FrameHeader, unpack_frame
from pipeline.nats import subjects
from pipeline.nats.topology import FRAMES

log = logging.getLogger("tessera.stitcher")

PENDING_FRAMES = 4
"""Frames of one source a subscription may hold before nats-py drops more (and reports a slow
consumer). Only the newest frame of a source is ever used, so a few are plenty; the callback
only swaps a reference, so even these are only reached if the loop was held up. With the
byte limit that goes with it, what a stalled stitcher can buffer is a few frames per tile,
not the backlog (the nats-server itself cuts off a client that stops reading for long)."""
FRAME_HEADER_ROOM = 1024
"""Bytes allowed for a frame message's header on top of its yuv420p pixels."""
SLOT_CHECK = 1.0
"""Seconds between checks of which tiles' shared-memory slots are live (their NATS frame
subscriptions are dropped meanwhile, and taken again within two checks of a slot stopping)."""

_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


@dataclass
class _Source:
    """One source's frames (each ``width`` x ``height``): the newest, and its shared-memory
    slot if it has one."""

    width: int
    height: int
    newest: NewestFrame = field(default_factory=NewestFrame)
    reader: SlotReader | None = None
    slot_seen: float = -1e9
    """Clock time the slot last gave a new frame."""


class FrameIntake:
    """Keeps the newest frame of each of ``tile_sources`` (one per tile, in tile order), whose
    frames are the size in ``tile_sizes`` (``(width, height)`` per tile; a source id names
    one size, so tiles that share a source share its size).

    ``frame_slots``: source id -> its shared-memory slot (None: frames only on NATS).
    ``clock`` stamps arrivals; ``wall`` (Unix time) ages seeds and slot frames."""

    def __init__(
        self,
        *,
        nc: Client,
        js: JetStreamContext,
        tile_sources: Sequence[str],
        tile_sizes: Sequence[tuple[int, int]],
        dead_after: float,
        clock: Callable[[], float],
        wall: Callable[[], float],
        frame_slots: Callable[[str], Path | None] | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        if len(tile_sizes) != len(tile_sources):
            raise ValueError(f"{len(tile_sizes)} tile sizes for {len(tile_sources)} tiles")
        self._dead_after = dead_after
        self._clock = clock
        self._wall = wall
        self._sources: dict[str, _Source] = {}
        for sid, (width, height) in zip(tile_sources, tile_sizes, strict=True):
            known = self._sources.setdefault(subjects.frames(sid), _Source(width, height))
            if (known.width, known.height) != (width, height):
                raise ValueError(
                    f"source {sid} is shown at {known.width}x{known.height} and at "
                    f"{width}x{height}: a source id names one tile size"
                )
        self._tile_sources = tuple(
            (sid, self._sources[subjects.frames(sid)]) for sid in tile_sources
        )
        self.tiles = tuple(source.newest for _, source in self._tile_sources)
        """The newest frame of each tile, in tile order."""
        if frame_slots is not None:
            for sid in tile_sources:
                path = frame_slots(sid)
                source = self._sources[subjects.frames(sid)]
                if path is not None and source.reader is None:
                    source.reader = SlotReader(path)
        self._by_subject: dict[str, Subscription] = {}
        """The frame subscriptions in force (none for a source whose slot is live)."""
        self.replaced = 0
        """Frames replaced by a newer one before any picture showed them."""
        self.bad = 0
        """Frame messages that could not be used (undecodable, or not this tile's size)."""
        self._drops = DropLog("bad JPEG tile frame dropped")

    @property
    def subscribed(self) -> frozenset[str]:
        """The frame subjects taken from NATS now."""
        return frozenset(self._by_subject)

    @property
    def has_slots(self) -> bool:
        """Whether any source comes through shared memory (then :meth:`follow_slots` runs)."""
        return any(source.reader is not None for source in self._sources.values())

    async def start(self) -> None:
        """Subscribe to every source's frames, then seed each from ``FRAMES``."""
        for subject in self._sources:
            await self._subscribe(subject)
        await self._nc.flush()
        await self._seed()

    async def unsubscribe(self) -> None:
        """Take no more frames from NATS. Safe twice."""
        for sub in self._by_subject.values():
            with contextlib.suppress(*_NATS_ERRORS):
                await sub.unsubscribe()
        self._by_subject.clear()

    def close(self) -> None:
        """Unmap the shared-memory slots (the frames taken from them are copies)."""
        for source in self._sources.values():
            if source.reader is not None:
                source.reader.close()

    def poll(self, now: float) -> None:
        """Take the newest frame of every tile whose grabber writes to shared memory."""
        wall = self._wall()
        for sid, source in self._tile_sources:
            if source.reader is None:
                continue
            frame = source.reader.read()
            if frame is None or (frame.width, frame.height) != (source.width, source.height):
                continue
            if wall - frame.wall > self._dead_after:
                continue  # a dead grabber's last frame: not live
            header = FrameHeader(
                source_id=sid,
                seq=frame.seq,
                pts=frame.pts,
                wall=frame.wall,
                width=frame.width,
                height=frame.height,
            )
            if not source.newest.newer(header):
                continue
            self._take(source.newest, header, memoryview(frame.pixels), now)
            source.slot_seen = now

    async def follow_slots(self) -> None:
        """While a source's slot gives frames, take none of its frames from NATS; subscribe
        again when the slot stops. Runs until cancelled."""
        while True:
            await asyncio.sleep(SLOT_CHECK)
            now = self._clock()
            for subject, source in self._sources.items():
                if source.reader is None:
                    continue
                live = now - source.slot_seen < SLOT_CHECK * 2
                sub = self._by_subject.get(subject)
                try:
                    if live and sub is not None:
                        del self._by_subject[subject]
                        await sub.unsubscribe()
                    elif not live and sub is None:
                        await self._subscribe(subject)
                except _NATS_ERRORS as exc:
                    log.debug("frame subscription not changed", extra={"error": repr(exc)})

    async def _subscribe(self, subject: str) -> None:
        source = self._sources[subject]
        frame_bytes = source.width * source.height * 3 // 2 + FRAME_HEADER_ROOM
        sub = await self._nc.subscribe(
            subject,
            cb=self._on_frame,
            pending_msgs_limit=PENDING_FRAMES,
            pending_bytes_limit=PENDING_FRAMES * frame_bytes,
        )
        self._by_subject[subject] = sub

    async def _on_frame(self, msg: Msg) -> None:
        self._accept(msg.subject, msg.data, self._clock(), seed=False)

    async def _seed(self) -> None:
        """Give each source with no frame yet the last frame ``FRAMES`` holds for it."""
        for subject in self._sources:
            try:
                raw = await self._js.get_last_msg(FRAMES.name, subject)
            except NotFoundError:
                continue
            except (nats.errors.Error, APIError) as exc:
                # FRAMES keeps one copy: on a cluster whose server holding it is down, there is
                # no seed to be had; the sources' next frames come by core NATS all the same.
                log.warning("no seed frames: %s", str(exc) or type(exc).__name__)
                return
            if not raw.data:
                continue
            age = 0.0
            if raw.time is not None:
                age = min(max(0.0, self._wall() - raw.time.timestamp()), self._dead_after * 2)
            self._accept(subject, raw.data, self._clock() - age, seed=True)

    def _accept(self, subject: str, payload: bytes, arrived: float, *, seed: bool) -> None:
        source = self._sources.get(subject)
        if source is None:
            return
        try:
            header, pixels = unpack_frame(payload)
        except MessageError as exc:
            self.bad += 1
            log.debug("bad frame", extra={"subject": subject, "error": str(exc)})
            return
        if not fits_tile(header, len(pixels), source.width, source.height):
            self.bad += 1
            return
        if header.encoding == "jpeg":
            try:
                size = jpeg_size(pixels)
            except TileCodecError as exc:
                self._refuse(header.source_id, str(exc))
                return
            if size != (source.width, source.height):
                self._refuse(header.source_id, f"a {size[0]}x{size[1]} JPEG for a "
                             f"{source.width}x{source.height} tile")  # fmt: skip
                return
        if source.newest.newer(header, seed=seed):
            self._take(source.newest, header, pixels, arrived)

    def _refuse(self, sid: str, reason: str) -> None:
        """Count a JPEG frame that cannot be a picture of its tile, and say why."""
        self.bad += 1
        self._drops.say(sid, reason)

    def _take(
        self, newest: NewestFrame, header: FrameHeader, pixels: memoryview, arrived: float
    ) -> None:
        if newest.take(header, pixels, arrived):
            self.replaced += 1
