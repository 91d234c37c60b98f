"""Placeholder pictures for a tile that has no live picture to show.

- :func:`dead_tile`: the source stopped sending frames. A red cloud crossed out (the picture the
  original mosaic used, so operators recognise it), "no signal" and the tile's name, on a dark
  red background: unmistakable at a glance on a wall of 16 tiles, and red-dominant as a whole
  (a probe can tell a dead tile by its mean colour alone).
- :func:`waiting_tile`: the stitcher has not seen a frame of this source yet (its grabber is
  starting); a quiet dark grey with "connecting…", so a cold start does not look like an outage.

Both are drawn with Pillow in RGB, converted once to yuv420p planes and cached per tile size
(and name): a mosaic draws them every frame for as long as a source is down, so they must cost
nothing but a copy. The planes are read-only so a caller cannot damage the cached picture.
Pure: Pillow and numpy only.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

from pipeline.consumers.canvas import Planes, rgb_to_planes
from pipeline.consumers.labels import ELLIPSIS, fit_text, font

DEAD_BACKGROUND = (72, 10, 12)
CLOUD_RED = (230, 40, 40)
CROSS = (255, 255, 255)
WAITING_BACKGROUND = (44, 44, 48)
NO_SIGNAL = "no signal"
CONNECTING = f"connecting{ELLIPSIS}"


def _check(width: int, height: int) -> None:
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"a tile must have an even size, not {width}x{height}")


def _frozen(planes: Planes) -> Planes:
    for plane in planes:
        plane.flags.writeable = False
    return planes


def _draw_cloud(draw: ImageDraw.ImageDraw, cx: float, cy: float, width: float) -> None:
    """A cloud ``width`` wide centred on (cx, cy): three puffs on a rounded base."""
    h = width * 0.55
    base_top, base_bottom = cy, cy + h * 0.4
    draw.rounded_rectangle(
        (cx - width / 2, base_top, cx + width / 2, base_bottom),
        radius=(base_bottom - base_top) / 2,
        fill=CLOUD_RED,
    )
    # (centre x offset, centre y offset, radius) as fractions of the cloud's height.
    for dx, dy, r in ((-0.50, 0.12, 0.30), (0.05, -0.08, 0.46), (0.52, 0.10, 0.33)):
        x, y, radius = cx + dx * h, cy + dy * h, r * h
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=CLOUD_RED)


@functools.lru_cache(maxsize=256)
def dead_tile(width: int, height: int, name: str = "") -> Planes:
    """The "dead source" picture for a ``width`` x ``height`` tile called ``name`` (cached;
    callers pass what the tile's label says, a short URL for a nameless tile)."""
    _check(width, height)
    img = Image.new("RGB", (width, height), DEAD_BACKGROUND)
    draw = ImageDraw.Draw(img)

    cloud_w = min(width * 0.42, height * 0.75)
    cx, cy = width / 2, height * 0.36
    _draw_cloud(draw, cx, cy, cloud_w)

    # The cross over the cloud: two thick strokes, a tenth of the cloud's width.
    arm = cloud_w * 0.22
    stroke = max(2, round(cloud_w / 10))
    mid_y = cy + cloud_w * 0.05
    draw.line((cx - arm, mid_y - arm, cx + arm, mid_y + arm), fill=CROSS, width=stroke)
    draw.line((cx - arm, mid_y + arm, cx + arm, mid_y - arm), fill=CROSS, width=stroke)

    big = font(max(11, round(height / 9)))
    small = font(max(10, round(height / 12)))
    margin = max(4, width // 20)
    draw.text((cx, height * 0.68), NO_SIGNAL, fill=(255, 255, 255), font=big, anchor="mm")
    if name:
        shown = fit_text(" ".join(name.split()), small, width - 2 * margin)
        draw.text((cx, height * 0.84), shown, fill=(200, 200, 200), font=small, anchor="mm")

    return _frozen(rgb_to_planes(np.asarray(img, dtype=np.uint8)))


@functools.lru_cache(maxsize=64)
def waiting_tile(width: int, height: int) -> Planes:
    """The picture of a tile whose source has sent nothing yet (cached per size)."""
    _check(width, height)
    img = Image.new("RGB", (width, height), WAITING_BACKGROUND)
    draw = ImageDraw.Draw(img)
    face = font(max(10, round(height / 12)))
    draw.text((width / 2, height * 0.45), CONNECTING, fill=(150, 150, 150), font=face, anchor="mm")
    return _frozen(rgb_to_planes(np.asarray(img, dtype=np.uint8)))
