"""The stitcher's tile overlays, without NATS: alarm borders and badges, audio meters and their
ballistics, the clock, and the compositor redrawing only what changed. Everything is checked
on the pixels of the canvas."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.consumers.canvas import Canvas, Planes, rgb_to_yuv, solid
from pipeline.consumers.compositor import DEAD, Compositor, TileKind, TileView
from pipeline.consumers.meters import (
    HOLD_FALL_DB_PER_S,
    HOLD_SECONDS,
    MAX_CHANNELS,
    RELEASE_DB_PER_S,
    STALE_AFTER,
    Meter,
    MeterBook,
)
from pipeline.consumers.overlays import (
    AMBER,
    RED,
    ClockFace,
    MeterPanel,
    badge,
    badge_text,
    border,
    clock_text,
    inset,
    meter_panel,
)
from pipeline.messages.events import Tile
from pipeline.messages.frames import FrameHeader
from pipeline.messages.levels import SourceLevels
from pipeline.monitoring.alarms import AlarmKind

TILES = tuple(Tile(f"http://cams.example/{i}", f"cam {i}") for i in range(4))
W, H = 640, 360  # four 320x180 tiles, as on a 16-tile 1280x720 mosaic
GREY = (126, 128, 128)


def _live(
    serial: int,
    yuv: tuple[int, int, int] = GREY,
    alarms: tuple[AlarmKind, ...] = (),
    meter: Meter | None = None,
) -> TileView:
    planes = solid(320, 180, yuv)
    data = b"".join(p.tobytes() for p in planes)
    header = FrameHeader(source_id="s", seq=serial, pts=0.0, wall=0.0, width=320, height=180)
    return TileView(TileKind.LIVE, serial, header, data, alarms=alarms, meter=meter)


def _views(
    serial: int = 1,
    yuv: tuple[int, int, int] = GREY,
    alarms: tuple[AlarmKind, ...] = (),
    meter: Meter | None = None,
) -> list[TileView]:
    """Four live tiles, grey but the first; the first with these overlays."""
    return [_live(serial, yuv, alarms, meter)] + [_live(serial) for _ in range(3)]


def _tile(canvas: Canvas, compositor: Compositor, index: int = 0) -> Planes:
    x, y = compositor.layout.rects[index].x, compositor.layout.rects[index].y
    return canvas.region(x, y, 320, 180)


def _meter(*levels: float, holds: tuple[float, ...] | None = None) -> Meter:
    return Meter(tuple(levels), holds if holds is not None else tuple(levels))


def _lit_rows(tile: Planes, panel: MeterPanel, channel: int) -> npt.NDArray[np.intp]:
    """The rows (from the top of the bars) where bar ``channel`` is lit, read off the canvas."""
    rows = panel.segments * panel.segment_rows
    x = panel.x + panel.bar_x[channel]
    column = tile.y[panel.bar_top : panel.bar_top + rows, x]
    lit = column == panel.lit.y[:, 0]
    assert (lit | (column == panel.unlit.y[:, 0])).all(), "a bar pixel is neither lit nor unlit"
    return np.flatnonzero(lit)


def _tick_rows(tile: Planes, panel: MeterPanel) -> list[int]:
    """First row of each tick mark on the meter's scale (from the top of the bars), top down."""
    scale = tile.y[panel.bar_top :, panel.x : panel.x + panel.bar_x[0]]
    bright = (scale > 200).any(axis=1)
    starts = np.flatnonzero(bright & ~np.concatenate([[False], bright[:-1]]))
    return [int(r) for r in starts]


# --- alarms ------------------------------------------------------------------------------------


def test_a_tile_in_alarm_has_a_border_in_the_alarm_colour_and_none_without() -> None:
    compositor = Compositor(TILES, W, H)
    canvas = compositor.compose(_views(alarms=(AlarmKind.FREEZE,)))
    red, amber = rgb_to_yuv(RED), rgb_to_yuv(AMBER)
    tile = _tile(canvas, compositor)
    # The coloured frame runs round the edge, left, right and bottom.
    for row, col in ((90, 0), (90, 318), (178, 160), (0, 300)):
        assert tile.y[row, col] == red[0]
        assert (tile.u[row // 2, col // 2], tile.v[row // 2, col // 2]) == red[1:]
    # Lined with black inside, then the picture.
    width = inset(180)
    assert tile.y[90, width - 1] == 16 and tile.y[90, width + 1] == GREY[0]
    # The other tiles have no border.
    other = _tile(canvas, compositor, 1)
    assert other.y[90, 0] == GREY[0] and other.y[0, 100] == GREY[0]
    # A sound alarm is amber; with a picture alarm too, red wins.
    canvas = compositor.compose(_views(serial=2, alarms=(AlarmKind.SILENCE,)))
    assert _tile(canvas, compositor).y[90, 0] == amber[0]
    kinds = (AlarmKind.SILENCE, AlarmKind.BLACK)
    canvas = compositor.compose(_views(serial=3, alarms=kinds))
    assert _tile(canvas, compositor).y[90, 0] == red[0]
    # Cleared: the picture is back at the edge.
    canvas = compositor.compose(_views(serial=4))
    assert _tile(canvas, compositor).y[90, 0] == GREY[0]


def test_the_badge_names_the_most_serious_alarm_and_counts_the_others() -> None:
    assert badge_text([AlarmKind.BLACK]) == "BLACK"
    assert badge_text([AlarmKind.FREEZE, AlarmKind.BLACK]) == "BLACK +1"
    assert badge_text([AlarmKind.SILENCE, AlarmKind.LOUDNESS, AlarmKind.NO_AUDIO]) == "NO AUDIO +2"
    assert badge_text([AlarmKind.LOUDNESS]) == "LOUDNESS"
    assert badge_text([]) == ""

    compositor = Compositor(TILES, W, H)
    kinds = (AlarmKind.FREEZE, AlarmKind.BLACK)
    canvas = compositor.compose(_views(alarms=kinds))
    label = badge("BLACK +1", RED, 320, 180)
    tile = _tile(canvas, compositor)
    shown = tile.y[: label.height, : label.width]
    assert np.array_equal(shown, label.y)
    # White text on the red tab.
    assert (shown > 200).sum() > 30 and (shown == rgb_to_yuv(RED)[0]).sum() > shown.size // 2
    # Amber carries black text.
    amber = badge("SILENCE", AMBER, 320, 180)
    assert (amber.y < 40).sum() > 30


def test_a_dead_tile_shows_lost() -> None:
    compositor = Compositor(TILES, W, H)
    lost = TileView(TileKind.DEAD, alarms=(AlarmKind.LOST,))
    canvas = compositor.compose([lost, DEAD, DEAD, DEAD])
    label = badge("LOST", RED, 320, 180)
    tile = _tile(canvas, compositor)
    assert np.array_equal(tile.y[: label.height, : label.width], label.y)
    assert tile.y[90, 0] == rgb_to_yuv(RED)[0]
    assert _tile(canvas, compositor, 1).y[90, 0] != rgb_to_yuv(RED)[0]


def test_overlays_are_limited_range_bt601() -> None:
    planes: list[Planes] = [badge("FREEZE +2", RED, 320, 180), badge("SILENCE", AMBER, 320, 180)]
    for colour in (RED, AMBER):
        frame = border(320, 180, colour)
        assert frame is not None
        planes += [frame.rows, frame.sides]
    panel = meter_panel(8, 320, 180)
    assert panel is not None
    planes += [panel.backdrop, panel.lit, panel.unlit, ClockFace(180, 25).picture]
    for picture in planes:
        assert 16 <= picture.y.min() and picture.y.max() <= 235
        for chroma in (picture.u, picture.v):
            assert 16 <= chroma.min() and chroma.max() <= 240


# --- meters ------------------------------------------------------------------------------------


def test_bars_rise_to_their_level_on_the_scale() -> None:
    compositor = Compositor(TILES, W, H)
    canvas = compositor.compose(_views(meter=_meter(-9.0, -120.0)))
    panel = meter_panel(2, 320, 180)
    assert panel is not None
    tile = _tile(canvas, compositor)
    ticks = _tick_rows(tile, panel)
    assert len(ticks) == 3  # 0, -9 and -18 dBFS
    full_scale, minus_9, minus_18 = ticks
    assert full_scale == 0
    assert minus_18 == 2 * minus_9  # a linear dB scale
    # The -9 dBFS bar is lit from the -9 tick down; the silent one not at all.
    lit = _lit_rows(tile, panel, 0)
    assert lit[0] == minus_9 and np.array_equal(lit, np.arange(minus_9, lit[-1] + 1))
    assert lit[-1] == panel.segments * panel.segment_rows - 1
    assert _lit_rows(tile, panel, 1).size == 0
    # Louder: taller. Full scale: all of it.
    canvas = compositor.compose(_views(meter=_meter(0.0, -18.0)))
    assert _lit_rows(tile, panel, 0)[0] == 0
    assert _lit_rows(tile, panel, 1)[0] == minus_18
    # No meter on the tiles that were given none.
    assert (_tile(canvas, compositor, 1).y[:, 280:] == GREY[0]).sum() > 0.8 * 180 * 40


def test_the_peak_hold_is_lit_above_the_bar() -> None:
    compositor = Compositor(TILES, W, H)
    canvas = compositor.compose(_views(meter=_meter(-40.0, holds=(-9.0,))))
    panel = meter_panel(1, 320, 180)
    assert panel is not None
    tile = _tile(canvas, compositor)
    lit = _lit_rows(tile, panel, 0)
    minus_9 = _tick_rows(tile, panel)[1]
    bar_top = round(40 * panel.segments / 60) * panel.segment_rows
    hold = np.arange(minus_9, minus_9 + panel.segment_rows)
    assert np.array_equal(lit[: panel.segment_rows], hold)
    assert lit[panel.segment_rows] == bar_top  # unlit between the hold and the bar


def test_one_loud_channel_of_six_shows_one_tall_bar() -> None:
    compositor = Compositor(TILES, W, H)
    levels = (-120.0, -120.0, -3.0, -120.0, -120.0, -120.0)
    canvas = compositor.compose(_views(meter=_meter(*levels)))
    panel = meter_panel(6, 320, 180)
    assert panel is not None
    heights = [_lit_rows(_tile(canvas, compositor), panel, c).size for c in range(6)]
    rows = panel.segments * panel.segment_rows
    assert heights[2] >= 0.9 * rows
    assert heights[:2] + heights[3:] == [0] * 5


def test_more_channels_than_a_meter_shows_are_cut_to_the_first_eight() -> None:
    compositor = Compositor(TILES, W, H)
    levels = tuple(-6.0 * c for c in range(12))
    compositor.compose(_views(meter=_meter(*levels)))
    panel = meter_panel(MAX_CHANNELS, 320, 180)
    assert panel is not None
    tile = _tile(compositor.canvas, compositor)
    assert [_lit_rows(tile, panel, c)[0] // panel.segment_rows for c in range(8)] == [
        6 * c for c in range(8)
    ]


@given(
    tw=st.integers(8, 640).map(lambda n: n * 2),
    th=st.integers(8, 360).map(lambda n: n * 2),
    channels=st.integers(1, MAX_CHANNELS),
)
def test_a_meter_fits_its_tile_on_the_chroma_grid(tw: int, th: int, channels: int) -> None:
    panel = meter_panel(channels, tw, th)
    if panel is None:
        return
    even = [panel.x, panel.width, panel.bar_top, panel.bar_width, panel.segment_rows]
    assert all(n % 2 == 0 for n in even + list(panel.bar_x))
    assert panel.x + panel.width == tw and panel.width <= tw // 2
    assert panel.bar_x[-1] + panel.bar_width <= panel.width - inset(th)
    assert panel.bar_top >= inset(th)
    assert panel.bar_top + panel.segments * panel.segment_rows < th
    assert panel.backdrop.height == th and panel.backdrop.width == panel.width


def test_tiny_tiles_get_no_meter_and_no_border_rather_than_an_error() -> None:
    tiles = tuple(Tile(f"http://x/{i}", "") for i in range(64))
    compositor = Compositor(tiles, 320, 180)  # 40x22 tiles
    views = [_small(i) for i in range(64)]
    compositor.compose(views)


def _small(serial: int) -> TileView:
    planes = solid(40, 22, GREY)
    header = FrameHeader(source_id="s", seq=serial, pts=0.0, wall=0.0, width=40, height=22)
    data = b"".join(p.tobytes() for p in planes)
    return TileView(
        TileKind.LIVE, 1, header, data, alarms=(AlarmKind.BLACK,), meter=_meter(-6.0, -6.0)
    )


# --- meter ballistics --------------------------------------------------------------------------


def _levels(*peaks: float, source: str = "s") -> SourceLevels:
    return SourceLevels(
        source_id=source,
        seq=0,
        t=0.0,
        wall=0.0,
        peak_db=peaks,
        rms_db=peaks,
        channels=len(peaks),
        layout="",
    )


def test_peak_hold_stays_then_falls() -> None:
    book = MeterBook()
    book.feed(_levels(-6.0, -20.0), 10.0)
    meters: dict[int, Meter] = {}
    # Quieter readings every 100 ms after the peak; the meter read at each.
    for step in range(1, 40):
        now = 10.0 + step / 10
        book.feed(_levels(-40.0, -20.0), now)
        meter = book.meter("s", now)
        assert meter is not None
        meters[step] = meter
    hold_steps = round(HOLD_SECONDS * 10)
    assert all(meters[step].holds[0] == pytest.approx(-6.0) for step in range(1, hold_steps + 1))
    assert meters[hold_steps + 5].holds[0] == pytest.approx(-6.0 - HOLD_FALL_DB_PER_S * 0.5)
    falling = [meters[step].holds[0] for step in range(hold_steps, 39)]
    assert falling == sorted(falling, reverse=True)
    # Once it has fallen to the bar, it rides the bar.
    assert meters[39].holds[0] == pytest.approx(-40.0) == meters[39].levels[0]
    # A steady channel: bar and hold at its level.
    assert meters[39].levels[1] == pytest.approx(-20.0) == meters[39].holds[1]


def test_bars_attack_at_once_and_fall_back_slowly() -> None:
    book = MeterBook()
    book.feed(_levels(-30.0), 0.0)
    book.feed(_levels(-10.0), 0.1)
    meter = book.meter("s", 0.1)
    assert meter is not None and meter.levels == (-10.0,)
    book.feed(_levels(-50.0), 0.2)
    meter = book.meter("s", 0.6)
    assert meter is not None
    assert meter.levels[0] == pytest.approx(-10.0 - RELEASE_DB_PER_S * 0.5)
    assert meter.holds[0] == pytest.approx(-10.0)


def test_a_source_without_readings_has_no_meter() -> None:
    book = MeterBook()
    assert book.meter("s", 0.0) is None
    book.feed(_levels(-12.0), 5.0)
    assert book.meter("s", 5.0 + STALE_AFTER) is not None
    assert book.meter("s", 5.0 + STALE_AFTER + 0.01) is None
    assert book.meter("other", 5.0) is None
    book.forget("s")
    assert book.meter("s", 5.0) is None


def test_a_new_channel_layout_starts_the_meter_afresh() -> None:
    book = MeterBook()
    book.feed(_levels(-3.0, -3.0), 0.0)
    book.feed(_levels(*([-30.0] * 10)), 0.1)
    meter = book.meter("s", 0.1)
    assert meter is not None
    assert meter.levels == (-30.0,) * MAX_CHANNELS and meter.holds == (-30.0,) * MAX_CHANNELS


def test_a_broken_reading_reads_as_silence() -> None:
    book = MeterBook()
    book.feed(_levels(float("nan"), -500.0), 0.0)
    meter = book.meter("s", 0.0)
    assert meter is not None and meter.levels == (-120.0, -120.0)


# --- clock -------------------------------------------------------------------------------------


def test_clock_text_is_utc_time_of_day() -> None:
    assert clock_text(0.0) == "00:00:00.00"
    wall = 1_765_000_000.52  # 2025-12-06 05:46:40.52 UTC
    assert clock_text(wall) == "05:46:40.52"
    assert clock_text(wall, fps=25) == "05:46:40:13"
    assert clock_text(1_765_000_000.999, fps=25) == "05:46:41:00"  # rounds, carries
    face = ClockFace(180, fps=25)
    assert face.text(wall) == clock_text(wall, fps=25)


def test_the_clock_shows_the_time_of_each_picture() -> None:
    compositor = Compositor(TILES, W, H, clock=True, fps=25)
    clock = compositor.clock
    assert clock is not None
    box = compositor.canvas.region(W - clock.width, H - clock.height, clock.width, clock.height)

    def shown(wall: float, serial: int = 1) -> npt.NDArray[np.uint8]:
        compositor.compose(_views(serial), wall=wall)
        return box.y.copy()

    first = shown(1_765_000_000.0)
    assert (first > 200).sum() > 50  # white digits
    assert not np.array_equal(first, shown(1_765_000_000.04))  # next frame
    assert not np.array_equal(first, shown(1_765_000_001.0))  # next second
    assert np.array_equal(first, shown(1_765_000_000.0))
    # Drawn again over the tile under it when that tile is redrawn.
    assert np.array_equal(first, shown(1_765_000_000.0, serial=2))
    with pytest.raises(ValueError, match="needs the wall time"):
        compositor.compose(_views(3))


# --- redrawing only what changed ---------------------------------------------------------------


def test_a_tile_is_redrawn_only_when_its_picture_or_overlays_change() -> None:
    compositor = Compositor(TILES, W, H)
    alarms = (AlarmKind.SILENCE,)
    canvas = compositor.compose(_views(alarms=alarms, meter=_meter(-20.0, -20.0)))
    panel = meter_panel(2, 320, 180)
    assert panel is not None
    tile = _tile(canvas, compositor)

    def mark() -> None:
        tile.y[...] = 7  # paint the whole tile: whatever is drawn again shows

    # Same frame, same alarms, a new but equal meter: nothing drawn (a frozen tile).
    mark()
    compositor.compose(_views(alarms=alarms, meter=_meter(-20.0, -20.0)))
    assert (tile.y == 7).all()
    # The meter moved: only the bar that moved is drawn.
    compositor.compose(_views(alarms=alarms, meter=_meter(-10.0, -20.0)))
    changed = tile.y != 7
    assert _lit_rows(tile, panel, 0)[0] == 10 * panel.segments // 60 * panel.segment_rows
    x0 = panel.x + panel.bar_x[0]
    assert changed[:, x0 : x0 + panel.bar_width].any()
    changed[:, x0 : x0 + panel.bar_width] = False
    assert not changed.any()
    # A new frame: the picture, and the border over it; the meter's column is left as it was.
    mark()
    compositor.compose(_views(serial=2, alarms=alarms, meter=_meter(-10.0, -20.0)))
    assert tile.y[90, 100] == GREY[0] and tile.y[90, 0] == rgb_to_yuv(AMBER)[0]
    assert (tile.y[inset(180) : 180 - 30, panel.x : 320 - inset(180)] == 7).all()
    # New alarms: the whole tile, meter and all.
    mark()
    compositor.compose(_views(serial=2, meter=_meter(-10.0, -20.0)))
    assert _lit_rows(tile, panel, 0).size > 0 and tile.y[90, 0] == GREY[0]


def test_without_overlays_a_tile_is_its_picture() -> None:
    compositor = Compositor(TILES, W, H)
    canvas = compositor.compose(_views(yuv=(90, 100, 160)))
    tile = _tile(canvas, compositor)
    strip = 180 - compositor.labels[0].height
    assert (tile.y[:strip] == 90).all() and (tile.u[: strip // 2] == 100).all()
