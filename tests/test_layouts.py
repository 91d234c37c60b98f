"""Mosaic layouts as pure functions: the focus rule and its examples, and the rectangles of both
layouts (inside the picture, never overlapping, even), directly and with hypothesis; then what
``layout=`` changes around them: ``/create``, the fingerprint, the event and the fold, the
controller's grabbers and the compositor's picture."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from gateway.mosaics import BadRequest, parse_create
from pipeline.consumers.canvas import rgb_to_yuv
from pipeline.consumers.compositor import Compositor, TileKind, TileView
from pipeline.messages.codec import decode_event, encode
from pipeline.messages.events import Tile
from pipeline.messages.frames import FrameHeader
from pipeline.messages.workers import GrabberSpec
from pipeline.state.evolve import evolve
from pipeline.state.layouts import (
    FOCUS,
    GRID,
    Layout,
    LayoutChoiceError,
    Rect,
    canonical_layout,
    focus_grid,
    layout,
)
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import (
    MAX_SIDE,
    MIN_SIDE,
    MosaicConfig,
    config_of,
    created,
    fingerprint,
    layout_of,
    source_id,
    source_ids,
)
from pipeline.state.reconcile import desired
from tests.test_create_alarms import PATTERN_FP, STUDIO, STUDIO_FP

# --- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "grid"),
    [(2, (3, 2)), (3, (3, 2)), (4, (3, 2)), (5, (3, 2)), (6, (3, 2)), (7, (4, 3)), (8, (4, 3)),
     (9, (4, 2)), (13, (4, 2)), (14, (5, 3)), (22, (5, 2)), (23, (6, 3)), (64, (9, 4))],
)  # fmt: skip
def test_the_focus_grid_is_the_smallest_square_with_the_largest_big_block(
    n: int, grid: tuple[int, int]
) -> None:
    assert focus_grid(n) == grid


@given(st.integers(min_value=2, max_value=400))
def test_the_focus_grid_follows_its_rule(n: int) -> None:
    g, k = focus_grid(n)
    assert 2 <= k <= g - 1 and 1 + g * g - k * k >= n
    # No smaller square holds n with any allowed big block; no larger block fits in this one.
    assert all(1 + s * s - b * b < n for s in range(3, g) for b in range(2, s))
    assert all(1 + g * g - b * b < n for b in range(k + 1, g))


def _cells(grid: Layout) -> list[tuple[int, int, int, int]]:
    """Each tile's place in cells: (col, row, cols wide, rows high)."""
    w, h = grid.area.w // grid.cols, grid.area.h // grid.rows
    return [((r.x - grid.area.x) // w, (r.y - grid.area.y) // h, r.w // w, r.h // h)
            for r in grid.rects]  # fmt: skip


def test_six_tiles_in_focus_are_a_2x2_big_tile_and_five_small_ones() -> None:
    grid = layout(6, 1280, 720, kind=FOCUS)
    assert (grid.cols, grid.rows, grid.kind) == (3, 3, FOCUS)
    assert _cells(grid) == [(0, 0, 2, 2), (2, 0, 1, 1), (2, 1, 1, 1), (0, 2, 1, 1), (1, 2, 1, 1),
                            (2, 2, 1, 1)]  # fmt: skip
    # 1280 / 3 = 426.67: cells of 426x240, and 2 pixels left over (the margin is kept even).
    assert grid.rects[0] == Rect(0, 0, 852, 480)
    assert grid.rects[1] == Rect(852, 0, 426, 240)
    assert grid.area == Rect(0, 0, 1278, 720)
    # 1920 / 3 = 640 and 1080 / 3 = 360, exactly.
    assert layout(6, 1920, 1080, kind=FOCUS).rects[:2] == (Rect(0, 0, 1280, 720),
                                                           Rect(1280, 0, 640, 360))  # fmt: skip
    # 1000 / 3 = 333 is odd: cells of 332, centred in the 4 pixels left over.
    assert layout(6, 1000, 600, kind=FOCUS).rects[0] == Rect(2, 0, 664, 400)


def test_eight_tiles_in_focus_are_a_3x3_big_tile_and_seven_small_ones() -> None:
    grid = layout(8, 1920, 1080, kind=FOCUS)
    assert (grid.cols, grid.rows) == (4, 4)
    assert _cells(grid) == [(0, 0, 3, 3), (3, 0, 1, 1), (3, 1, 1, 1), (3, 2, 1, 1), (0, 3, 1, 1),
                            (1, 3, 1, 1), (2, 3, 1, 1), (3, 3, 1, 1)]  # fmt: skip


def test_thirteen_tiles_in_focus_are_a_2x2_big_tile_and_twelve_small_ones() -> None:
    grid = layout(13, 1920, 1080, kind=FOCUS)
    assert (grid.cols, grid.rows) == (4, 4)
    cells = _cells(grid)
    assert cells[0] == (0, 0, 2, 2)
    assert cells[1:5] == [(2, 0, 1, 1), (3, 0, 1, 1), (2, 1, 1, 1), (3, 1, 1, 1)]
    assert cells[5:] == [(c, r, 1, 1) for r in (2, 3) for c in range(4)]


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_a_few_tiles_in_focus_leave_cells_black(n: int) -> None:
    grid = layout(n, 1280, 720, kind=FOCUS)
    assert (grid.cols, grid.rows) == (3, 3)
    assert _cells(grid)[0] == (0, 0, 2, 2)
    assert _cells(grid)[1:] == [(2, 0, 1, 1), (2, 1, 1, 1), (0, 2, 1, 1), (1, 2, 1, 1)][: n - 1]


def test_one_tile_in_focus_fills_the_picture() -> None:
    grid = layout(1, 1280, 720, kind=FOCUS)
    assert grid.rects == (Rect(0, 0, 1280, 720),) and (grid.cols, grid.rows) == (1, 1)


def test_the_grid_is_unchanged() -> None:
    grid = layout(4, 640, 360)
    assert grid.kind == GRID and (grid.cols, grid.rows) == (2, 2)
    assert grid.rects == (Rect(0, 0, 320, 180), Rect(320, 0, 320, 180), Rect(0, 180, 320, 180),
                          Rect(320, 180, 320, 180))  # fmt: skip
    # 5 tiles at 1920x1080: 3 across, 2 down; the last row is not full.
    five = layout(5, 1920, 1080)
    assert five.rects[0] == Rect(0, 0, 640, 540) and five.rects[4] == Rect(640, 540, 640, 540)
    assert five.area == Rect(0, 0, 1920, 1080)


# --- every rectangle, whatever the picture -------------------------------------------------------


def _check(grid: Layout, n: int) -> None:
    assert len(grid.rects) == n
    for r in grid.rects:
        assert 0 <= r.x and 0 <= r.y and r.right <= grid.width and r.bottom <= grid.height
        assert r.w >= 2 and r.h >= 2
        assert not (r.x % 2 or r.y % 2 or r.w % 2 or r.h % 2), f"{r} is not even"
        a = grid.area
        assert a.x <= r.x and a.y <= r.y and r.right <= a.right and r.bottom <= a.bottom
    for i, a in enumerate(grid.rects):
        for b in grid.rects[i + 1 :]:
            assert not a.overlaps(b), f"{a} overlaps {b}"
    # As the grid does: the cells fill the picture but for what rounding each cell down to an
    # even size leaves (under 2 pixels a cell), split between centring margins.
    assert grid.area.w == grid.cols * (grid.area.w // grid.cols)
    assert 0 <= grid.width - grid.area.w < 2 * grid.cols
    assert 0 <= grid.height - grid.area.h < 2 * grid.rows


even_sides = st.integers(min_value=MIN_SIDE // 2, max_value=MAX_SIDE // 2).map(lambda v: v * 2)


@given(
    n=st.integers(min_value=1, max_value=64),
    width=even_sides,
    height=even_sides,
    kind=st.sampled_from([GRID, FOCUS]),
)
def test_tiles_lie_inside_the_picture_even_and_apart(
    n: int, width: int, height: int, kind: str
) -> None:
    try:
        grid = layout(n, width, height, kind=kind)
    except ValueError as exc:
        assert "do not fit" in str(exc)
        return
    _check(grid, n)
    if kind == FOCUS and n > 1:
        big, small = grid.rects[0], grid.rects[1:]
        assert all(big.w > r.w and big.h > r.h for r in small)
        assert (big.x, big.y) == (grid.area.x, grid.area.y)


@pytest.mark.parametrize("size", [(1920, 1080), (3840, 2160)])
@pytest.mark.parametrize(("cols", "kind"), [(8, GRID), (None, GRID), (None, FOCUS)])
def test_the_most_tiles_fit_at_full_hd_and_4k(
    size: tuple[int, int], cols: int | None, kind: str
) -> None:
    grid = layout(64, *size, cols, kind)
    _check(grid, 64)
    if cols == 8:
        assert (grid.cols, grid.rows) == (8, 8)
        # 1080 / 8 = 135, odd: 134-row tiles, and 4 rows of margin (2 above, 2 below).
        assert grid.rects[0].size == {1920: (240, 134), 3840: (480, 270)}[size[0]]


def test_cols_and_focus_do_not_combine() -> None:
    with pytest.raises(ValueError, match="do not combine"):
        layout(6, 1280, 720, 3, FOCUS)
    with pytest.raises(ValueError, match="not canonical"):
        layout(6, 1280, 720, kind="grid")


@pytest.mark.parametrize(
    ("value", "canonical"), [("", ""), ("grid", ""), (" Grid ", ""), ("focus", "focus"),
                             ("FOCUS", "focus")],
)  # fmt: skip
def test_layout_names_are_read_canonically(value: str, canonical: str) -> None:
    assert canonical_layout(value) == canonical


def test_an_unknown_layout_says_which_there_are() -> None:
    with pytest.raises(LayoutChoiceError, match="'bogus' is not a layout: use grid"):
        canonical_layout("bogus")


# --- /create and the fingerprint -----------------------------------------------------------------

PATTERN = "http://cams.example/{a,b,c,d}[n]/index.m3u8"


def _request(**params: str) -> Request:
    from urllib.parse import urlencode

    return Request({"type": "http", "query_string": urlencode(params).encode()})


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"layout": "bogus"}, "layout: 'bogus' is not a layout: use grid (the default) or focus"),
        ({"layout": "focus", "cols": "3"}, "cols= and layout=focus do not combine"),
    ],
)
def test_a_bad_layout_is_a_one_line_400(params: dict[str, str], reason: str) -> None:
    with pytest.raises(BadRequest) as error:
        parse_create(_request(urls=PATTERN, **params), max_tiles=16)
    assert reason in str(error.value) and "\n" not in str(error.value)


def test_the_grid_layout_keeps_the_old_fingerprints_and_focus_makes_a_new_one() -> None:
    assert fingerprint(STUDIO) == STUDIO_FP
    assert fingerprint(msgspec.structs.replace(STUDIO, layout="grid")) == STUDIO_FP
    for given_ in ({}, {"layout": "grid"}, {"layout": ""}, {"layout": "Grid"}):
        config = parse_create(_request(urls=PATTERN, **given_), max_tiles=16)
        assert config.layout == "" and fingerprint(config) == PATTERN_FP
    focus = parse_create(_request(urls=PATTERN, layout="focus"), max_tiles=16)
    assert focus.layout == FOCUS
    assert fingerprint(focus) not in (PATTERN_FP, fingerprint(config))
    assert fingerprint(focus) == fingerprint(parse_create(
        _request(layout=" FOCUS", urls=PATTERN), max_tiles=16))  # fmt: skip


# Computed with the code from before layout= existed (ebe7bbe): a mosaic with a clock keeps it.
STUDIO_CLOCK_FP = "e105d0e5af0cec5ec53e715db6185465"
STUDIO_BLACK3_AUDIO1_CLOCK_FP = "6d3cfb1c6214c1d70ea554b9de38f63e"


def test_mosaics_with_a_clock_keep_their_fingerprints() -> None:
    assert fingerprint(msgspec.structs.replace(STUDIO, clock=True)) == STUDIO_CLOCK_FP
    every = msgspec.structs.replace(STUDIO, alarms="black:3", audio="1", clock=True)
    assert fingerprint(every) == STUDIO_BLACK3_AUDIO1_CLOCK_FP
    focused = msgspec.structs.replace(every, cols=None, layout=FOCUS)
    assert fingerprint(focused) != fingerprint(msgspec.structs.replace(every, cols=None))


def test_the_layout_rides_the_event_into_the_state_and_back() -> None:
    config = parse_create(_request(urls=PATTERN, layout="focus"), max_tiles=16)
    fp = fingerprint(config)
    event = decode_event(encode(created(config, fp, 1.0)))
    state = evolve(None, event)
    assert isinstance(state, MosaicState) and state.layout == FOCUS
    assert fingerprint(config_of(state)) == fp
    # An event written before the field existed is a grid.
    old = msgspec.json.decode(encode(created(STUDIO, STUDIO_FP, 1.0)))
    del old["layout"]
    assert evolve(None, decode_event(msgspec.json.encode(old))).layout == ""  # type: ignore[union-attr]


# --- the grabbers, and the picture ---------------------------------------------------------------


def _state(urls: list[str], kind: str, fp: str = "f" * 32) -> MosaicState:
    tiles = tuple(Tile(url, f"t{i}") for i, url in enumerate(urls))
    return MosaicState(fp=fp, tiles=tiles, width=1280, height=720, fps=25, layout=kind)


def test_the_big_tile_gets_its_size_from_its_grabber() -> None:
    urls = [f"http://cams/{c}.m3u8" for c in "ABCDEF"]
    focus = _state(urls, FOCUS)
    want = desired({focus.fp: focus}, frozenset({focus.fp}))
    grabbers = {s.url: s.sizes for s in want.values() if isinstance(s, GrabberSpec)}
    assert grabbers[urls[0]] == ((852, 480),)
    assert all(grabbers[u] == ((426, 240),) for u in urls[1:]) and len(grabbers) == 6
    assert source_ids(focus)[0] == source_id(urls[0], 852, 480)
    # The same URL large in one mosaic and small in another (or twice in one) is one pull
    # that makes each size, the largest first.
    twice = _state([urls[0], *urls[1:5], urls[0]], FOCUS, "e" * 32)
    grid = _state(urls, GRID, "d" * 32)
    want = desired({m.fp: m for m in (twice, grid)}, frozenset({twice.fp, grid.fp}))
    pulls = [s for s in want.values() if isinstance(s, GrabberSpec) and s.url == urls[0]]
    assert len(pulls) == 1
    assert pulls[0].sizes == ((852, 480), (426, 360), (426, 240))


def test_the_compositor_draws_the_big_tile_and_the_small_ones() -> None:
    tiles = [Tile(f"test://{i}", f"tile {i}") for i in range(6)]
    compositor = Compositor(tiles, 1280, 720, kind=FOCUS)
    grid = layout_of(MosaicConfig(tiles=tuple(tiles), width=1280, height=720, layout=FOCUS))
    assert compositor.layout == grid
    colours = [(200, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 30), (30, 200, 200),
               (200, 40, 200)]  # fmt: skip
    views = []
    for i, (rect, rgb) in enumerate(zip(grid.rects, colours, strict=True)):
        y, u, v = rgb_to_yuv(rgb)
        w, h = rect.size
        pixels = bytes([y]) * (w * h) + bytes([u]) * (w * h // 4) + bytes([v]) * (w * h // 4)
        header = FrameHeader(source_id=f"s{i}", seq=1, pts=0.0, wall=0.0, width=w, height=h)
        views.append(TileView(TileKind.LIVE, 1, header, pixels))
    canvas = compositor.compose(views)
    for rect, rgb in zip(grid.rects, colours, strict=True):
        body = canvas.planes.y[rect.y + 4 : rect.y + rect.h // 2, rect.x + 4 : rect.right - 4]
        assert (body == rgb_to_yuv(rgb)[0]).all()
        strip = canvas.planes.y[rect.bottom - 8 : rect.bottom, rect.x : rect.right]
        assert not (strip == rgb_to_yuv(rgb)[0]).all(), "each tile is labelled"
    # A frame of a small tile's size for the big tile is refused, not drawn.
    with pytest.raises(ValueError, match="frame of 426x240 for tile 0 of 852x480"):
        Compositor(tiles, 1280, 720, kind=FOCUS).compose([views[1], *views[1:]])
    # With a clock: it sits over the bottom-right cell.
    clocked = Compositor(tiles, 1280, 720, kind=FOCUS, clock=True, fps=25)
    picture = clocked.compose(views, wall=0.0)
    clock = clocked.clock
    assert clock is not None and clock.height < grid.rects[5].h // 4  # sized for a small tile
    right, bottom = grid.area.right, grid.area.bottom
    corner = picture.planes.y[bottom - clock.height : bottom, right - clock.width : right]
    assert np.array_equal(corner, clock.picture.y)
