"""The mosaic's sound, encoded: one source's decoded audio chunks in (from
:mod:`~pipeline.consumers.sound`), AAC-LC packets on the video's timeline out, one video
frame's worth per picture. It runs in the stitcher's executor thread, inside
:meth:`~pipeline.consumers.render.MosaicRenderer.render`, never on the event loop.

Per picture (:meth:`SoundEncoder.encode`):

1. each new chunk (s16 interleaved, any rate, up to 8 channels) is resampled to 48 kHz stereo
   float by FFmpeg's resampler (``av.AudioResampler``; 5.1 and other layouts are downmixed by
   FFmpeg's matrix: centre and surrounds at -3 dB, LFE dropped) and queued in the playout buffer
   (:class:`~pipeline.consumers.playout.Playout`) at the time its first sample was live;
2. the samples of this frame are pulled: ``frame_position(n + 1) - frame_position(n)`` of them
   (1920 at 25 fps), ending :data:`MARGIN` before the picture's wall time, silence where none
   came, so the track never has a hole whatever the source does;
3. they are encoded by FFmpeg's ``aac`` encoder at :data:`BITRATE`, with pts on the video's
   timeline: video frame ``n`` starts at audio sample ``n * 48000 / fps``.

The encoder hands a frame out only once it has the next two (its priming frame and its
lookahead): so that every AAC frame that ends within a video frame exists when that frame is
muxed, the encoder runs :data:`LEAD` samples ahead (the first picture feeds that much more).

**A/V offset.** A picture shows each tile's newest frame, between 0 and one source frame old
(plus transit). The sound that starts with picture ``n`` was live ``MARGIN + 1/fps +
LEAD/48000`` before that picture was made (the whole frame's worth, and the encoder's lead,
must be there when it is made). So the sound lags the pictures by ``MARGIN + 1/fps +
LEAD/48000`` less that frame's age: 0.083 to 0.123 s at 25 fps (measured end to end, 0.085 to
0.09 s; tests/test_stitcher_audio.py), the same in every part and segment, since the
timestamps are the video's. That is past the 60 ms of audio lag EBU R37 allows broadcast: the
price of a zero-delay picture. Holding the pictures back instead would cost latency for all.

Switching source (the chosen tile's audio came back or went, for the default choice) drops
what was queued of the old one and starts the new one after the margin: a short silence.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np

from pipeline.consumers.encoder import AudioTrack, EncoderError
from pipeline.consumers.playout import (
    ClockOffset,
    Playout,
    Samples,
    frame_position,
    position,
)
from pipeline.messages.audio import AudioHeader

log = logging.getLogger("tessera.stitcher")

RATE = 48_000
"""Samples per second of the mosaic's sound."""
LAYOUT = "stereo"
BITRATE = 128_000
"""Bits per second of the AAC-LC track."""
FRAME = 1024
"""Samples per AAC frame."""
LEAD = 2 * FRAME
"""Samples the encoder is fed ahead of the pictures: FFmpeg's ``aac`` encoder returns the
packet of a frame once it has two more (it primes with one frame and looks one ahead)."""
MARGIN = 0.04
"""Seconds between when the newest sample a picture takes was live and when the picture is
made: how late (jitter) a chunk may come and still be played."""
SLACK = 0.06
"""Seconds a chunk or a pull may be off where it would follow on and still follow on; past that
it starts anew (see :mod:`~pipeline.consumers.playout`)."""
CAPACITY = 2.0
"""Seconds of sound that may wait."""

_DEFAULT_LAYOUTS = {
    1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"
}  # fmt: skip
"""FFmpeg's default layout per channel count, for a chunk whose layout name it does not know."""


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """One message of ``audio.<source_id>`` as the stitcher took it."""

    header: AudioHeader
    pcm: memoryview | bytes
    """``header.samples * header.channels`` s16 values, interleaved."""
    arrival: float
    """Our wall-clock time when it came, Unix seconds."""


class _Discard:
    """Where the never-started container holding the encoder writes: nothing, ever."""

    def write(self, chunk: bytes) -> int:
        return len(chunk)


class SoundEncoder:
    """Chunks of one source at a time in, AAC packets out, one call per picture. See the
    module docstring. ``margin``: :data:`MARGIN`."""

    def __init__(self, fps: int, *, margin: float = MARGIN, bitrate: int = BITRATE) -> None:
        if fps < 1:
            raise EncoderError(f"fps={fps}: must be at least 1")
        if margin < 0:
            raise EncoderError(f"margin={margin}: seconds, >= 0")
        self.fps = fps
        self.margin = margin
        # The encoder is the codec of a stream of a container that is never started: so the
        # muxers can copy that stream's parameters without opening a codec of their own.
        self._holder = av.open(_Discard(), "w", format="mp4")
        try:
            self._stream = self._holder.add_stream(
                "aac", rate=RATE, layout=LAYOUT, bit_rate=bitrate
            )
            ctx = self._stream.codec_context
            ctx.format = "fltp"
            ctx.time_base = Fraction(1, RATE)
            ctx.open()
        except (av.error.FFmpegError, ValueError) as exc:
            raise EncoderError(f"cannot open FFmpeg's aac encoder: {exc}") from exc
        if not ctx.extradata:
            raise EncoderError("FFmpeg's aac encoder gave no AudioSpecificConfig")
        self._ctx = ctx
        self.track = AudioTrack(template=self._stream, extradata=ctx.extradata, rate=RATE)
        """What a muxer needs to add this encoder's stream."""
        self._playout = Playout(
            channels=2, slack=round(SLACK * RATE), capacity=round(CAPACITY * RATE)
        )
        self._offset = ClockOffset()
        self._resampler: av.AudioResampler | None = None
        self._format: tuple[int, int, str] | None = None
        self._next: int | None = None
        """Pts (samples) of the next sample to encode."""
        self._closed = False
        self.source = ""
        """Source id of the chunks taken last."""
        self.last: tuple[int, Samples] | None = None
        """Pts and samples of what the last :meth:`encode` encoded (for the Opus encode)."""
        self.bad = 0
        """Chunks that could not be resampled."""

    @property
    def playout(self) -> Playout:
        """The playout buffer (its counters say what was late, silent or jumped)."""
        return self._playout

    def encode(self, chunks: Sequence[AudioChunk], wall: float, frame: int) -> list[av.Packet[Any]]:
        """Take ``chunks``; encode the samples of video frame ``frame`` (pts in ``1/fps``; one
        call per frame, in order), the picture made at ``wall``; return the packets made."""
        if self._closed:
            raise EncoderError("sound encoder is closed")
        for chunk in chunks:
            self._take(chunk)
        stop = frame_position(frame + 1, self.fps, RATE) + LEAD
        if self._next is None:
            self._next = frame_position(frame, self.fps, RATE)
        count = stop - self._next
        if count <= 0:
            return []
        samples = self._playout.pull(position(wall - self.margin, RATE), count)
        self.last = (self._next, samples)
        sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout=LAYOUT)
        sound.sample_rate = RATE
        sound.pts = self._next
        sound.time_base = Fraction(1, RATE)
        self._next = stop
        try:
            packets = list(self._ctx.encode(sound))
        except av.error.FFmpegError as exc:
            raise EncoderError(f"aac encoder failed at sample {sound.pts}: {exc}") from exc
        for packet in packets:
            packet.time_base = Fraction(1, RATE)
        return packets

    def _take(self, chunk: AudioChunk) -> None:
        header = chunk.header
        if header.source_id != self.source:
            # Another tile's sound: nothing of the last one, and its clock is another's.
            self.source = header.source_id
            self._playout.clear()
            self._offset.reset()
        offset = self._offset.note(chunk.arrival, header.wall)
        try:
            samples = self._resample(header, chunk.pcm)
        except (av.error.FFmpegError, ValueError) as exc:
            self.bad += 1
            log.debug("audio chunk not resampled", extra={"source": header.source_id,
                                                          "error": repr(exc)})  # fmt: skip
            return
        self._playout.push(position(header.wall + offset, RATE), samples)

    def _resample(self, header: AudioHeader, pcm: memoryview | bytes) -> Samples:
        layout = channel_layout(header.layout, header.channels)
        key = (header.rate, header.channels, layout)
        if key != self._format or self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=LAYOUT, rate=RATE)
            self._format = key
        interleaved = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=layout)
        frame.sample_rate = header.rate
        out = [f.to_ndarray() for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros((2, 0), np.float32)
        return np.ascontiguousarray(np.concatenate(out, axis=1), dtype=np.float32)

    def close(self) -> None:
        """Release the encoder; what it still holds is dropped with the unfinished segment.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._playout.clear()
        with contextlib.suppress(av.error.FFmpegError):
            self._holder.close()


@functools.lru_cache(maxsize=64)
def channel_layout(name: str, channels: int) -> str:
    """The layout to read a chunk with: its own, when FFmpeg knows that name with that many
    channels, else FFmpeg's default for the channel count."""
    with contextlib.suppress(ValueError):
        if av.AudioLayout(name).nb_channels == channels:
            return name
    default = _DEFAULT_LAYOUTS.get(channels)
    if default is None:
        raise ValueError(f"{channels} audio channels: 1 to 8 are carried")
    return default
