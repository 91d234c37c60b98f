"""The stitcher's synchronous frame pipeline: compose a picture, encode it, and hand back what
it completed (MPEG-TS segments or CMAF parts) with the times the playlist and the segment
notices need, and the encoded frame itself for outputs that send frames one by one (WHEP).

It runs entirely in the stitcher's single executor thread (PyAV and numpy release the GIL for
the heavy parts), one call per clock tick: :meth:`MosaicRenderer.render`; that is also where
tiles that came as JPEG are decoded, each frame once and only when a picture shows it
(:mod:`~pipeline.consumers.jpegtiles`). Keeping this apart from the asyncio service keeps the
service about scheduling and I/O only, and lets the CPU-bound path be measured and tested
without NATS.

One libx264 encode feeds every output: its packets are muxed into MPEG-TS segments (``ts``) or
CMAF parts (``cmaf``), and the same bytes go out as :class:`EncodedFrame` s.

With ``audio=True`` each call also takes the chunks of sound that came since the last one; the
:class:`~pipeline.consumers.aac.SoundEncoder` turns them into this picture's AAC frames, muxed
beside it (without, nothing of the sound path runs); asked (``opus``, while WebRTC viewers
watch), the same samples are encoded once more, to Opus, for them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.consumers.aac import AudioChunk, SoundEncoder
from pipeline.consumers.cmaf import CmafMuxer, Part
from pipeline.consumers.compositor import Compositor, TileKind, TileView
from pipeline.consumers.encoder import (
    EncodedFrame,
    EncodedSegment,
    EncoderSettings,
    H264Encoder,
    TsMuxer,
)
from pipeline.consumers.jpegtiles import JpegTiles
from pipeline.consumers.opus import EncodedSound, OpusEncoder
from pipeline.messages.events import Tile
from pipeline.state.layouts import GRID

HlsFormat = Literal["cmaf", "ts"]


@dataclass(frozen=True, eq=False)
class RenderedSegment:
    """A completed MPEG-TS segment and when its pictures were made."""

    segment: EncodedSegment
    start_wall: float
    """Wall-clock time its first picture was composed, Unix seconds (program date time)."""
    first_wall: float
    """Oldest grabber wall-clock time of a live frame composed into it (0.0: none)."""


@dataclass(frozen=True, eq=False)
class RenderedPart:
    """A completed CMAF part, the init section it plays after, and when its pictures were
    made."""

    part: Part
    init: bytes
    start_wall: float
    """Wall-clock time its first picture was composed (its segment's program date time when it
    is the segment's first part)."""
    first_wall: float
    """Oldest grabber wall-clock time of a live frame composed into it (0.0: none)."""


Output = RenderedSegment | RenderedPart


@dataclass(frozen=True, eq=False)
class Rendered:
    """What one picture completed."""

    frames: tuple[EncodedFrame, ...]
    """The encoded picture (with zero delay, exactly one)."""
    outputs: tuple[Output, ...]
    """Segments or parts it completed (usually none or one)."""
    sound: tuple[EncodedSound, ...] = ()
    """The picture's sound as Opus packets, for WebRTC viewers (asked for with ``opus``)."""


class MosaicRenderer:
    """Composes and encodes a mosaic, one picture per :meth:`render` call."""

    def __init__(
        self,
        tiles: Sequence[Tile],
        settings: EncoderSettings,
        *,
        cols: int | None = None,
        layout: str = GRID,
        first_index: int = 0,
        hls_format: HlsFormat = "ts",
        audio: bool = False,
        clock: bool = False,
    ) -> None:
        self.compositor = Compositor(
            tiles,
            settings.width,
            settings.height,
            cols,
            kind=layout,
            clock=clock,
            fps=settings.fps,
        )
        self.settings = settings
        self.hls_format: HlsFormat = hls_format
        self.sound = SoundEncoder(settings.fps) if audio else None
        """The AAC encoder, when the mosaic carries sound."""
        track = None if self.sound is None else self.sound.track
        self.muxer: TsMuxer | CmafMuxer = (
            CmafMuxer(settings, audio=track)
            if hls_format == "cmaf"
            else TsMuxer(settings, audio=track)
        )
        self.encoder = H264Encoder(settings, first_index)
        self.jpeg = JpegTiles()
        """The tiles' JPEG frames (frames that crossed machines), decoded as pictures show
        them."""
        self.last_ms = 0.0
        """Milliseconds the last :meth:`render` took (JPEG tiles' decode + compose + encode +
        mux)."""
        self.last_audio_ms = 0.0
        """Milliseconds of that the sound took (resample + AAC encode, and Opus if asked)."""
        self._opus: OpusEncoder | None = None
        # Per output being built (segment, or segment and part): (start wall, oldest live
        # frame wall or 0.0).
        self._pending: dict[tuple[int, int], tuple[float, float]] = {}

    @property
    def current_index(self) -> int:
        """Media sequence number of the segment the next picture goes into."""
        return self.encoder.current_index

    def _unit(self, pts: int) -> tuple[int, int]:
        """The output frame ``pts`` goes into: (segment, part) — part 0 for MPEG-TS."""
        msn, offset = divmod(pts, self.settings.frames_per_segment)
        if isinstance(self.muxer, CmafMuxer):
            return msn, offset // self.muxer.frames_per_part
        return msn, 0

    def render(
        self,
        views: Sequence[TileView],
        wall: float,
        audio: Sequence[AudioChunk] = (),
        opus: bool = False,
    ) -> Rendered:
        """Compose ``views`` (one per tile), encode the picture made at ``wall`` (Unix seconds)
        and, with sound, the chunks of ``audio`` that came since the last picture (and, with
        ``opus``, the same sound as Opus for WebRTC viewers); return it and what it
        completed."""
        began = time.perf_counter()
        views = self.jpeg.decoded(views)
        unit = self._unit(self.encoder.next_pts)
        oldest = min(
            (v.header.wall for v in views if v.kind is TileKind.LIVE and v.header is not None),
            default=0.0,
        )
        start, first = self._pending.get(unit, (wall, 0.0))
        if oldest and (not first or oldest < first):
            first = oldest
        self._pending[unit] = (start, first)

        canvas = self.compositor.compose(views, wall)
        sound: tuple[EncodedSound, ...] = ()
        if self.sound is not None:
            sounded = time.perf_counter()
            self.muxer.mux_audio(self.sound.encode(audio, wall, self.encoder.next_pts))
            if opus and self.sound.last is not None:
                if self._opus is None:
                    self._opus = OpusEncoder()
                sound = self._opus.encode(*self.sound.last)
            self.last_audio_ms = (time.perf_counter() - sounded) * 1000.0
        frames: list[EncodedFrame] = []
        outputs: list[Output] = []
        for packet in self.encoder.encode(canvas.frame):
            # Copied before muxing: a muxer rewrites the packet it is given.
            frames.append(EncodedFrame(bytes(packet), int(packet.pts or 0),
                                       packet.is_keyframe, wall))  # fmt: skip
            for done in self.muxer.mux(packet):
                outputs.append(self._output(done, wall))
        self.last_ms = (time.perf_counter() - began) * 1000.0
        return Rendered(tuple(frames), tuple(outputs), sound)

    def _output(self, done: EncodedSegment | Part, wall: float) -> Output:
        if isinstance(done, EncodedSegment):
            unit = (done.index, 0)
        else:
            unit = (done.msn, done.index)
        start, first = self._pending.pop(unit, (wall, 0.0))
        for stale in [u for u in self._pending if u < unit]:
            del self._pending[stale]
        if isinstance(done, EncodedSegment):
            return RenderedSegment(done, start, first)
        assert isinstance(self.muxer, CmafMuxer) and self.muxer.init is not None
        return RenderedPart(done, self.muxer.init, start, first)

    def close(self) -> None:
        """Drop the unfinished segment or part and release the encoder. Safe to call twice."""
        self.encoder.close()
        self.muxer.close()
        self.jpeg.close()
        if self.sound is not None:
            self.sound.close()
        if self._opus is not None:
            self._opus.close()
        self._pending.clear()
