"""A yuv420p picture as numpy planes: the mosaic's canvas, and the pixel helpers around it.

The canvas is one contiguous buffer laid out exactly like a tightly packed yuv420p frame (the
full-size Y plane, then the quarter-size U and V planes), with the three planes as numpy views
into it. That is the layout the grabbers put on ``frames.<source_id>`` and the layout
``av.VideoFrame.from_ndarray(..., format="yuv420p")`` takes as one ``(height * 3 / 2, width)``
array, so a tile goes in with three slice copies and the whole picture goes to the encoder
without any repacking.

4:2:0 chroma has one U and one V sample per 2x2 luma block, so every size and every origin here
is even (:func:`pipeline.state.mosaic.layout` guarantees that for tiles).

Colours are limited-range BT.601 (Y 16-235, U/V 16-240): that is what libswscale (and so the
grabber's PyAV ``reformat``) uses by default, so pictures rendered here (labels, dead tiles)
match the tiles around them. Pure: numpy only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import av
import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.uint8]


class Planes(NamedTuple):
    """The planes of a yuv420p picture: ``y`` is ``(h, w)``, ``u`` and ``v`` ``(h/2, w/2)``."""

    y: Plane
    u: Plane
    v: Plane

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.y.shape[0])


BLACK = (16, 128, 128)
"""Limited-range black: Y=16 is black, U=V=128 is no colour."""


def _check_even(width: int, height: int) -> None:
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(
            f"a yuv420p picture needs an even size of at least 2x2, not {width}x{height}"
        )


def yuv420p_size(width: int, height: int) -> int:
    """Bytes of a tightly packed yuv420p picture."""
    return width * height * 3 // 2


def planes_of(buffer: Any, width: int, height: int) -> Planes:
    """Views of the Y, U and V planes of a tightly packed yuv420p ``buffer`` (no copy).

    ``buffer`` is anything exposing the buffer protocol (``bytes``, ``memoryview``, an array) of
    exactly :func:`yuv420p_size` bytes; the views are read-only when the buffer is.
    """
    _check_even(width, height)
    flat = np.frombuffer(buffer, dtype=np.uint8)
    expected = yuv420p_size(width, height)
    if flat.size != expected:
        raise ValueError(
            f"a {width}x{height} yuv420p picture has {expected} bytes, this buffer has {flat.size}"
        )
    luma = width * height
    chroma = luma // 4
    return Planes(
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma :].reshape(height // 2, width // 2),
    )


def gray_planes(buffer: Any, width: int, height: int) -> Planes:
    """Planes of a ``gray`` picture (luma only): Y is a view, U and V are neutral."""
    _check_even(width, height)
    flat = np.frombuffer(buffer, dtype=np.uint8)
    if flat.size != width * height:
        raise ValueError(
            f"a {width}x{height} gray picture has {width * height} bytes, "
            f"this buffer has {flat.size}"
        )
    neutral = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    return Planes(flat.reshape(height, width), neutral, neutral)


def solid(width: int, height: int, yuv: tuple[int, int, int]) -> Planes:
    """A new picture of one colour (Y, U, V)."""
    _check_even(width, height)
    y, u, v = yuv
    return Planes(
        np.full((height, width), y, dtype=np.uint8),
        np.full((height // 2, width // 2), u, dtype=np.uint8),
        np.full((height // 2, width // 2), v, dtype=np.uint8),
    )


def rgb_to_yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """One RGB colour (0-255) as limited-range BT.601 (Y, U, V)."""
    pixel = np.array([[rgb, rgb], [rgb, rgb]], dtype=np.uint8)
    planes = rgb_to_planes(pixel)
    return int(planes.y[0, 0]), int(planes.u[0, 0]), int(planes.v[0, 0])


def rgb_to_planes(rgb: npt.NDArray[np.uint8]) -> Planes:
    """An ``(h, w, 3)`` RGB image as yuv420p planes (BT.601 limited range, 2x2 chroma mean)."""
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    _check_even(width, height)
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    # ITU-R BT.601 coefficients scaled to limited range (219 luma steps, 224 chroma steps).
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0

    def quarter(p: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        quartered: npt.NDArray[np.float32] = p.reshape(height // 2, 2, width // 2, 2).mean(
            axis=(1, 3)
        )
        return quartered

    def to_u8(p: npt.NDArray[np.float32]) -> Plane:
        return np.clip(np.rint(p), 0, 255).astype(np.uint8)

    return Planes(to_u8(y), to_u8(quarter(u)), to_u8(quarter(v)))


def planes_to_rgb(planes: Planes) -> npt.NDArray[np.uint8]:
    """Planes back to an ``(h, w, 3)`` RGB image (BT.601 limited range; chroma upsampled by
    repetition). For tests and debugging snapshots, not for the hot path."""
    y = planes.y.astype(np.float32) - 16.0
    u = np.repeat(np.repeat(planes.u, 2, axis=0), 2, axis=1).astype(np.float32) - 128.0
    v = np.repeat(np.repeat(planes.v, 2, axis=0), 2, axis=1).astype(np.float32) - 128.0
    # Inverse of the matrix in rgb_to_planes.
    r = 1.164383 * y + 1.596027 * v
    g = 1.164383 * y - 0.391762 * u - 0.812968 * v
    b = 1.164383 * y + 2.017232 * u
    rgb = np.stack([r, g, b], axis=-1)
    out: npt.NDArray[np.uint8] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return out


class Canvas:
    """A yuv420p picture of the mosaic's size, drawn into in place and handed to the encoder."""

    def __init__(self, width: int, height: int, background: tuple[int, int, int] = BLACK) -> None:
        _check_even(width, height)
        self.width = width
        self.height = height
        # Drawn straight into the planes of the frame the encoder takes: no 1.4 MB copy per
        # 720p picture (0.55 ms, an eighth of a stitcher's work at ultrafast; bench case 2).
        # The encoder copies the picture in before encode() returns, so reusing it is safe.
        self.frame = av.VideoFrame(width, height, "yuv420p")
        y, u, v = (
            np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)[
                :, : plane.width
            ]
            for plane in self.frame.planes
        )
        self.planes = Planes(y, u, v)
        self.fill(background)

    @property
    def array(self) -> Plane:
        """The whole picture as one ``(height * 3 / 2, width)`` array (a copy): the shape
        ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` takes."""
        return np.concatenate(
            [self.planes.y.ravel(), self.planes.u.ravel(), self.planes.v.ravel()]
        ).reshape(self.height * 3 // 2, self.width)

    def fill(self, yuv: tuple[int, int, int], box: tuple[int, int, int, int] | None = None) -> None:
        """Paint colour ``yuv`` over the whole canvas or over ``box`` = (x, y, width, height)."""
        x, y, w, h = box if box is not None else (0, 0, self.width, self.height)
        self._check_box(x, y, w, h)
        self.planes.y[y : y + h, x : x + w] = yuv[0]
        self.planes.u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = yuv[1]
        self.planes.v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = yuv[2]

    def blit(self, tile: Planes, x: int, y: int) -> None:
        """Copy picture ``tile`` with its top-left corner at (``x``, ``y``)."""
        w, h = tile.width, tile.height
        self._check_box(x, y, w, h)
        self.planes.y[y : y + h, x : x + w] = tile.y
        self.planes.u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = tile.u
        self.planes.v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = tile.v

    def region(self, x: int, y: int, width: int, height: int) -> Planes:
        """Writable views of a box of the canvas (even origin and size)."""
        self._check_box(x, y, width, height)
        return Planes(
            self.planes.y[y : y + height, x : x + width],
            self.planes.u[y // 2 : (y + height) // 2, x // 2 : (x + width) // 2],
            self.planes.v[y // 2 : (y + height) // 2, x // 2 : (x + width) // 2],
        )

    def _check_box(self, x: int, y: int, w: int, h: int) -> None:
        if x % 2 or y % 2 or w % 2 or h % 2:
            raise ValueError(f"box {w}x{h} at ({x}, {y}) is not on the 2x2 chroma grid")
        if x < 0 or y < 0 or w < 0 or h < 0 or x + w > self.width or y + h > self.height:
            raise ValueError(
                f"box {w}x{h} at ({x}, {y}) does not fit in the {self.width}x{self.height} canvas"
            )
