"""Frame-accurate random access to a video stream: ``read(n)`` returns exactly frame ``n``.

Frame numbers come from timestamps, not from counting decoded frames (counting breaks at the
first seek): frame ``n`` is the frame whose presentation timestamp is nearest to
``start + n / rate`` (in the stream's time base), where ``start`` is the pts of the first
decoded frame (so a file starting at a non-zero pts, or with an edit list, still starts at
frame 0) and ``rate`` the stream's own frame rate. This assumes a constant frame rate, which is
what review masters have; a variable-rate file is indexed on its nominal grid.

``read(n)`` takes the cheapest exact route:

1. a cache of decoded frames around the playhead, bounded in bytes (raw, converted on
   demand; :mod:`.framecache`): step back is free, and a seek keeps the frames it decoded on
   the way to ``n``, so stepping backwards through a long GOP decodes from the keyframe once
   per cache-full of frames, not at every step;
2. decoding forward when ``n`` is a little ahead of the decoder (playback, step forward);
3. otherwise a seek: the demuxer goes to the keyframe at or before ``n`` (``seek(...,
   backward=True, any_frame=False)`` on ``n``'s pts plus half a frame, so that ``n`` itself
   counts when it is a keyframe), the decoder is flushed, and frames are decoded and dropped
   until frame ``n``. Demuxers seek on an index that may be in decode order or approximate
   (MPEG-TS bisects by timestamps and lands a GOP late); if the first frame after the seek
   is already past ``n``, or there is none, the seek is retried from a point further back
   (one second, then doubling), and the last try decodes from the very start. On the way,
   frames that no other frame refers to (most B-frames) are not decoded at all until
   :data:`SKIP_MARGIN` frames (or a cache-full) before ``n`` (FFmpeg's ``skip_frame`` =
   ``NONREF``): nothing else depends on them, so the pictures that are decoded are the same
   bits, a third sooner (bench case 12: a 1080p GOP-250 seek 4.6 s → 3.0 s on one core).

A read can be given ``stop``, a predicate asked after every decoded frame: when it says
so (the player's command changed what is due), the read ends with :class:`ReadInterrupted`,
leaving the decoder where it was (the frames decoded so far are cached), so a seek that a
newer one overtook does not make the newer one wait for it.

Everything here blocks: a :class:`VideoReader` is used from one thread only (the worker's
video thread), which also opened its container (:meth:`VideoReader.cached` excepted).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import av
import av.container
import numpy as np
import numpy.typing as npt

from pipeline.messages.events import SessionOptions
from pipeline.producers.jit.convert import PictureConverter
from pipeline.producers.jit.errors import JitInputError, ReadError
from pipeline.producers.jit.framecache import MIN_FRAMES as MIN_CACHE_FRAMES
from pipeline.producers.jit.framecache import FrameCache, frames_for
from pipeline.sources.opener import describe

CACHE_BYTES = 96 * 1024 * 1024
"""Memory for decoded frames around the playhead, per session. A whole 250-frame GOP of
1080p yuv420p would be 250 x 3.1 MB = 780 MB, so the cache keeps what stepping backwards
needs: a step back that misses decodes from the keyframe, so the share of misses must stay
under 5 % for the step p95 to be a hit, which takes about 21 frames. 96 MiB is 32 frames of
1080p yuv420p (a decode every 31 steps back, 3.2 %) and 69 of 720p, but only 8 of UHD (a miss
every 7 steps: UHD stepping needs more, or a lighter picture). Not more by default: every
session that has sought fills it (bench case 6 seeks 60 times), and at 96 MiB on top of the
worker's ~67 MiB 135 sessions still fit in this machine's memory (case 6's target is 64; 256
MiB would have left about 68)."""
FORWARD_SECONDS = 2.0
"""Decode forward rather than seek when the wanted frame is at most this far ahead: about a
GOP of most files, where a seek would decode as much again."""
SKIP_MARGIN = 8
"""Frames before a seek's target from which every frame is decoded (at least; a cache-full
when more): all of them are there for a step back, and a target a few frames on is reached
by decoding forward."""
MAX_SEEK_TRIES = 6
MAX_DECODE_ERRORS = 25
"""Undecodable packets in a row before the input counts as unreadable."""

_THREAD_TYPES = {"slice": "SLICE", "frame": "FRAME", "auto": "AUTO"}
AUTO_FRAME_THREADS = 2
"""Frame threads a video larger than 1280x720 decodes with when the session leaves ``threads``
unset. Bench case 12, a 1080p GOP-250 H.264 seek to its exact picture: p95 1.7 s against 3.0 s
with one thread; at UHD one thread cannot even play (13 frames a second). More threads than
this machine's two cores would only queue; a 720p video keeps one (its seeks take tens of ms,
and it leaves the other core to a second session: case 17)."""


def decode_threads(
    options: SessionOptions, width: int, height: int, readers: int = 1
) -> tuple[int, str]:
    """``(thread count, thread type)`` of a ``width`` x ``height`` video's decoder: the
    session's own when it gave ``threads``; else :data:`AUTO_FRAME_THREADS` frame threads
    above 1280x720 (FFmpeg uses them where the decoder can: H.264, HEVC, ProRes, MPEG-2, ...;
    the others decode as with one), shared by the session's ``readers`` (an A/B compare's two
    decode at once, one thread each), and one thread at or below it."""
    if options.threads is not None:
        return max(0, options.threads), options.thread_type
    threads = AUTO_FRAME_THREADS // max(1, readers)
    if width * height > 1280 * 720 and threads > 1:
        return threads, "frame"
    return 1, options.thread_type


@dataclass(frozen=True)
class Picture:
    """One output picture: frame number, source pts and the yuv420p pixels."""

    frame: int
    pts: int
    data: npt.NDArray[np.uint8]
    frame_b: int | None = None
    """In an A/B compare, the frame of B composed beside ``frame`` (None: none is shown)."""
    exact: bool = True
    """False for a seek proxy's picture of ``frame`` (:mod:`.proxy`): the frame asked for,
    shown until its exact picture is decoded."""

    @property
    def width(self) -> int:
        """Output width in pixels."""
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        """Output height in pixels."""
        return int(self.data.shape[0]) * 2 // 3


class ReadInterrupted(Exception):  # noqa: N818 - not an error: a read that was called off
    """A read's ``stop`` predicate called it off (what it was for is no longer due)."""


def _frame_bytes(frame: av.VideoFrame) -> int:
    """Bytes a decoded picture holds (its planes, line padding included)."""
    return max(1, sum(int(plane.buffer_size) for plane in frame.planes))


def _fraction(value: Any) -> Fraction | None:
    """A PyAV rational (Fraction before PyAV 19, AVRational after) as a Fraction."""
    if value is None:
        return None
    result = Fraction(int(value.numerator), int(value.denominator))
    return result if result > 0 else None


class VideoReader:
    """Reads exact frames of the first video stream of ``container`` (which it then owns).

    Opening probes the stream: frame rate, time base, the first frame's pts and size, the
    frame count. ``JitInputError`` (for input ``index``) when there is nothing to decode.
    ``readers``: the session's readers that decode at once (two in an A/B compare), which
    share the decoder threads chosen for it (:func:`decode_threads`).
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        options: SessionOptions,
        *,
        index: int = 1,
        cache_bytes: int = CACHE_BYTES,
        max_output: tuple[int, int] | None = None,
        readers: int = 1,
    ) -> None:
        self._container = container
        self.index = index
        if not container.streams.video:
            raise JitInputError(index, "no video stream")
        stream = container.streams.video[0]
        self._stream = stream
        ctx = stream.codec_context
        # Decoder options apply when the decoder opens, at the first decode below.
        threads, kind = decode_threads(options, ctx.width, ctx.height, readers)
        ctx.thread_count = threads
        ctx.thread_type = _THREAD_TYPES[kind]
        if options.lowres:
            ctx.options = {"lowres": str(options.lowres)}
        tb = _fraction(stream.time_base)
        rate = (
            _fraction(stream.average_rate)
            or _fraction(stream.guessed_rate)
            or _fraction(stream.base_rate)
        )
        if tb is None or rate is None:
            raise JitInputError(index, "the video stream has no frame rate or time base")
        self.time_base = tb
        self.rate = rate
        self.codec = ctx.name
        self.errors = 0
        self.seeks = 0
        """Demuxer seeks (a decode restarted from a keyframe)."""
        self.decoded = 0
        """Frames decoded."""
        self.hits = 0
        """Reads answered from the cache."""
        self._cache: FrameCache[av.VideoFrame] = FrameCache(cache_bytes)
        self._last: int | None = None
        self._eof = False
        self.start_pts = 0
        self._gen: Generator[tuple[av.VideoFrame, int], None, None] | None = None
        self._stop: Callable[[], bool] | None = None
        self._skip_before: int | None = None
        """While set, packets with a pts before it are not decoded when no frame refers to
        them; cleared at the first packet at or after it (and from then on all are)."""
        self.cache_frames = MIN_CACHE_FRAMES
        first = self._probe()
        self._cache.clear()  # it was filed under a number computed before start_pts was known
        self.start_pts = first.pts if first.pts is not None else 0
        self.source_width = first.width
        self.source_height = first.height
        self.sar = _fraction(stream.sample_aspect_ratio) or _fraction(ctx.sample_aspect_ratio)
        self.converter = PictureConverter(first, options, self.sar, max_output)
        self.picture_bytes = _frame_bytes(first)
        self.cache_frames = frames_for(self.picture_bytes, cache_bytes)
        """Decoded pictures the cache holds (at least a few, whatever the budget)."""
        self._cache.put(0, first, self.picture_bytes)
        self._last = 0
        self.frame_count = self._count_frames()
        if options.duration is not None:
            if options.duration < 1:
                raise JitInputError(index, f"duration={options.duration}: at least 1 frame")
            self.frame_count = (
                options.duration
                if self.frame_count is None
                else min(self.frame_count, options.duration)
            )

    # -- probing --------------------------------------------------------------------------------

    def _probe(self) -> av.VideoFrame:
        self._gen = self._frames()
        try:
            for frame, _ in self._gen:
                return frame
        except ReadError as exc:
            raise JitInputError(self.index, f"cannot decode video: {exc}") from exc
        raise JitInputError(self.index, "the video stream has no decodable frame")

    def _count_frames(self) -> int | None:
        stream = self._stream
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        seconds: Fraction | None = None
        if stream.duration:
            seconds = stream.duration * self.time_base
        elif self._container.duration:
            seconds = Fraction(self._container.duration, av.time_base)
        if seconds is None:
            return None
        return max(1, math.floor(seconds * self.rate + Fraction(1, 2)))

    # -- reading --------------------------------------------------------------------------------

    @property
    def forward_limit(self) -> int:
        """Frames the reader decodes forward rather than seeking."""
        return max(2, math.ceil(self.rate * Fraction(FORWARD_SECONDS)))

    def index_of(self, pts: int) -> int:
        """The frame number of a presentation timestamp."""
        return round((pts - self.start_pts) * self.time_base * self.rate)

    def pts_of(self, frame: int) -> int:
        """A pts that is at or after frame ``frame`` and before frame ``frame + 1``."""
        return self.start_pts + math.floor((frame + Fraction(1, 2)) / (self.rate * self.time_base))

    def cached(self, n: int) -> bool:
        """Whether frame ``n`` is in the cache (``read(n)`` decodes nothing). Asked from the
        event loop while the video thread may be reading: one look-up in a dict, and a wrong
        answer only costs a proxy picture read for nothing, or one not read."""
        return n in self._cache

    def read(
        self, n: int, stop: Callable[[], bool] | None = None, hurry: bool = False
    ) -> Picture | None:
        """Exactly frame ``n``, converted; None when the video has no frame ``n``.

        (A file with a hole where ``n`` should be gives the next frame, numbered as it is.)
        ``stop``: asked after each decoded frame; True ends the read with
        :class:`ReadInterrupted`. ``hurry``: playback is behind and skips to ``n``: the frames
        between the decoder and ``n`` that no other frame refers to are not decoded (as on the
        way to a seek's target), so a decoder slower than real time still reaches the frames
        that are due, showing fewer of them, instead of falling further behind at every skip.
        """
        if n < 0 or (self.frame_count is not None and n >= self.frame_count):
            return None
        self._cache.move_to(n)
        raw = self._cache.get(n)
        found: tuple[av.VideoFrame, int] | None = None if raw is None else (raw, n)
        self._stop = stop
        try:
            if found is not None:
                self.hits += 1
            else:
                last = self._last
                if last is not None and last < n <= last + self.forward_limit and not self._eof:
                    if hurry and n > last + 1:
                        self._skip_before = self.pts_of(n - 1)  # n itself is decoded
                    found = self._forward(n)
                else:
                    found = self._seek(n)
        finally:
            self._stop = None
        if found is None:
            return None
        raw, index = found
        pts = raw.pts if raw.pts is not None else self.pts_of(index)
        return Picture(frame=index, pts=pts, data=self.converter.convert(raw))

    def _forward(self, n: int) -> tuple[av.VideoFrame, int] | None:
        assert self._gen is not None
        for frame, index in self._gen:
            if index >= n:
                return frame, index
            self._check_stop()
        return None

    def _check_stop(self) -> None:
        # Asked here, between frames, not in the generator: a generator that raises is
        # finished, and the decoder must stay usable where it is.
        if self._stop is not None and self._stop():
            if self._skip_before is not None:
                # Called off while skipping: frames the next read may want were skipped, so
                # it starts again from a keyframe rather than decoding on from here.
                self._last = None
            raise ReadInterrupted(f"input {self.index}: read called off")

    def _seek(self, n: int) -> tuple[av.VideoFrame, int] | None:
        target = self.pts_of(n)
        back = 0
        one_second = max(1, math.ceil(1 / self.time_base))
        for attempt in range(MAX_SEEK_TRIES):
            # The last try, or a point before the first frame: decode from the very start.
            from_start = attempt == MAX_SEEK_TRIES - 1 or target - back <= self.start_pts
            if from_start:
                self._restart_from_start(one_second)
            else:
                self._restart(target - back)
            margin = max(SKIP_MARGIN, self.cache_frames)
            self._skip_before = self.pts_of(n - margin - 1) if n > margin else None
            assert self._gen is not None
            first = True
            for frame, index in self._gen:
                if first and index > n and not from_start:
                    # The demuxer's keyframe index put us past n: start further back.
                    back = max(2 * back, one_second)
                    break
                first = False
                if index >= n:
                    return frame, index
                self._check_stop()
            else:
                if first and not from_start:
                    # Nothing after the seek: the demuxer went past the last keyframe.
                    back = max(2 * back, one_second)
                    continue
                return None  # decoded to the end without reaching n: there is no frame n
        raise AssertionError("unreachable: the last try decodes from the start")

    def longest_gop(self, frames: int) -> int:
        """The most frames from one keyframe to the next in the first ``frames`` packets (or
        ``frames`` when fewer than two keyframes are in them): how much a seek may have to
        decode. Demuxes only; the next read seeks."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        self._last = None
        self._skip_before = None
        self._eof = False
        try:
            self._container.seek(
                self.start_pts, backward=True, any_frame=False, stream=self._stream
            )
            packets = cast(
                "Generator[av.Packet[Any], None, None]", self._container.demux(self._stream)
            )
            keys: list[int] = []
            count = 0
            try:
                for packet in packets:
                    if packet.size == 0:
                        continue  # the demuxer's flush packet
                    if packet.is_keyframe:
                        keys.append(count)
                    count += 1
                    if count >= frames or len(keys) >= 3:
                        break
            finally:
                packets.close()
        except av.FFmpegError as exc:
            raise ReadError(f"input {self.index}: scanning keyframes: {describe(exc)}") from exc
        self._gen = self._frames()  # a fresh start; its first read seeks (``_last`` is None)
        gaps = [b - a for a, b in zip(keys, keys[1:], strict=False)]
        if len(keys) < 3:
            gaps.append(count - (keys[-1] if keys else 0))
        return max(gaps)

    def _restart(self, pts: int) -> None:
        """Seek the demuxer to the keyframe at or before ``pts`` and restart decoding."""
        try:
            self._container.seek(pts, backward=True, any_frame=False, stream=self._stream)
        except av.FFmpegError as exc:
            raise ReadError(f"input {self.index}: seek: {describe(exc)}") from exc
        self.seeks += 1
        self._restarted()

    def _restart_from_start(self, one_second: int) -> None:
        """Go back to the first frame. Demuxers that seek by bisection (MPEG-TS) may land on
        a later keyframe when asked for the first timestamp, so ask for one well before it,
        and failing that, for byte 0."""
        try:
            self._container.seek(
                self.start_pts - 10 * one_second,
                backward=True,
                any_frame=False,
                stream=self._stream,
            )
        except av.FFmpegError:
            try:
                self._container.seek(0, backward=True, unsupported_byte_offset=True)
            except av.FFmpegError as exc:
                raise ReadError(f"input {self.index}: seek to the start: {describe(exc)}") from exc
        self.seeks += 1
        self._restarted()

    def _restarted(self) -> None:
        if self._gen is not None:
            self._gen.close()
        self._skip_before = None
        self._last = None
        self._eof = False
        self._gen = self._frames()

    def _frames(self) -> Generator[tuple[av.VideoFrame, int], None, None]:
        """Decoded frames and their numbers from the demuxer's position on; remembers each."""
        packets = cast("Generator[av.Packet[Any], None, None]", self._container.demux(self._stream))
        ctx = self._stream.codec_context
        in_row = 0
        skipping = False
        try:
            for packet in packets:
                skip = self._skip_before is not None
                if skip and (packet.pts is None or packet.pts >= cast(int, self._skip_before)):
                    self._skip_before = None  # from here on, every frame is decoded
                    skip = False
                if skip != skipping:
                    ctx.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
                try:
                    frames = ctx.decode(packet)
                except av.FFmpegError as exc:
                    # A damaged packet: skip it; many in a row mean the input is unreadable.
                    self.errors += 1
                    in_row += 1
                    if in_row >= MAX_DECODE_ERRORS:
                        raise ReadError(
                            f"input {self.index}: {in_row} decode errors in a row ({describe(exc)})"
                        ) from exc
                    continue
                in_row = 0
                for frame in frames:
                    self.decoded += 1
                    if frame.pts is None:
                        index = 0 if self._last is None else self._last + 1
                    else:
                        index = self.index_of(frame.pts)
                    self._last = index
                    self._remember(index, frame)
                    yield frame, index
        except av.FFmpegError as exc:
            raise ReadError(f"input {self.index}: read: {describe(exc)}") from exc
        finally:
            packets.close()
            if skipping:  # closed mid-seek: the next decode starts with every frame
                ctx.skip_frame = "DEFAULT"
        self._eof = True

    def _remember(self, index: int, frame: av.VideoFrame) -> None:
        self._cache.put(index, frame, _frame_bytes(frame))

    @property
    def cache_bytes(self) -> int:
        """Bytes of decoded pictures held now."""
        return self._cache.bytes

    @property
    def cache_peak_bytes(self) -> int:
        """The most bytes of decoded pictures held (after each decode)."""
        return self._cache.peak_bytes

    @property
    def cache_budget(self) -> int:
        """The cache's bound in bytes."""
        return self._cache.budget

    def close(self) -> None:
        """Stop decoding and close the container. Safe to call twice."""
        gen, self._gen = self._gen, None
        if gen is not None:
            gen.close()
        self._cache.clear()
        self._container.close()
