"""The session's 90 kHz video clock: the timestamp each picture a session sends carries. Pure.

One clock per session (the player's), not one per viewer, so that a picture has one
timestamp whichever viewer it goes to, and its :class:`~pipeline.messages.control.FrameReport`
can say it (``rtp``) to all of them in the same words.

A picture is stamped from its place on the player's schedule: ``anchor`` (monotonic seconds,
where the schedule starts) plus ``offset`` (exact seconds into it), measured from the anchor
of the first picture the session sent (a session's first picture, a one-shot, is 0). A paused
session sends nothing, and the next stamp tells the wall time that passed. Stamps only grow
(one step more when two pictures share a time: a seek right after a frame).

**Stamps are whole multiples of 100 µs** (:data:`STEP`, 9 ticks). aiortc's VP8 encoder has
PyAV rebase the frame's pts to the codec's time base, microseconds, before aiortc converts it
back to 90 kHz, truncating: a pts that is not a whole number of microseconds comes out a tick
lower (4 in 9 of them do), and the page would look for a stamp that was never sent. A multiple
of 100 µs is exact on both clocks, whatever the rounding. The anchor is rounded once and the
exact offset once, so frames of one schedule are 3600 ticks apart at 25 fps (and 50, 100,
...), and at 29.97 alternately 2997 and 3006 (3003 on average: within half a step of the
exact time).

**From RTP timestamp to frame.** aiortc's RTP sender converts a frame's pts to the 90 kHz RTP
clock (here: the same number) and adds a random 32-bit ``timestamp_origin``, drawn once per
sender (``RTCRtpSender._run_rtp``), modulo 2**32. So for one viewer, the RTP timestamp of every
picture is ``(rtp + origin) mod 2**32``: the origin is unknown to the worker (aiortc keeps it in
a local variable) but constant, and a viewer learns it as the difference between a displayed
picture's RTP timestamp and the ``rtp`` of the report of that picture (the page's
``frameid.js``); from then on each RTP timestamp names its report, and so its frame.
"""

from __future__ import annotations

from fractions import Fraction

VIDEO_CLOCK = 90000
"""RTP clock rate of video (RFC 3551): stamps are in 1/90000 s."""
STEP = 9
"""Ticks between two possible stamps: 100 µs, a whole number on the 90 kHz clock and in the
microseconds aiortc's VP8 path goes through."""
STEPS_PER_SECOND = VIDEO_CLOCK // STEP
RTP_MODULUS = 1 << 32
"""RTP timestamps are 32 bits (RFC 3550): a stamp as the page compares it wraps here."""


def rtp_of(pts: int) -> int:
    """``pts`` as an RTP timestamp less the sender's origin (it wraps after 13.25 hours)."""
    return pts % RTP_MODULUS


class VideoClock:
    """Stamps a session's pictures on the 90 kHz clock; see the module docstring."""

    def __init__(self) -> None:
        self._origin: float | None = None
        self._last = -1  # in steps

    def stamp(self, anchor: float, offset: Fraction = Fraction(0)) -> int:
        """The pts of a picture due ``offset`` exact seconds after monotonic time ``anchor``:
        a multiple of :data:`STEP`, greater than every stamp before it."""
        if self._origin is None:
            self._origin = anchor
        base = round((anchor - self._origin) * STEPS_PER_SECOND)
        steps = max(self._last + 1, base + round(offset * STEPS_PER_SECOND))
        self._last = steps
        return steps * STEP
