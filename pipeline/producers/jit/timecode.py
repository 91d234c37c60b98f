"""SMPTE timecodes of frame numbers (SMPTE ST 12-1). Pure: no I/O.

- Non-drop-frame: ``HH:MM:SS:FF``, counting ``nominal`` frames per second, where ``nominal`` is
  the frame rate rounded up (25 -> 25, 24000/1001 -> 24, 30000/1001 -> 30).
- Drop-frame, for 29.97 (30000/1001) and 59.94 (60000/1001) only: ``HH:MM:SS;FF``. The frame
  *numbers* ``;00`` and ``;01`` (``;00``-``;03`` at 59.94) are skipped at the start of every
  minute except minutes 00, 10, 20, 30, 40 and 50, so the timecode stays within about a frame
  of the wall clock (30 fps counting loses 108 frames per hour at 29.97; 9 minutes in 10 drop
  2 frames: 9 * 2 * 6 = 108). No picture is dropped: only labels.

Hours wrap at 24, as on a tape deck.
"""

from __future__ import annotations

import re
from fractions import Fraction

DROP_FRAME_RATES = {Fraction(30000, 1001): 2, Fraction(60000, 1001): 4}
"""Frame rates that use drop-frame timecode, with the frame numbers dropped per minute."""

_TIMECODE_RE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})([:;])(\d{2,3})$")
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
