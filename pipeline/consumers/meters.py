"""What each tile's audio meter shows at a tick, from its source's level readings: pure.

A grabber sends a :class:`~pipeline.messages.levels.SourceLevels` message about five times a
second (the sample peak of each channel over its 100 ms windows since the last). The stitcher
feeds every reading to one :class:`MeterBook` as it arrives (:meth:`MeterBook.feed`) and asks
it, at each tick, for the :class:`Meter` of each tile's source (:meth:`MeterBook.meter`), which
the compositor draws.

Ballistics, chosen to look like the broadcast peak programme meters operators know:

- **the bar**: instant attack, then a return of 20 dB in 1.7 s (:data:`RELEASE_DB_PER_S`, the
  return time of IEC 60268-10 type I, the DIN/Nordic PPM), so a bar does not flicker between
  messages 200 ms apart and a transient stays readable;
- **the peak hold**: the highest recent peak, held for :data:`HOLD_SECONDS` and then falling
  at :data:`HOLD_FALL_DB_PER_S`; never shown below the bar.

A source with no reading for more than :data:`STALE_AFTER` seconds (no audio stream, or its
grabber gone) has no meter: the tile shows none rather than a frozen one. At most
:data:`MAX_CHANNELS` channels are metered (the first ones, in the layout's order); a reading
with another channel count than the last (a stereo advert in a 5.1 programme) starts the
meter afresh.

Times are the caller's clock (the stitcher's monotonic clock, the one it stamps frames with),
not the readings' ``wall``: the grabber's clock may be another machine's.
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline.messages.levels import SourceLevels

MAX_CHANNELS = 8
"""Channels a meter shows at most: a tile is too narrow for more bars."""
FLOOR_DB = -120.0
"""Digital silence, as grabbers report it."""
STALE_AFTER = 1.0
"""Seconds without a reading after which a source has no meter (messages come every 0.2 s)."""
RELEASE_DB_PER_S = 20.0 / 1.7
"""How fast a bar falls after a peak: IEC 60268-10 type I, 20 dB in 1.7 s."""
HOLD_SECONDS = 1.5
"""How long the peak-hold marker stays at a peak before it falls."""
HOLD_FALL_DB_PER_S = 20.0
"""How fast the peak-hold marker falls once its hold is over."""


class Meter(NamedTuple):
    """One source's meter at one time: per channel (at most :data:`MAX_CHANNELS`), the bar's
    level and the peak hold, dBFS; both at least :data:`FLOOR_DB`, the hold at least the
    level. (A named tuple: the stitcher makes one per tile per tick.)"""

    levels: tuple[float, ...]
    holds: tuple[float, ...]


class _Source:
    """One source's channels: the bar and the peak hold of each, as the peak they last took
    and the time they took it (what they show later follows from the ballistics)."""

    __slots__ = ("bar", "bar_at", "hold", "hold_at", "seen")

    def __init__(self, channels: int, seen: float) -> None:
        self.bar = [FLOOR_DB] * channels
        self.bar_at = [seen] * channels
        self.hold = [FLOOR_DB] * channels
        self.hold_at = [seen] * channels
        self.seen = seen


def _fallen(peak: float, at: float, now: float, rate: float) -> float:
    """``peak`` reached at ``at``, falling at ``rate`` dB/s since, at ``now``."""
    return max(FLOOR_DB, peak - rate * (now - at)) if now > at else peak


class MeterBook:
    """The meters of the sources a stitcher shows, fed with their level readings."""

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}

    def feed(self, levels: SourceLevels, now: float) -> None:
        """Take a reading that arrived at ``now`` (the caller's clock, in seconds)."""
        peaks = levels.peak_db[:MAX_CHANNELS]
        if not peaks:
            return
        source = self._sources.get(levels.source_id)
        if source is None or len(source.bar) != len(peaks):
            source = self._sources[levels.source_id] = _Source(len(peaks), now)
        source.seen = now
        bar, bar_at, hold, hold_at = source.bar, source.bar_at, source.hold, source.hold_at
        for i, peak in enumerate(peaks):
            # max() with the floor also turns a NaN from a broken sender into silence.
            peak = max(FLOOR_DB, peak)
            if peak >= _fallen(bar[i], bar_at[i], now, RELEASE_DB_PER_S):
                bar[i], bar_at[i] = peak, now
            if peak >= _fallen(hold[i], hold_at[i] + HOLD_SECONDS, now, HOLD_FALL_DB_PER_S):
                hold[i], hold_at[i] = peak, now

    def meter(self, source_id: str, now: float) -> Meter | None:
        """What the meter of ``source_id`` shows at ``now``, or None when the source sent no
        reading in the last :data:`STALE_AFTER` seconds."""
        source = self._sources.get(source_id)
        if source is None or now - source.seen > STALE_AFTER:
            return None
        # _fallen() written out: the stitcher asks this for every tile at every tick.
        levels, holds = [], []
        for bar, bar_at, hold, hold_at in zip(
            source.bar, source.bar_at, source.hold, source.hold_at, strict=True
        ):
            if now > bar_at:
                bar -= RELEASE_DB_PER_S * (now - bar_at)
                if bar < FLOOR_DB:
                    bar = FLOOR_DB
            falls_at = hold_at + HOLD_SECONDS
            if now > falls_at:
                hold -= HOLD_FALL_DB_PER_S * (now - falls_at)
            levels.append(bar)
            holds.append(hold if hold > bar else bar)
        return Meter(tuple(levels), tuple(holds))

    def forget(self, source_id: str) -> None:
        """Drop a source's meter (a tile no longer shows it)."""
        self._sources.pop(source_id, None)
