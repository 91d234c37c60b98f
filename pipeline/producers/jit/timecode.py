"""SMPTE timecodes of frame numbers (SMPTE ST 12-1). Pure: no I/O.

- Non-drop-frame: ``HH:MM:SS:FF``, counting ``nominal`` frames per second, where ``nominal`` is
  the frame rate rounded up (25 -> 25, 24000/1001 -> 24, 30000/1001 -> 30).
- Drop-frame, for 29.97 (30000/1001) and 59.94 (60000/1001) only: ``HH:MM:SS;FF``. The frame
  *numbers* ``;00`` and ``;01`` (``;00``-``;03`` at 59.94) are skipped at the start of every
  minute except minutes 00, 10, 20, 30, 40 and 50, so the timecode stays within about a frame
  of the wall clock (30 fps counting loses 108 frames per hour at 29.97; 9 minutes in 10 drop
  2 frames: 9 * 2 * 6 = 108). No picture is dropped: only labels.

Hours wrap at 24, as on a tape deck.

A file may record the label of its first frame (its *source time code*: a MOV's ``tmcd``
track, an MXF's start time code); :class:`Timecodes` labels a session's frames from it and
finds the frame a label names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

DROP_FRAME_RATES = {Fraction(30000, 1001): 2, Fraction(60000, 1001): 4}
"""Frame rates that use drop-frame timecode, with the frame numbers dropped per minute."""

_TIMECODE_RE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})([:;])(\d{2,3})$")
_SEPARATOR_RE = re.compile(r"[:;](?=\d{2,3}$)")
_DAY_HOURS = 24


def nominal_rate(rate: Fraction) -> int:
    """Frames counted per timecode second: the rate rounded up (29.97 counts 30)."""
    if rate <= 0:
        raise ValueError(f"frame rate {rate} must be positive")
    return -(-rate.numerator // rate.denominator)


def is_drop_frame(rate: Fraction) -> bool:
    """True for the rates whose timecode is drop-frame by convention (29.97 and 59.94)."""
    return rate in DROP_FRAME_RATES


def timecode(frame: int, rate: Fraction, *, drop_frame: bool | None = None) -> str:
    """The timecode of ``frame`` (0-based) at ``rate``.

    ``drop_frame`` defaults to :func:`is_drop_frame`; asking for drop-frame at another rate is
    a ValueError (drop-frame is only defined for 29.97 and 59.94).
    """
    if frame < 0:
        raise ValueError(f"frame {frame} is negative: timecodes start at frame 0")
    fps = nominal_rate(rate)
    drop = is_drop_frame(rate) if drop_frame is None else drop_frame
    if drop:
        if rate not in DROP_FRAME_RATES:
            raise ValueError(f"drop-frame timecode is only defined for 29.97 and 59.94, not {rate}")
        frame = _label_number(frame, fps, DROP_FRAME_RATES[rate])
    frames = frame % fps
    seconds = frame // fps % 60
    minutes = frame // (fps * 60) % 60
    hours = frame // (fps * 3600) % _DAY_HOURS
    separator = ";" if drop else ":"
    width = len(str(fps - 1))
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{frames:0{max(2, width)}d}"


def _label_number(frame: int, fps: int, dropped: int) -> int:
    """The frame count a drop-frame label encodes: ``frame`` plus the numbers skipped so far."""
    per_minute = fps * 60 - dropped  # frames in a minute that drops labels
    per_ten = fps * 600 - 9 * dropped  # frames in ten minutes (the first minute drops none)
    tens, rest = divmod(frame, per_ten)
    skipped = 9 * dropped * tens
    if rest >= dropped:
        # The first minute of each ten holds fps * 60 frames; each later one drops `dropped`.
        skipped += dropped * ((rest - dropped) // per_minute)
    return frame + skipped


def parse_timecode(text: str, rate: Fraction) -> int:
    """The frame number of a timecode at ``rate``: the inverse of :func:`timecode`.

    ``;`` before the frames means drop-frame. A label that drop-frame skips (``00:01:00;00``)
    or a field out of range is a ValueError naming it.
    """
    match = _TIMECODE_RE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a timecode such as 01:00:00:00 or 00:01:00;02")
    hours, minutes, seconds, separator, frames = match.groups()
    hh, mm, ss, ff = int(hours), int(minutes), int(seconds), int(frames)
    fps = nominal_rate(rate)
    if mm > 59 or ss > 59 or ff >= fps:
        raise ValueError(f"{text!r} has a field out of range at {fps} frames per second")
    count = ((hh * 60 + mm) * 60 + ss) * fps + ff
    if separator == ":":
        return count
    dropped = DROP_FRAME_RATES.get(rate)
    if dropped is None:
        raise ValueError(f"{text!r} is drop-frame, which {rate} fps does not use")
    total_minutes = hh * 60 + mm
    if ss == 0 and ff < dropped and total_minutes % 10 != 0:
        raise ValueError(f"{text!r} is a label drop-frame timecode skips")
    return count - dropped * (total_minutes - total_minutes // 10)


def frames_per_day(rate: Fraction, *, drop_frame: bool) -> int:
    """Frames from ``00:00:00:00`` to ``24:00:00:00``, where labels wrap."""
    fps = nominal_rate(rate)
    if not drop_frame:
        return fps * 3600 * _DAY_HOURS
    dropped = DROP_FRAME_RATES.get(rate)
    if dropped is None:
        raise ValueError(f"drop-frame timecode is only defined for 29.97 and 59.94, not {rate}")
    return _DAY_HOURS * 6 * (fps * 600 - 9 * dropped)  # six blocks of ten minutes an hour


@dataclass(frozen=True)
class Timecodes:
    """The labels of a session's frames: frame ``n`` (counted from 0) is labelled ``start + n``.

    ``start`` is the source time code, the label of frame 0 recorded in the file, or None
    (labels count from ``00:00:00:00``, drop-frame at 29.97 and 59.94). With a start, its
    separator says how labels count: ``;`` drop-frame, ``:`` not (a 29.97 file may record
    non-drop-frame time code). A start that is not a label at ``rate`` (a ``;`` at 25 fps, 24
    hours or more) is a ValueError naming it.
    """

    rate: Fraction
    start: str | None = None

    def __post_init__(self) -> None:
        if self.start is None:
            return
        first = parse_timecode(self.start, self.rate)
        if first >= frames_per_day(self.rate, drop_frame=self.drop_frame):
            raise ValueError(f"{self.start!r} is past 23:59:59: hours wrap at 24")

    @property
    def drop_frame(self) -> bool:
        """Whether labels count drop-frame."""
        if self.start is None:
            return is_drop_frame(self.rate)
        return ";" in self.start

    @property
    def first(self) -> int:
        """The frame count (from ``00:00:00:00``) of frame 0's label."""
        return 0 if self.start is None else parse_timecode(self.start, self.rate)

    def label(self, frame: int) -> str:
        """The label of frame ``frame`` (0-based)."""
        return timecode(self.first + frame, self.rate, drop_frame=self.drop_frame)

    def frame_of(self, text: str, frame_count: int | None = None) -> int:
        """The frame labelled ``text``: its count minus the start's.

        ``text`` is read in the labels' counting whichever separator it has (a reviewer of
        drop-frame material types ``01:00:10:00`` as often as ``01:00:10;00``). A video that
        runs past midnight is followed into the next day. A malformed label, one before the
        start or, when ``frame_count`` is given, one past the end is a ValueError naming it
        and the labels the video has.
        """
        separator = ";" if self.drop_frame else ":"
        number = parse_timecode(_SEPARATOR_RE.sub(separator, text.strip()), self.rate)
        number -= self.first
        if number < 0:
            wrapped = number + frames_per_day(self.rate, drop_frame=self.drop_frame)
            if frame_count is None or wrapped >= frame_count:
                raise ValueError(
                    f"{text.strip()} is before the start of the video, {self.label(0)}"
                )
            number = wrapped
        if frame_count is not None and number >= frame_count:
            raise ValueError(
                f"{text.strip()} is past the end: the video runs {self.label(0)}-"
                f"{self.label(frame_count - 1)} (frames 0-{frame_count - 1})"
            )
        return number
