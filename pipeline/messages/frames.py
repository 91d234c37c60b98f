"""Frames on stream ``FRAMES``, subject ``frames.<source_id>``: tile-sized pictures.

A frame message is ``<u32 header length, big endian><msgpack FrameHeader><pixels>``. The header
is tiny and the pixels are large, so they are not wrapped in one msgpack value: unpacking hands
out a :class:`memoryview` of the pixels without copying them. The pixels are the packed planes,
or their JPEG (``encoding``).
"""

from __future__ import annotations

import struct
from typing import Literal, TypeVar

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
    encoding: Literal["raw", "zstd", "jpeg"] = "raw"
    """How the pixels are carried: ``raw`` (the packed planes), ``jpeg`` (a 4:2:0 JPEG of the
    yuv420p planes, :mod:`pipeline.frames.tilecodec`: frames that cross machines); ``zstd`` is
    reserved (no writer makes it, readers refuse it)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(FrameHeader)


def pack_frame(header: FrameHeader, pixels: bytes | bytearray | memoryview) -> bytes:
    """Encode a frame message."""
    return pack_headed(_encoder.encode(header), pixels)


def unpack_frame(payload: bytes) -> tuple[FrameHeader, memoryview]:
    """Decode a frame message into its header and a view of its pixels."""
    return unpack_headed(payload, _decoder, "frame")


# --- the layout, shared with decoded audio (pipeline.messages.audio) --------------------------

H = TypeVar("H")


def pack_headed(head: bytes, body: bytes | bytearray | memoryview) -> bytes:
    """``<u32 len(head), big endian><head><body>``: a small header before a large body."""
    return b"".join((_LEN.pack(len(head)), head, body))


def unpack_headed(
    payload: bytes, decoder: msgspec.msgpack.Decoder[H], what: str
) -> tuple[H, memoryview]:
    """The header (decoded by ``decoder``) and a view of the body of a :func:`pack_headed`
    message; ``what`` names the message in errors ("frame", "audio")."""
    if len(payload) < _LEN.size:
        raise MessageError(f"{what} message of {len(payload)} bytes is shorter than its header")
    (size,) = _LEN.unpack_from(payload)
    end = _LEN.size + size
    if end > len(payload):
        raise MessageError(f"{what} header claims {size} bytes, message has {len(payload)}")
    try:
        header = decoder.decode(payload[_LEN.size : end])
    except msgspec.DecodeError as exc:
        raise MessageError(f"bad {what} header: {exc}") from exc
    return header, memoryview(payload)[end:]
