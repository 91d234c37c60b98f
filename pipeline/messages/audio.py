"""Decoded audio on core NATS, subject ``audio.<source_id>``: what a grabber decoded of its
source's first audio stream, for the stitcher of a mosaic that carries that tile's audio.

A message is ``<u32 header length, big endian><msgpack AudioHeader><samples>``, like a frame
(:mod:`pipeline.messages.frames`): the samples are signed 16-bit, interleaved (packed), in the
source's own rate and channel layout, so a grabber only converts what it already decoded; the
one stitcher that plays it resamples. Stereo at 48 kHz is 192 kB/s, a twelfth of a 320x180
tile's frames. Not stored in a stream: a listener wants what is live now.
"""

from __future__ import annotations

import msgspec

from pipeline.errors import MessageError
from pipeline.messages.frames import pack_headed, unpack_headed

MAX_AUDIO_CHANNELS = 8
"""The most channels a chunk carries (a source with more sends its first 8)."""


class AudioHeader(msgspec.Struct, frozen=True, kw_only=True, tag="audio/1"):
    """What a listener needs to play a chunk of samples; they follow the header."""

    source_id: str
    seq: int
    """Chunks of this grabber so far, from 0; grows across reconnects."""
    pts: float
    """Source time of the first sample, seconds (the frames' ``pts`` clock)."""
    wall: float
    """Wall-clock time the grabber handed it on, Unix seconds."""
    rate: int
    """Samples per second per channel."""
    channels: int
    layout: str
    """FFmpeg's name of the channel layout: "mono", "stereo", "5.1", ..."""
    samples: int
    """Samples per channel in this chunk."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AudioHeader)


def pack_audio(header: AudioHeader, pcm: bytes | bytearray | memoryview) -> bytes:
    """Encode an audio message; ``pcm`` holds ``header.samples * header.channels`` s16 values."""
    expected = header.samples * header.channels * 2
    if len(pcm) != expected:
        raise MessageError(
            f"audio chunk of {header.samples} samples x {header.channels} channels needs "
            f"{expected} bytes of s16, not {len(pcm)}"
        )
    return pack_headed(_encoder.encode(header), pcm)


def unpack_audio(payload: bytes) -> tuple[AudioHeader, memoryview]:
    """Decode an audio message into its header and a view of its s16 samples."""
    header, pcm = unpack_headed(payload, _decoder, "audio")
    if len(pcm) != header.samples * header.channels * 2:
        raise MessageError(
            f"audio chunk says {header.samples} samples x {header.channels} channels, "
            f"carries {len(pcm)} bytes"
        )
    return header, pcm
