"""Audio of a JIT session: reading every audio input at a sample position, and mixing the
selected channels into the 48 kHz stereo frames WebRTC sends.

- :class:`AudioInput` reads one input: all its audio streams, each decoded and resampled to
  48 kHz float (its own channel layout kept: a 5.1 stream stays six channels, nothing is
  downmixed), side by side; the first ``channel_count`` channels are the input's.
- :class:`AudioReader` reads all inputs at once: ``read(start, count)`` returns
  ``(channels, count)`` float samples, channels flattened in input order
  (:mod:`pipeline.producers.jit.channels`). Sequential reads continue decoding; a read
  elsewhere seeks. Sample 0 is the start of each file: audio and video are taken to start
  together, as review deliverables do. A shorter input is padded with silence.
- :func:`mix` and :func:`audio_frame` build what the tracks send; :class:`Mixer` mixes
  through the session's routing matrix (:mod:`pipeline.producers.jit.routing`) and fades a new
  matrix in over one packet, so switching routes while playing does not click.

Readers block (they decode): use them from one thread, the worker's audio thread.
"""

from __future__ import annotations

import fractions
from collections.abc import Generator, Sequence
from typing import Any, cast

import av
import av.container
import numpy as np
import numpy.typing as npt

from pipeline.producers.jit.channels import ChannelLayout, Matrix
from pipeline.producers.jit.errors import JitInputError, ReadError
from pipeline.producers.jit.routing import ChannelMatrix
from pipeline.sources.opener import describe

RATE = 48000
"""Output sample rate (Opus works at 48 kHz)."""
FRAME_SAMPLES = 960
"""Samples per WebRTC audio frame: 20 ms at 48 kHz."""
TIME_BASE = fractions.Fraction(1, RATE)

Samples = npt.NDArray[np.float32]


class _StreamState:
    """One audio stream of an input: its resampler and the samples decoded but not read."""

    def __init__(self, stream: av.audio.stream.AudioStream) -> None:
        self.stream = stream
        self.channels = len(stream.codec_context.layout.channels)
        self.names = tuple(c.name for c in stream.codec_context.layout.channels)
        self.resampler = av.AudioResampler(format="fltp", layout=None, rate=RATE)
        self.buffer: Samples = np.zeros((self.channels, 0), dtype=np.float32)
        self.aligned = False
        self.ended = False

    def reset(self) -> None:
        self.resampler = av.AudioResampler(format="fltp", layout=None, rate=RATE)
        self.buffer = np.zeros((self.channels, 0), dtype=np.float32)
        self.aligned = False
        self.ended = False


class AudioInput:
    """The audio of one input (``index``, 1-based): owns ``container``."""

    def __init__(
        self, container: av.container.InputContainer, *, index: int, channel_count: int | None
    ) -> None:
        self._container = container
        self.index = index
        streams = list(container.streams.audio)
        if not streams:
            raise JitInputError(index, "no audio stream")
        self._streams = [_StreamState(s) for s in streams]
        available = sum(s.channels for s in self._streams)
        if channel_count is not None:
            if channel_count < 1:
                raise JitInputError(index, f"channel_count={channel_count}: at least 1")
            if channel_count > available:
                raise JitInputError(
                    index,
                    f"has {available} audio channels, fewer than channel_count={channel_count}",
                )
        self.channels = available if channel_count is None else channel_count
        self.names = tuple(n for s in self._streams for n in s.names)[: self.channels]
        """The FFmpeg names of the input's channels (``FL``, ``FR``, ``FC``, ...)."""
        self._position = 0
        self._packets: Generator[av.Packet[Any], None, None] | None = None
        self._start()
        self._probe()

    def _start(self) -> None:
        if self._packets is not None:
            self._packets.close()
        self._packets = cast(
            "Generator[av.Packet[Any], None, None]",
            self._container.demux(*(s.stream for s in self._streams)),
        )
        for state in self._streams:
            state.reset()

    def _probe(self) -> None:
        try:
            while not all(s.buffer.shape[1] or s.ended for s in self._streams):
                if not self._pull():
                    break
        except ReadError as exc:
            raise JitInputError(self.index, f"cannot decode audio: {exc}") from exc
        if not any(s.buffer.shape[1] for s in self._streams):
            raise JitInputError(self.index, "the audio stream has no decodable samples")

    def _pull(self) -> bool:
        """Decode one more packet into its stream's buffer; False at the end of the input."""
        assert self._packets is not None
        try:
            packet = next(self._packets)
        except StopIteration:
            for state in self._streams:
                state.ended = True
            return False
        except av.FFmpegError as exc:
            raise ReadError(f"input {self.index}: read: {describe(exc)}") from exc
        state = next(s for s in self._streams if s.stream.index == packet.stream.index)
        try:
            frames = packet.decode()
        except av.FFmpegError:
            return True  # a damaged packet: a moment of silence, not the end of the input
        for frame in frames:
            assert isinstance(frame, av.AudioFrame)
            start = None
            if not state.aligned and frame.pts is not None and frame.time_base is not None:
                start = round(frame.pts * frame.time_base * RATE)
            for out in state.resampler.resample(frame):
                self._append(state, out.to_ndarray().astype(np.float32, copy=False), start)
                start = None
        return True

    def _append(self, state: _StreamState, data: Samples, start: int | None) -> None:
        if not state.aligned:
            # The first samples after a seek: line them up with the position asked for.
            begin = self._position if start is None else start
            if begin < self._position:
                data = data[:, self._position - begin :]
            elif begin > self._position:
                gap = np.zeros((state.channels, begin - self._position), dtype=np.float32)
                data = np.concatenate([gap, data], axis=1)
            state.aligned = True
        state.buffer = np.concatenate([state.buffer, data[: state.channels]], axis=1)

    def seek(self, position: int) -> None:
        """Continue reading at sample ``position`` (48 kHz)."""
        self._position = position
        stream = self._streams[0].stream
        tb = stream.time_base
        offset = int(position / RATE / tb) if tb else 0
        try:
            self._container.seek(max(0, offset), backward=True, any_frame=False, stream=stream)
        except av.FFmpegError:
            pass  # past the end, or not seekable: it reads as silence below
        self._start()

    def read(self, start: int, count: int) -> Samples:
        """``(channels, count)`` float samples from ``start``; silence past the end."""
        if start != self._position:
            self.seek(start)
        while not all(s.buffer.shape[1] >= count or s.ended for s in self._streams):
            if not self._pull():
                break
        parts = []
        for state in self._streams:
            chunk = state.buffer[:, :count]
            if chunk.shape[1] < count:
                pad = np.zeros((state.channels, count - chunk.shape[1]), dtype=np.float32)
                chunk = np.concatenate([chunk, pad], axis=1)
            parts.append(chunk)
            state.buffer = state.buffer[:, count:]
        self._position = start + count
        return np.concatenate(parts, axis=0)[: self.channels]

    def close(self) -> None:
        """Close the container. Safe to call twice."""
        packets, self._packets = self._packets, None
        if packets is not None:
            packets.close()
        self._container.close()


class AudioReader:
    """All audio inputs of a session, read together at one position (48 kHz samples)."""

    def __init__(self, inputs: Sequence[AudioInput]) -> None:
        self._inputs = list(inputs)
        self.layout = ChannelLayout(
            tuple(i.channels for i in self._inputs),
            inputs=tuple(i.index for i in self._inputs),
            names=tuple(i.names for i in self._inputs),
        )

    def read(self, start: int, count: int) -> Samples:
        """``(layout.total, count)`` float samples from ``start``."""
        if not self._inputs:
            return np.zeros((0, count), dtype=np.float32)
        return np.concatenate([i.read(start, count) for i in self._inputs], axis=0)

    def close(self) -> None:
        """Close every input."""
        for item in self._inputs:
            item.close()


def mix(samples: Samples, matrix: Matrix) -> npt.NDArray[np.int16]:
    """Route ``(channels, n)`` float samples through ``matrix`` into packed s16 stereo,
    shaped ``(1, 2 * n)`` (what :meth:`av.AudioFrame.from_ndarray` takes for ``s16``)."""
    count = samples.shape[1]
    if samples.shape[0] == 0:
        return np.zeros((1, 2 * count), dtype=np.int16)
    return _pack(np.asarray(matrix, dtype=np.float32) @ samples)


def _pack(mixed: Samples) -> npt.NDArray[np.int16]:
    """``(outputs, n)`` floats as packed s16 ``(1, outputs * n)``, clipped to full scale."""
    outputs, count = mixed.shape
    # 32767: full scale of s16; the interleaving is L R L R ...
    packed = np.round(np.clip(mixed, -1.0, 1.0).T * 32767.0)
    return np.asarray(packed, dtype=np.int16).reshape(1, outputs * count)


class Mixer:
    """Mixes ``(channels, n)`` float samples through a routing matrix into packed s16.

    :meth:`route` takes effect at the next :meth:`mix`, which fades linearly from the old
    matrix to the new one across its samples (20 ms: no click, and the change is heard at
    once). Not thread-safe: used on the event loop (a 16-channel 20 ms packet costs tens of
    microseconds).
    """

    def __init__(self, matrix: ChannelMatrix, total: int) -> None:
        self.total = total
        self.matrix = matrix
        self._gains = self._dense(matrix)
        self._previous: npt.NDArray[np.float32] | None = None

    def _dense(self, matrix: ChannelMatrix) -> npt.NDArray[np.float32]:
        return np.asarray(matrix.gains(self.total), dtype=np.float32).reshape(
            matrix.outputs, self.total
        )

    @property
    def outputs(self) -> int:
        """Output channels."""
        return self.matrix.outputs

    def route(self, matrix: ChannelMatrix) -> None:
        """Mix through ``matrix`` (already checked, same output count) from the next packet."""
        if matrix.outputs != self.matrix.outputs:
            raise ValueError(f"{matrix.outputs} output channels: the mixer has {self.outputs}")
        if self._previous is None:
            self._previous = self._gains
        self.matrix = matrix
        self._gains = self._dense(matrix)

    def settle(self) -> None:
        """Drop a pending fade (nothing was heard since the matrix changed)."""
        self._previous = None

    def mix(self, samples: Samples) -> npt.NDArray[np.int16]:
        """``samples`` through the matrix, packed s16 ``(1, outputs * n)``."""
        count = samples.shape[1]
        if samples.shape[0] == 0:
            return np.zeros((1, self.outputs * count), dtype=np.int16)
        mixed = self._gains @ samples
        previous, self._previous = self._previous, None
        if previous is not None and count:
            ramp = np.arange(1, count + 1, dtype=np.float32) / np.float32(count)
            mixed = previous @ samples + (mixed - previous @ samples) * ramp
        return _pack(mixed)


def silence(count: int = FRAME_SAMPLES) -> npt.NDArray[np.int16]:
    """Packed s16 stereo silence of ``count`` samples."""
    return np.zeros((1, 2 * count), dtype=np.int16)


def audio_frame(packed: npt.NDArray[np.int16], pts: int) -> av.AudioFrame:
    """A 48 kHz s16 stereo :class:`av.AudioFrame` of packed samples, at ``pts`` samples."""
    frame = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame
