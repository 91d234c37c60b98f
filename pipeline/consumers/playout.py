"""The mosaic's sound on its way from NATS to the AAC encoder, pure: where each chunk of samples
belongs in time, and which samples each picture gets. No clock is read here and nothing is
decoded; the caller passes the times in and resamples before.

Times are positions on one *sample clock*: ``round(unix_seconds * rate)``, integers, so that
chunks placed end to end and pulls made one after another meet exactly, with no rounding gap.

- **In** (:meth:`Playout.push`): a chunk goes where its first sample was *live*: the sender's
  wall clock when it handed the chunk on, moved onto ours by :class:`ClockOffset` (the least
  ``arrival - sent`` seen lately: the transit of an undelayed message, plus however far the
  two machines' clocks disagree). A chunk within ``slack`` of the end of the one before is
  placed right after it (the normal case: a source's chunks are contiguous, their stamps only
  jitter); further away it starts a new run (the source reconnected, stalled, or its clock
  stepped), with silence in the gap, or, when it is earlier, replacing what was queued.
- **Out** (:meth:`Playout.pull`): each picture takes the samples that end a fixed ``margin``
  before the wall time the picture is made: the margin is how late a chunk may arrive and
  still be played. Pulls are contiguous too: the cursor goes on from where the last pull
  ended while that is within ``slack`` of where the wall clock says it should be, and jumps
  otherwise (ticks the stitcher skipped; a stalled loop), so the sound keeps its distance to
  the pictures.
- Samples whose time has passed when they come are dropped (:attr:`Playout.late`); time with
  no samples is silence (:attr:`Playout.silent`). At most ``capacity`` samples wait.
"""

from __future__ import annotations

import collections

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]
"""Planar samples: shape ``(channels, count)``."""


def position(seconds: float, rate: int) -> int:
    """``seconds`` (Unix time) on the sample clock of ``rate``."""
    return round(seconds * rate)


def frame_position(frame: int, fps: int, rate: int) -> int:
    """Sample at which video frame ``frame`` (pts in ``1/fps``) starts: the audio timeline is
    the video's, counted in samples, so frame ``n`` has ``frame_position(n + 1) -
    frame_position(n)`` samples (exactly ``rate / fps`` when that divides)."""
    return frame * rate // fps


class ClockOffset:
    """How far our clock is ahead of a sender's, as seen by its messages: the least
    ``arrival - sent`` over the last one to two ``window`` s. A message that was delayed (a
    busy loop, a slow network) does not move it; one that came fast does, at once."""

    def __init__(self, window: float = 10.0) -> None:
        if not window > 0:
            raise ValueError(f"window={window}: must be > 0 seconds")
        self.window = window
        self._since: float | None = None
        self._current = 0.0
        self._previous: float | None = None

    def note(self, arrival: float, sent: float) -> float:
        """Take one message's times (each by its own clock); return the offset now."""
        gap = arrival - sent
        if self._since is None or arrival - self._since >= self.window:
            self._previous = None if self._since is None else self._current
            self._since = arrival
            self._current = gap
        else:
            self._current = min(self._current, gap)
        return self.offset

    @property
    def offset(self) -> float:
        """Seconds to add to a sender's time to get ours (0 before any message)."""
        if self._previous is None:
            return self._current
        return min(self._current, self._previous)

    def reset(self) -> None:
        """Forget: the next message is from another sender."""
        self._since = None
        self._current = 0.0
        self._previous = None


class Playout:
    """A jitter buffer on the sample clock. See the module docstring."""

    def __init__(self, *, channels: int, slack: int, capacity: int) -> None:
        if channels < 1:
            raise ValueError(f"channels={channels}: at least 1")
        if slack < 0 or capacity < 1:
            raise ValueError(f"slack={slack}, capacity={capacity}: samples, slack >= 0 < capacity")
        self.channels = channels
        self.slack = slack
        self.capacity = capacity
        self._chunks: collections.deque[tuple[int, Samples]] = collections.deque()
        self._queued = 0
        self._in: int | None = None
        """Where a chunk that follows the last one pushed starts."""
        self._out: int | None = None
        """Where the next pull starts."""
        self.late = 0
        """Samples dropped because their time had passed when they came."""
        self.silent = 0
        """Samples pulled that no chunk gave (silence)."""
        self.overflow = 0
        """Samples dropped because more than ``capacity`` waited, or a run that went back in
        time replaced them."""
        self.jumps = 0
        """Times a pull or a chunk was too far from where it would have followed on."""

    @property
    def queued(self) -> int:
        """Samples waiting."""
        return self._queued

    def push(self, at: int, samples: Samples) -> None:
        """Queue ``samples`` (``(channels, n)``) whose first is live at ``at``."""
        if samples.ndim != 2 or samples.shape[0] != self.channels:
            raise ValueError(f"samples of shape {samples.shape}: want ({self.channels}, n)")
        count = samples.shape[1]
        if count == 0:
            return
        follows = self._in
        if follows is not None and abs(at - follows) <= self.slack:
            at = follows
        elif follows is not None:
            self.jumps += 1
            if at < follows:  # back in time: newest wins
                self.overflow += self._queued
                self._chunks.clear()
                self._queued = 0
        self._chunks.append((at, samples))
        self._queued += count
        self._in = at + count
        while self._queued > self.capacity:
            _, oldest = self._chunks.popleft()
            self._queued -= oldest.shape[1]
            self.overflow += oldest.shape[1]

    def pull(self, end: int, count: int) -> Samples:
        """The ``count`` samples that end at ``end`` (or, within ``slack`` of there, follow
        the previous pull), silence where none came."""
        if count < 0:
            raise ValueError(f"count={count}: must be >= 0")
        start = end - count
        if self._out is None or abs(self._out - start) > self.slack:
            self.jumps += self._out is not None
            self._out = start
        low, high = self._out, self._out + count
        out = np.zeros((self.channels, count), np.float32)
        filled = 0
        chunks = self._chunks
        while chunks:
            at, data = chunks[0]
            size = data.shape[1]
            if at >= high:
                break
            if at + size <= low:  # all of it came too late
                self.late += size
                chunks.popleft()
                self._queued -= size
                continue
            begin = max(at, low)
            self.late += begin - at
            stop = min(at + size, high)
            out[:, begin - low : stop - low] = data[:, begin - at : stop - at]
            filled += stop - begin
            if at + size > high:
                chunks[0] = (high, data[:, high - at :])
                self._queued -= high - at
                break
            chunks.popleft()
            self._queued -= size
        self.silent += count - filled
        self._out = high
        return out

    def clear(self) -> None:
        """Drop everything queued and forget where the runs were (another source)."""
        self._chunks.clear()
        self._queued = 0
        self._in = None
