"""Timing decisions of a grabber, pure: which frames to keep, when to show them, how long to wait
before reconnecting. No clocks are read here; callers pass the times in.

- :class:`FpsCap` keeps at most ``fps`` frames per second of media time, deciding before a frame
  is scaled (a dropped frame costs its decode only).
- :class:`PtsClock` maps media time to wall time. A file would otherwise be read as fast as the
  CPU allows; a live HLS source delivers a whole segment at once. Pacing both by their
  timestamps gives a stitcher a steady stream of fresh frames instead of bursts.
- :class:`StaleGuard` tells a live source's repeats after a reconnect from new frames.
- :class:`FramePacer` puts these together for one connection: each decoded frame is dropped
  or kept, and a kept one is due at a wall time; a looping file's next pass carries on.
- :class:`Backoff`: exponential delays with jitter and a cap, reset after a healthy period;
  :func:`loop_delay`: how soon a finite source plays again.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

MIN_LOOP_PERIOD = 1.0
"""Seconds: a finite source is reopened at most this often when it loops."""


class FpsCap:
    """Keeps at most ``fps`` frames per second of media time.

    A frame is kept when its time reaches the next slot, less a tolerance: a quarter of a slot,
    but at most half the source's own frame interval. Sources with jittery timestamps (RTSP)
    keep their frames, the tolerance never takes a frame a whole source frame early, and since
    every kept frame moves the next slot a whole slot on, the long-run rate never exceeds
    ``fps``.
    """

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be greater than 0, not {fps}")
        self.interval = 1.0 / fps
        self._next: float | None = None
        self._last: float | None = None
        self._source_interval = self.interval

    def reset(self) -> None:
        """Forget the frames seen so far (a new connection)."""
        self._next = None
        self._last = None

    def keep(self, t: float) -> bool:
        """Whether the frame at media time ``t`` (seconds) is kept."""
        step = self.interval
        if self._last is not None and 0 < t - self._last < 1.0:
            self._source_interval = t - self._last
        self._last = t
        nxt = self._next
        if nxt is None or t < nxt - 2 * step or t > nxt + step:
            # First frame, a jump back, or a gap: start the slots again from this frame.
            self._next = t + step
            return True
        if t >= nxt - min(step / 4, self._source_interval / 2):
            self._next = nxt + step
            return True
        return False


class PtsClock:
    """Maps media time to wall time, anchored at the first frame.

    A frame due more than ``max_lead`` seconds ahead (a jump forward) or more than ``max_lag``
    behind (a jump back, or a long stall) re-anchors the clock at itself. Between the two a late
    frame is shown at once, so a source that stalled catches up instead of staying late.
    """

    def __init__(self, *, max_lead: float = 10.0, max_lag: float = 3.0) -> None:
        self.max_lead = max_lead
        self.max_lag = max_lag
        self._anchor: tuple[float, float] | None = None
        self.reanchors = 0

    def reset(self) -> None:
        """Anchor again at the next frame (a new connection)."""
        self._anchor = None

    def anchor(self, t: float, wall: float) -> None:
        """Make media time ``t`` due at ``wall`` (a looping file's next pass follows its last)."""
        self._anchor = (t, wall)

    def due(self, t: float, now: float) -> float:
        """Wall time at which media time ``t`` should be shown, given the time ``now``."""
        if self._anchor is None:
            self._anchor = (t, now)
            return now
        t0, wall0 = self._anchor
        due = wall0 + (t - t0)
        if due - now > self.max_lead or now - due > self.max_lag:
            self._anchor = (t, now)
            self.reanchors += 1
            return now
        return due


class Backoff:
    """Delays before reconnecting: ``initial * 2**n``, capped at ``maximum``, with jitter.

    The jitter keeps each delay in ``[d/2, d]`` ("equal jitter"): grabbers that lost the same
    server do not come back in lockstep, and a delay never drops below half its step.
    """

    def __init__(
        self, initial: float, maximum: float, *, rng: Callable[[], float] = random.random
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial ({initial}) <= maximum ({maximum})")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self.attempt = 0

    def reset(self) -> None:
        """Back to ``initial`` (the source was healthy for a while)."""
        self.attempt = 0

    def next(self) -> float:
        """The next delay, in seconds."""
        step = min(self.maximum, self.initial * 2.0 ** min(self.attempt, 60))
        self.attempt += 1
        return step * (0.5 + 0.5 * self._rng())

    def after(self, *, healthy: bool, refused: bool) -> float:
        """The delay after a connection failed: counted from ``initial`` again if it had been
        ``healthy`` for a while, and the longest after a refusal (a refusal does not change by
        retrying soon)."""
        if healthy:
            self.reset()
        return self.maximum if refused else self.next()


def loop_delay(lasted: float) -> float:
    """Seconds to wait before a finite source plays again after a pass of ``lasted`` s: none,
    unless the pass was shorter than :data:`MIN_LOOP_PERIOD` (a file of one frame would
    otherwise be hammered)."""
    return max(0.0, MIN_LOOP_PERIOD - lasted)


class StaleGuard:
    """Tells a live source's repeated frames from new ones, across reconnects.

    A frozen HLS playlist (an encoder that died while its server keeps serving the last
    playlist) is, after each reconnect, the same few segments again: the same timestamps.
    Showing them would loop seconds-old video as if live. A frame whose time is at or before
    the newest one shown, and less than ``window`` s before it, is a repeat. A jump further
    back (an encoder restart, a timestamp wrap) starts over.
    """

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.newest: float | None = None

    def fresh(self, t: float) -> bool:
        """True when the frame at ``t`` s is new (and remember it)."""
        if self.newest is not None and self.newest - self.window < t <= self.newest:
            return False
        self.newest = t
        return True


@dataclass(frozen=True)
class Carry:
    """Pacing carried from one pass of a looping file to the next."""

    clock: PtsClock
    last_due: float
    step: float


class Verdict(enum.Enum):
    """What becomes of one decoded frame."""

    KEEP = "keep"
    STALE = "stale"
    """Dropped: a live source's repeat of what was shown before a reconnect."""
    OVER_CAP = "over cap"
    """Dropped: over the fps cap (before it is scaled, so it cost its decode only)."""


class FramePacer:
    """One connection's decision for each decoded frame, in order: a live source's repeat
    (with a :class:`StaleGuard`, which outlives the connection) is dropped; a frame over the
    fps cap (:class:`FpsCap`) is dropped; any other is kept and, when ``pace``, due at the wall
    time its timestamp says (:class:`PtsClock`).

    A looping file's next pass starts from the previous pass's :meth:`carry`: its first frame
    is due one frame interval after the last frame of the pass before, as in one long file.
    """

    def __init__(
        self,
        fps: float,
        *,
        opened: float,
        pace: bool,
        stale: StaleGuard | None = None,
        carried: Carry | None = None,
    ) -> None:
        self.cap = FpsCap(fps)
        self.pace = pace
        self.stale = stale
        self.opened = opened
        """When the connection opened (monotonic): the time of frames that have none."""
        self._continue = carried
        self.clock = carried.clock if carried is not None else PtsClock()
        self.kept = 0
        self.first_kept: float | None = None
        """When the first frame was kept (None: not yet)."""
        self.last_t = 0.0
        """Media time of the last frame kept or capped (seconds)."""
        self.due = opened
        """When the last kept frame is due (paced only)."""
        self.step = 1.0 / 25
        """The source's frame interval as last seen (at most 1 s): a loop's next pass starts
        one step after the last frame of the pass before."""

    def admit(self, t: float | None, now: float) -> Verdict:
        """Decide on the frame at media time ``t`` (None: it has none, so it is timed from
        ``opened``) decoded at ``now``. When kept, :attr:`last_t` is its media time and
        :attr:`due` its due time."""
        timed = t is not None
        if t is None:
            t = now - self.opened
        if self.stale is not None and timed and not self.stale.fresh(t):
            return Verdict.STALE
        if self.kept and t > self.last_t:
            self.step = min(1.0, t - self.last_t)
        if not self.cap.keep(t):
            self.last_t = t
            return Verdict.OVER_CAP
        if self.first_kept is None:
            self.first_kept = now
        if self.pace:
            if self._continue is not None:
                self.clock.anchor(t, self._continue.last_due + self._continue.step)
                self._continue = None
            self.due = self.clock.due(t, now)
        self.kept += 1
        self.last_t = t
        return Verdict.KEEP

    def carry(self) -> Carry | None:
        """What a looping file's next pass carries on from (None: not paced)."""
        return Carry(self.clock, self.due, self.step) if self.pace else None


NONREF_MIN_RATIO = 1.9
"""Skip non-reference frames only from a source this many times faster than the tile's cap (a
50 fps source in a 25 fps mosaic): below it, most frames are shown and none may go."""
NONREF_CHECK_SECONDS = 2.0
"""Media seconds over which a connection that skips non-reference frames checks that what it
still decodes covers the cap."""


class NonrefSkip:
    """Whether a connection's decoder skips non-reference frames (``skip_frame=NONREF``): the
    frames nothing else is predicted from, which FFmpeg then does not decode at all. Only worth
    it when the fps cap would drop at least every other frame anyway; and only safe while the
    frames still decoded come at least as often as the cap: a GOP of IBBBP without B-pyramid
    keeps one frame in four, which a 50 fps source cannot spare for 25. So a connection starts
    skipping when the source is :data:`NONREF_MIN_RATIO` times the cap, counts what it decodes
    for :data:`NONREF_CHECK_SECONDS` of media, and stops skipping for good if that falls short
    (a second of a lower rate at most, before the first check ends it). Pure."""

    def __init__(self, source_fps: float, cap_fps: float) -> None:
        self.cap_fps = cap_fps
        self.active = source_fps > 0 and cap_fps > 0 and source_fps >= NONREF_MIN_RATIO * cap_fps
        """Skipping now."""
        self.checked = not self.active
        self._first: float | None = None
        self._count = 0

    def decoded(self, t: float | None) -> bool:
        """A frame at media time ``t`` was decoded while skipping; True when skipping must
        stop (what was decoded over the check's span fell short of the cap)."""
        if self.checked or t is None:
            return False
        if self._first is None:
            self._first = t
        self._count += 1
        span = t - self._first
        if span < NONREF_CHECK_SECONDS:
            return False
        self.checked = True
        # count - 1 intervals over the span: the decoded rate, with a frame's slack.
        if (self._count - 1) / span < self.cap_fps * 0.98:
            self.active = False
            return True
        return False
