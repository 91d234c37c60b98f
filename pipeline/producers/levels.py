"""Audio levels of one source: per-channel peak and RMS for meters, and EBU R128 loudness.

An :class:`AudioMeter` is fed the decoded :class:`av.AudioFrame` s of one source, in order
(any sample format, rate and channel layout FFmpeg decodes to, up to :data:`MAX_CHANNELS`
channels), synchronously and cheaply: it runs in the grabber's decode thread. Every
``window`` seconds of samples it returns a :class:`Reading`:

- **peak** and **RMS** per channel, in dBFS, on the decoded samples at their own rate (a
  full-scale sine has peak 0 dBFS and RMS -3.01 dBFS: RMS is not shifted by +3 dB as in
  AES17). Digital silence reads :data:`FLOOR_DB`, never ``-inf``.
- **momentary** (400 ms) and **short-term** (3 s) loudness of the whole programme, in LUFS,
  after ITU-R BS.1770-4 / EBU R128: K-weighting, channel weights 1.0 for front and centre, 1.41
  for surround (side and back), LFE excluded, ``L = -0.691 + 10 log10(sum of G_i z_i)`` over
  the mean squares ``z_i`` of 100 ms blocks (4 of them make the momentary window, 30 the
  short-term; EBU Tech 3341 updates both every 100 ms). ``None`` until 400 ms (3 s) were heard
  since the source started or last changed format. A reading carries the values of the newest
  whole block, which, with the default 100 ms window, is the reading's own.

**How the K-weighting is applied, and why not by FFmpeg.** The K-weighting is the two
biquads of BS.1770 (a high shelf and a 38 Hz high-pass, coefficients given for 48 kHz). The
first version ran FFmpeg's ``ebur128`` filter in a PyAV graph; it was the largest part of
monitoring's cost (issue 17: 2.45 ms of CPU per second of stereo alone, about 5.5 ms in a
grabber on a busy host, of a 10 % budget that is about 6). Here each 100 ms block's K-weighted
energy is taken in the frequency domain instead: numpy's FFT of the block, its power spectrum
weighted by the filters' squared magnitude response (Parseval), summed. That treats the block
as periodic (a circular convolution) where the filter runs on continuously; the difference is
the filters' memory at the block's edges, which is nil for a steady sine or noise and small for
programme: against FFmpeg's ``ebur128`` (``tests/test_levels.py`` holds the comparison),
0.01 LU on sines from 30 Hz up, white noise and the benchmark's AAC clips, and all of EBU Tech
3341's cases that sines make; it reads high only where the energy is below the high-pass
(brown noise: +3.8 LU short-term at -40 LUFS, a signal drifting slowly rather than sounding),
where the loudness alarm's limits (-36 and -9 LUFS) are far. Other sample rates use the 48 kHz
filters' response at the same frequencies, nothing above 24 kHz (as FFmpeg's resampling to 48
kHz would). Measured (one core, 10 s of 1024-sample fltp frames from AAC, best of 5): 1.16 ms
of CPU per second of stereo against 2.45 ms with the ``ebur128`` graph.

Each frame goes into an FFmpeg audio FIFO as it comes (one C call: about 47 frames a second
of AAC); the meter takes the samples out a block or a window at a time, into a 100 ms block
buffer of 32-bit floats (packed formats de-interleaved, integers scaled to -1..1), and takes
peak and RMS there, once a window or a block ends: numpy runs about 10 times a second, not once
per frame and channel (measured, one core, 10 s of 1024-sample fltp frames from AAC: 1.49 ms
of CPU per second of stereo against 1.72 copying each frame's planes). Planar frames of 8 or
more channels go through a PyAV resampler to packed floats first: PyAV's
``AudioFrame.planes`` miscounts their planes.

A change of sample format, rate or layout mid-stream (an advert in stereo in a 5.1 programme)
ends the current window early (a shorter reading for the old layout) and starts again;
loudness starts again from ``None``. Frames without a timestamp are placed after the previous
frame by counting samples (from 0 s if the first has none); a reading is at the source time
just after its last sample, in the frame that holds it (right across a jump when a file loops).

Errors: :class:`LevelsError` (a :class:`~pipeline.errors.TesseraError`), one line naming what
was wrong: a window out of range, a frame with no or too many channels, no sample rate, or an
unknown sample format.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from pipeline.errors import TesseraError

FLOOR_DB = -120.0
"""The lowest level reported, in dBFS and LUFS: digital silence (24-bit silence is -144 dBFS,
but nothing a meter shows or a detector decides on is below -100)."""

MAX_CHANNELS = 32
"""The most channels a source may have (FFmpeg's decoders stay below: 24 for 22.2 audio)."""

WINDOW_RANGE = (0.01, 10.0)
"""Shortest and longest peak/RMS window, in seconds."""

BLOCK_S = 0.1
"""Loudness block: BS.1770's gating block step, the unit of the momentary and short-term
windows."""
MOMENTARY_BLOCKS = 4
SHORT_TERM_BLOCKS = 30

# BS.1770-4's K-weighting at 48 kHz: stage 1 (a high shelf, the head's effect), stage 2 (the
# RLB high-pass). (b0, b1, b2), (1, a1, a2).
_SHELF = (
    (1.53512485958697, -2.69169618940638, 1.19839281085285),
    (-1.69065929318241, 0.73248077421585),
)
_HIGH_PASS = ((1.0, -2.0, 1.0), (-1.99004745483398, 0.99007225036621))
_FILTER_RATE = 48000

_LFE = frozenset({"LFE", "LFE2"})
_SURROUND = frozenset({"BL", "BC", "BR", "SL", "SR", "TBL", "TBC", "TBR", "SDL", "SDR"})
"""Channels BS.1770 weighs 1.41 (the same set as FFmpeg's ebur128); LFE weighs 0."""

# Sample formats (without the planar "p"): numpy type, offset and scale to -1..1.
_FORMATS: dict[str, tuple[type[np.generic], float, float]] = {
    "u8": (np.uint8, 128.0, 1 / 128),
    "s16": (np.int16, 0.0, 1 / 32768),
    "s32": (np.int32, 0.0, 1 / 2**31),
    "s64": (np.int64, 0.0, 1 / 2**63),
    "flt": (np.float32, 0.0, 1.0),
    "dbl": (np.float64, 0.0, 1.0),
}


class LevelsError(TesseraError):
    """Audio could not be measured: a bad window or an unusable frame."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One window's levels of one source."""

    t: float
    """Source time, in seconds, of the end of the window."""
    peak_db: tuple[float, ...]
    """Sample peak per channel, dBFS, in the layout's channel order; >= FLOOR_DB."""
    rms_db: tuple[float, ...]
    """RMS per channel over the window, dBFS (a full-scale sine: -3.01); >= FLOOR_DB."""
    momentary_lufs: float | None
    """EBU R128 momentary loudness (400 ms) of all channels; None until 400 ms were heard."""
    short_term_lufs: float | None
    """EBU R128 short-term loudness (3 s) of all channels; None until 3 s were heard."""
    channels: int
    layout: str
    """FFmpeg's name of the channel layout: "mono", "stereo", "5.1", "5.1(side)", ..."""
    samples: int
    """Samples per channel in the window (shorter than the window only before a change)."""


def _db(power: float) -> float:
    """A power ratio (mean square, or peak squared) in dB, floored."""
    if power <= 0.0:
        return FLOOR_DB
    return max(FLOOR_DB, 10.0 * math.log10(power))


def _lufs(energy: float) -> float:
    """BS.1770's loudness of a weighted sum of mean squares."""
    if energy <= 0.0:
        return FLOOR_DB
    return max(FLOOR_DB, -0.691 + 10.0 * math.log10(energy))


def _biquad_power(
    z: npt.NDArray[np.complex128], stage: tuple[tuple[float, float, float], tuple[float, float]]
) -> npt.NDArray[np.float64]:
    (b0, b1, b2), (a1, a2) = stage
    h = (b0 + b1 * z + b2 * z * z) / (1.0 + a1 * z + a2 * z * z)
    return np.asarray(np.abs(h) ** 2, dtype=np.float64)


@lru_cache(maxsize=16)
def _block_weights(rate: int, size: int) -> npt.NDArray[np.float32]:
    """Weights on a block's interleaved (real, imaginary) rfft values that sum, squared, to
    the block's mean square after K-weighting: the filters' power response at each bin, times
    Parseval's factor (2 for the bins that stand for two, 1 for DC and Nyquist), over size²."""
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    z = np.exp(-2j * np.pi * np.minimum(freqs, _FILTER_RATE / 2) / _FILTER_RATE)
    gain = _biquad_power(z, _SHELF) * _biquad_power(z, _HIGH_PASS)
    gain[freqs > _FILTER_RATE / 2] = 0.0  # what resampling to 48 kHz would remove
    parseval = np.full(len(freqs), 2.0)
    parseval[0] = 1.0
    if size % 2 == 0:
        parseval[-1] = 1.0
    weights = gain * parseval / (size * size)
    return np.repeat(weights, 2).astype(np.float32)


def channel_weights(layout: av.AudioLayout) -> npt.NDArray[np.float32]:
    """BS.1770's weight of each channel of ``layout``: 0 for LFE, 1.41 for surround, else 1."""
    names = [c.name for c in layout.channels]
    return np.array(
        [0.0 if n in _LFE else 1.41 if n in _SURROUND else 1.0 for n in names], dtype=np.float32
    )


class _Format:
    """What one sample format, rate and layout of input is measured with: the block buffer,
    the block's spectral weights, the channel weights and the loudness blocks so far."""

    def __init__(self, fmt: av.AudioFormat, rate: int, layout: av.AudioLayout) -> None:
        channels = layout.nb_channels
        if not 1 <= channels <= MAX_CHANNELS:
            raise LevelsError(
                f"audio frame with {channels} channels ({layout.name!r}): an audio meter takes "
                f"1 to {MAX_CHANNELS}"
            )
        if rate <= 0:
            raise LevelsError(f"audio frame ({layout.name}, {fmt.name}) has no sample rate")
        base = fmt.name.removesuffix("p") if fmt.is_planar else fmt.name
        if base not in _FORMATS:
            raise LevelsError(f"audio sample format {fmt.name!r} cannot be metered")
        self.rate = rate
        self.channels = channels
        self.layout = layout.name
        self.planar = fmt.is_planar
        self.dtype, self.offset, self.scale = _FORMATS[base]
        self.resampler: Any = None
        if self.planar and channels >= 8:
            # PyAV's planes are wrong from 8 channels on: FFmpeg packs them for us.
            self.resampler = av.AudioResampler(format="flt", layout=layout, rate=rate)
            self.planar = False
            self.dtype, self.offset, self.scale = _FORMATS["flt"]
        self.block = max(1, round(BLOCK_S * rate))
        self.buffer = np.zeros((channels, self.block), dtype=np.float32)
        self.fill = 0
        self.fifo = av.AudioFifo()
        """Samples decoded but not yet in the buffer: frames are queued as they come (about
        47 a second for AAC) and taken out a block or window at a time, so numpy works 10
        times a second rather than once per frame and channel."""
        self.spectral = _block_weights(rate, self.block)
        self.gains = channel_weights(layout)
        self.energies: deque[float] = deque(maxlen=SHORT_TERM_BLOCKS)
        self.blocks = 0
        self.momentary: float | None = None
        self.short_term: float | None = None

    def write(self, frame: av.AudioFrame) -> None:
        """Queue the frame's samples (FFmpeg copies them into the FIFO: one C call a frame)."""
        if self.resampler is not None:
            for out in self.resampler.resample(frame):
                out.pts = None
                self.fifo.write(out)
        else:
            self.fifo.write(frame)

    def take(self, count: int) -> None:
        """Move ``count`` queued samples into the block buffer, as 32-bit floats in -1..1."""
        chunk = self.fifo.read(count)
        assert chunk is not None  # count <= the samples queued: the caller checked
        planes: Any = chunk.planes  # buffers (PyAV's stubs do not say so)
        row = self.buffer[:, self.fill : self.fill + count]
        if self.planar:
            for c in range(self.channels):
                self._convert(np.frombuffer(planes[c], dtype=self.dtype, count=count), row[c])
        else:
            x = np.frombuffer(planes[0], dtype=self.dtype, count=count * self.channels)
            self._convert(x.reshape(count, self.channels).T, row)
        self.fill += count

    def _convert(self, source: npt.NDArray[Any], out: npt.NDArray[np.float32]) -> None:
        if self.offset:
            np.subtract(source, self.offset, out=out, casting="unsafe")
            out *= self.scale
        elif self.scale != 1.0:
            np.multiply(source, self.scale, out=out, casting="unsafe")
        else:
            out[...] = source

    def end_block(self) -> None:
        """The block buffer is full: its K-weighted loudness."""
        spectrum = np.fft.rfft(self.buffer, axis=1)
        mean_squares = (spectrum.view(np.float32) ** 2) @ self.spectral
        self.energies.append(float(mean_squares @ self.gains))
        self.blocks += 1
        self.fill = 0
        energies = self.energies
        if self.blocks >= MOMENTARY_BLOCKS:
            recent = list(energies)[-MOMENTARY_BLOCKS:]
            self.momentary = _lufs(sum(recent) / MOMENTARY_BLOCKS)
        if self.blocks >= SHORT_TERM_BLOCKS:
            self.short_term = _lufs(sum(energies) / SHORT_TERM_BLOCKS)


class AudioMeter:
    """Peak, RMS and loudness of one source's audio; see the module docstring.

    Not thread-safe: one meter per source, fed from one thread (the grabber's decode thread).
    """

    def __init__(self, *, window: float = 0.1) -> None:
        if not (WINDOW_RANGE[0] <= window <= WINDOW_RANGE[1]):
            raise LevelsError(
                f"audio meter window of {window!r} s is out of range: use "
                f"{WINDOW_RANGE[0]:g} to {WINDOW_RANGE[1]:g} s"
            )
        self.window = window
        self.readings = 0
        """Readings produced so far."""
        self.changes = 0
        """Changes of sample format, rate or layout after the first frame."""
        self._key: tuple[str, int, str, int] | None = None
        self._format: _Format | None = None
        self._size = 0  # samples per window at the current rate
        self._next_t = 0.0  # source time just after the last sample fed
        self._peak = np.zeros(0, dtype=np.float32)
        self._sumsq = np.zeros(0, dtype=np.float64)
        self._count = 0  # samples in the current window
        self._measured = 0  # samples of the block buffer already in peak and sumsq
        self._taken = 0  # samples moved from the FIFO into the buffer since the format began
        self._starts: deque[tuple[int, float]] = deque()
        """(sample number, source time) of each frame's first sample, for the readings' times."""

    def feed(self, frame: av.AudioFrame) -> list[Reading]:
        """Measure one decoded frame; the readings of the windows that ended in it, in order."""
        n = frame.samples
        if n <= 0:
            return []
        readings: list[Reading] = []
        layout = frame.layout
        key = (frame.format.name, frame.sample_rate, layout.name, layout.nb_channels)
        if key != self._key:
            new = _Format(frame.format, frame.sample_rate, layout)  # checked before the old ends
            if self._format is not None:
                self._drain(self._format, readings, final=True)
                if self._count:
                    self._take_stats(self._format)
                    readings.append(self._reading(self._next_t))
            if self._key is not None:
                self.changes += 1
            self._key, self._format = key, new
            self._size = max(1, round(self.window * new.rate))
            self._starts.clear()
            self._taken = 0
            self._reset()
        fmt = self._format
        assert fmt is not None
        start = frame.time
        t0 = self._next_t if start is None else float(start)
        self._next_t = t0 + n / fmt.rate
        self._starts.append((self._taken + fmt.fifo.samples, t0))
        # FFmpeg's FIFO would check the frames' timestamps for gaps: the meter places samples
        # by the times it noted, so the frame goes in without one (and gets it back).
        pts, frame.pts = frame.pts, None
        try:
            fmt.write(frame)
        except ValueError as exc:  # PyAV's FIFO or resampler refused the frame
            raise LevelsError(f"audio frame not metered: {exc}") from exc
        finally:
            frame.pts = pts
        self._drain(fmt, readings)
        return readings

    def _drain(self, fmt: _Format, readings: list[Reading], final: bool = False) -> None:
        """Take the queued samples into the block buffer up to each end of a window or block
        (every sample; the last, partial, run too when ``final``) and measure there."""
        while True:
            need = min(fmt.block - fmt.fill, self._size - self._count)
            queued = fmt.fifo.samples
            if queued < need:
                if not final or not queued:
                    return
                need = queued
            fmt.take(need)
            self._count += need
            self._taken += need
            if self._count == self._size:
                self._take_stats(fmt)
                if fmt.fill == fmt.block:
                    fmt.end_block()  # first: the reading carries its own block's loudness
                    self._measured = 0
                readings.append(self._reading(self._time_at(self._taken, fmt.rate)))
            elif fmt.fill == fmt.block:
                self._take_stats(fmt)
                fmt.end_block()
                self._measured = 0

    def _time_at(self, taken: int, rate: int) -> float:
        """Source time just after sample number ``taken - 1`` (counted since the format
        began), in the frame that holds it: right across a jump when a file loops."""
        starts = self._starts
        while len(starts) > 1 and starts[1][0] < taken:
            starts.popleft()
        first, t0 = starts[0]
        return t0 + (taken - first) / rate

    def _take_stats(self, fmt: _Format) -> None:
        """Add the samples buffered since the last look to the window's peak and sum of
        squares (one row per channel: numpy reduces contiguous rows fast)."""
        part = fmt.buffer[:, self._measured : fmt.fill]
        if part.shape[1]:
            np.maximum(self._peak, np.abs(part).max(axis=1), out=self._peak)
            self._sumsq += np.einsum("ij,ij->i", part, part, dtype=np.float64)
        self._measured = fmt.fill

    def _reset(self) -> None:
        channels = self._key[3] if self._key else 0
        self._peak = np.zeros(channels, dtype=np.float32)
        self._sumsq = np.zeros(channels, dtype=np.float64)
        self._count = 0
        self._measured = self._format.fill if self._format is not None else 0

    def _reading(self, t: float) -> Reading:
        fmt, key = self._format, self._key
        assert fmt is not None and key is not None
        count = self._count
        reading = Reading(
            t=t,
            peak_db=tuple(_db(p * p) for p in self._peak.tolist()),
            rms_db=tuple(_db(s / count) for s in self._sumsq.tolist()),
            momentary_lufs=fmt.momentary,
            short_term_lufs=fmt.short_term,
            channels=key[3],
            layout=key[2],
            samples=count,
        )
        self.readings += 1
        self._reset()
        return reading


def combine(readings: Sequence[Reading]) -> Reading:
    """The readings of consecutive windows as one reading of their whole time, for a message
    that carries them together: the newest's time, layout and loudness; per channel the highest
    peak and the RMS of all their samples. Readings of another channel count or layout than
    the newest (before a change of format) are left out: their channels are not the newest's.
    """
    if not readings:
        raise ValueError("combine() needs at least one reading")
    newest = readings[-1]
    if len(readings) == 1:
        return newest
    same = [r for r in readings if r.channels == newest.channels and r.layout == newest.layout]
    samples = sum(r.samples for r in same)
    peaks = tuple(max(column) for column in zip(*(r.peak_db for r in same), strict=True))
    if samples > 0:
        # Back from dB to mean squares, weighted by each window's samples, and to dB again.
        powers = [
            sum(r.samples * 10.0 ** (db / 10.0) for r, db in zip(same, column, strict=True))
            for column in zip(*(r.rms_db for r in same), strict=True)
        ]
        rms = tuple(_db(p / samples) for p in powers)
    else:
        rms = newest.rms_db
    return Reading(
        t=newest.t,
        peak_db=peaks,
        rms_db=rms,
        momentary_lufs=newest.momentary_lufs,
        short_term_lufs=newest.short_term_lufs,
        channels=newest.channels,
        layout=newest.layout,
        samples=samples,
    )
