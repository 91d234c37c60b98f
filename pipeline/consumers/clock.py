"""The stitcher's clock, pure: when each tick is due, which late ticks are skipped, and what
the ticks achieved. No clock is read here; the stitcher passes the times in.

Tick ``n`` is due at ``start + n / fps`` (absolute deadlines, no drift). A tick found more than
one period late is skipped, not made up: a live mosaic wants the present, and the encoded
timeline stays one picture per ``1/fps`` regardless.
"""

from __future__ import annotations

import collections

FPS_WINDOW = 2.0
"""Seconds of recent pictures the reported output fps is measured over."""
ENCODE_MS_SMOOTHING = 0.1
"""Weight of the newest picture in the moving average of compose + encode time."""


class TickClock:
    """The deadlines of a clock ticking ``fps`` times a second from ``start``."""

    def __init__(self, fps: float, start: float) -> None:
        self.period = 1.0 / fps
        self.start = start
        self.tick = 0
        """The next tick to make."""

    def wait(self, now: float) -> tuple[float, int]:
        """Seconds until the next tick is due (0 or less: due now), and how many ticks were
        skipped because they are more than a period late (the next tick is then the latest
        one due)."""
        delay = self.start + self.tick * self.period - now
        if delay > 0 or -delay < self.period:
            return delay, 0
        missed = int(-delay / self.period)
        self.tick += missed
        return delay, missed

    def ticked(self) -> None:
        """The next tick's picture was made."""
        self.tick += 1


class TickMeter:
    """Pictures made a second over the last :data:`FPS_WINDOW` s, and a moving average of
    the milliseconds each took to compose and encode."""

    def __init__(self) -> None:
        self._made: collections.deque[float] = collections.deque()
        self.encode_ms = 0.0

    def note(self, now: float, ms: float) -> None:
        """A picture was made at ``now``, in ``ms`` milliseconds."""
        self._made.append(now)
        while self._made and self._made[0] < now - FPS_WINDOW:
            self._made.popleft()
        if self.encode_ms:
            self.encode_ms += ENCODE_MS_SMOOTHING * (ms - self.encode_ms)
        else:
            self.encode_ms = ms

    def fps(self, now: float) -> float:
        """Pictures a second lately (0 once no picture came for half the window)."""
        made = self._made
        if len(made) >= 2 and now - made[-1] < FPS_WINDOW / 2:
            return (len(made) - 1) / max(made[-1] - made[0], 1e-9)
        return 0.0
