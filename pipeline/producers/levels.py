"""Audio levels of one source: per-channel peak and RMS for meters, and EBU R128 loudness.

An :class:`AudioMeter` is fed the decoded :class:`av.AudioFrame` s of one source, in order
(any sample format, rate and channel layout FFmpeg decodes to, up to :data:`MAX_CHANNELS`
channels), synchronously and cheaply: it runs in the grabber's decode thread. Every
``window`` seconds of samples it returns a :class:`Reading`:

- **peak** and **RMS** per channel, in dBFS, measured with numpy on the decoded samples at
  their own rate (a full-scale sine has peak 0 dBFS and RMS -3.01 dBFS: RMS is not shifted by
  +3 dB as in AES17). Digital silence reads :data:`FLOOR_DB`, never ``-inf``.
- **momentary** (400 ms) and **short-term** (3 s) loudness of the whole programme, in LUFS, by
  FFmpeg's ``ebur128`` filter (BS.1770-4: K-weighting, channel weights 1.0 for front and
  centre, 1.41 for surround, LFE excluded). It updates every 100 ms of samples; a reading
  carries the newest values, so its loudness lags its peak/RMS by at most 100 ms (plus the
  resampler's delay for a rate other than 48 kHz). ``None`` until the filter has heard 400 ms
  (3 s) since the source started or last changed format; silence reads :data:`FLOOR_DB` (the
  filter's -120.7 clamped).

Both come out of one PyAV filter graph per format: ``abuffer → aformat (packed doubles) →
asplit``, then ``asetnsamples (one window) → abuffersink`` for numpy, and ``aresample (48 kHz,
which ebur128 requires; left out for a 48 kHz source) → ebur128 → abuffersink``, whose frames
carry ``lavfi.r128.M`` and ``lavfi.r128.S``; that branch is pulled only when a window is due
(10 times a second, not after every frame). Those two save 10 % of the meter (2.55 → 2.32 ms
per second of 48 kHz stereo: 10 s of AAC frames fed alone, best of 5); the rest is
FFmpeg's work inside the graph, and in a busy grabber the meter costs about 8 ms per second of
source (its thread's CPU, 4 grabbers on 2 cores): the largest part of monitoring's cost.

A change of sample format, rate or layout mid-stream (an advert in stereo in a 5.1
programme) ends the current window early (a shorter reading for the old layout) and starts a
new graph; loudness starts again from ``None``. Frames without a timestamp are placed after the
previous frame by counting samples (from 0 s if the first has none).

Cost, measured on the development machine (one core, FFmpeg 8 / PyAV 18; 60 s of 1024-sample
fltp frames as the AAC decoder gives them, 100 ms windows, CPU time, best of 3):

- 48 kHz stereo: 2.6 ms of CPU per second of audio (1.9 ms of it in the filter graph);
- 48 kHz 5.1: 4.3 ms per second;
- 44.1 kHz stereo (resampled for ebur128): 3.2 ms per second.

Decoding the AAC itself costs 1.0 ms per second (stereo, 192 kbit/s); decoding a 720p H.264
source at 25 fps costs 48-64 ms per second (1.9-2.5 ms a frame, see ``decode.py``): the meter
adds 4-5 % to a stereo source's decode, 7-9 % for 5.1. The graph's ``asetnsamples`` hands out
whole windows, so numpy and Python run 10 times a second, not once per frame (which cost 4.0
ms per second of stereo). A hand-written K-weighting could save at most part of the ebur128
share and would be ours to keep right, so the filter is used.

Errors: :class:`LevelsError` (a :class:`~pipeline.errors.TesseraError`), one line naming what
was wrong: a window out of range, a frame with no or too many channels, no sample rate, an
unknown sample format, or FFmpeg refusing to build or run the graph.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.filter
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

LOUDNESS_RATE = 48000
"""The sample rate ebur128 accepts: its K-weighting coefficients are fixed at 48 kHz."""

MOMENTARY_S = 0.4
SHORT_TERM_S = 3.0


class LevelsError(TesseraError):
    """Audio could not be measured: a bad window, an unusable frame, or FFmpeg's graph."""


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


def _lufs(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return max(FLOOR_DB, value) if not math.isnan(value) else None


class _Graph:
    """The filter graph for one format, rate and layout of input: the samples as packed
    doubles at their own rate (for peak and RMS) and ebur128's loudness."""

    def __init__(self, rate: int, fmt: str, layout: str, channels: int, window: int) -> None:
        self.rate = rate
        self.channels = channels
        self._time_base = Fraction(1, rate)
        self.fed = 0  # samples pushed, per channel: the pts we give the graph
        self.pulled = 0  # samples pulled out as windows, per channel
        self.heard = 0  # 48 kHz samples measured by ebur128
        self.momentary: float | None = None
        self.short_term: float | None = None
        # (graph pts, source time) of the frames pushed and not yet measured, to place what
        # comes out in time (a window's worth of frames at most).
        self._pushed: deque[tuple[int, float]] = deque()
        graph = av.filter.Graph()
        graph.threads = 1  # a host runs a grabber per source: no thread pool per graph
        try:
            src = graph.add_abuffer(
                sample_rate=rate,
                format=fmt,
                layout=layout,
                channels=channels,
                time_base=self._time_base,
            )
            # Packed doubles: FFmpeg converts every sample format, and numpy then reads one
            # plane (PyAV's AudioFrame.planes miscounts planar frames of 8 or more channels).
            to_dbl = graph.add("aformat", "sample_fmts=dbl")
            split = graph.add("asplit", "2")
            # Whole windows: numpy and Python then run once a window, not once a frame.
            rebuffer = graph.add("asetnsamples", f"n={window}:p=0")
            levels = graph.add("abuffersink")
            resample = (
                graph.add("aresample", f"osr={LOUDNESS_RATE}") if rate != LOUDNESS_RATE else None
            )
            meter = graph.add("ebur128", "metadata=1")
            loudness = graph.add("abuffersink")
            src.link_to(to_dbl)
            to_dbl.link_to(split)
            split.link_to(rebuffer, 0, 0)
            rebuffer.link_to(levels)
            if rate == LOUDNESS_RATE:
                split.link_to(meter, 1, 0)  # no resampler in the way
            else:
                assert resample is not None
                split.link_to(resample, 1, 0)
                resample.link_to(meter)
            meter.link_to(loudness)
            graph.configure()
        except (av.FFmpegError, ValueError) as exc:
            raise LevelsError(
                f"cannot build the audio meter's graph for {channels} channels ({layout}) of "
                f"{fmt} at {rate} Hz: {exc}"
            ) from exc
        self._graph = graph
        self._src = src
        self._levels = levels
        self._loudness = loudness

    def push(self, frame: av.AudioFrame, t0: float) -> None:
        """Feed one frame that starts at source time ``t0``."""
        # The graph gets our own continuous timestamps: a source's may be missing, jump back
        # when a file loops, or be in another time base. The caller's frame is left as it was.
        # (abuffer reads a frame's pts in its own time base, 1/rate, and ignores the frame's.)
        pts = frame.pts
        frame.pts = self.fed
        try:
            self._src.push(frame)
        except av.FFmpegError as exc:
            raise LevelsError(f"the audio meter's graph refused a frame: {exc}") from exc
        finally:
            frame.pts = pts
        self._pushed.append((self.fed, t0))
        self.fed += frame.samples

    def end(self) -> Iterator[tuple[int, npt.NDArray[np.float64]]]:
        """Flush the graph: the samples it still holds (part of a window)."""
        try:
            self._src.push(None)
        except av.FFmpegError as exc:
            raise LevelsError(f"the audio meter's graph could not be flushed: {exc}") from exc
        return self.pull_samples()

    def pull_loudness(self) -> None:
        """Take ebur128's newest values."""
        for out in self._pull(self._loudness):
            self.heard += out.samples
            # FFmpeg >= 8 hands out 100 ms blocks, each with its values; older versions pass
            # the input frames through and set the values on those that end a block. Before
            # 400 ms (3 s) the filter reports its floor, which is not a measurement.
            meta = out.metadata
            momentary = _lufs(meta.get("lavfi.r128.M"))
            if momentary is not None and self.heard >= MOMENTARY_S * LOUDNESS_RATE:
                self.momentary = momentary
            short_term = _lufs(meta.get("lavfi.r128.S"))
            if short_term is not None and self.heard >= SHORT_TERM_S * LOUDNESS_RATE:
                self.short_term = short_term

    def pull_samples(self) -> Iterator[tuple[int, npt.NDArray[np.float64]]]:
        """The samples converted so far: (graph pts of the first, a samples x channels
        array, valid until the next pull)."""
        for out in self._pull(self._levels):
            # Packed: one plane (AudioFrame.to_ndarray would copy it through np.vstack).
            x = np.frombuffer(out.planes[0], dtype=np.float64, count=out.samples * self.channels)
            if out.pts is None:
                raise LevelsError("the audio meter's graph lost the timestamps of its samples")
            self.pulled += out.samples
            yield out.pts, x.reshape(out.samples, self.channels)

    def after(self, pts: int) -> float:
        """The source time just after the graph's sample ``pts``; forgets the frames before
        the one that holds it (asked in order)."""
        pushed = self._pushed
        while len(pushed) > 1 and pushed[1][0] <= pts:
            pushed.popleft()
        start, t0 = pushed[0]
        return t0 + (pts + 1 - start) / self.rate

    @staticmethod
    def _pull(sink: Any) -> Iterator[Any]:
        while True:
            try:
                out = sink.pull()
            except (BlockingIOError, av.EOFError):
                return
            except av.FFmpegError as exc:
                raise LevelsError(f"the audio meter's graph failed: {exc}") from exc
            yield out


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
        """Changes of sample format, rate or layout after the first frame (each a new graph)."""
        self._key: tuple[str, int, str, int] | None = None
        self._graph: _Graph | None = None
        self._size = 0  # samples per window at the current rate
        self._next_t = 0.0  # source time just after the last sample fed
        self._peak = np.zeros(0)
        self._sumsq = np.zeros(0)
        self._count = 0

    def feed(self, frame: av.AudioFrame) -> list[Reading]:
        """Measure one decoded frame; the readings of the windows that ended in it, in order."""
        n = frame.samples
        if n <= 0:
            return []
        readings: list[Reading] = []
        layout = frame.layout
        key = (frame.format.name, frame.sample_rate, layout.name, layout.nb_channels)
        if key != self._key:
            new = self._start(key, self.window)  # checks the frame before the old is ended
            if self._graph is not None:
                for pts, x in self._graph.end():
                    self._measure(self._graph, pts, x, readings)
            if self._count:
                readings.append(self._reading(self._next_t))
            if self._key is not None:
                self.changes += 1
            self._key, self._graph = key, new
            self._size = max(1, round(self.window * new.rate))
            self._reset()
        graph = self._graph
        assert graph is not None
        start = frame.time
        t0 = self._next_t if start is None else float(start)
        graph.push(frame, t0)
        self._next_t = t0 + n / graph.rate
        # Loudness first, so that the readings below carry the newest values; only when a
        # window may end in this frame (the loudness waits in the graph till then).
        if graph.fed - graph.pulled >= self._size:
            graph.pull_loudness()
        for pts, x in graph.pull_samples():
            self._measure(graph, pts, x, readings)
        return readings

    def _measure(
        self, graph: _Graph, pts: int, x: npt.NDArray[np.float64], readings: list[Reading]
    ) -> None:
        """Add the graph's samples from ``pts`` on to the window, closing it when full."""
        n = len(x)
        # One row per channel: numpy reduces a contiguous row about 5 times faster than a
        # column of interleaved samples (measured: 9 us against 41 us for 1024 stereo samples).
        rows = np.ascontiguousarray(x.T)
        pos = 0
        while pos < n:
            take = min(n - pos, self._size - self._count)
            part = rows[:, pos : pos + take]
            np.maximum(self._peak, np.abs(part).max(axis=1), out=self._peak)
            self._sumsq += np.einsum("ij,ij->i", part, part)
            self._count += take
            pos += take
            if self._count == self._size:
                # At the time of its last sample: right across a jump in the source's time.
                readings.append(self._reading(graph.after(pts + pos - 1)))

    @staticmethod
    def _start(key: tuple[str, int, str, int], window: float) -> _Graph:
        fmt, rate, layout, channels = key
        if not 1 <= channels <= MAX_CHANNELS:
            raise LevelsError(
                f"audio frame with {channels} channels ({layout!r}): an audio meter takes 1 "
                f"to {MAX_CHANNELS}"
            )
        if rate <= 0:
            raise LevelsError(f"audio frame ({layout}, {fmt}) has no sample rate")
        return _Graph(rate, fmt, layout, channels, max(1, round(window * rate)))

    def _reset(self) -> None:
        channels = self._key[3] if self._key else 0
        self._peak = np.zeros(channels)
        self._sumsq = np.zeros(channels)
        self._count = 0

    def _reading(self, t: float) -> Reading:
        graph, key = self._graph, self._key
        assert graph is not None and key is not None
        count = self._count
        reading = Reading(
            t=t,
            peak_db=tuple(_db(p * p) for p in self._peak.tolist()),
            rms_db=tuple(_db(s / count) for s in self._sumsq.tolist()),
            momentary_lufs=graph.momentary,
            short_term_lufs=graph.short_term,
            channels=key[3],
            layout=key[2],
            samples=count,
        )
        self.readings += 1
        self._reset()
        return reading
