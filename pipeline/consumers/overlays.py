"""What the stitcher draws on the tiles: alarm borders and badges, audio meters, the clock.

Everything is opaque, in limited-range BT.601 (like :mod:`~pipeline.consumers.canvas`), on the
2x2 chroma grid (every box even), and rendered once: Pillow runs only when a text, a tile size
or a channel count is first seen, and drawing is numpy copies into views of the canvas made
once per tile. The budget is 5 % of a 16-tile mosaic's CPU; on a 1280x720 mosaic of 16 tiles,
every tile a new frame each picture, stereo meters on all of them, 2 tiles in alarm and the
clock add ~0.17 ms to the ~0.6 ms compose of each picture (and the meters' bookkeeping
~0.06 ms), against ~4 ms for libx264 to encode it.

A tile's layout (the clock only on the mosaic's last one)::

    +-BADGE------------------+-----+   the badge (``BLACK``, ``FREEZE +1``): a tab of the alarm
    |                        |  #  |   border, which runs round the tile's edge (red for a
    |        picture         |: # #|   picture alarm, amber for a sound one); the meter: a dark
    |                        |: # #|   column down the right edge, its bars (one per channel)
    | name label ...     [ clock ] |   standing on the name label; the clock: bottom right of
    +------------------------------+   the mosaic, over the last tile's label (or empty cell)

- **Alarm border** (:func:`border`, :class:`TileAlarm`): a frame in the alarm colour, about
  1/45 of the tile's height wide (4 px on a 320x180 tile), lined on its inside with 2 px of
  black so that it stands out on any picture, a red one on red too. Red (:data:`RED`) for
  what is wrong with the picture (lost, black, frozen), amber (:data:`AMBER`) for the sound
  (no audio, silence, loudness): the two questions an operator asks first. Several kinds: red
  wins, and the badge names the most serious and counts the others (``LOST +2``).
- **Meter** (:func:`meter_panel`, :class:`TileMeter`): bars on a near-black column, -60 dBFS
  at the bottom to 0 dBFS at the top, linear in dB, in segments of 1 dB (1.5 or 3 dB on small
  tiles) two or more rows tall; unlit segments show their zone dimly, so the scale reads even
  in silence: green up to -18 dBFS (the EBU R68 alignment level), yellow to -9, red above.
  White ticks at 0, -9 and -18 on the column's left; the peak hold is one lit segment. The
  column is the tile's picture's right edge rather than a box over it: a new picture is drawn
  left of it, so an unchanged meter costs nothing, and a new level redraws only the bars whose
  segments changed.
- **Clock** (:class:`ClockFace`): the UTC time of day of the picture (``HH:MM:SS.cc`` in
  hundredths, or ``HH:MM:SS:FF`` in frames when the output rate is known), white on black in a
  monospaced font. Glyphs are rendered once per character; a new time rewrites only the
  characters that changed into the clock's own buffer, which is then copied onto the canvas.

UTC, not local time: alarm events and frame walls are Unix times, a stitcher's time zone is
whatever its machine (often a container) says, and a mosaic's viewers may be anywhere.

Pure: Pillow and numpy only.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided
from PIL import Image, ImageDraw, ImageFont

from pipeline.consumers.canvas import BLACK, Canvas, Plane, Planes, rgb_to_planes, solid
from pipeline.consumers.labels import Font, fit_text, font, font_size, strip_height
from pipeline.consumers.meters import MAX_CHANNELS, Meter
from pipeline.monitoring.alarms import AlarmKind

RGB = tuple[int, int, int]

RED: RGB = (230, 30, 30)
"""Border of a picture alarm: lost, black, freeze."""
AMBER: RGB = (255, 165, 0)
"""Border of a sound alarm: no audio, silence, loudness."""
_EDGE: RGB = (0, 0, 0)
"""The inner lining of a border, and the clock's backdrop."""
_WHITE: RGB = (255, 255, 255)

SEVERITY = (
    AlarmKind.LOST,
    AlarmKind.BLACK,
    AlarmKind.FREEZE,
    AlarmKind.NO_AUDIO,
    AlarmKind.SILENCE,
    AlarmKind.LOUDNESS,
)
"""Most serious first: the badge names the first of a tile's kinds in this order."""
PICTURE_KINDS = frozenset({AlarmKind.LOST, AlarmKind.BLACK, AlarmKind.FREEZE})
BADGE_TEXT = {
    AlarmKind.LOST: "LOST",
    AlarmKind.BLACK: "BLACK",
    AlarmKind.FREEZE: "FREEZE",
    AlarmKind.NO_AUDIO: "NO AUDIO",
    AlarmKind.SILENCE: "SILENCE",
    AlarmKind.LOUDNESS: "LOUDNESS",
}

BOLD_FONTS = ("DejaVuSans-Bold.ttf",)
MONO_FONTS = ("DejaVuSansMono-Bold.ttf", "DejaVuSansMono.ttf")
_INNER_EDGE = 2
"""Pixels of black lining inside a border."""


def _even(value: float) -> int:
    n = int(value)
    return n - n % 2


@functools.lru_cache(maxsize=64)
def _face(names: tuple[str, ...], size: int) -> Font:
    """The first of ``names`` the host has, else the labels' font (which always loads)."""
    for name in names:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return font(size)


# --- alarms ------------------------------------------------------------------------------------


def badge_text(kinds: Sequence[AlarmKind]) -> str:
    """What a tile in alarm says: its most serious kind, and how many more (``BLACK +1``)."""
    ranked = sorted(set(kinds), key=SEVERITY.index)
    if not ranked:
        return ""
    more = f" +{len(ranked) - 1}" if len(ranked) > 1 else ""
    return BADGE_TEXT[ranked[0]] + more


def alarm_colour(kinds: Sequence[AlarmKind]) -> RGB:
    """The border colour of a tile with these alarms: red if the picture is wrong, else
    amber."""
    return RED if any(kind in PICTURE_KINDS for kind in kinds) else AMBER


def border_width(tile_height: int) -> int:
    """Width of the coloured part of an alarm border (even, 2 px at least)."""
    return max(2, min(12, _even(tile_height / 45 + 1)))


def inset(tile_height: int) -> int:
    """How far inside the tile's edge an alarm border reaches (the meter's bars keep out)."""
    return border_width(tile_height) + _INNER_EDGE


@dataclass(frozen=True, eq=False)
class Border:
    """A tile's alarm border, ``width`` pixels thick, as two pieces to copy: ``rows``, the top
    and bottom rows (each plane ``(2, width, tile width)``), and ``sides``, the left and right
    columns between them (``(tile height - 2 width, 2, width)``)."""

    width: int
    rows: Planes
    sides: Planes


def _border_fits(tile_width: int, tile_height: int) -> bool:
    return 8 * inset(tile_height) <= min(tile_width, tile_height)


@functools.lru_cache(maxsize=64)
def border(tile_width: int, tile_height: int, colour: RGB) -> Border | None:
    """The ``colour`` alarm border of a ``tile_width`` x ``tile_height`` tile (cached), or None
    for a tile too small to carry one (the alarm is still in the events and on the pages)."""
    if not _border_fits(tile_width, tile_height):
        return None
    coloured, width = border_width(tile_height), inset(tile_height)
    image = np.empty((tile_height, tile_width, 3), dtype=np.uint8)
    image[...] = colour
    image[coloured:-coloured, coloured:-coloured] = _EDGE
    planes = rgb_to_planes(image)

    def pieces(plane: Plane, w: int) -> tuple[Plane, Plane]:
        h = plane.shape[0]
        rows = np.stack([plane[:w], plane[h - w :]])
        sides = np.stack([plane[w : h - w, :w], plane[w : h - w, -w:]], axis=1)
        return rows, sides

    (yr, ys), (ur, us), (vr, vs) = (
        pieces(plane, width // scale) for plane, scale in zip(planes, (1, 2, 2), strict=True)
    )
    return Border(width, _frozen(Planes(yr, ur, vr)), _frozen(Planes(ys, us, vs)))


@functools.lru_cache(maxsize=256)
def badge(text: str, colour: RGB, tile_width: int, tile_height: int) -> Planes:
    """The alarm badge saying ``text`` on ``colour`` for a tile of this size (cached): bold,
    white on red, black on amber; as tall as the name label, at most half the tile wide."""
    height = strip_height(tile_height)
    face = _face(BOLD_FONTS, font_size(tile_height))
    pad = max(2, height // 4)
    shown = fit_text(text, face, tile_width // 2 - 2 * pad)
    width = min(_even(math.ceil(face.getlength(shown)) + 2 * pad + 1), _even(tile_width // 2))
    ink = _WHITE if colour == RED else _EDGE
    image = Image.new("RGB", (width, height), colour)
    ImageDraw.Draw(image).text((pad, height / 2), shown, fill=ink, font=face, anchor="lm")
    return _frozen(rgb_to_planes(np.asarray(image, dtype=np.uint8)))


def copy_into(target: Planes, picture: Planes) -> None:
    """Copy ``picture`` into ``target``, views of the same size (from ``Canvas.region``)."""
    target.y[...] = picture.y
    target.u[...] = picture.u
    target.v[...] = picture.v


def _both_bands(plane: Plane, band: int) -> Plane:
    """One view of the first and last ``band`` rows of ``plane``: ``(2, band, width)``."""
    rows, stride = plane.shape[0], plane.strides[0]
    return as_strided(plane, (2, band, plane.shape[1]), ((rows - band) * stride, *plane.strides))


def _both_edges(plane: Plane, band: int) -> Plane:
    """One view of the first and last ``band`` columns of ``plane``: ``(height, 2, band)``."""
    cols, stride = plane.shape[1], plane.strides[1]
    return as_strided(
        plane, (plane.shape[0], 2, band), (plane.strides[0], (cols - band) * stride, stride)
    )


class TileAlarm:
    """A tile's alarm border and badge on a canvas.

    Drawn again with every new picture (they are over its edge), so the views they are copied
    into are made once, and each border is two copies per plane (top and bottom rows, left and
    right sides, each pair one strided view): slicing costs as much as copying a piece.
    """

    def __init__(self, canvas: Canvas, x: int, y: int, tile_width: int, tile_height: int) -> None:
        """The tile whose corner on ``canvas`` is (``x``, ``y``)."""
        self._canvas, self._x, self._y = canvas, x, y
        self._size = (tile_width, tile_height)
        self._targets: tuple[Planes, Planes] | None = None
        if _border_fits(tile_width, tile_height):
            w = inset(tile_height)
            tile = canvas.region(x, y, tile_width, tile_height)
            between = canvas.region(x, y + w, tile_width, tile_height - 2 * w)
            self._targets = (
                Planes(*(_both_bands(p, w // s) for p, s in zip(tile, (1, 2, 2), strict=True))),
                Planes(*(_both_edges(p, w // s) for p, s in zip(between, (1, 2, 2), strict=True))),
            )
        self._drawings: dict[tuple[AlarmKind, ...], tuple[Border, Planes, Planes]] = {}

    def _drawing(self, kinds: tuple[AlarmKind, ...]) -> tuple[Border, Planes, Planes] | None:
        drawing = self._drawings.get(kinds)
        if drawing is None:
            colour = alarm_colour(kinds)
            frame = border(*self._size, colour)
            if frame is None:
                return None
            picture = badge(badge_text(kinds), colour, *self._size)
            target = self._canvas.region(self._x, self._y, picture.width, picture.height)
            drawing = self._drawings[kinds] = (frame, picture, target)
        return drawing

    def draw(self, kinds: tuple[AlarmKind, ...]) -> None:
        """Draw the border and badge of ``kinds``; nothing when there are none, or when the
        tile is too small for them."""
        if not kinds or self._targets is None:
            return
        drawing = self._drawing(kinds)
        if drawing is None:
            return
        frame, picture, target = drawing
        copy_into(self._targets[0], frame.rows)
        copy_into(self._targets[1], frame.sides)
        copy_into(target, picture)


def _frozen(planes: Planes) -> Planes:
    for plane in planes:
        plane.flags.writeable = False
    return planes


# --- meters ------------------------------------------------------------------------------------

SCALE_DB = 60
"""The meter shows -60 dBFS (empty) to 0 dBFS (full)."""
SEGMENTS = (60, 40, 20)
"""How many segments a bar may have, the finest that fits first: 1, 1.5 or 3 dB each, so
that -9 and -18 dBFS fall on a segment's edge."""
TICKS_DB = (0, 9, 18)
"""Marks on the scale, dB below full scale: full scale, the top of the yellow zone, the
alignment level."""
RED_FROM_DB = 9
"""Segments above -9 dBFS are red, those from -9 to -18 yellow, the rest green."""
YELLOW_FROM_DB = 18

GREEN: RGB = (40, 215, 70)
YELLOW: RGB = (240, 205, 20)
ZONE_RED: RGB = (240, 40, 30)
_DIM = 0.3
"""Brightness of an unlit segment: the zones stay visible, lit ones stand out."""
_PANEL: RGB = (10, 10, 10)
_TICK: RGB = (235, 235, 235)
_GAP = 2
"""Pixels between bars, and round them."""
_BAR_CACHE_BYTES = 8 << 20
"""What a meter panel's cache of bar pictures may hold."""

MeterState = tuple[tuple[int, int], ...]
"""Per channel, the segment its bar is lit from and its peak hold's segment (0 is full scale,
the panel's ``segments`` an empty bar or no hold): what a meter looks like."""


@dataclass(frozen=True, eq=False)
class MeterPanel:
    """A ``channels``-bar meter on a tile of one size: where it goes, and its rendered parts.

    The meter is a column the tile's full height, ``width`` wide, from ``x`` to the tile's
    right edge; the tile's picture is drawn only left of it. Its bars run down from row
    ``bar_top`` (0 dBFS) in ``segments`` segments of ``segment_rows`` rows each (-60 dBFS at
    the bottom, on the name label); bar ``c`` covers columns ``bar_x[c]`` to
    ``bar_x[c] + bar_width`` of the column.
    """

    channels: int
    x: int
    width: int
    bar_top: int
    bar_x: tuple[int, ...]
    bar_width: int
    segments: int
    segment_rows: int
    backdrop: Planes
    """The column with every bar unlit."""
    lit: Planes
    """One bar, every segment lit."""
    unlit: Planes
    """One bar, no segment lit."""
    _bars: dict[tuple[int, int], Planes] = field(default_factory=dict, repr=False)

    def state(self, meter: Meter) -> MeterState:
        """What ``meter`` looks like on this panel (its first :attr:`channels` channels)."""
        # Written out with plain comparisons rather than round() and min(): this runs for
        # every tile of every picture, and this way takes half the time.
        n, per_db = self.segments, self.segments / SCALE_DB
        states = []
        for level, hold in zip(meter.levels[: self.channels], meter.holds, strict=False):
            top = int(0.5 - level * per_db)
            if top > n:
                top = n
            elif top < 0:
                top = 0
            held = int(0.5 - hold * per_db)
            if held > top:
                held = top
            elif held < 0:
                held = 0
            states.append((top, held))
        return tuple(states)

    def bar(self, top: int, hold: int) -> Planes:
        """One bar lit from segment ``top`` with its peak hold at segment ``hold``."""
        # Cached: a cached bar is three copies, a new one nine. A meter visits few of its
        # (up to ~1,900) states at a time, so a full cache simply starts again.
        bar = self._bars.get((top, hold))
        if bar is None:
            if len(self._bars) * self.lit.y.size * 3 // 2 > _BAR_CACHE_BYTES:
                self._bars.clear()
            bar = self._bars[top, hold] = self._render_bar(top, hold)
        return bar

    def _render_bar(self, top: int, hold: int) -> Planes:
        y, u, v = (plane.copy() for plane in self.unlit)
        ly, lc = top * self.segment_rows, top * self.segment_rows // 2
        y[ly:], u[lc:], v[lc:] = self.lit.y[ly:], self.lit.u[lc:], self.lit.v[lc:]
        if hold < top:
            hy, hc = hold * self.segment_rows, hold * self.segment_rows // 2
            rows, c_rows = slice(hy, hy + self.segment_rows), slice(hc, hc + self.segment_rows // 2)
            y[rows], u[c_rows], v[c_rows] = self.lit.y[rows], self.lit.u[c_rows], self.lit.v[c_rows]
        return _frozen(Planes(y, u, v))


def _bar_rgb(segments: int, segment_rows: int, width: int, dim: float) -> npt.NDArray[np.uint8]:
    """A bar's RGB picture: each segment in its zone's colour, ``dim`` times as bright."""
    db = np.arange(segments) * (SCALE_DB // segments)
    zone = np.where(db < RED_FROM_DB, 0, np.where(db < YELLOW_FROM_DB, 1, 2))
    colours = np.rint(np.array([ZONE_RED, YELLOW, GREEN], dtype=np.float64) * dim)
    rows = np.repeat(colours.astype(np.uint8)[zone], segment_rows, axis=0)
    return np.ascontiguousarray(np.broadcast_to(rows[:, None, :], (rows.shape[0], width, 3)))


@functools.lru_cache(maxsize=64)
def meter_panel(channels: int, tile_width: int, tile_height: int) -> MeterPanel | None:
    """The meter of ``channels`` bars (1 to :data:`MAX_CHANNELS`) on a tile of this size
    (cached), or None when the tile is too small to show one.

    The bars stand on the name label, inside the alarm border's reach, in the finest segments
    that fit (2 rows per dB on a 320x180 tile: 120 rows), each 1/80 of the tile wide (4 px
    there)."""
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"a meter has 1 to {MAX_CHANNELS} channels, not {channels}")
    bar_width = max(2, _even(tile_width / 80))
    edge = inset(tile_height)
    width = _GAP + bar_width + channels * (_GAP + bar_width) + _GAP + edge
    bottom = tile_height - strip_height(tile_height) - _GAP
    room = bottom - edge - _GAP
    segments = next((n for n in SEGMENTS if room >= 2 * n), 0)
    # At most half the tile, so that it never meets the badge (the other half).
    if not segments or width > tile_width // 2:
        return None
    segment_rows = _even(room / segments)
    bar_top = bottom - segment_rows * segments
    bar_x = tuple(2 * _GAP + bar_width + c * (_GAP + bar_width) for c in range(channels))

    unlit = _bar_rgb(segments, segment_rows, bar_width, _DIM)
    image = np.empty((tile_height, width, 3), dtype=np.uint8)
    image[...] = _PANEL
    for x in bar_x:
        image[bar_top:bottom, x : x + bar_width] = unlit
    for db in TICKS_DB:
        row = bar_top + db * segments // SCALE_DB * segment_rows
        image[row : row + segment_rows, _GAP : _GAP + bar_width] = _TICK
    return MeterPanel(
        channels=channels,
        x=tile_width - width,
        width=width,
        bar_top=bar_top,
        bar_x=bar_x,
        bar_width=bar_width,
        segments=segments,
        segment_rows=segment_rows,
        backdrop=_frozen(rgb_to_planes(image)),
        lit=_frozen(rgb_to_planes(_bar_rgb(segments, segment_rows, bar_width, 1.0))),
        unlit=_frozen(rgb_to_planes(unlit)),
    )


class TileMeter:
    """One tile's meter on a canvas, and the tile's picture beside it.

    The meter's column is drawn once (:meth:`draw`); a new picture goes only to its left
    (:meth:`draw_picture`), so the meter costs nothing then, and a new level costs the copy of
    the bars that moved (:meth:`show`). The name label is blended over the column's foot with
    every picture: on its near-black that settles after a frame or two and then changes
    nothing. The views into the canvas are made once: slicing costs as much as copying a bar.
    """

    def __init__(self, panel: MeterPanel, canvas: Canvas, x: int, y: int) -> None:
        """The meter ``panel`` of the tile whose corner on ``canvas`` is (``x``, ``y``)."""
        self.panel = panel
        height = panel.backdrop.height
        self._picture = canvas.region(x, y, panel.x, height)
        self._column = canvas.region(x + panel.x, y, panel.width, height)
        rows = panel.segments * panel.segment_rows
        self._bars = tuple(
            canvas.region(x + panel.x + bar_x, y + panel.bar_top, panel.bar_width, rows)
            for bar_x in panel.bar_x
        )
        self._shown: list[tuple[int, int] | None] = [None] * panel.channels

    def draw_picture(self, picture: Planes) -> None:
        """Draw the tile's ``picture`` (the whole tile's), left of the meter."""
        w = self.panel.x
        target = self._picture
        target.y[...] = picture.y[:, :w]
        target.u[...] = picture.u[:, : w // 2]
        target.v[...] = picture.v[:, : w // 2]

    def draw(self, state: MeterState) -> None:
        """Draw the whole meter in ``state``."""
        copy_into(self._column, self.panel.backdrop)
        self._shown = [None] * self.panel.channels
        self.show(state)

    def show(self, state: MeterState) -> None:
        """Draw the bars whose state changed since they were last drawn."""
        shown = self._shown
        for channel, bar_state in enumerate(state):
            if shown[channel] != bar_state:
                shown[channel] = bar_state
                copy_into(self._bars[channel], self.panel.bar(*bar_state))


# --- clock -------------------------------------------------------------------------------------

CLOCK_CHARS = "0123456789:."


def _clock_split(wall: float, fps: int | None) -> tuple[int, int, str]:
    """Unix time ``wall`` as (whole second, frame or hundredth within it, the mark between)."""
    per_second = fps if fps and fps < 100 else 100
    # Rounded to the nearest frame (or hundredth), carrying into the seconds.
    second, sub = divmod(math.floor(wall * per_second + 0.5), per_second)
    return second, sub, ":" if per_second == fps else "."


def clock_text(wall: float, fps: int | None = None) -> str:
    """The UTC time of day at Unix time ``wall``: ``HH:MM:SS.cc`` (hundredths), or
    ``HH:MM:SS:FF`` (frames of a ``fps`` output, as a time code writes them; below 100 fps)."""
    second, sub, mark = _clock_split(wall, fps)
    return f"{time.strftime('%H:%M:%S', time.gmtime(second))}{mark}{sub:02d}"


def _glyph(char: str, face: Font, cell: int, height: int) -> Planes:
    """One character of the clock, white on black, centred in a ``cell`` x ``height`` box."""
    image = Image.new("RGB", (cell, height), _EDGE)
    ImageDraw.Draw(image).text((cell / 2, height / 2), char, fill=_WHITE, font=face, anchor="mm")
    return _frozen(rgb_to_planes(np.asarray(image, dtype=np.uint8)))


class ClockFace:
    """The clock for a mosaic whose tiles are ``tile_height`` high (see :func:`clock_text`):
    as tall as a name label, white on black, each character in a fixed cell, drawn into a
    :attr:`picture` of its own that the compositor copies onto the canvas.

    Each character is rendered once; a new time rewrites only the cells that changed (at 25
    fps, usually the last one), and formats the hours, minutes and seconds once a second.
    """

    def __init__(self, tile_height: int, fps: int | None = None) -> None:
        self.fps = fps
        self.height = strip_height(tile_height)
        face = _face(MONO_FONTS, font_size(tile_height))
        cell = _even(max(face.getlength(c) for c in CLOCK_CHARS) + 2)
        pad = max(2, _even(self.height / 3))
        chars = len(clock_text(0.0, fps))
        self.width = 2 * pad + chars * cell
        self.picture = solid(self.width, self.height, BLACK)
        self._glyphs = {c: _glyph(c, face, cell, self.height) for c in CLOCK_CHARS}
        self._cells = tuple(
            Planes(
                self.picture.y[:, x : x + cell],
                self.picture.u[:, x // 2 : (x + cell) // 2],
                self.picture.v[:, x // 2 : (x + cell) // 2],
            )
            for x in range(pad, pad + chars * cell, cell)
        )
        self._shown = " " * chars
        self._second = -1
        self._hms = ""

    def text(self, wall: float) -> str:
        """What the clock says at ``wall``: :func:`clock_text`."""
        second, sub, mark = _clock_split(wall, self.fps)
        if second != self._second:
            self._second, self._hms = second, time.strftime("%H:%M:%S", time.gmtime(second))
        return f"{self._hms}{mark}{sub:02d}"

    def show(self, wall: float) -> bool:
        """Make :attr:`picture` say the time at ``wall``; True if it changed."""
        text = self.text(wall)
        shown = self._shown
        if text == shown:
            return False
        for i, char in enumerate(text):
            if char != shown[i]:
                copy_into(self._cells[i], self._glyphs[char])
        self._shown = text
        return True
