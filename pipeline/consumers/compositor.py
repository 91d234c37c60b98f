"""Composing one mosaic picture from the newest frame of every tile.

The stitcher's event loop decides, on its clock, what each tile shows (:class:`TileView`: the
live frame, "waiting" before the first frame, or the dead tile); the :class:`Compositor` draws
that onto its :class:`~pipeline.consumers.canvas.Canvas`: the tile pictures, then the name label
of each live or waiting tile (a dead tile carries its name in its own picture).

The canvas persists between frames, so a tile whose view did not change since the last picture
(same kind, same frame ``serial``) is not drawn again: a dead or frozen source costs nothing.

Pure: numpy and Pillow, no I/O; the stitcher runs it in its executor thread.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.consumers.canvas import BLACK, Canvas, Planes, gray_planes, planes_of
from pipeline.consumers.deadtile import dead_tile, waiting_tile
from pipeline.consumers.labels import Label, draw_label, label_text, render_label
from pipeline.messages.events import Tile
from pipeline.messages.frames import FrameHeader
from pipeline.state.mosaic import Layout, layout


class TileKind(enum.Enum):
    """What a tile shows."""

    LIVE = "live"
    WAITING = "waiting"
    DEAD = "dead"


@dataclass(frozen=True, eq=False)
class TileView:
    """What one tile shows in one picture.

    ``serial`` numbers the frames a source delivered (same serial, same picture); ``pixels`` are
    the frame's packed planes (``header.pix_fmt``) for a live tile.
    """

    kind: TileKind
    serial: int = 0
    header: FrameHeader | None = None
    pixels: bytes | memoryview | None = None


WAITING = TileView(TileKind.WAITING)
DEAD = TileView(TileKind.DEAD)


def frame_planes(header: FrameHeader, pixels: bytes | memoryview) -> Planes:
    """The planes of a frame message's pixels (views, no copy); ValueError if they do not
    match the header."""
    if header.pix_fmt == "gray":
        return gray_planes(pixels, header.width, header.height)
    return planes_of(pixels, header.width, header.height)


class Compositor:
    """Draws mosaic pictures for ``tiles`` on a ``width`` x ``height`` canvas."""

    def __init__(
        self, tiles: Sequence[Tile], width: int, height: int, cols: int | None = None
    ) -> None:
        self.layout: Layout = layout(len(tiles), width, height, cols)
        self.tiles = tuple(tiles)
        self.canvas = Canvas(width, height, BLACK)
        tw, th = self.layout.tile_width, self.layout.tile_height
        self.texts = tuple(label_text(t.name, t.url) for t in self.tiles)
        """What each tile is called on screen: its name, or a short form of its URL."""
        self.labels: tuple[Label, ...] = tuple(render_label(text, tw, th) for text in self.texts)
        self._shown: list[tuple[TileKind, int] | None] = [None] * len(self.tiles)

    def _picture(self, index: int, view: TileView) -> Planes:
        tw, th = self.layout.tile_width, self.layout.tile_height
        if view.kind is TileKind.LIVE:
            if view.header is None or view.pixels is None:
                raise ValueError(f"live view of tile {index} has no frame")
            if (view.header.width, view.header.height) != (tw, th):
                raise ValueError(
                    f"frame of {view.header.width}x{view.header.height} for tile {index} "
                    f"of {tw}x{th}"
                )
            return frame_planes(view.header, view.pixels)
        if view.kind is TileKind.DEAD:
            return dead_tile(tw, th, self.texts[index])
        return waiting_tile(tw, th)

    def compose(self, views: Sequence[TileView]) -> Canvas:
        """Draw one picture (one view per tile, in tile order) and return the canvas."""
        if len(views) != len(self.tiles):
            raise ValueError(f"{len(views)} views for {len(self.tiles)} tiles")
        th = self.layout.tile_height
        for index, view in enumerate(views):
            token = (view.kind, view.serial)
            if self._shown[index] == token:
                continue
            x, y = self.layout.origins[index]
            self.canvas.blit(self._picture(index, view), x, y)
            if view.kind is not TileKind.DEAD:
                draw_label(self.canvas, self.labels[index], x, y, th)
            self._shown[index] = token
        return self.canvas
