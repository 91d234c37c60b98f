"""Tile frames as JPEG, for frames that cross machines: a packed yuv420p tile → JPEG → the
same planes.

A raw 320x180 tile is 86,400 bytes: 17 Mbit/s at 25 fps, per tile. Between a grabber and a
stitcher on different machines the tile goes as a JPEG of its planes instead: the Y, U and V
planes are coded as they are (4:2:0, no colour conversion either way), so the stitcher gets
back the planes it composes, in the same limited range.

Encode: libjpeg-turbo through ``simplejpeg`` (``encode_jpeg_yuv_planes``: the planes in, no
conversion, SIMD). Decode: FFmpeg's ``mjpeg`` decoder through PyAV, which hands back the planes
(yuvj420p; ``simplejpeg`` only decodes to RGB). Measured on the bench clip (testsrc2 with
temporal noise, 1280x720 H.264, scaled into tiles by the grabber's scaler), one thread, per
tile:

| way | 320x180 encode | 320x180 decode | 640x360 encode |
| --- | --- | --- | --- |
| simplejpeg (libjpeg-turbo) encode, PyAV mjpeg decode | 0.13 ms | 0.18 ms | 0.45 ms |
| PyAV mjpeg encode (FFmpeg's own JPEG encoder) | 0.41 ms | (same decoder) | 1.10 ms |

:data:`QUALITY` 85, measured over the bench clip, the same with heavy noise and FFmpeg's
``mandelbrot`` (fine detail everywhere), PSNR of all three planes against the raw tile:

| quality | 320x180 bytes | PSNR (worst content, worst frame) | 640x360 bytes |
| --- | --- | --- | --- |
| 75 | 6,000-7,000 | 36.8 dB | 15,600-19,900 |
| 85 | 7,500-9,300 | 39.5 dB (Y ≥ 42 dB) | 19,600-27,500 |
| 90 | 8,900-11,700 | 41.9 dB | 23,400-36,300 |

85 keeps every content above 38 dB for a tenth of the raw bytes; the mosaic's own H.264
encode (CRF 26) loses more than that, so the tile's JPEG does not show in the output. Bench
case 14 (``tile_transport``) measures the whole path, NATS included, against raw tiles.

Pure apart from the codecs: values in, values out. A :class:`TileDecoder` is not thread-safe
(one per thread: the stitcher's render thread has one).

Errors: :class:`TileCodecError` (a :class:`~pipeline.errors.MessageError`): a payload that is
not a 4:2:0 JPEG of the tile's size, or that does not decode.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import numpy.typing as npt
import simplejpeg

from pipeline.errors import MessageError

QUALITY = 85
"""JPEG quality of tile frames (libjpeg's 1-100 scale): see the module's table."""

Packed = npt.NDArray[np.uint8]
"""A packed yuv420p tile: ``width * height * 3 // 2`` bytes, Y then U then V."""


class TileCodecError(MessageError):
    """A tile frame's JPEG could not be used: not a 4:2:0 JPEG, not the tile's size, or
    undecodable."""


def _planes(pixels: Any, width: int, height: int) -> tuple[Packed, Packed, Packed]:
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"tile {width}x{height}: width and height must be even and >= 2")
    flat = np.frombuffer(pixels, dtype=np.uint8)
    luma, chroma = width * height, width * height // 4
    if flat.size != luma + 2 * chroma:
        raise ValueError(
            f"a {width}x{height} yuv420p tile has {luma + 2 * chroma} bytes, not {flat.size}"
        )
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma :].reshape(height // 2, width // 2),
    )


def encode(pixels: Any, width: int, height: int, quality: int = QUALITY) -> bytes:
    """The JPEG of a packed yuv420p ``width`` x ``height`` tile (anything with the buffer
    protocol); ValueError for a buffer that is not such a tile or a quality outside 1-100."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1 to 100, not {quality}")
    y, u, v = _planes(pixels, width, height)
    data: bytes = simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)
    return data


def jpeg_size(data: Any) -> tuple[int, int]:
    """``(width, height)`` of a 4:2:0 YCbCr JPEG, read from its header only (a few µs: cheap
    enough to check every frame where it arrives); :class:`TileCodecError` for anything
    else."""
    try:
        height, width, colorspace, subsampling = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise TileCodecError(f"not a JPEG: {exc}") from exc
    if (colorspace, subsampling) != ("YCbCr", "420"):
        raise TileCodecError(f"a {colorspace} {subsampling} JPEG, not a 4:2:0 YCbCr tile")
    return int(width), int(height)


class TileDecoder:
    """Decodes tile JPEGs back to packed yuv420p: FFmpeg's ``mjpeg`` decoder, one thread. Not
    thread-safe; ``close()`` releases it (safe twice)."""

    def __init__(self) -> None:
        self._ctx: Any = av.CodecContext.create("mjpeg", "r")
        self._ctx.thread_count = 1

    def decode(self, data: Any, width: int, height: int) -> Packed:
        """The packed planes of a JPEG that must be a ``width`` x ``height`` 4:2:0 tile (a new
        array each call); :class:`TileCodecError` when it is not, or does not decode."""
        if self._ctx is None:
            raise ValueError("this tile decoder is closed")
        try:
            frames = self._ctx.decode(av.Packet(data))
        except av.FFmpegError as exc:
            raise TileCodecError(f"JPEG tile does not decode: {exc}") from exc
        if len(frames) != 1:
            raise TileCodecError(f"a JPEG tile decoded into {len(frames)} pictures, not 1")
        frame = frames[0]
        if frame.format.name not in ("yuvj420p", "yuv420p"):
            raise TileCodecError(f"a {frame.format.name} JPEG, not a 4:2:0 tile")
        if (frame.width, frame.height) != (width, height):
            raise TileCodecError(f"a {frame.width}x{frame.height} JPEG for a {width}x{height} tile")
        # (height * 3 / 2, width): the planes packed, the layout a raw tile has.
        packed: Packed = frame.to_ndarray().reshape(-1)
        return packed

    def close(self) -> None:
        """Release the decoder. Safe twice."""
        self._ctx = None
