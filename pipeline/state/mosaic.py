"""Mosaic logic, pure: the canonical config, its fingerprint, the grid layout and source ids.

- The **fingerprint** is 32 lowercase hex chars of the SHA-256 of the canonical encoding of the
  config (ordered tiles with names and URLs, size, fps, cols, title, and the alarm holds as
  canonical ``alarms=`` text): the same config always gives the same fingerprint, whatever order
  the query parameters (or the ``alarms=`` entries) came in. A config with the default holds is
  encoded without the ``alarms`` field, exactly as before the field existed, so the mosaics
  made then keep their fingerprints (and their ``/play`` URLs).
- The **layout** is near-square (``cols = ceil(sqrt(n))``) unless ``cols`` is given; tiles are
  equal, even-sized (4:2:0 chroma needs even sizes), row-major, and the grid is centred.
- A **source id** names one pull of one URL at one tile size: every mosaic that shows the same
  URL at the same tile size shares one grabber and one ``frames.<source_id>`` subject.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import msgspec

from pipeline.messages.events import MosaicCreated, Tile
from pipeline.monitoring.alarms import canonical, parse_alarms

FP_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_SIDE = 3840
MIN_SIDE = 64


class _Picture(msgspec.Struct, frozen=True, kw_only=True):
    # The fields a mosaic had before alarms=, in their order: what the fingerprint of a mosaic
    # with the default holds encodes. Never change them, or every /play URL changes.
    tiles: tuple[Tile, ...]
    width: int = 1280
    height: int = 720
    fps: int = 25
    cols: int | None = None
    title: str = ""


class MosaicConfig(_Picture, frozen=True, kw_only=True):
    """Everything that defines a mosaic's picture; the fingerprint is a hash of this."""

    alarms: str = ""
    """The alarm holds as canonical ``alarms=`` text
    (:func:`~pipeline.monitoring.alarms.canonical`); "" means the defaults."""


_canonical = msgspec.json.Encoder(order="deterministic")


def created(config: MosaicConfig, fp: str, at: float) -> MosaicCreated:
    """The ``mosaic created`` event that records ``config`` as mosaic ``fp`` at ``at``."""
    return MosaicCreated(
        at=at,
        fp=fp,
        tiles=config.tiles,
        width=config.width,
        height=config.height,
        fps=config.fps,
        cols=config.cols,
        title=config.title,
        alarms=config.alarms,
    )


def fingerprint(config: MosaicConfig) -> str:
    """32 lowercase hex chars identifying ``config``.

    ``config.alarms`` is read and made canonical first, so that equal holds typed differently
    (``freeze:5,black:3`` and ``black:3,freeze:5``, or ``black:2`` and ``""``) are one mosaic.

    Raises:
        AlarmSyntaxError: ``config.alarms`` is not an ``alarms=`` value.
    """
    alarms = canonical(parse_alarms(config.alarms))
    encoded: _Picture
    if alarms:
        encoded = msgspec.structs.replace(config, alarms=alarms)
    else:
        encoded = _Picture(**{name: getattr(config, name) for name in _Picture.__struct_fields__})
    return hashlib.sha256(b"tessera-mosaic/1\n" + _canonical.encode(encoded)).hexdigest()[:32]


@dataclass(frozen=True)
class Layout:
    """Where each tile goes in the output picture."""

    width: int
    height: int
    cols: int
    rows: int
    tile_width: int
    tile_height: int
    origins: tuple[tuple[int, int], ...]
    """Top-left ``(x, y)`` of each tile, in tile order."""


def _even(value: int) -> int:
    return value - (value % 2)


def layout(n: int, width: int, height: int, cols: int | None = None) -> Layout:
    """The grid for ``n`` tiles in a ``width`` x ``height`` picture."""
    if n < 1:
        raise ValueError("a mosaic needs at least one tile")
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    tile_w = _even(width // cols)
    tile_h = _even(height // rows)
    if tile_w < 2 or tile_h < 2:
        raise ValueError(f"{n} tiles do not fit in {width}x{height}")
    off_x = _even((width - cols * tile_w) // 2)
    off_y = _even((height - rows * tile_h) // 2)
    origins = tuple((off_x + (i % cols) * tile_w, off_y + (i // cols) * tile_h) for i in range(n))
    return Layout(width, height, cols, rows, tile_w, tile_h, origins)


def source_id(url: str, tile_width: int, tile_height: int) -> str:
    """The id of the pull of ``url`` scaled to ``tile_width`` x ``tile_height``."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:20]
    return f"{digest}-{tile_width}x{tile_height}"


def source_ids(config: MosaicConfig) -> tuple[str, ...]:
    """The source id of each tile of ``config``, in tile order (duplicates kept)."""
    grid = layout(len(config.tiles), config.width, config.height, config.cols)
    return tuple(source_id(t.url, grid.tile_width, grid.tile_height) for t in config.tiles)


def fit(
    src_width: int, src_height: int, box_width: int, box_height: int, sar: float = 1.0
) -> tuple[int, int]:
    """Even size of a ``src`` picture scaled into the box with its display aspect kept."""
    display = (src_width * sar) / src_height
    if display >= box_width / box_height:
        w, h = box_width, round(box_width / display)
    else:
        w, h = round(box_height * display), box_height
    return max(2, _even(w)), max(2, _even(h))
