"""Audio levels on core NATS, subject ``levels.<source_id>``: what a grabber's audio meter
(:mod:`pipeline.producers.levels`) measured, about five times a second per source with audio
(each message the meter's 100 ms readings since the last one, combined:
:func:`pipeline.producers.levels.combine`).

JSON, like the events and heartbeats (:mod:`pipeline.messages.codec`), not msgpack like frames:
a reading is small (about 250 bytes for stereo, 400 for 5.1) and comes five times a second, so
the format costs microseconds either way, and JSON can be read with ``nats sub 'levels.>'``.
Frames are binary only because of their pixels. Not stored in a stream: a meter or a detector
wants the newest reading, and one lost is replaced 200 ms later.
"""

from __future__ import annotations

import msgspec

from pipeline.errors import MessageError


class SourceLevels(msgspec.Struct, frozen=True, kw_only=True, tag="levels/1"):
    """A source's audio since the grabber's last message (its 100 ms readings combined, about
    200 ms): per-channel levels and the programme's loudness."""

    source_id: str
    seq: int
    """Readings of this grabber so far, from 0; grows across reconnects."""
    t: float
    """Source time of the end of the newest window, seconds (the frames' ``pts`` clock)."""
    wall: float
    """Wall-clock time the grabber measured it, Unix seconds (like a frame's ``wall``)."""
    peak_db: tuple[float, ...]
    """Sample peak per channel over the windows, dBFS, in the layout's channel order, to
    0.1 dB; -120 is digital silence."""
    rms_db: tuple[float, ...]
    """RMS per channel over the windows, dBFS (a full-scale sine: -3.0), to 0.1 dB."""
    momentary_lufs: float | None = None
    """EBU R128 momentary loudness (400 ms) of all channels, LUFS to 0.1; None until known."""
    short_term_lufs: float | None = None
    """EBU R128 short-term loudness (3 s) of all channels, LUFS to 0.1; None until known."""
    channels: int
    layout: str
    """FFmpeg's name of the channel layout: "mono", "stereo", "5.1", ..."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SourceLevels)


def encode_levels(levels: SourceLevels) -> bytes:
    """JSON bytes of a levels message."""
    return _encoder.encode(levels)


def decode_levels(data: bytes, subject: str = "") -> SourceLevels:
    """Decode a levels message from ``levels.<source_id>``."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        where = f" on {subject}" if subject else ""
        raise MessageError(f"cannot decode audio levels{where}: {exc}") from exc
