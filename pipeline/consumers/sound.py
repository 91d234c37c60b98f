"""A stitcher's sound intake: which tile's audio the mosaic carries, and its chunks from NATS.

The choice (``audio=`` of ``/create``, :func:`~pipeline.state.mosaic.audio_tile`):

- **a tile** (an index): that tile's source, always; while it sends nothing the track is
  silent. Only its ``audio.<sid>`` is subscribed.
- **the default**: the first tile, in tile order, whose source has audio *now*
  (:class:`AudioChoice`). Every tile's ``audio.<sid>`` is subscribed until one has been heard
  for :data:`SETTLE` s (so that a tile further down that happened to speak first does not win
  for long), then only that tile's and those of the tiles before it (quiet, so they cost
  nothing, but a tile before it that starts sending audio takes over once it has been heard for
  :data:`SETTLE` s). When the carried source sends nothing for :data:`LOST_AFTER` s (its
  grabber died or its audio stopped), the default lets it go: every tile is subscribed again
  and the next tile with audio is carried. Meanwhile, silence.
- **off**: no track at all; this module is not used.

The track exists from the first picture whatever the sources do (silence until the chosen
audio comes), so the init section and the segments never change shape when a source gains or
loses its audio.

Grabbers send their audio only while a stitcher asks for it: every :data:`ASK_EVERY` s (and at
once when the choice needs a new one) a message on ``ctl.audio.<sid>`` goes to each source
whose subject is subscribed, so only those are decoded and published (tiles further down the
default's order, and every tile of a fixed choice but one, cost nothing).

Chunks of the carried source wait in a bounded inbox (:data:`INBOX` chunks, oldest dropped and
counted) until the next picture takes them (:meth:`MosaicSound.drain`); the callback only
decodes the small header. Resampling and encoding happen in the renderer's thread
(:mod:`~pipeline.consumers.aac`). Subscriptions follow the choice every :data:`CHECK` s
(:meth:`MosaicSound.follow`, a task of the stitcher).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import Callable, Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from pipeline.consumers.aac import AudioChunk
from pipeline.errors import MessageError
from pipeline.messages.audio import unpack_audio
from pipeline.nats import subjects

log = logging.getLogger("tessera.stitcher")

SETTLE = 0.5
"""Seconds a source must have been sending audio before the default choice takes it over one
it does not carry yet."""
LOST_AFTER = 3.0
"""Seconds without a chunk after which the default choice lets a source go."""
CHECK = 0.25
"""Seconds between checks of which subjects the choice needs."""
ASK_EVERY = 1.0
"""Seconds between requests on ``ctl.audio.<sid>`` (a grabber sends for 3 s after one)."""
INBOX = 256
"""Chunks of the carried source that may wait for a picture (~5 s of 1024-sample chunks at
48 kHz; a picture takes them every 1/fps s, so only a stalled stitcher fills it)."""
PENDING_CHUNKS = 64
"""Messages one audio subscription may hold before nats-py drops more."""
CHUNK_BYTES = 64 * 1024
"""Room for one chunk: 8 channels of 4096 s16 samples, larger than any decoder's frame."""

_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


class AudioChoice:
    """Which source's audio a mosaic carries, pure. ``tile``: an index into ``tile_sources``
    (that tile, always), or -1 for the default (see the module docstring)."""

    def __init__(
        self,
        tile_sources: Sequence[str],
        tile: int,
        *,
        settle: float = SETTLE,
        lost_after: float = LOST_AFTER,
    ) -> None:
        if not -1 <= tile < len(tile_sources):
            raise ValueError(f"tile {tile}: -1 (the default) or 0 to {len(tile_sources) - 1}")
        self.order = tuple(dict.fromkeys(tile_sources))
        """The distinct sources, in the order of their first tile."""
        self.fixed = tile >= 0
        self.settle = settle
        self.lost_after = lost_after
        self.carried: str | None = tile_sources[tile] if self.fixed else None
        """The source whose audio goes out now (None: silence)."""
        self._runs: dict[str, tuple[float, float]] = {}
        """Source -> (first, last) time it was heard, in its current run of chunks."""

    def heard(self, source: str, now: float) -> None:
        """A chunk of ``source`` came at ``now``."""
        run = self._runs.get(source)
        if run is None or now - run[1] > self.lost_after:
            self._runs[source] = (now, now)
        else:
            self._runs[source] = (run[0], now)

    def sending(self, source: str, now: float) -> bool:
        """Whether ``source`` sent audio within :attr:`lost_after`."""
        run = self._runs.get(source)
        return run is not None and now - run[1] <= self.lost_after

    def update(self, now: float) -> bool:
        """Choose again (the default only); True when the carried source changed."""
        if self.fixed:
            return False
        chosen = None
        for source in self.order:
            run = self._runs.get(source)
            if run is None or now - run[1] > self.lost_after:
                continue
            if source == self.carried or now - run[0] >= self.settle:
                chosen = source
                break
        changed = chosen != self.carried
        self.carried = chosen
        return changed

    @property
    def wanted(self) -> frozenset[str]:
        """The sources whose audio subjects are needed: the carried one and, for the default,
        those before it (every one while none is carried)."""
        if self.fixed:
            assert self.carried is not None
            return frozenset((self.carried,))
        if self.carried is None:
            return frozenset(self.order)
        return frozenset(self.order[: self.order.index(self.carried) + 1])


class MosaicSound:
    """The audio of the tile a mosaic carries, from ``audio.<sid>``. See the module docstring.

    ``clock`` times arrivals for the choice; ``wall`` (Unix time) stamps each chunk's arrival
    for the playout."""

    def __init__(
        self,
        *,
        nc: Client,
        tile_sources: Sequence[str],
        tile: int,
        clock: Callable[[], float],
        wall: Callable[[], float],
        settle: float = SETTLE,
        lost_after: float = LOST_AFTER,
    ) -> None:
        self._nc = nc
        self._clock = clock
        self._wall = wall
        self.choice = AudioChoice(tile_sources, tile, settle=settle, lost_after=lost_after)
        self._subs: dict[str, Subscription] = {}
        self._asked = -math.inf
        self._inbox: collections.deque[AudioChunk] = collections.deque()
        self.dropped = 0
        """Chunks dropped because the inbox was full."""
        self.bad = 0
        """Messages that could not be read."""

    @property
    def subscribed(self) -> frozenset[str]:
        """The audio subjects taken from NATS now."""
        return frozenset(subjects.audio(source) for source in self._subs)

    async def start(self) -> None:
        """Subscribe to what the choice needs now."""
        await self._follow_once()
        await self._nc.flush()

    async def follow(self) -> None:
        """Keep the subscriptions to what the choice needs. Runs until cancelled."""
        while True:
            await asyncio.sleep(CHECK)
            await self._follow_once()

    async def _follow_once(self) -> None:
        self._choose(self._clock())
        wanted = self.choice.wanted
        for source in sorted(wanted - self._subs.keys()):
            try:
                self._subs[source] = await self._nc.subscribe(
                    subjects.audio(source),
                    cb=self._on_audio,
                    pending_msgs_limit=PENDING_CHUNKS,
                    pending_bytes_limit=PENDING_CHUNKS * CHUNK_BYTES,
                )
            except _NATS_ERRORS as exc:
                log.debug("audio subscription not made", extra={"error": repr(exc)})
            else:
                self._asked = -math.inf  # ask the new one now
        for source in sorted(self._subs.keys() - wanted):
            sub = self._subs.pop(source)
            with contextlib.suppress(*_NATS_ERRORS):
                await sub.unsubscribe()
        now = self._clock()
        if now - self._asked >= ASK_EVERY:
            self._asked = now
            for source in sorted(self._subs):
                try:
                    await self._nc.publish(subjects.audio_wanted(source), b"")
                except _NATS_ERRORS as exc:
                    log.debug("audio not asked for", extra={"error": repr(exc)})

    def _choose(self, now: float) -> None:
        if self.choice.update(now):
            self._inbox.clear()
            log.info("mosaic audio source", extra={"source": self.choice.carried or "none"})

    async def _on_audio(self, msg: Msg) -> None:
        source = msg.subject.removeprefix("audio.")
        try:
            header, pcm = unpack_audio(msg.data)
        except MessageError as exc:
            self.bad += 1
            log.debug("bad audio chunk", extra={"subject": msg.subject, "error": str(exc)})
            return
        if header.source_id != source or header.samples == 0:
            self.bad += header.source_id != source
            return
        self.choice.heard(source, self._clock())
        if source != self.choice.carried:
            return
        if len(self._inbox) >= INBOX:
            self._inbox.popleft()
            self.dropped += 1
        self._inbox.append(AudioChunk(header, pcm, self._wall()))

    def drain(self) -> tuple[AudioChunk, ...]:
        """The chunks of the carried source that came since the last call (at each tick)."""
        self._choose(self._clock())
        chunks = tuple(self._inbox)
        self._inbox.clear()
        return chunks

    async def unsubscribe(self) -> None:
        """Take no more audio from NATS. Safe twice."""
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            with contextlib.suppress(*_NATS_ERRORS):
                await sub.unsubscribe()
        self._inbox.clear()
