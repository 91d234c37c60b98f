"""One source's conditions, pure: measurements in, alarms raised and cleared out.

A grabber keeps one :class:`SourceWatch` for its source and feeds it, on its event loop:

- :meth:`SourceWatch.picture` for every picture it hands on (the dark fraction and the
  difference from the freeze reference, measured in the thread that had the pixels:
  :class:`PictureProbe`);
- :meth:`SourceWatch.audio` for every audio reading (per-channel peaks, short-term loudness);
- :meth:`SourceWatch.tick` a few times a second, for what is told by absence: ``lost`` (no
  pictures) and ``no-audio`` (audio expected, no readings);
- :meth:`SourceWatch.close` when it stops.

Each returns the :class:`Raised` and :class:`Cleared` changes to append as events. The
conditions are the detectors of :mod:`pipeline.monitoring.detect` (fixed levels, the 0.5 s
debounce); this module decides which detector sees what, and puts wall times on source times.

One cause, one alarm. A black picture is also a still one, and silence is also loudness out of
range; an operator wants the cause, so ``freeze`` is not fed while the picture is black, and
``loudness`` not while the audio is silent (each is fed "good" then, so a freeze that turns
black ends and the black alarm starts). When pictures stop (``lost``), the picture conditions end
at the last picture; when readings stop (``lost`` or ``no-audio``), the audio conditions end at
the last reading: nothing is measured any more, and the absence has its own alarm. ``no-audio``
is only raised while pictures arrive (a lost source is ``lost``), and only for a source that
had audio on this connection or an earlier one.

Clocks: picture and audio conditions run on the source clock (the frames' pts); their onset
gets a wall time by the same offset as the observation that raised it (a paced source is handed
on at its timestamps, so the two advance together). ``lost`` and ``no-audio`` run on the wall
clock (there is no source time while nothing arrives); their onset in source time is the time of
the last picture or reading, or of the first expected one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.monitoring.alarms import AlarmKind
from pipeline.monitoring.detect import (
    ABSENCE_GAP,
    DEBOUNCE,
    ConditionDetector,
    Ended,
    Started,
    StillReference,
    black_fraction,
    is_black,
    is_loudness_out,
    is_silent,
    is_still,
)

__all__ = ["Change", "Cleared", "PictureProbe", "Raised", "SourceWatch", "absence_gap"]

_PICTURE_KINDS = (AlarmKind.BLACK, AlarmKind.FREEZE)
_AUDIO_KINDS = (AlarmKind.SILENCE, AlarmKind.LOUDNESS)
_UNKNOWN_LOUDNESS = 0.0
"""The value a reading without short-term loudness yet (its first 3 s) is observed with; it
is never bad: not measured is not out of range."""


@dataclass(frozen=True)
class Raised:
    """A condition started: append ``alarm raised``."""

    kind: AlarmKind
    onset: float
    """Source time it began, seconds."""
    onset_wall: float
    value: float


@dataclass(frozen=True)
class Cleared:
    """A started condition ended: append ``alarm cleared``."""

    kind: AlarmKind
    onset: float
    end: float
    end_wall: float
    worst: float


Change = Raised | Cleared


def absence_gap(fps: float) -> float:
    """Seconds without pictures after which a source counts as absent: :data:`ABSENCE_GAP`, or
    three frame periods of a slow source (a 2 fps camera is not lost between its frames)."""
    return max(ABSENCE_GAP, 3.0 / fps) if fps > 0 else ABSENCE_GAP


PROBE_STEP = 4
"""A probe reads every 4th luma sample of every 4th row: a sixteenth of the picture (3,600
samples of a 320x180 tile), which still sees a small change (a clock's digits) and decides 98 %
black to a sample in 3,600. Measured per picture, reading a quarter (step 2) against a
sixteenth: 50 against 20 us alone, 143 against 94 us in a grabber sharing 2 cores with three
others (a 25 fps source: 3.6 against 2.4 ms a second)."""


class PictureProbe:
    """Measures pictures for black and freeze, in the thread that has their pixels: the share
    of dark luma samples, and the difference from the freeze reference (with the reference's
    time), on every :data:`PROBE_STEP`-th sample."""

    def __init__(self, full_range: bool = False, step: int = PROBE_STEP) -> None:
        self.full_range = full_range
        self._step = step
        self._still = StillReference(1)  # given the samples already read at ``step``

    def measure(self, t: float, y: npt.NDArray[np.uint8]) -> tuple[float, float, float | None]:
        """``(dark fraction, difference, reference time)`` of the luma plane ``y`` at source
        time ``t``."""
        return self.measure_samples(t, self.samples(y))

    def samples(self, y: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
        """The samples of ``y`` that the probe reads, as a copy (int16: the freeze
        reference's type), for :meth:`measure_samples` now or later."""
        return y[:: self._step, :: self._step].astype(np.int16)

    def measure_samples(
        self, t: float, samples: npt.NDArray[np.int16]
    ) -> tuple[float, float, float | None]:
        """:meth:`measure` of the samples :meth:`samples` read (pictures in order of ``t``).
        Read once for both measures: 15 against 17 us a 320x180 tile with warm caches."""
        dark = black_fraction(samples, self.full_range, 1)
        difference = self._still.difference(t, samples)
        return dark, difference, self._still.since

    def reset(self) -> None:
        """Forget the reference (the stream starts again)."""
        self._still.reset()


class SourceWatch:
    """The alarm conditions of one source; see the module docstring."""

    def __init__(self, gap: float = ABSENCE_GAP, debounce: float = DEBOUNCE) -> None:
        self.gap = gap
        self._detectors = {kind: ConditionDetector(kind, debounce) for kind in AlarmKind}
        # Source-to-wall offsets of the newest observation on each clock.
        self._picture_offset = 0.0
        self._audio_offset = 0.0
        self._last_picture: tuple[float, float] | None = None
        """(source time, wall) of the newest picture."""
        self._last_audio: tuple[float, float] | None = None
        """(source time, wall) of the newest reading."""
        self._started_wall: float | None = None
        self._wall = float("-inf")
        """The newest wall time seen: the wall-clock detectors' time never goes back (a
        picture measured in a thread may reach the loop after a later tick)."""
        self.expect_audio = False
        """Whether the source has (had) audio: set by the grabber when a connection has an
        audio stream; ``no-audio`` is only raised then."""

    @property
    def active(self) -> frozenset[AlarmKind]:
        """The kinds whose conditions are raised now."""
        return frozenset(k for k, d in self._detectors.items() if d.active)

    def start(self, wall: float) -> None:
        """The grabber started at ``wall``: ``lost`` counts from then until the first picture."""
        self._started_wall = wall

    # --- observations ---------------------------------------------------------------------

    def picture(
        self, t: float, wall: float, dark: float, difference: float, still_since: float | None
    ) -> list[Change]:
        """One picture handed on at ``wall`` (source time ``t``), measured by a
        :class:`PictureProbe`."""
        changes: list[Change] = []
        self._picture_offset = wall - t
        self._last_picture = (t, wall)
        self._feed(changes, AlarmKind.LOST, self._now(wall), False, 0.0)
        black = is_black(dark)
        self._feed(changes, AlarmKind.BLACK, t, black, dark)
        frozen = is_still(difference) and not black
        self._feed(changes, AlarmKind.FREEZE, t, frozen, difference, still_since)
        return changes

    def audio(
        self,
        t: float,
        wall: float,
        peaks_db: Sequence[float],
        short_term_lufs: float | None,
        window: float = 0.1,
    ) -> list[Change]:
        """One audio reading handed on at ``wall``: source time ``t`` is the end of its
        ``window`` s of samples, whose peaks are ``peaks_db``."""
        changes: list[Change] = []
        self._audio_offset = wall - t
        self._last_audio = (t, wall)
        self.expect_audio = True
        self._feed(changes, AlarmKind.NO_AUDIO, self._now(wall), False, 0.0)
        silent = is_silent(peaks_db)
        loudest = max(peaks_db, default=-120.0)
        # The peaks are the whole window's: silence begins (and ends) at a window's start.
        self._feed(changes, AlarmKind.SILENCE, t - window, silent, loudest)
        loud = short_term_lufs is not None and is_loudness_out(short_term_lufs) and not silent
        value = _UNKNOWN_LOUDNESS if short_term_lufs is None else short_term_lufs
        self._feed(changes, AlarmKind.LOUDNESS, t, loud, value)
        return changes

    def tick(self, wall: float) -> list[Change]:
        """Check what is told by absence, at wall time ``wall``."""
        changes: list[Change] = []
        last_picture = self._last_picture[1] if self._last_picture else self._started_wall
        if last_picture is None:
            return changes  # not started
        wall = self._now(wall)
        absent = wall - last_picture
        lost = absent > self.gap
        self._feed(changes, AlarmKind.LOST, wall, lost, absent, last_picture)
        if lost:
            self._end(changes, _PICTURE_KINDS)
        if self.expect_audio:
            last_audio = self._last_audio[1] if self._last_audio else last_picture
            silent_for = wall - last_audio
            gone = silent_for > self.gap
            no_audio = gone and not lost
            self._feed(changes, AlarmKind.NO_AUDIO, wall, no_audio, silent_for, last_audio)
            if gone:
                self._end(changes, _AUDIO_KINDS)
        return changes

    def close(self, wall: float) -> list[Change]:
        """The grabber stops: every raised condition ends (at the last time it was seen)."""
        changes: list[Change] = []
        for kind, detector in self._detectors.items():
            ended = detector.close()
            if ended is not None:
                changes.append(self._cleared(ended, kind, wall))
        return changes

    # --- the detectors --------------------------------------------------------------------

    def _now(self, wall: float) -> float:
        self._wall = max(self._wall, wall)
        return self._wall

    def _feed(
        self,
        changes: list[Change],
        kind: AlarmKind,
        t: float,
        bad: bool,
        value: float,
        since: float | None = None,
    ) -> None:
        result = self._detectors[kind].observe(t, bad, value, since)
        if result is None:
            return
        if isinstance(result, Started):
            changes.append(self._raised(result))
        else:
            changes.append(self._cleared(result, kind, None))

    def _end(self, changes: list[Change], kinds: Sequence[AlarmKind]) -> None:
        for kind in kinds:
            ended = self._detectors[kind].close()
            if ended is not None:
                changes.append(self._cleared(ended, kind, None))

    def _raised(self, started: Started) -> Raised:
        kind = started.kind
        if kind in (AlarmKind.LOST, AlarmKind.NO_AUDIO):
            # Wall-clock conditions: the onset is a wall time; in source time it is the last
            # picture (or reading) plus the time since, on that clock's offset.
            offset = self._offset_for(kind)
            return Raised(kind, started.onset - offset, started.onset, started.value)
        offset = self._offset_for(kind)
        return Raised(kind, started.onset, started.onset + offset, started.value)

    def _cleared(self, ended: Ended, kind: AlarmKind, wall: float | None) -> Cleared:
        offset = self._offset_for(kind)
        if kind in (AlarmKind.LOST, AlarmKind.NO_AUDIO):
            return Cleared(
                kind, ended.onset - offset, ended.end - offset, wall or ended.end, ended.worst
            )
        return Cleared(kind, ended.onset, ended.end, wall or ended.end + offset, ended.worst)

    def _offset_for(self, kind: AlarmKind) -> float:
        """Wall minus source time on the clock of ``kind``'s measurements."""
        if kind in (AlarmKind.SILENCE, AlarmKind.LOUDNESS, AlarmKind.NO_AUDIO):
            return self._audio_offset if self._last_audio else self._picture_offset
        return self._picture_offset
