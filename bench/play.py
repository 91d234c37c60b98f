"""Watching a mosaic the way a player does, and noting when each piece of media is first listed
(the moment it becomes playable):

- :class:`PlaylistPoller`: poll ``/play/<fp>/index.m3u8`` (any HLS) for new segments, and
  fetch them (after their init section, for CMAF);
- :class:`PartFollower`: follow a Low-Latency HLS playlist from part to part with blocking
  reloads (``_HLS_msn`` / ``_HLS_part`` of the part its preload hint names), as hls.js and
  Safari do: each answer comes as soon as the gateway knows of the next part;
- :func:`decode`: every picture of a segment, or of a CMAF init section followed by parts;
  :class:`PartDecoder`: the pictures of each part in turn (a part that does not start with a
  keyframe decodes only after the parts before it);
- :func:`follow_pictures`: capture time (the stamp in each tile, :mod:`bench.camera`),
  composition time, and the moments the part and the segment holding it were listed, for
  every picture of every tile over a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import time
from dataclasses import dataclass
from datetime import datetime

import av
import m3u8
import numpy as np
import numpy.typing as npt
from av.video.codeccontext import VideoCodecContext

from bench.stack import StackHost
from pipeline.segments.uris import PartRef, SegmentUri, parse_uri
from pipeline.sources.synthetic import read_stamp
from pipeline.state.layouts import Layout


@dataclass(frozen=True)
class Listed:
    """A segment as first seen in the playlist."""

    uri: str
    seq: int
    listed_mono: float
    """``time.monotonic()`` of the poll that first listed it."""
    listed_wall: float
    """``time.time()`` of the same poll."""
    start_wall: float
    """Its ``EXT-X-PROGRAM-DATE-TIME`` (wall clock of its first picture), 0 when absent."""
    duration: float
    init: str = ""
    """Its ``EXT-X-MAP`` URI (CMAF), "" when it has none (MPEG-TS)."""


class PlaylistPoller:
    """Polls a mosaic's playlist; :meth:`poll` returns the segments listed for the first time,
    :meth:`media` their bytes, ready to decode."""

    def __init__(self, host: StackHost, fp: str) -> None:
        self.host = host
        self.fp = fp
        self.seen: dict[str, Listed] = {}
        self._inits: dict[str, bytes] = {}

    async def media(self, listed: Listed) -> bytes | None:
        """A listed segment's bytes, after its init section if it has one (a CMAF segment
        alone does not decode); None when missing."""
        data = await self.host.segment(self.fp, listed.uri)
        if not data or not listed.init:
            return data
        if listed.init not in self._inits:
            init = await self.host.segment(self.fp, listed.init)
            if not init:
                return None
            self._inits[listed.init] = init
        return self._inits[listed.init] + data

    async def poll(self) -> list[Listed]:
        text = await self.host.playlist(self.fp)
        mono, wall = time.monotonic(), time.time()
        if not text:
            return []
        playlist = m3u8.loads(text)
        first = int(playlist.media_sequence or 0)
        fresh = []
        for offset, segment in enumerate(playlist.segments):
            if segment.uri is None:
                continue  # a Low-Latency HLS segment still being built: parts only
            uri = str(segment.uri)
            if uri in self.seen:
                continue
            pdt = segment.program_date_time
            listed = Listed(
                uri=uri,
                seq=first + offset,
                listed_mono=mono,
                listed_wall=wall,
                start_wall=pdt.timestamp() if pdt is not None else 0.0,
                duration=float(segment.duration or 0.0),
                init=str(segment.init_section.uri) if segment.init_section else "",
            )
            self.seen[uri] = listed
            fresh.append(listed)
        return fresh


def decode(
    data: bytes, fmt: str = "rgb24", container_format: str | None = None
) -> list[npt.NDArray[np.uint8]]:
    """Every picture of a segment, as ``fmt`` arrays (``rgb24``, or ``gray`` for luma);
    ``container_format`` "mp4" for an init section followed by parts."""
    with av.open(io.BytesIO(data), mode="r", format=container_format) as container:
        return [
            np.asarray(frame.to_ndarray(format=fmt), dtype=np.uint8)
            for frame in container.decode(video=0)
        ]


@dataclass(frozen=True)
class PartListed:
    """A part as first seen in the playlist."""

    ref: PartRef
    listed_wall: float
    """``time.time()`` when the answer listing it arrived."""
    start_wall: float
    """Wall clock of its first picture: its segment's ``EXT-X-PROGRAM-DATE-TIME`` plus the
    parts before it (0 when the segment has no date)."""
    duration: float


@dataclass(frozen=True)
class LowLatencyText:
    """What a Low-Latency HLS playlist lists (see :func:`parse_low_latency`)."""

    parts: tuple[tuple[PartRef, float, float], ...]
    """(part, start wall clock, duration) of every part listed."""
    segments: tuple[int, ...]
    """Media sequence numbers of the complete segments listed."""
    hint: PartRef | None
    """The part ``EXT-X-PRELOAD-HINT`` names."""
    init: str
    """The newest ``EXT-X-MAP`` URI ("" when none)."""


_ATTR = re.compile(r'([A-Z-]+)=("[^"]*"|[^,]*)')


def _attrs(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTR.findall(line.split(":", 1)[1])}


def parse_low_latency(text: str) -> LowLatencyText:
    """The parts (with the wall clock of their first picture), complete segments, preload hint
    and init section of a Low-Latency HLS playlist. Read line by line: the ``m3u8`` library
    drops the date of the segment being built, which its parts need."""
    parts: list[tuple[PartRef, float, float]] = []
    segments: list[int] = []
    hint: PartRef | None = None
    init = ""
    start = offset = 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            start, offset = datetime.fromisoformat(line.split(":", 1)[1]).timestamp(), 0.0
        elif line.startswith("#EXT-X-PART:"):
            attrs = _attrs(line)
            ref, duration = parse_uri(attrs.get("URI", "")), float(attrs.get("DURATION", 0))
            if isinstance(ref, PartRef):
                parts.append((ref, start + offset if start else 0.0, duration))
            offset += duration
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            ref = parse_uri(_attrs(line).get("URI", ""))
            hint = ref if isinstance(ref, PartRef) else None
        elif line.startswith("#EXT-X-MAP:"):
            init = _attrs(line).get("URI", "")
        elif line and not line.startswith("#"):
            ref = parse_uri(line.strip())
            if isinstance(ref, SegmentUri):
                segments.append(ref.msn)
    return LowLatencyText(tuple(parts), tuple(segments), hint, init)


class PartFollower:
    """Follows a Low-Latency HLS playlist with blocking reloads. :meth:`start` takes what is
    listed already as seen; each :meth:`next` waits for the next answer and returns the parts
    and complete segments it lists for the first time (with the wall clock of the answer)."""

    def __init__(self, host: StackHost, fp: str) -> None:
        self.host = host
        self.fp = fp
        self.hint: PartRef | None = None
        self.init = ""
        self.seen_parts: set[PartRef] = set()
        self.seen_segments: set[int] = set()
        self.refused = 0
        """Blocking reloads answered with something else than 200 (then a plain reload)."""

    async def _get(self, hint: PartRef | None) -> str:
        assert self.host.http is not None
        params = {} if hint is None else {"_HLS_msn": hint.msn, "_HLS_part": hint.part}
        path = f"{self.host.play_path(self.fp)}/index.m3u8"
        got = await self.host.http.get(path, params=params)
        if got.status_code != 200:
            self.refused += hint is not None
            return ""
        return got.text

    async def start(self) -> LowLatencyText:
        """Load the playlist once; what it lists is not new (and ValueError if it has no
        parts: not Low-Latency HLS)."""
        text = await self._get(None)
        playlist = parse_low_latency(text)
        if "#EXT-X-PART-INF" not in text:
            raise ValueError("the playlist lists no parts: not Low-Latency HLS")
        self._take(playlist, 0.0)
        return playlist

    async def next(self) -> tuple[list[PartListed], list[tuple[int, float]]]:
        """New parts, and new complete segments as (media sequence number, listed wall)."""
        text = await self._get(self.hint)
        wall = time.time()
        if not text:
            await asyncio.sleep(0.05)  # held too long (a restart?) or refused: reload plainly
            self.hint = None
            return [], []
        return self._take(parse_low_latency(text), wall)

    def _take(
        self, playlist: LowLatencyText, wall: float
    ) -> tuple[list[PartListed], list[tuple[int, float]]]:
        self.hint = playlist.hint
        self.init = playlist.init or self.init
        parts = [
            PartListed(ref, wall, start, duration)
            for ref, start, duration in playlist.parts
            if ref not in self.seen_parts
        ]
        segments = [(msn, wall) for msn in playlist.segments if msn not in self.seen_segments]
        self.seen_parts.update(p.ref for p in parts)
        self.seen_segments.update(msn for msn, _ in segments)
        return parts, segments


class PartDecoder:
    """Decodes parts in order with one H.264 decoder, so a part that does not start with a
    keyframe decodes after those before it. Not thread-safe: one caller at a time (it may be a
    worker thread)."""

    def __init__(self) -> None:
        self._init = b""
        self._codec: VideoCodecContext | None = None

    def pictures(self, init: bytes, part: bytes) -> list[npt.NDArray[np.uint8]]:
        """The luma of each picture of ``part`` (after ``init``), in order."""
        if init != self._init or self._codec is None:
            self._init = init
            self._codec = None
        out: list[npt.NDArray[np.uint8]] = []
        with av.open(io.BytesIO(init + part), mode="r", format="mp4") as container:
            stream = container.streams.video[0]
            if self._codec is None:
                self._codec = av.CodecContext.create("h264", "r")
                self._codec.extradata = stream.codec_context.extradata
                self._codec.thread_count = 1  # frames out as they go in (no frame threads)
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                for frame in self._codec.decode(packet):
                    out.append(np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8))
        return out


def tile_stamps(luma: npt.NDArray[np.uint8], grid: Layout) -> list[int | None]:
    """The stamp of each tile of a mosaic picture (luma); cameras stamp upside down."""
    out = []
    for r in grid.rects:
        tile = luma[r.y : r.bottom, r.x : r.right]
        out.append(read_stamp(np.flipud(tile)))
    return out


@dataclass
class Pictures:
    """Per (picture, tile) read back: capture time, composition time, when its part was
    listed, and its segment's number (see :func:`follow_pictures`)."""

    captured: list[float]
    composed: list[float]
    part_listed: list[float]
    msn: list[int]
    segment_listed: dict[int, float]
    """When each complete segment was first listed."""
    unread: int = 0
    parts: int = 0
    refused: int = 0

    def to_part(self) -> list[float]:
        """Capture → the playlist lists its part, seconds."""
        return [listed - c for c, listed in zip(self.captured, self.part_listed, strict=True)]

    def to_segment(self) -> list[float]:
        """Capture → the playlist lists its whole segment, seconds (listed ones only)."""
        return [self.segment_listed[m] - c for c, m in zip(self.captured, self.msn, strict=True)
                if m in self.segment_listed]  # fmt: skip


def _unwrap(stamp_ms: int, wall: float) -> float:
    now_ms = int(wall * 1000)
    return (now_ms - ((now_ms - stamp_ms) % (1 << 32))) / 1000


async def follow_pictures(
    host: StackHost, fp: str, grid: Layout, seconds: float, fps: int
) -> Pictures:
    """Follow ``fp``'s Low-Latency HLS playlist for ``seconds`` (:class:`PartFollower`) while
    fetching and decoding every new part in the background (a worker thread, so that the
    follower notes each answer as it comes), then wait (bounded) for the segments of the
    pictures read to be listed."""
    follower = PartFollower(host, fp)
    await follower.start()
    got = Pictures([], [], [], [], {})
    queue: asyncio.Queue[PartListed | None] = asyncio.Queue(maxsize=1000)
    decoder = PartDecoder()
    inits: dict[str, bytes] = {}

    async def fetch() -> None:
        while (part := await queue.get()) is not None:
            uri = follower.init
            if uri not in inits:
                inits[uri] = await host.segment(fp, uri) or b""
            data = await host.segment(fp, part.ref.uri)
            if not data or not inits[uri]:
                continue
            lumas = await asyncio.to_thread(decoder.pictures, inits[uri], data)
            got.parts += 1
            for index, luma in enumerate(lumas):
                composed = part.start_wall + index / fps
                for stamp in tile_stamps(luma, grid):
                    if stamp is None:
                        got.unread += 1
                        continue
                    got.captured.append(_unwrap(stamp, part.listed_wall))
                    got.composed.append(composed)
                    got.part_listed.append(part.listed_wall)
                    got.msn.append(part.ref.msn)

    fetcher = asyncio.create_task(fetch(), name="bench part fetcher")
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            parts, segments = await follower.next()
            got.segment_listed.update(segments)
            for part in parts:
                await queue.put(part)
        await queue.put(None)
        await asyncio.wait_for(asyncio.shield(fetcher), 30)
        # The segments of the last parts read: listed a second or so later.
        last = max(got.msn, default=-1)
        deadline = time.monotonic() + 3
        while last not in got.segment_listed and time.monotonic() < deadline:
            _, segments = await follower.next()
            got.segment_listed.update(segments)
    finally:
        fetcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetcher
    got.refused = follower.refused
    return got
