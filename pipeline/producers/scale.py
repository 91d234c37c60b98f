"""Fitting decoded pictures into a mosaic tile: one reused scaler, one reused tile buffer.

The picture keeps its display aspect (:func:`pipeline.state.mosaic.fit`), is centred at even offsets
(4:2:0 chroma covers 2x2 pixels) and the rest of the tile is black. The result is packed
yuv420p, BT.601/709 limited range as the source had it (full-range sources, e.g. MJPEG
cameras, are converted to limited range): Y, then U, then V, no line padding,
``width * height * 3 // 2`` bytes.

Scaler choice, measured on a 1280x720 H.264 source (testsrc2 with noise, 4 Mbit/s) scaled to
320x180, one thread, against a Lanczos reference:

| interpolation  | ms/frame | PSNR vs Lanczos |
|----------------|----------|-----------------|
| POINT          | 0.04     | 31.1 dB (aliasing) |
| FAST_BILINEAR  | 0.14     | 24.4 dB (2-tap: aliasing at 4x down) |
| AREA           | 0.14     | 41.9 dB |
| BILINEAR       | 0.22     | 39.8 dB |
| BICUBIC        | 0.34     | -       |

AREA is as cheap as FAST_BILINEAR and the closest to the reference, so it is the default; the
decode of that source costs 1.7-2.5 ms/frame, so scaling is a small part either way.

A grabber making several tile sizes scales the smaller ones from the largest tile's picture
(``via``): 160x90 from a 320x180 tile costs 0.064 ms a frame against 0.214 ms from the 720p
picture, and the two tiles are 47 dB PSNR apart (AREA of AREA is nearly AREA; bench case 11,
``second_size_via_tile_ms``).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Interpolation, VideoReformatter

from pipeline.state.mosaic import fit

LOWRES_MAX = {"mpeg1video": 3, "mpeg2video": 3, "mjpeg": 3, "mpeg4": 3, "dvvideo": 3}
"""Decoders that can decode at 1/2, 1/4 or 1/8 of the size (FFmpeg's ``lowres``), and how far:
tried here on each (H.264 and HEVC have no such mode). A 1280x720 MPEG-2 source decodes in
0.67 ms a frame at quarter size against 1.13 ms whole (bench clip content, one thread), and the
scaler then has a quarter of the pixels."""

BLACK = (16, 128, 128)
"""Limited-range Y, U, V of black: the letterbox bars."""


def _even(value: int) -> int:
    return value - value % 2


def lowres_factor(codec: str, width: int, height: int, tile_w: int, tile_h: int) -> int:
    """How many halvings (0 to the codec's :data:`LOWRES_MAX`) a ``width`` x ``height``
    picture of ``codec`` can be decoded at and still cover a ``tile_w`` x ``tile_h`` tile in
    both directions: nothing the tile shows is lost, the scaler only has less to shrink."""
    factor = 0
    most = LOWRES_MAX.get(codec, 0)
    while factor < most and width >> (factor + 1) >= tile_w and height >> (factor + 1) >= tile_h:
        factor += 1
    return factor


class TileScaler:
    """Scales frames into a ``width`` x ``height`` tile. Not thread-safe: one per decode thread."""

    def __init__(
        self, width: int, height: int, *, interpolation: Interpolation = Interpolation.AREA
    ) -> None:
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError(f"tile {width}x{height}: width and height must be even and >= 2")
        self.width = width
        self.height = height
        self.interpolation = interpolation
        self._reformatter = VideoReformatter()
        self._buffer: npt.NDArray[np.uint8] = np.empty(width * height * 3 // 2, dtype=np.uint8)
        y_size, c_size = width * height, width * height // 4
        self._y = self._buffer[:y_size].reshape(height, width)
        self._u = self._buffer[y_size : y_size + c_size].reshape(height // 2, width // 2)
        self._v = self._buffer[y_size + c_size :].reshape(height // 2, width // 2)
        self._key: tuple[int, int, Fraction] | None = None
        self.placement = (0, 0, width, height)
        """``(x, y, w, h)`` of the picture inside the tile, for the last frame scaled."""
        self.picture: av.VideoFrame | None = None
        """The last frame scaled, at its size in the tile (without the bars): what a smaller
        tile of the same source may be scaled from (``via``). Valid until the next call."""

    @property
    def frame_size(self) -> int:
        """Bytes of one packed tile."""
        return self._buffer.size

    def _place(self, src_w: int, src_h: int, sar: Fraction) -> None:
        key = (src_w, src_h, sar)
        if key == self._key:
            return
        self._key = key
        w, h = fit(src_w, src_h, self.width, self.height, float(sar))
        w, h = min(w, self.width), min(h, self.height)
        x, y = _even((self.width - w) // 2), _even((self.height - h) // 2)
        self.placement = (x, y, w, h)
        if (w, h) != (self.width, self.height):
            self._y.fill(BLACK[0])
            self._u.fill(BLACK[1])
            self._v.fill(BLACK[2])

    def scale(
        self,
        frame: av.VideoFrame,
        sar: Fraction | None = None,
        *,
        via: av.VideoFrame | None = None,
    ) -> memoryview:
        """``frame`` fitted into the tile, as a view of the reused tile buffer.

        ``sar`` is the source's sample aspect ratio (None or 0: square pixels). ``via``: the
        same picture already scaled for a larger tile (that scaler's :attr:`picture`); it is
        scaled from instead of ``frame`` when it has at least the pixels this tile's picture
        needs both ways (a grabber making several tile sizes: the smaller ones then cost a
        scale of tile pixels, not of the decoded picture; measured in bench case 11). The
        placement is always the source's, so both ways give the same picture size. The view
        is overwritten by the next call: copy it (``pack_frame`` does) before scaling again.
        """
        if sar is None or sar <= 0:
            sar = Fraction(1)
        self._place(frame.width, frame.height, sar)
        x, y, w, h = self.placement
        if via is not None and via.width >= w and via.height >= h:
            frame = via
        full = frame.color_range == ColorRange.JPEG or frame.format.name.startswith("yuvj")
        scaled = self._reformatter.reformat(
            frame,
            w,
            h,
            "yuv420p",
            interpolation=self.interpolation,
            src_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
            dst_color_range=ColorRange.MPEG,
            threads=1,
        )
        self.picture = scaled
        for plane, target, scale in zip(
            scaled.planes, (self._y, self._u, self._v), (1, 2, 2), strict=True
        ):
            rows = np.frombuffer(
                memoryview(plane), dtype=np.uint8, count=plane.line_size * plane.height
            ).reshape(plane.height, plane.line_size)
            target[y // scale : (y + h) // scale, x // scale : (x + w) // scale] = rows[
                : h // scale, : w // scale
            ]
        return self._buffer.data
