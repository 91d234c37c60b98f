"""Detectors, pure: measurements with source timestamps in, condition transitions out.

A grabber runs one :class:`ConditionDetector` per kind for its source, where the pixels and
samples already are, and feeds it one observation per picture (black, freeze, lost) or per
audio block (silence, loudness, no-audio): the source time in seconds, whether the
measurement is *bad*, and the measured value. A condition **starts** once it has been bad for
the debounce (:data:`DEBOUNCE`), with its onset at the first bad observation (or when that
measurement says the bad state began: a freeze at its reference picture, no-audio at the last
samples), and **ends** at the first good one. The detection levels are fixed, the same for
every mosaic; a mosaic only chooses how long a condition must last before it shows the alarm
(:class:`Derived`, with the holds of :class:`~pipeline.monitoring.alarms.AlarmSettings`).

Detection levels (FFmpeg's filter defaults as the start)
========================================================

- **black** (blackdetect ``pix_th=0.10``, ``pic_th=0.98``): a luma sample is dark when at or
  below 10 % of the range (limited range: ``16 + 0.10 * 219``, truncated to 37; full range:
  25); a picture is black when at least 98 % of its samples are dark
  (:func:`black_fraction`, :func:`is_black`).
- **freeze** (freezedetect ``noise=-60dB``, i.e. 0.001): a picture is still when its mean
  absolute luma difference from the *reference* picture is at most 0.001 of the range
  (:func:`picture_difference`, :func:`is_still`). The reference is the first picture of the
  still run, as freezedetect keeps it, so that a slow fade or pan, each step below the level,
  is not taken for a freeze (:class:`StillReference`).
- **silence** (silencedetect ``noise=-60dB``): every channel's sample peak at or below
  -60 dBFS (:func:`is_silent`).
- **loudness**: EBU R128 short-term loudness outside [-36, -9] LUFS (:func:`is_loudness_out`);
  silence (-inf LUFS) is below the range, so a silent source also shows loudness after its hold.
- **no-audio** and **lost**: audio expected but no samples, or no pictures, for longer than
  :data:`ABSENCE_GAP` (:func:`is_absent`), observed on the grabber's own tick.

Every measurement helper is cheap: the picture helpers read a decimated view (every
``step``-th sample in both directions, 2 by default: a quarter of the samples), and a
detector's state is a few floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.monitoring.alarms import AlarmKind, AlarmSettings

__all__ = [
    "ABSENCE_GAP",
    "BLACK_PICTURE_RATIO",
    "BLACK_PIXEL_LEVEL",
    "DEBOUNCE",
    "FREEZE_LEVEL",
    "LOUDNESS_RANGE",
    "SILENCE_DBFS",
    "ConditionDetector",
    "Derived",
    "Ended",
    "Started",
    "StillReference",
    "Transition",
    "black_fraction",
    "is_absent",
    "is_black",
    "is_loudness_out",
    "is_silent",
    "is_still",
    "picture_difference",
    "severity",
]

BLACK_PIXEL_LEVEL = 0.10
"""A luma sample at or below this share of the range is dark (blackdetect ``pix_th``)."""
BLACK_PICTURE_RATIO = 0.98
"""A picture with at least this share of dark samples is black (blackdetect ``pic_th``)."""
FREEZE_LEVEL = 10 ** (-60 / 20)
"""Mean absolute difference, as a share of the range, at or below which a picture is still:
-60 dB, freezedetect's default noise (0.001)."""
SILENCE_DBFS = -60.0
"""Every channel's peak at or below this is silence (silencedetect's default noise)."""
LOUDNESS_RANGE = (-36.0, -9.0)
"""Short-term loudness (LUFS) inside this range is normal; outside it, the condition."""
ABSENCE_GAP = 0.25
"""Seconds since the last audio samples (or picture) after which they count as absent."""
DEBOUNCE = 0.5
"""Seconds a measurement must stay bad before its condition starts."""

# Float slack for time comparisons: frame times like n/25 are not exact in binary.
_EPS = 1e-9

Picture = npt.NDArray[np.uint8] | npt.NDArray[np.int16]
"""A luma plane: a 2-D array (height x width) of 8-bit samples, as uint8 or, already read
out of a picture (:class:`~pipeline.monitoring.watch.PictureProbe`), as int16."""


# --- measurements ----------------------------------------------------------------------------


def _dark_level(full_range: bool) -> int:
    # blackdetect: pixel_black_th_i = full ? th * 255 : 16 + th * (235 - 16), truncated to int.
    return int(BLACK_PIXEL_LEVEL * 255) if full_range else int(16 + BLACK_PIXEL_LEVEL * 219)


def black_fraction(y: Picture, full_range: bool = False, step: int = 2) -> float:
    """The share (0 to 1) of dark luma samples in ``y``, read on every ``step``-th row and
    column. ``full_range``: ``y`` uses 0-255 (JPEG range) rather than 16-235."""
    view = y[::step, ::step]
    if view.size == 0:
        return 0.0
    return int(np.count_nonzero(view <= _dark_level(full_range))) / view.size


def is_black(fraction: float) -> bool:
    """Whether a picture with ``fraction`` dark samples is black."""
    return fraction >= BLACK_PICTURE_RATIO


def picture_difference(a: Picture, b: Picture, step: int = 2) -> float:
    """Mean absolute difference of two luma planes of one size, as a share (0 to 1) of the
    8-bit range, read on every ``step``-th row and column."""
    if a.shape != b.shape:
        raise ValueError(f"pictures of different sizes: {a.shape} and {b.shape}")
    va = a[::step, ::step]
    vb = b[::step, ::step]
    if va.size == 0:
        return 0.0
    # int16 holds any difference of two uint8 values.
    diff = np.abs(va.astype(np.int16) - vb.astype(np.int16))
    return float(diff.mean()) / 255.0


def is_still(difference: float) -> bool:
    """Whether a picture ``difference`` away from the reference counts as unchanged."""
    return difference <= FREEZE_LEVEL


class StillReference:
    """The reference picture freeze detection compares against (freezedetect's rule): the
    first picture of the current still run; a picture that differs by more than the level
    becomes the new reference. Holds one decimated copy of a picture and its time, which is
    the onset of a freeze (pass it as ``since`` to :meth:`ConditionDetector.observe`)."""

    def __init__(self, step: int = 2) -> None:
        self._step = step
        self._reference: npt.NDArray[np.int16] | None = None
        self.since: float | None = None
        """Source time of the reference picture, or None before the first."""

    def difference(self, t: float, y: Picture) -> float:
        """How far ``y`` (at source time ``t``) is from the reference (1.0 for the first
        picture or a new size), making ``y`` the reference when it is not still."""
        view = y[:: self._step, :: self._step]
        reference = self._reference
        if reference is None or reference.shape != view.shape:
            self._reference, self.since = view.astype(np.int16), t
            return 1.0
        # The reference is kept as int16, so each picture costs one subtraction into a
        # difference that cannot wrap, not two conversions (a third of the probe's time).
        diff = np.subtract(view, reference, dtype=np.int16)
        np.abs(diff, out=diff)
        level = int(diff.sum()) / (diff.size * 255.0)
        if not is_still(level):
            self._reference, self.since = view.astype(np.int16), t
        return level

    def reset(self) -> None:
        """Forget the reference (a new stream)."""
        self._reference = self.since = None


def is_silent(peaks_dbfs: Sequence[float]) -> bool:
    """Whether every channel's peak (dBFS) is at or below the silence level. No channels is
    not silence: that is no-audio."""
    return bool(peaks_dbfs) and max(peaks_dbfs) <= SILENCE_DBFS


def is_loudness_out(short_term_lufs: float) -> bool:
    """Whether a short-term loudness (LUFS; -inf for silence) is outside the range."""
    low, high = LOUDNESS_RANGE
    return not low <= short_term_lufs <= high


def is_absent(now: float, last: float | None, gap: float = ABSENCE_GAP) -> bool:
    """Whether what last arrived at source time ``last`` (None: never) is absent at ``now``."""
    return last is None or now - last > gap


def severity(kind: AlarmKind, value: float) -> float:
    """How bad ``value`` is for ``kind``, larger worse: what "worst value" compares.

    Values: black, the dark fraction; freeze, the difference; silence, the loudest channel's
    peak (dBFS); loudness, the short-term LUFS; no-audio and lost, the seconds without."""
    if kind is AlarmKind.FREEZE or kind is AlarmKind.SILENCE:
        return -value
    if kind is AlarmKind.LOUDNESS:
        low, high = LOUDNESS_RANGE
        return max(low - value, value - high)
    return value


# --- conditions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """A condition has lasted the debounce; it began at ``onset`` (source seconds)."""

    kind: AlarmKind
    onset: float
    value: float
    """The measurement at onset."""


@dataclass(frozen=True)
class Ended:
    """A started condition stopped at ``end``: the first good observation, or the last one
    seen before the time went back or the stream was closed."""

    kind: AlarmKind
    onset: float
    end: float
    worst: float
    """The worst measurement while it lasted (see :func:`severity`)."""


Transition = Started | Ended


class ConditionDetector:
    """One condition of one source, as a small state machine (see the module docstring).

    ``observe`` returns :class:`Started` once the measurement has been bad for ``debounce``
    seconds (onset: the first bad observation, or the ``since`` it gave), :class:`Ended` at the
    first good observation after that, else None. A bad run shorter than the debounce raises
    nothing. Time going back (a new stream, a discontinuity) ends a started condition at the
    last time seen and starts over; ``close`` does the same when the stream stops.
    """

    __slots__ = ("kind", "debounce", "_onset", "_onset_value", "_worst", "_started", "_last")

    def __init__(self, kind: AlarmKind, debounce: float = DEBOUNCE) -> None:
        if not debounce > 0 or math.isinf(debounce):
            raise ValueError(f"debounce {debounce!r} s: use a positive number of seconds")
        self.kind = kind
        self.debounce = debounce
        self._onset: float | None = None
        self._onset_value = 0.0
        self._worst = 0.0
        self._started = False
        self._last: float | None = None

    @property
    def active(self) -> bool:
        """Whether the condition has started and not ended."""
        return self._started

    @property
    def onset(self) -> float | None:
        """When the current bad run began (started or not yet), or None."""
        return self._onset

    def observe(
        self, t: float, bad: bool, value: float, since: float | None = None
    ) -> Transition | None:
        """Feed one measurement at source time ``t`` (seconds). ``since``: when a bad state
        began, if the measurement knows better than this observation (a freeze began at its
        reference picture, no-audio at the last samples); read when a bad run begins, and never
        later than ``t``."""
        ended = None
        if self._last is not None and t < self._last:
            ended = self.close()
        self._last = t
        if not bad:
            if self._started:
                assert self._onset is not None
                ended = Ended(self.kind, self._onset, t, self._worst)
            self._onset = None
            self._started = False
            return ended
        if self._onset is None:
            onset = t if since is None else min(since, t)
            self._onset, self._onset_value, self._worst = onset, value, value
        elif severity(self.kind, value) > severity(self.kind, self._worst):
            self._worst = value
        if ended is not None:
            return ended  # one transition per call: the new run starts at the next at the earliest
        if not self._started and t - self._onset >= self.debounce - _EPS:
            self._started = True
            return Started(self.kind, self._onset, self._onset_value)
        return None

    def close(self) -> Ended | None:
        """End a started condition at the last time seen (the stream stopped) and start over."""
        ended = None
        if self._started and self._onset is not None and self._last is not None:
            ended = Ended(self.kind, self._onset, self._last, self._worst)
        self._onset = None
        self._started = False
        self._last = None
        return ended


@dataclass(frozen=True)
class Derived:
    """One mosaic's view of a source's conditions: it shows the alarm of a condition that has
    lasted at least the mosaic's hold for its kind (from the onset, so the debounce counts
    towards the hold). Pure; ``settings`` are the mosaic's."""

    settings: AlarmSettings

    def due(self, kind: AlarmKind, onset: float) -> float | None:
        """The source time at which a condition with ``onset`` raises this mosaic's alarm, or
        None when the mosaic has the kind off."""
        hold = self.settings.hold(kind)
        return None if hold is None else onset + hold

    def shows(self, kind: AlarmKind, onset: float, now: float, end: float | None = None) -> bool:
        """Whether the mosaic shows the alarm at ``now`` for a condition that began at
        ``onset`` and, if ``end`` is given, stopped then."""
        due = self.due(kind, onset)
        if due is None or now < due - _EPS:
            return False
        return end is None or now < end

    def raised(self, kind: AlarmKind, onset: float, end: float) -> bool:
        """Whether a condition from ``onset`` to ``end`` raised the mosaic's alarm at all."""
        due = self.due(kind, onset)
        return due is not None and end >= due - _EPS
