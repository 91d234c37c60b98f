"""Tile name labels: white text on a semi-transparent dark strip along the bottom of a tile.

Text is rasterised once per (text, tile size) into a small alpha mask, with DejaVu Sans when the
host has it (wide coverage: Latin, Greek, Cyrillic, punctuation such as dashes) and otherwise
Pillow's bundled scalable font (Aileron, Pillow >= 10.1: Latin only, so nothing breaks on a
host without fonts; characters it lacks show as boxes). The
mask is then folded into per-pixel fixed-point blend coefficients, so that drawing a label on a
frame is one multiply-add per strip pixel on the Y plane and one on each chroma plane::

    out = (pixel * scale + offset) >> 8

The strip darkens the picture (readable over any content), a one-pixel drop shadow keeps the
glyph edges readable over bright pictures, and the text is white. Chroma under the strip is
pulled towards neutral (128) so the backdrop looks grey rather than tinted.

A tile without a name is labelled with a short form of its URL (:func:`short_url`): the host and
the last path part, ellipsised to fit. Pure: Pillow and numpy only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from pipeline.consumers.canvas import Canvas

ELLIPSIS = "\u2026"
MAX_URL_CHARS = 48
"""A short URL longer than this is cut in its middle before it is fitted to the tile."""

STRIP_ALPHA = 0.65
"""Opacity of the dark strip: dark enough for white text over a white picture, light enough to
still see the picture through it."""

# Limited-range luma of the strip (black) and the text (white).
_DARK = 16.0
_WHITE = 235.0


def short_url(url: str, limit: int = MAX_URL_CHARS) -> str:
    """``host/last-part`` of ``url`` (``host/…/last-part`` when parts were skipped), at most
    ``limit`` characters, cut in the middle with an ellipsis when longer."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = unquote(parts.path if parts.scheme else url)
    segments = [s for s in path.split("/") if s]
    if host and segments:
        middle = f"/{ELLIPSIS}/" if len(segments) > 1 else "/"
        text = f"{host}{middle}{segments[-1]}"
    elif host:
        text = host
    elif segments:
        text = segments[-1]
    else:
        text = url
    return ellipsise_middle(text, limit)


def ellipsise_middle(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters by replacing its middle with an ellipsis."""
    if len(text) <= limit:
        return text
    if limit < 2:
        return text[:limit]
    keep = limit - 1
    head = (keep + 1) // 2
    tail = keep - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def label_text(name: str, url: str) -> str:
    """What a tile is labelled with: its name, or a short form of its URL."""
    name = " ".join(name.split())
    return name if name else short_url(url)


def font_size(tile_height: int) -> int:
    """Label font size in pixels for a tile of this height.

    About 1/12 of the tile height, so a 320x180 tile gets 15 px text (readable on a 1280x720
    mosaic of 16 tiles), clamped so that tiny tiles still get legible text and big tiles do not
    get a banner.
    """
    return max(11, min(32, round(tile_height / 12)))


FONT_FILES = ("DejaVuSans.ttf",)
"""Fonts tried first, by file name (Pillow searches the system font folders)."""

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.lru_cache(maxsize=64)
def font(size: int) -> Font:
    """The label font at ``size`` pixels (cached)."""
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def fit_text(text: str, face: Font, width: float) -> str:
    """``text``, cut at its end with an ellipsis until it is at most ``width`` pixels wide."""
    if face.getlength(text) <= width:
        return text
    lo, hi = 0, len(text)
    # Binary search of the longest prefix that fits with the ellipsis after it.
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if face.getlength(text[:mid].rstrip() + ELLIPSIS) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ELLIPSIS if lo else ELLIPSIS


@dataclass(frozen=True, eq=False)
class Label:
    """A rendered label: blend coefficients for a ``width`` x ``height`` strip.

    ``y_scale``/``y_offset`` are ``(height, width)``, ``c_scale``/``c_offset`` are
    ``(height/2, width/2)``; all ``uint16``, in 1/256 units, with ``scale * 255 + offset``
    below 65536 so the blend never overflows.
    """

    text: str
    width: int
    height: int
    mask: npt.NDArray[np.uint8]
    """Text coverage 0-255 (for tests and debugging)."""
    y_scale: npt.NDArray[np.uint16]
    y_offset: npt.NDArray[np.uint16]
    c_scale: npt.NDArray[np.uint16]
    c_offset: npt.NDArray[np.uint16]


def strip_height(tile_height: int) -> int:
    """Height of the label strip (even, for 4:2:0 chroma), at most a third of the tile."""
    height = round(font_size(tile_height) * 1.6)
    height = min(height, tile_height // 3)
    return max(2, height - height % 2)


@functools.lru_cache(maxsize=1024)
def render_label(text: str, tile_width: int, tile_height: int) -> Label:
    """The label strip for ``text`` on a ``tile_width`` x ``tile_height`` tile (cached)."""
    if tile_width < 2 or tile_height < 2 or tile_width % 2 or tile_height % 2:
        raise ValueError(f"a tile must have an even size, not {tile_width}x{tile_height}")
    height = strip_height(tile_height)
    face = font(font_size(tile_height))
    pad = max(2, height // 4)
    shown = fit_text(text, face, tile_width - 2 * pad - 1)

    text_img = Image.new("L", (tile_width, height), 0)
    ImageDraw.Draw(text_img).text((pad, height / 2), shown, fill=255, font=face, anchor="lm")
    shadow_img = Image.new("L", (tile_width, height), 0)
    ImageDraw.Draw(shadow_img).text(
        (pad + 1, height / 2 + 1), shown, fill=255, font=face, anchor="lm"
    )
    mask = np.asarray(text_img, dtype=np.uint8)
    text_a = mask.astype(np.float64) / 255.0
    shadow_a = np.asarray(shadow_img, dtype=np.float64) / 255.0

    # out = ((p(1-a) + DARK a)(1-s) + DARK s)(1-t) + WHITE t = p * k + c, with a the strip,
    # s the shadow and t the text coverage.
    keep = (1.0 - STRIP_ALPHA) * (1.0 - shadow_a) * (1.0 - text_a)
    add = ((_DARK * STRIP_ALPHA) * (1.0 - shadow_a) + _DARK * shadow_a) * (1.0 - text_a)
    add += _WHITE * text_a
    # Chroma: pulled to neutral by whatever covers the 2x2 block (strip, shadow or text).
    c_cover = (1.0 - keep).reshape(height // 2, 2, tile_width // 2, 2).mean(axis=(1, 3))
    c_keep = 1.0 - c_cover
    c_add = 128.0 * c_cover

    def fixed(a: npt.NDArray[np.float64]) -> npt.NDArray[np.uint16]:
        return np.rint(a * 256.0).astype(np.uint16)

    return Label(
        text=shown,
        width=tile_width,
        height=height,
        mask=mask,
        y_scale=fixed(keep),
        y_offset=fixed(add),
        c_scale=fixed(c_keep),
        c_offset=fixed(c_add),
    )


def draw_label(canvas: Canvas, label: Label, x: int, y: int, tile_height: int) -> None:
    """Blend ``label`` over the bottom of the tile whose top-left corner is (``x``, ``y``)."""
    top = y + tile_height - label.height
    region = canvas.region(x, top, label.width, label.height)
    for plane, scale, offset in (
        (region.y, label.y_scale, label.y_offset),
        (region.u, label.c_scale, label.c_offset),
        (region.v, label.c_scale, label.c_offset),
    ):
        blended = plane.astype(np.uint16)
        blended *= scale
        blended += offset
        blended >>= 8
        plane[...] = blended
