"""Decoded audio frames as s16 interleaved samples, for ``audio.<source_id>``.

A grabber's audio decoder gives frames in whatever sample format the codec decodes to (AAC:
planar float; MP2: planar s16; AC-3: planar float; PCM: packed integers). The mosaic's audio
is played by one stitcher, which resamples anyway, so the grabber only makes one common form:
signed 16-bit, interleaved, at the source's own rate and layout, the first
:data:`~pipeline.messages.audio.MAX_AUDIO_CHANNELS` channels. numpy does it (a few microseconds a
1024-sample frame); an FFmpeg resampler per connection would be a filter graph to keep for the
same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from pipeline.messages.audio import MAX_AUDIO_CHANNELS

_FULL_SCALE = 32767.0


@dataclass(frozen=True)
class Pcm:
    """One decoded audio frame as s16 interleaved samples."""

    pts: float
    """Source time of its first sample, seconds."""
    rate: int
    channels: int
    layout: str
    samples: int
    """Samples per channel."""
    data: bytes


def to_s16(frame: av.AudioFrame, pts: float) -> Pcm:
    """``frame`` as s16 interleaved samples (its first :data:`MAX_AUDIO_CHANNELS` channels),
    placed at source time ``pts``. ValueError for a sample format numpy cannot read."""
    fmt = frame.format
    channels = frame.layout.nb_channels
    array = frame.to_ndarray()
    if fmt.is_planar:
        per_channel = array  # (channels, samples)
    else:
        per_channel = array.reshape(-1, channels).T  # packed: (1, samples * channels)
    kept = min(channels, MAX_AUDIO_CHANNELS)
    s16 = _as_s16(per_channel[:kept], fmt.name)
    layout = frame.layout.name if kept == channels else f"{kept} channels"
    return Pcm(
        pts=pts,
        rate=int(frame.sample_rate),
        channels=kept,
        layout=layout,
        samples=int(frame.samples),
        data=np.ascontiguousarray(s16.T).tobytes(),
    )


def _as_s16(x: npt.NDArray[np.generic], fmt: str) -> npt.NDArray[np.int16]:
    base = fmt.rstrip("p")
    out: npt.NDArray[np.int16]
    if base in ("flt", "dbl"):
        scaled = np.clip(x.astype(np.float32) * _FULL_SCALE, -32768.0, _FULL_SCALE)
        out = scaled.astype(np.int16)
    elif base == "s16":
        out = x.astype(np.int16, copy=False)
    elif base == "s32":
        out = (x.astype(np.int32, copy=False) >> 16).astype(np.int16)
    elif base == "s64":
        out = (x.astype(np.int64, copy=False) >> 48).astype(np.int16)
    elif base == "u8":
        out = ((x.astype(np.int16) - 128) << 8).astype(np.int16)
    else:
        raise ValueError(f"audio sample format {fmt!r} cannot be converted to s16")
    return out
