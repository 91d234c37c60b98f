"""The newest frame of each source, and what each tile shows at a tick: pure.

A stitcher keeps one :class:`NewestFrame` per source (tiles that show the same source share
it). A frame that arrives is taken when it fits the tile (:func:`fits_tile`) and is not older
than the one held (:meth:`NewestFrame.newer`); the one it replaces, if no picture showed it,
is counted as replaced. A live mosaic wants the newest frame, not all of them. A frame is held as
it came, raw planes or JPEG: a JPEG one is decoded only if a picture shows it
(:mod:`~pipeline.consumers.jpegtiles`), so the frames replaced here are never decoded.

At each tick :func:`tile_views` decides what every tile shows: no frame yet → "waiting" while
the stitcher is warming up (its first ``dead_after`` seconds), the dead tile after that; a
newest frame older than ``dead_after`` → the dead tile; otherwise the newest frame. A seeded
frame arrives aged by the stream's timestamp, so a source that died just before the stitcher
started shows dead at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.consumers.compositor import DEAD, WAITING, TileKind, TileView
from pipeline.messages.frames import FrameHeader


def fits_tile(header: FrameHeader, size: int, width: int, height: int) -> bool:
    """Whether a frame message with ``size`` bytes of pixels is a ``width`` x ``height``
    picture that the compositor can draw: raw planes of that size, or a yuv420p JPEG (its own
    header is checked where it arrives, its pixels where it is composed)."""
    if (header.width, header.height) != (width, height):
        return False
    if header.encoding == "jpeg":
        return header.pix_fmt == "yuv420p" and size > 0
    if header.encoding != "raw":
        return False
    expected = width * height * 3 // 2 if header.pix_fmt == "yuv420p" else width * height
    return size == expected


@dataclass
class NewestFrame:
    """The newest frame of one source."""

    header: FrameHeader | None = None
    pixels: memoryview | None = None
    serial: int = 0
    """Frames taken so far; names the picture held."""
    arrived: float = 0.0
    """Clock time the frame arrived (or, for a seeded one, when it was made by its age)."""
    composed: int = 0
    """Serial last taken for a picture."""

    def newer(self, header: FrameHeader, *, seed: bool = False) -> bool:
        """Whether the frame of ``header`` should replace the one held: a seed (the last
        frame the stream kept, read at start) never replaces a live frame, and no frame
        replaces a newer one (frames of one source come by NATS and by shared memory)."""
        if seed and self.serial:
            return False
        return self.header is None or header.wall >= self.header.wall

    def take(self, header: FrameHeader, pixels: memoryview, arrived: float) -> bool:
        """Hold this frame; True when the one it replaces was never in a picture."""
        replaced = self.serial > self.composed
        self.header, self.pixels = header, pixels
        self.serial += 1
        self.arrived = arrived
        return replaced


def tile_views(
    tiles: Sequence[NewestFrame], now: float, *, warming: bool, dead_after: float
) -> tuple[tuple[TileView, ...], int]:
    """What each tile shows in the picture made at ``now``, and how many tiles are dead. Marks
    each frame as composed."""
    views = []
    dead = 0
    for newest in tiles:
        if newest.header is None:
            view = WAITING if warming else DEAD
        elif now - newest.arrived > dead_after:
            view = DEAD
        else:
            view = TileView(TileKind.LIVE, newest.serial, newest.header, newest.pixels)
        newest.composed = newest.serial
        dead += view.kind is TileKind.DEAD
        views.append(view)
    return tuple(views), dead
