"""Mosaic layouts, pure: the rectangle of each tile in the output picture.

A mosaic's ``layout=`` (:func:`canonical_layout`) picks one of two rules. Both lay the tiles on a
grid of equal cells, even-sized (4:2:0 chroma needs even sizes and positions), that is centred in
the picture, and give each tile a :class:`Rect` of whole cells; no two tiles overlap, and every
tile lies inside the picture.

- **grid** (the default, ``""``): ``cols`` cells across (near-square, ``ceil(sqrt(n))``, unless
  ``cols`` is given), as many rows as needed; one tile per cell, row by row.
- **focus** (:func:`focus_grid`): one large tile (the programme) and small ones around it. For
  ``n`` tiles, the smallest square grid ``g`` x ``g`` and the largest big block ``k`` x ``k``
  (``2 <= k <= g - 1``) with ``1 + g² - k² >= n``; the first tile fills the ``k`` x ``k`` block
  at the top left, the others fill the remaining cells row by row (right of the big block, then
  the rows below), in order; cells left over stay black. One tile fills the picture alone.

Tiles of one mosaic may so have different sizes: whatever needs a tile's size (its grabber's
source id, its labels, its frames) takes it from that tile's rectangle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRID = ""
"""The canonical ``layout=`` of the grid (the default)."""
FOCUS = "focus"
"""The canonical ``layout=`` of one large tile with small ones around it."""
_NAMES = {"": GRID, "grid": GRID, "focus": FOCUS}


class LayoutChoiceError(ValueError):
    """A ``layout=`` value that names no layout; the message says which do."""


def canonical_layout(value: str) -> str:
    """The canonical form of a ``layout=`` value: ``""`` for the grid (also ``grid``), or
    ``focus``; case and surrounding blanks do not matter.

    Raises:
        LayoutChoiceError: ``value`` names no layout.
    """
    name = value.strip().lower()
    if name not in _NAMES:
        raise LayoutChoiceError(f"{value!r} is not a layout: use grid (the default) or focus")
    return _NAMES[name]


@dataclass(frozen=True)
class Rect:
    """A rectangle of the picture: top-left ``(x, y)``, ``w`` x ``h`` pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.x + self.w

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.y + self.h

    @property
    def size(self) -> tuple[int, int]:
        """``(w, h)``."""
        return self.w, self.h

    def overlaps(self, other: Rect) -> bool:
        """Whether the two share at least one pixel."""
        return (
            self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )


@dataclass(frozen=True)
class Layout:
    """Where each tile goes in a ``width`` x ``height`` picture."""

    width: int
    height: int
    cols: int
    """Cells across the grid the tiles sit on."""
    rows: int
    """Cells down that grid."""
    rects: tuple[Rect, ...]
    """Each tile's rectangle, in tile order."""
    area: Rect
    """The grid's cells, the empty ones too (the picture less the centring margins)."""
    kind: str = GRID
    """The canonical ``layout=`` it follows."""


def _even(value: int) -> int:
    return value - (value % 2)


def focus_grid(n: int) -> tuple[int, int]:
    """``(g, k)`` of the focus layout for ``n`` >= 2 tiles: the smallest square grid ``g`` x
    ``g`` and the largest big block ``k`` x ``k`` (``2 <= k <= g - 1``) such that
    ``1 + g² - k² >= n``: the big tile and ``g² - k²`` small cells hold all ``n`` tiles.

    ``n`` = 2 to 6 gives ``(3, 2)``, 8 gives ``(4, 3)``, 13 gives ``(4, 2)``.
    """
    if n < 2:
        raise ValueError(f"the focus grid is for 2 tiles or more, not {n}")
    g = 3
    while 1 + g * g - 4 < n:  # k = 2 leaves the most small cells
        g += 1
    k = g - 1
    while 1 + g * g - k * k < n:
        k -= 1
    return g, k


def _cells(n: int, width: int, height: int, cols: int, rows: int) -> tuple[int, int, int, int]:
    """``(cell w, cell h, left, top)`` of ``cols`` x ``rows`` even cells centred in the
    picture; ValueError if they would be under 2 pixels."""
    cell_w = _even(width // cols)
    cell_h = _even(height // rows)
    if cell_w < 2 or cell_h < 2:
        raise ValueError(f"{n} tiles do not fit in {width}x{height}")
    return cell_w, cell_h, _even((width - cols * cell_w) // 2), _even((height - rows * cell_h) // 2)


def grid_layout(n: int, width: int, height: int, cols: int | None = None) -> Layout:
    """The grid for ``n`` tiles: ``cols`` across (near-square when None), row by row."""
    if n < 1:
        raise ValueError("a mosaic needs at least one tile")
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    w, h, left, top = _cells(n, width, height, cols, rows)
    rects = tuple(Rect(left + (i % cols) * w, top + (i // cols) * h, w, h) for i in range(n))
    return Layout(width, height, cols, rows, rects, Rect(left, top, cols * w, rows * h))


def focus_layout(n: int, width: int, height: int) -> Layout:
    """The focus layout for ``n`` tiles (see :func:`focus_grid`): tile 0 in the top-left
    ``k`` x ``k`` block, the others in the remaining cells, row by row."""
    if n < 1:
        raise ValueError("a mosaic needs at least one tile")
    if n == 1:
        only = grid_layout(1, width, height)
        return Layout(width, height, 1, 1, only.rects, only.area, FOCUS)
    g, k = focus_grid(n)
    w, h, left, top = _cells(n, width, height, g, g)
    cells = [(col, row) for row in range(g) for col in range(g) if not (col < k and row < k)]
    small = tuple(Rect(left + col * w, top + row * h, w, h) for col, row in cells[: n - 1])
    big = Rect(left, top, k * w, k * h)
    return Layout(width, height, g, g, (big, *small), Rect(left, top, g * w, g * h), FOCUS)


def layout(n: int, width: int, height: int, cols: int | None = None, kind: str = GRID) -> Layout:
    """The layout ``kind`` (canonical ``layout=``) of ``n`` tiles in a ``width`` x ``height``
    picture; ``cols`` is the grid's only (the focus layout decides its own).

    Raises:
        ValueError: no tile, tiles that would be under 2 pixels, an unknown ``kind``, or
            ``cols`` with the focus layout.
    """
    if kind == GRID:
        return grid_layout(n, width, height, cols)
    if kind == FOCUS:
        if cols is not None:
            raise ValueError("cols= and layout=focus do not combine: the focus layout sets its own")
        return focus_layout(n, width, height)
    raise ValueError(f"layout {kind!r} is not canonical: use {GRID!r} (grid) or {FOCUS!r}")
