"""Frames on stream ``FRAMES``, subject ``frames.<source_id>``: tile-sized pictures.

A frame message is ``<u32 header length, big endian><msgpack FrameHeader><pixels>``. The header
is tiny and the pixels are large, so they are not wrapped in one msgpack value: unpacking hands
out a :class:`memoryview` of the pixels without copying them.
"""

from __future__ import annotations

import struct
from typing import Literal

import msgspec

from pipeline.errors import MessageError

_LEN = struct.Struct(">I")


class FrameHeader(msgspec.Struct, frozen=True, kw_only=True, tag="frame/1"):
    """What a stitcher needs to place a frame; pixels follow in ``pix_fmt`` planes."""

    source_id: str
    seq: int
    pts: float
    """Source presentation time, seconds (None-free: 0.0 when the source has none)."""
    wall: float
    """Wall-clock time the grabber decoded it, Unix seconds (glass-to-glass latency)."""
    width: int
    height: int
    pix_fmt: Literal["yuv420p", "gray"] = "yuv420p"
    encoding: Literal["raw", "zstd"] = "raw"


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(FrameHeader)


def pack_frame(header: FrameHeader, pixels: bytes | bytearray | memoryview) -> bytes:
    """Encode a frame message."""
    head = _encoder.encode(header)
    return b"".join((_LEN.pack(len(head)), head, pixels))


def unpack_frame(payload: bytes) -> tuple[FrameHeader, memoryview]:
    """Decode a frame message into its header and a view of its pixels."""
    if len(payload) < _LEN.size:
        raise MessageError(f"frame message of {len(payload)} bytes is shorter than its header")
    (size,) = _LEN.unpack_from(payload)
    end = _LEN.size + size
    if end > len(payload):
        raise MessageError(f"frame header claims {size} bytes, message has {len(payload)}")
    try:
        header = _decoder.decode(payload[_LEN.size : end])
    except msgspec.DecodeError as exc:
        raise MessageError(f"bad frame header: {exc}") from exc
    return header, memoryview(payload)[end:]
