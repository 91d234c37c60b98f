"""The playback state machine of a JIT session: which frame is due, and when. Pure: the caller
passes the time (monotonic seconds) and does the decoding and sending.

State: the current ``position`` (the frame last sent, or the target of a seek or step not yet
sent), ``playing``, ``rate``, and for a paused session at most one ``pending`` frame to send
once (a seek, a step, a viewer that just connected and needs a picture).

Playing follows a schedule anchored at ``(anchor_frame, anchor_time)``: tick ``k`` is sent at
``anchor_time + k * interval`` and shows frame ``anchor_frame + floor(k * stride)``, where

- at rates up to 1, ``interval = 1 / (fps * rate)`` and ``stride = 1``: every frame is sent,
  more slowly;
- above 1, ``interval = 1 / fps`` and ``stride = rate``: frames go out at the source rate and
  frames are skipped, because a viewer cannot use more pictures per second than the source
  has, and encoding them would only cost CPU and bandwidth.

A sender that falls behind by more than :data:`MAX_LATE` skips to the tick of "now" (the
skipped ticks are counted in ``late``; its ``Due`` says ``hurry``, and the reader skips what it
can of the frames in between), so playback keeps real time instead of slowing down;
a shorter delay is caught up by sending the late frames at once. Every command
that changes what is due bumps ``version``: a frame decoded for an older version is stale and
must not be sent (that is what makes "the next frame after Seek(n) is n" hold while a decode
for the old position is in flight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from pipeline.producers.jit.errors import CommandError

MAX_LATE = 0.2
"""Seconds the sender may fall behind its schedule before it skips frames to catch up."""
MAX_RATE = 16.0
"""Fastest playback rate accepted (16x: a shuttle; beyond that a seek is the better tool)."""


@dataclass(frozen=True)
class Due:
    """The next frame to send and when (``at``, monotonic seconds; ``<= now``: send now).

    ``tick`` is the schedule tick while playing, None for a one-shot frame while paused.
    ``version`` is the state version it was computed at.
    """

    frame: int
    at: float
    tick: int | None
    version: int
    anchor: float = 0.0
    """Start of the schedule the tick belongs to (``at`` for a one-shot frame)."""
    offset: Fraction = Fraction(0)
    """Exact seconds from ``anchor`` to ``at``: timestamps made from it step exactly."""
    hurry: bool = False
    """The schedule skipped ticks to catch up (the sender fell behind): the frames between the
    last sent and this one are not wanted, so the decoder may skip what it can of them."""


class Playback:
    """Position, play/pause, rate and seeks of one session, against a clock given by the
    caller. ``frame_count`` is the exclusive end (None while unknown)."""

    def __init__(self, fps: Fraction, frame_count: int | None, *, max_rate: float = MAX_RATE):
        if fps <= 0:
            raise ValueError(f"frame rate {fps} must be positive")
        self.fps = fps
        self.frame_count = frame_count
        self.max_rate = max_rate
        self.position = 0
        self.playing = False
        self.rate = 1.0
        self.pending: int | None = 0  # a new session shows its first frame
        self.version = 0
        self.seeks = 0
        self.sent_frames = 0
        self.late = 0
        self._anchor_frame = 0
        self._anchor_time = 0.0
        self._tick = 0
        self._starting = False
        """The schedule waits for its first picture (see :meth:`sent`)."""
        self._from_seek = False
        """The schedule started with a seek while playing."""

    # -- derived -------------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        """Seconds between two sends while playing."""
        return 1.0 / (float(self.fps) * min(self.rate, 1.0))

    @property
    def stride(self) -> float:
        """Frames advanced per send while playing."""
        return max(self.rate, 1.0)

    @property
    def last_frame(self) -> int | None:
        """The last frame's number, when the end is known."""
        return None if self.frame_count is None else self.frame_count - 1

    def _frame_at_tick(self, tick: int) -> int:
        # 1e-9: a stride such as 1.1 times a tick must not floor 10.999999 to 10.
        return self._anchor_frame + math.floor(tick * self.stride + 1e-9)

    # -- commands ------------------------------------------------------------------------------

    def _check_frame(self, frame: int) -> None:
        if frame < 0:
            raise CommandError(f"frame {frame} is negative: frames are numbered from 0")
        if self.frame_count is not None and frame >= self.frame_count:
            raise CommandError(
                f"frame {frame} is past the end: the video has {self.frame_count} frames "
                f"(0-{self.frame_count - 1})"
            )

    def _anchor(self, frame: int, now: float) -> None:
        self._anchor_frame = frame
        self._anchor_time = now
        self._tick = 0
        self._starting = True
        self._from_seek = False

    @property
    def starting(self) -> bool:
        """Playing, and the schedule's first frame (after play, a seek or a new rate) has not
        gone out yet: it is due at once, and the schedule runs from when it goes out."""
        return self.playing and self._starting

    @property
    def seek_starting(self) -> bool:
        """:attr:`starting` after a seek while playing: its first frame may be far from what
        was decoded (a seek proxy's picture may go first)."""
        return self.starting and self._from_seek

    def play(self, now: float) -> None:
        """Play from the current frame (or from a seek target not yet shown)."""
        if self.playing:
            return
        start = self.pending if self.pending is not None else self.position + 1
        if self.frame_count is not None and start >= self.frame_count:
            raise CommandError(
                f"at the last frame ({self.frame_count - 1}): seek back before playing"
            )
        self.playing = True
        self.pending = None
        self._anchor(start, now)
        self.version += 1

    def pause(self, now: float) -> None:
        """Stop sending frames; the position stays on the frame last sent."""
        del now  # pausing does not depend on the time: the last sent frame stays
        if not self.playing:
            return
        self.playing = False
        self.pending = None
        if self._starting and self._from_seek:
            # The seek's exact picture never went out: send it, paused.
            self.pending = self.position = self._anchor_frame
        self.version += 1

    def seek(self, frame: int, now: float) -> None:
        """Go to ``frame``: it is the next frame due, playing or not."""
        self._check_frame(frame)
        self.position = frame
        self.seeks += 1
        if self.playing:
            self.pending = None
            self._anchor(frame, now)
            self._from_seek = True
        else:
            self.pending = frame
        self.version += 1

    def step(self, delta: int, now: float) -> None:
        """Pause and move ``delta`` frames from the current one (clamped to the video)."""
        del now  # a step pauses: it does not depend on the time
        base = self.pending if self.pending is not None else self.position
        target = max(0, base + delta)
        if self.frame_count is not None:
            target = min(target, self.frame_count - 1)
        self.playing = False
        self.position = target
        self.pending = target
        self.seeks += 1
        self.version += 1

    def set_rate(self, rate: float, now: float) -> None:
        """Play at ``rate`` times real time (0 < rate <= max_rate); takes effect at once."""
        if not (math.isfinite(rate) and 0 < rate <= self.max_rate):
            raise CommandError(
                f"rate {rate} is not supported: use a rate above 0 and at most "
                f"{self.max_rate:g} (reverse playback is not supported; step back instead)"
            )
        if rate == self.rate:
            return
        self.rate = rate
        if self.playing:
            # From the frame after the last one out; one still to go out goes out first.
            self._anchor(self._anchor_frame if self._starting else self.position + 1, now)
        self.version += 1

    def refresh(self) -> None:
        """Send the current frame again when paused (a viewer joined and has no picture)."""
        if not self.playing and self.pending is None:
            self.pending = self.position
            self.version += 1

    def redraw(self) -> None:
        """The pictures change though the frames do not (an A/B compare's mode, split or
        offset): pictures made before are stale (the version changes), and a paused session
        sends its current frame again."""
        if not self.playing and self.pending is None:
            self.pending = self.position
        self.version += 1

    def halt(self) -> None:
        """Stop playing and forget a pending frame: what was due cannot be read."""
        self.playing = False
        self.pending = None
        self.version += 1

    def ended(self, frame: int) -> None:
        """The decoder found no frame ``frame`` (> 0): the video ends before it. Learn the end
        and stop on the last frame (sent again if it was skipped)."""
        end = max(1, frame)
        self.frame_count = end if self.frame_count is None else min(self.frame_count, end)
        self._stop_at_end()

    def _stop_at_end(self) -> None:
        assert self.frame_count is not None
        last = self.frame_count - 1
        shown = self.pending is None and self.position == last
        self.playing = False
        self.position = last
        self.pending = None if shown else last
        self.version += 1

    # -- the schedule --------------------------------------------------------------------------

    def due(self, now: float) -> Due | None:
        """The next frame to send, or None when nothing is due until a command arrives.

        Reaching the end while playing pauses on the last frame (sending it if the schedule
        skipped it).
        """
        if not self.playing:
            if self.pending is None:
                return None
            return Due(self.pending, now, None, self.version, anchor=now)
        if self._starting:
            # The first frame of a schedule is due now however long its decode takes (a seek
            # into a long GOP: seconds): the schedule starts when it goes out (:meth:`sent`),
            # so playing goes on from the frame asked for rather than skipping to catch up.
            at = max(now, self._anchor_time)
            return Due(self._anchor_frame, at, 0, self.version, anchor=at)
        tick = self._tick
        behind = math.floor((now - self._anchor_time) / self.interval)
        hurry = False
        if behind - tick > max(1, math.ceil(MAX_LATE / self.interval)):
            # Far behind: skip to the tick of "now" to keep real time. A shorter hiccup is
            # caught up by sending the late frames at once (the viewer's jitter buffer
            # absorbs that), so no frame is lost to a stall of the event loop.
            tick = behind
            hurry = True
        frame = self._frame_at_tick(tick)
        if self.frame_count is not None and frame >= self.frame_count:
            self._stop_at_end()
            return self.due(now)
        offset = tick / (self.fps * Fraction(min(self.rate, 1.0)).limit_denominator(10_000))
        return Due(
            frame,
            self._anchor_time + float(offset),
            tick,
            self.version,
            anchor=self._anchor_time,
            offset=offset,
            hurry=hurry,
        )

    def sent(self, due: Due, now: float | None = None, *, exact: bool = True) -> None:
        """``due`` was sent (at ``now``): it is the current frame now. Stale ``due``s are
        ignored. The first exact picture of a schedule starts it at ``now`` (a seek proxy's
        picture of that frame, ``exact`` False, shows where playing will go on from but does
        not start it; without ``now`` the schedule keeps the time of its command)."""
        if due.version != self.version:
            return
        self.position = due.frame
        self.sent_frames += 1
        if due.tick is None:
            self.pending = None
        elif self._starting:
            if exact:
                self._starting = False
                if now is not None:
                    self._anchor_time = now
                self._tick = 1
        else:
            self.late += max(0, due.tick - self._tick)
            self._tick = due.tick + 1

    def media_time(self, now: float) -> float | None:
        """Seconds on the media timeline that audio should play at ``now``; None when audio is
        silent (paused, a rate other than 1: no pitch-corrected audio yet, or the schedule's
        first picture still to come: the sound starts with it)."""
        if not self.playing or self.rate != 1.0 or self._starting:
            return None
        return float(self._anchor_frame / self.fps) + (now - self._anchor_time)
