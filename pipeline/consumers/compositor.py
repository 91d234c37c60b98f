"""Composing one mosaic picture from the newest frame of every tile.

The stitcher's event loop decides, on its clock, what each tile shows (:class:`TileView`: the
live frame, "waiting" before the first frame, or the dead tile; and its overlays: the alarms it
is in, its source's audio meter); the :class:`Compositor` draws that onto its
:class:`~pipeline.consumers.canvas.Canvas`: each tile's picture (left of its meter, if it has
one: :mod:`~pipeline.consumers.overlays`), the name label of each live or waiting tile (a dead
tile carries its name in its own picture), the alarm border and badge; and, when the compositor
has one, the clock over the mosaic's bottom-right corner.

The canvas persists between frames, so a tile whose view did not change since the last picture
(same kind, same frame ``serial``, same alarms, a meter of the same channels showing the same
segments) is not drawn again: a dead or frozen source costs nothing. A new frame redraws the
picture, label and alarm (the meter's column beside the picture is left as it is); a meter
that moved redraws only the bars that moved; new alarms, or a meter that comes, goes or
changes its channels, redraw the whole tile.

Pure: numpy and Pillow, no I/O; the stitcher runs it in its executor thread.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.consumers.canvas import BLACK, Canvas, Planes, gray_planes, planes_of
from pipeline.consumers.deadtile import dead_tile, waiting_tile
from pipeline.consumers.labels import Label, draw_label, label_text, render_label
from pipeline.consumers.meters import MAX_CHANNELS, Meter
from pipeline.consumers.overlays import (
    ClockFace,
    MeterPanel,
    TileAlarm,
    TileMeter,
    copy_into,
    meter_panel,
)
from pipeline.messages.events import Tile
from pipeline.messages.frames import FrameHeader
from pipeline.monitoring.alarms import AlarmKind
from pipeline.state.layouts import GRID, Layout, Rect, layout


class TileKind(enum.Enum):
    """What a tile shows."""

    LIVE = "live"
    WAITING = "waiting"
    DEAD = "dead"


@dataclass(frozen=True, eq=False)
class TileView:
    """What one tile shows in one picture.

    ``serial`` numbers the frames a source delivered (same serial, same picture); ``pixels`` are
    the frame's packed planes (``header.pix_fmt``) for a live tile. ``alarms`` are the kinds the
    tile is in alarm for (a border and a badge; empty: none), ``meter`` its source's audio
    meter (None: no meter, as for a source without audio).
    """

    kind: TileKind
    serial: int = 0
    header: FrameHeader | None = None
    pixels: bytes | memoryview | None = None
    alarms: tuple[AlarmKind, ...] = ()
    meter: Meter | None = None


WAITING = TileView(TileKind.WAITING)
DEAD = TileView(TileKind.DEAD)


def frame_planes(header: FrameHeader, pixels: bytes | memoryview) -> Planes:
    """The planes of a frame message's pixels (views, no copy); ValueError if they do not
    match the header."""
    if header.pix_fmt == "gray":
        return gray_planes(pixels, header.width, header.height)
    return planes_of(pixels, header.width, header.height)


# What a tile was last drawn with: its picture (kind and frame serial), then its overlays (the
# alarms, and the meter's panel; the meter's bars are kept by its TileMeter).
_Token = tuple[TileKind, int, tuple[AlarmKind, ...], MeterPanel | None]


class Compositor:
    """Draws mosaic pictures for ``tiles`` on a ``width`` x ``height`` canvas, laid out as
    ``kind`` (a canonical ``layout=``; ``cols`` for the grid) says: tiles may differ in size.

    With ``clock``, each picture shows the UTC time of day it was composed at (``wall``) in the
    mosaic's bottom-right corner, over the last tile's label strip or the empty cell after the
    last tile: in frames of a ``fps`` output when ``fps`` is given, else in hundredths.
    """

    def __init__(
        self,
        tiles: Sequence[Tile],
        width: int,
        height: int,
        cols: int | None = None,
        *,
        kind: str = GRID,
        clock: bool = False,
        fps: int | None = None,
    ) -> None:
        self.layout: Layout = layout(len(tiles), width, height, cols, kind)
        self.tiles = tuple(tiles)
        self.canvas = Canvas(width, height, BLACK)
        rects = self.layout.rects
        self.texts = tuple(label_text(t.name, t.url) for t in self.tiles)
        """What each tile is called on screen: its name, or a short form of its URL."""
        self.labels: tuple[Label, ...] = tuple(
            render_label(text, r.w, r.h) for text, r in zip(self.texts, rects, strict=True)
        )
        self._shown: list[_Token | None] = [None] * len(self.tiles)
        self._meters: list[TileMeter | None] = [None] * len(self.tiles)
        self._alarms = tuple(TileAlarm(self.canvas, r.x, r.y, r.w, r.h) for r in rects)
        # Meter panels by (channels, tile size).
        self._panels: dict[tuple[int, int, int], MeterPanel | None] = {}
        # Sized for the smallest tiles, whose labels it sits beside.
        self.clock = ClockFace(min(r.h for r in rects), fps) if clock else None
        self._under_clock: frozenset[int] = frozenset()
        self._clock_target = None if self.clock is None else self._place_clock(self.clock)

    def _place_clock(self, clock: ClockFace) -> Planes:
        grid = self.layout
        area = grid.area
        place = Rect(
            area.right - clock.width, area.bottom - clock.height, clock.width, clock.height
        )
        if place.x < area.x or place.y < area.y:
            raise ValueError(
                f"a {clock.width}x{clock.height} clock does not fit in a "
                f"{grid.width}x{grid.height} mosaic: make it larger or turn the clock off"
            )
        # The tiles it covers: drawing one of them draws over the clock.
        self._under_clock = frozenset(
            i for i, rect in enumerate(grid.rects) if rect.overlaps(place)
        )
        return self.canvas.region(place.x, place.y, place.w, place.h)

    def _picture(self, index: int, view: TileView) -> Planes:
        tw, th = self.layout.rects[index].size
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

    def _panel(self, index: int, meter: Meter) -> MeterPanel | None:
        if not meter.levels:
            return None
        tw, th = self.layout.rects[index].size
        key = (min(len(meter.levels), MAX_CHANNELS), tw, th)
        # Looked up here rather than in meter_panel's cache: this runs for every tile of every
        # picture. None (a tile too small for a meter) is kept too.
        if key not in self._panels:
            self._panels[key] = meter_panel(key[0], tw, th)
        return self._panels[key]

    def _draw_tile(
        self, index: int, view: TileView, panel: MeterPanel | None, shown: _Token | None
    ) -> None:
        """Draw a tile whose view changed since it was drawn with ``shown``."""
        rect = self.layout.rects[index]
        x, y = rect.x, rect.y
        picture = self._picture(index, view)
        if panel is None or view.meter is None:
            self._meters[index] = None
            self.canvas.blit(picture, x, y)
        else:
            meter = self._meters[index]
            if meter is None or meter.panel is not panel:
                meter = self._meters[index] = TileMeter(panel, self.canvas, x, y)
            meter.draw_picture(picture)
            # Only a new picture: the meter's column is still there, its bars may have moved.
            if shown is None or shown[2:] != (view.alarms, panel):
                meter.draw(panel.state(view.meter))
            else:
                meter.show(panel.state(view.meter))
        if view.kind is not TileKind.DEAD:
            draw_label(self.canvas, self.labels[index], x, y, rect.h)
        if view.alarms:
            # Over the picture's edge: drawn again with every picture.
            self._alarms[index].draw(view.alarms)

    def compose(self, views: Sequence[TileView], wall: float | None = None) -> Canvas:
        """Draw one picture (one view per tile, in tile order), composed at Unix time ``wall``
        (which the clock shows; needed when there is one), and return the canvas."""
        if len(views) != len(self.tiles):
            raise ValueError(f"{len(views)} views for {len(self.tiles)} tiles")
        clock, clock_target = self.clock, self._clock_target
        if clock is not None and wall is None:
            raise ValueError("this compositor shows a clock: compose() needs the wall time")
        clock_covered = False
        for index, view in enumerate(views):
            panel = None if view.meter is None else self._panel(index, view.meter)
            token = (view.kind, view.serial, view.alarms, panel)
            shown = self._shown[index]
            if shown != token:
                self._draw_tile(index, view, panel, shown)
                self._shown[index] = token
                clock_covered = clock_covered or index in self._under_clock
                continue
            meter = self._meters[index]
            if meter is not None and view.meter is not None:
                # Same picture: only the bars that moved (they never meet the clock).
                meter.show(meter.panel.state(view.meter))
        if clock is not None and clock_target is not None and wall is not None:
            if clock.show(wall) or clock_covered:
                copy_into(clock_target, clock.picture)
        return self.canvas
