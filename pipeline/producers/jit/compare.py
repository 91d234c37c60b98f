"""A/B compare, pure: which frame of B goes with frame n of A, where A and B go in the picture,
and composing the two into one yuv420p picture (numpy; no PyAV).

An A/B compare session (``SessionOptions.compare``) plays two videos frame-locked and sends one
picture, composed in the worker, so that what a viewer sees side by side is always the pair
asked for, whatever the network does. The picture has the size a session of A alone would
send; :class:`~pipeline.messages.control.CompareState` says how it is composed:

- ``side-by-side``: A in the left half, B in the right, each scaled to fit its half (keeping
  its display aspect ratio) and centred in it, black around;
- ``wipe``: both scaled to fit the whole picture, A left of the split (``split``, 0 to 1 of
  the width, on an even column) and B right of it;
- ``difference``: how much A and B differ, per pixel: the largest absolute difference of its
  luma and of the two chroma samples of its 2x2 block, times :data:`DIFFERENCE_GAIN`, shown as
  grey on black (identical pixels are black; a difference of a quarter of the range or more
  is white); the picture has no colour;
- ``show``: ``"A"`` or ``"B"`` shows that video alone, fitted to the whole picture, whatever
  the mode (the A/B toggle); ``"both"`` composes by the mode.

**Frame lock** (:func:`frame_of_b`): the frame of B that goes with A's frame ``n`` is the one
nearest A's frame in time, plus the offset: ``floor(n * rate_b / rate_a + 1/2) + offset``, the
rates being each stream's own (so ``n + offset`` when they match; a 50 fps B beside a 25 fps A
shows B's frames ``2n + offset``). A frame of B that does not exist (before 0, past B's end) is
black in its place, in every mode (so the difference view shows A itself, amplified: all of it
differs); A is what plays, B never moves A.

Pictures are ``(height * 3 / 2, width)`` uint8 arrays: the Y plane, then U, then V, without
line padding (:mod:`pipeline.producers.jit.convert`); sizes and positions are even, so that
every 2x2 block has its own chroma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from pipeline.messages.control import Compare, CompareState
from pipeline.messages.events import MAX_COMPARE_OFFSET, SessionOptions
from pipeline.producers.jit.errors import CommandError
from pipeline.producers.jit.picture import even
from pipeline.state.layouts import Rect

Yuv = npt.NDArray[np.uint8]
Plane = npt.NDArray[np.uint8]

MAX_OFFSET = MAX_COMPARE_OFFSET
DIFFERENCE_GAIN = 4
"""How much the difference view amplifies: a difference of 55 levels (of 255) is white, so a
re-encode's faint noise shows as dark grey and a changed picture as white."""
BLACK = 16
"""Luma of black (limited range)."""
NEUTRAL = 128
"""Chroma of grey."""
WHITE = 235
"""Luma of white (limited range)."""


@dataclass(frozen=True)
class Layout:
    """Where A and B go in a ``width`` x ``height`` picture (None: not shown), and how."""

    width: int
    height: int
    a: Rect | None
    b: Rect | None
    kind: Literal["paste", "wipe", "difference"]
    split: int = 0
    """For a wipe: the first column of B (columns before it are A's)."""


def initial(options: SessionOptions) -> CompareState | None:
    """The compare settings a session starts with; None for a session of one video."""
    if not options.compare:
        return None
    return CompareState(mode=options.compare, offset=options.compare_offset)


def updated(state: CompareState, command: Compare) -> CompareState:
    """``state`` with what ``command`` changes; CommandError for a value out of range."""
    split, offset = command.split, command.offset
    if split is not None and not (math.isfinite(split) and 0.0 <= split <= 1.0):
        raise CommandError(f"split {split} is not from 0 (the left edge) to 1 (the right edge)")
    if offset is not None and abs(offset) > MAX_OFFSET:
        raise CommandError(f"offset {offset} is beyond ±{MAX_OFFSET} frames")
    changes = {
        name: value
        for name in ("mode", "split", "offset", "show")
        if (value := getattr(command, name)) is not None
    }
    return msgspec.structs.replace(state, **changes)


def frame_of_b(n: int, rate_a: Fraction, rate_b: Fraction, offset: int) -> int:
    """The frame of B that goes with A's frame ``n``: the nearest in time, plus ``offset``."""
    if rate_a == rate_b:
        return n + offset
    return math.floor(n * rate_b / rate_a + Fraction(1, 2)) + offset


def fit(aspect: Fraction, width: int, height: int) -> tuple[int, int]:
    """The largest even size of display aspect ratio ``aspect`` in a ``width`` x ``height``
    box (both even)."""
    if aspect <= 0:
        raise ValueError(f"aspect {aspect} must be positive")
    if aspect >= Fraction(width, height):
        return width, min(height, even(width / aspect))
    return min(width, even(height * aspect)), height


def _place(aspect: Fraction, box: Rect) -> Rect:
    """A picture of ``aspect`` fitted in ``box`` and centred (on even pixels)."""
    w, h = fit(aspect, box.w, box.h)
    return Rect(box.x + (box.w - w) // 4 * 2, box.y + (box.h - h) // 4 * 2, w, h)


def layout(
    state: CompareState, size: tuple[int, int], aspect_a: Fraction, aspect_b: Fraction
) -> Layout:
    """Where A (of display aspect ``aspect_a``) and B go in a picture of ``size``."""
    width, height = size
    full = Rect(0, 0, width, height)
    if state.show == "A":
        return Layout(width, height, _place(aspect_a, full), None, "paste")
    if state.show == "B":
        return Layout(width, height, None, _place(aspect_b, full), "paste")
    if state.mode == "side-by-side":
        half = width // 4 * 2
        left, right = Rect(0, 0, half, height), Rect(width - half, 0, half, height)
        return Layout(width, height, _place(aspect_a, left), _place(aspect_b, right), "paste")
    a, b = _place(aspect_a, full), _place(aspect_b, full)
    if state.mode == "wipe":
        split = min(width, 2 * round(state.split * width / 2))
        return Layout(width, height, a, b, "wipe", split)
    return Layout(width, height, a, b, "difference")


# -- composing --------------------------------------------------------------------------------


def planes(data: Yuv, width: int, height: int) -> tuple[Plane, Plane, Plane]:
    """Views of the Y, U and V planes of a packed ``width`` x ``height`` picture."""
    flat = data.reshape(-1)
    luma, chroma = width * height, (width // 2) * (height // 2)
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2),
    )


def blank(width: int, height: int) -> Yuv:
    """A black ``width`` x ``height`` picture."""
    data = np.empty((height * 3 // 2, width), dtype=np.uint8)
    data.reshape(-1)[: width * height] = BLACK
    data.reshape(-1)[width * height :] = NEUTRAL
    return data


def _paste(canvas: Yuv, width: int, height: int, picture: Yuv, at: Rect) -> None:
    for out, src, k in zip(
        planes(canvas, width, height), planes(picture, at.w, at.h), (1, 2, 2), strict=True
    ):
        x, y = at.x // k, at.y // k
        out[y : y + src.shape[0], x : x + src.shape[1]] = src


def _layer(width: int, height: int, picture: Yuv | None, at: Rect | None) -> Yuv:
    """``picture`` placed at ``at`` in a whole black picture (itself when it fills it)."""
    if picture is not None and at == Rect(0, 0, width, height):
        return picture
    canvas = blank(width, height)
    if picture is not None and at is not None:
        _paste(canvas, width, height, picture, at)
    return canvas


def compose(where: Layout, a: Yuv | None, b: Yuv | None) -> Yuv:
    """The picture of ``where`` from A's and B's pictures (each of its rectangle's size;
    None: black). A picture that fills the whole picture alone is returned as it is."""
    width, height = where.width, where.height
    if where.kind == "paste":
        if where.b is None:
            return _layer(width, height, a, where.a)
        if where.a is None:
            return _layer(width, height, b, where.b)
        canvas = blank(width, height)
        for picture, at in ((a, where.a), (b, where.b)):
            if picture is not None:
                _paste(canvas, width, height, picture, at)
        return canvas
    layer_a, layer_b = _layer(width, height, a, where.a), _layer(width, height, b, where.b)
    if where.kind == "wipe":
        out = np.empty_like(layer_a)
        for dst, pa, pb, k in zip(
            planes(out, width, height),
            planes(layer_a, width, height),
            planes(layer_b, width, height),
            (1, 2, 2),
            strict=True,
        ):
            split = where.split // k
            dst[:, :split] = pa[:, :split]
            dst[:, split:] = pb[:, split:]
        return out
    return _difference(layer_a, layer_b, width, height)


def _difference(a: Yuv, b: Yuv, width: int, height: int) -> Yuv:
    # Whole-row numpy passes in uint8 only (2 ms of CPU at 720p; a LUT or a broadcast over
    # 2x2 blocks took 5).
    diff = np.maximum(a, b)
    diff -= np.minimum(a, b)  # |a - b| without leaving uint8
    dy, du, dv = planes(diff, width, height)
    np.maximum(du, dv, out=du)
    # Each chroma sample covers a 2x2 block of luma: both rows of the block take the larger.
    wide = np.repeat(du, 2, axis=1)
    rows = dy.reshape(height // 2, 2, width)
    for k in (0, 1):
        np.maximum(rows[:, k, :], wide, out=rows[:, k, :])
    out = blank(width, height)
    luma = planes(out, width, height)[0]
    np.minimum(dy, (WHITE - BLACK) // DIFFERENCE_GAIN + 1, out=luma)  # no uint8 overflow
    luma *= DIFFERENCE_GAIN
    luma += BLACK
    np.minimum(luma, WHITE, out=luma)
    return out
