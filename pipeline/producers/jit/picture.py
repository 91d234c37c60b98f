"""What a JIT session's pictures become: output size and colour decisions. Pure: no PyAV.

- **Size**: the decoded picture (after ``lowres``) shown with its sample aspect ratio (the
  stream's, or the ``sample_aspect_num/den`` override): without ``width``/``height`` the
  output has square pixels at the decoded height; with one of them the other follows the
  display aspect ratio; with both, both are used. Sizes are even (4:2:0 chroma needs it) and
  capped at :data:`MAX_PIXELS`.
- **Colour**: the output is BT.709, limited range, yuv420p (what browsers assume for WebRTC
  video). The source matrix is the ``colorspace`` option when given (the file lies), else the
  stream's tag, else the usual guess: BT.709 from 720 lines up, BT.601 below.
- **Tone mapping**: with ``bt2100_tone_mapping``, the source is BT.2100: HLG when tagged
  ``arib-std-b67``, else PQ (SMPTE ST 2084); see :mod:`pipeline.producers.jit.tonemap`.

Colour constants are FFmpeg's: ``SWS_CS_*`` for swscale's matrices, ``AVCOL_*`` for tags.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

from pipeline.producers.jit.errors import JitOptionsError

MAX_PIXELS = 4096 * 2160
"""Largest output picture (DCI 4K)."""

# swscale's matrix constants (libswscale/swscale.h SWS_CS_*).
SWS_BT709 = 1
SWS_FCC = 4
SWS_BT601 = 5
SWS_SMPTE240M = 7
SWS_BT2020 = 9

# FFmpeg's colour tags on frames (libavutil/pixfmt.h AVCOL_SPC_*, AVCOL_TRC_*, AVCOL_RANGE_*).
_SPC_TO_SWS = {1: SWS_BT709, 4: SWS_FCC, 5: SWS_BT601, 6: SWS_BT601, 7: SWS_SMPTE240M}
_SPC_TO_SWS |= {9: SWS_BT2020, 10: SWS_BT2020}
TRC_PQ = 16
TRC_HLG = 18
RANGE_MPEG = 1
RANGE_JPEG = 2

COLORSPACES: dict[str, int] = {
    "bt709": SWS_BT709,
    "bt601": SWS_BT601,
    "smpte170m": SWS_BT601,
    "bt470bg": SWS_BT601,
    "fcc": SWS_FCC,
    "smpte240m": SWS_SMPTE240M,
    "bt2020": SWS_BT2020,
    "bt2020nc": SWS_BT2020,
    "bt2020ncl": SWS_BT2020,
    "bt2020c": SWS_BT2020,
}
"""Names the ``colorspace`` option accepts, and the matrix each means."""

HD_LINES = 720
"""From this height up an untagged picture is taken as BT.709, below as BT.601."""

Transfer = Literal["pq", "hlg"]


def even(value: float | Fraction) -> int:
    """``value`` rounded to the nearest even number (halves up), at least 2."""
    return max(2, 2 * math.floor(value / 2 + Fraction(1, 2)))


def sample_aspect(num: int | None, den: int | None, stream: Fraction | None) -> Fraction:
    """The sample aspect ratio to use: the override when both parts are given, else the
    stream's, else square."""
    if num is not None or den is not None:
        if num is None or den is None or num <= 0 or den <= 0:
            raise JitOptionsError(
                f"sample_aspect_num={num}, sample_aspect_den={den}: give both, above 0"
            )
        return Fraction(num, den)
    if stream is None or stream <= 0:
        return Fraction(1)
    return stream


def output_size(
    width: int,
    height: int,
    sar: Fraction,
    want_width: int | None,
    want_height: int | None,
    fit: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The (even) output size of a ``width`` x ``height`` picture with pixels of ``sar``: the
    size asked for (one side: the other keeps the shape), else the picture's display size,
    scaled down to fit in ``fit`` (width, height) when it is larger."""
    display = Fraction(width) * sar  # display width at the decoded height
    for name, value in (("width", want_width), ("height", want_height)):
        if value is not None and value < 2:
            raise JitOptionsError(f"{name}={value}: use at least 2 pixels")
    if want_width is not None and want_height is not None:
        size = (even(want_width), even(want_height))
    elif want_width is not None:
        size = (even(want_width), even(want_width * height / display))
    elif want_height is not None:
        size = (even(want_height * display / height), even(want_height))
    elif fit is not None and (display > fit[0] or height > fit[1]):
        scale = min(Fraction(fit[0]) / display, Fraction(fit[1], height))
        size = (
            min(fit[0] - fit[0] % 2, even(display * scale)),
            min(fit[1] - fit[1] % 2, even(height * scale)),
        )
    else:
        size = (even(display), even(height))
    if size[0] * size[1] > MAX_PIXELS:
        raise JitOptionsError(
            f"a {size[0]}x{size[1]} output exceeds the {MAX_PIXELS}-pixel limit: "
            "ask for a smaller width or height, or use lowres"
        )
    return size


def source_matrix(option: str | None, tagged: int, height: int) -> int:
    """The swscale matrix of the source: the option, else the tag, else a guess by height."""
    if option is not None:
        matrix = COLORSPACES.get(option.strip().lower())
        if matrix is None:
            names = ", ".join(sorted(COLORSPACES))
            raise JitOptionsError(f"colorspace={option!r} is unknown: use one of {names}")
        return matrix
    if tagged in _SPC_TO_SWS:
        return _SPC_TO_SWS[tagged]
    return SWS_BT709 if height >= HD_LINES else SWS_BT601


def source_range(tagged: int, pixel_format: str) -> int:
    """Full (JPEG) range when tagged so or for the ``yuvj*`` formats, else limited (MPEG)."""
    if tagged == RANGE_JPEG or pixel_format.startswith("yuvj"):
        return RANGE_JPEG
    return RANGE_MPEG


def transfer(tone_mapping: bool, tagged_trc: int) -> Transfer | None:
    """Which BT.2100 curve to tone map from, or None when no tone mapping is asked."""
    if not tone_mapping:
        return None
    return "hlg" if tagged_trc == TRC_HLG else "pq"
