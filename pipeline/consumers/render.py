"""The stitcher's synchronous frame pipeline: compose a picture, encode it, and hand back each
segment it completes with the times the playlist and the segment notice need.

It runs entirely in the stitcher's single executor thread (PyAV and numpy release the GIL for
the heavy parts), one call per clock tick: :meth:`MosaicRenderer.render`. Keeping this apart
from the asyncio service keeps the service about scheduling and I/O only, and lets the
CPU-bound path be measured and tested without NATS.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.consumers.compositor import Compositor, TileKind, TileView
from pipeline.consumers.encoder import EncodedSegment, EncoderSettings, SegmentEncoder
from pipeline.messages.events import Tile


@dataclass(frozen=True, eq=False)
class RenderedSegment:
    """A completed segment and when its pictures were made."""

    segment: EncodedSegment
    start_wall: float
    """Wall-clock time its first picture was composed, Unix seconds (program date time)."""
    first_wall: float
    """Oldest grabber wall-clock time of a live frame composed into it (0.0: none)."""


class MosaicRenderer:
    """Composes and encodes a mosaic, one picture per :meth:`render` call."""

    def __init__(
        self,
        tiles: Sequence[Tile],
        settings: EncoderSettings,
        *,
        cols: int | None = None,
        first_index: int = 0,
    ) -> None:
        self.compositor = Compositor(tiles, settings.width, settings.height, cols)
        self.encoder = SegmentEncoder(settings, first_index)
        self.last_ms = 0.0
        """Milliseconds the last :meth:`render` took (compose + encode)."""
        # Per segment index being built: (start wall, oldest live frame wall or 0.0).
        self._pending: dict[int, tuple[float, float]] = {}

    def render(self, views: Sequence[TileView], wall: float) -> RenderedSegment | None:
        """Compose ``views`` (one per tile), encode the picture made at ``wall`` (Unix seconds);
        return the segment it completed, if any."""
        began = time.perf_counter()
        index = self.encoder.current_index
        oldest = min(
            (v.header.wall for v in views if v.kind is TileKind.LIVE and v.header is not None),
            default=0.0,
        )
        start, first = self._pending.get(index, (wall, 0.0))
        if oldest and (not first or oldest < first):
            first = oldest
        self._pending[index] = (start, first)

        canvas = self.compositor.compose(views)
        segment = self.encoder.encode(canvas.frame)
        self.last_ms = (time.perf_counter() - began) * 1000.0
        if segment is None:
            return None
        start, first = self._pending.pop(segment.index, (wall, 0.0))
        for stale in [i for i in self._pending if i < segment.index]:
            del self._pending[stale]
        return RenderedSegment(segment, start, first)

    def close(self) -> None:
        """Drop the unfinished segment and release the encoder. Safe to call twice."""
        self.encoder.close()
        self._pending.clear()
