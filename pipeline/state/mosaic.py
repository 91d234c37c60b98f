"""Mosaic logic, pure: the canonical config, its fingerprint, its layout and source ids.

- The **fingerprint** is 32 lowercase hex chars of the SHA-256 of the canonical encoding of the
  config (ordered tiles with names and URLs, size, fps, cols, title, and the fields added since
  where not at their defaults): the same config always gives the same fingerprint, whatever
  order the query parameters (or the ``alarms=`` entries) came in. A config with the default
  holds is encoded without the ``alarms`` field, exactly as before the field existed, so the
  mosaics made then keep their fingerprints (and their ``/play`` URLs); so is one with the
  default ``audio=`` (:func:`canonical_audio`), no clock, or the default layout (the grid).
- The **layout** (:mod:`pipeline.state.layouts`, :func:`layout_of`) is a grid by default,
  near-square (``cols = ceil(sqrt(n))``) unless ``cols`` is given, or, with ``layout=focus``,
  one large tile and small ones around it: tiles may differ in size.
- A **source id** names one URL at one tile size: every mosaic that shows the same URL at the
  same tile size reads one ``frames.<source_id>`` subject (and slot). The **source key**
  (:func:`source_key`, the id without the size) names the URL alone: one grabber per key
  decodes the URL once and publishes each tile size the watched mosaics show it at on that
  size's source id (a focus mosaic's large tile, another mosaic's smaller tiles); alarms are
  the URL's too, whatever size its tiles are.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Protocol

import msgspec

from pipeline.messages.events import MosaicCreated, Tile
from pipeline.messages.workers import tile_source_id
from pipeline.monitoring.alarms import canonical, parse_alarms
from pipeline.state.layouts import Layout, canonical_layout, layout
from pipeline.state.model import MosaicState

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
    audio: str = ""
    """Which tile's audio the mosaic carries, canonical ``audio=`` text
    (:func:`canonical_audio`); "" means the first tile with audio."""
    clock: bool = False
    """The picture carries a UTC time-code clock (``clock=utc``)."""
    layout: str = ""
    """Where the tiles go, canonical ``layout=`` text
    (:func:`~pipeline.state.layouts.canonical_layout`); "" means the grid."""


class AudioChoiceError(ValueError):
    """An ``audio=`` value that names no tile; the message says what would."""


def canonical_audio(value: str, tiles: tuple[Tile, ...]) -> str:
    """The canonical form of an ``audio=`` value for ``tiles``: "" (the default: the first tile
    whose source has audio, also for ``""`` and ``auto``), ``off`` (no audio track), or the
    0-based index of the tile, given as that index or as the tile's name (the first tile of
    that name; names are matched case-insensitively).

    Raises:
        AudioChoiceError: ``value`` is an index out of range or no tile's name.
    """
    text = value.strip()
    if text.lower() in ("", "auto"):
        return ""
    if text.lower() == "off":
        return "off"
    if text.isdigit():
        index = int(text)
        if index >= len(tiles):
            raise AudioChoiceError(
                f"tile {index} does not exist: give a tile index from 0 to {len(tiles) - 1}, "
                "a tile name, auto or off"
            )
        return str(index)
    for index, tile in enumerate(tiles):
        if tile.name and tile.name.casefold() == text.casefold():
            return str(index)
    names = ", ".join(repr(t.name) for t in tiles if t.name) or "none"
    raise AudioChoiceError(
        f"no tile is named {text!r}: give a tile index from 0 to {len(tiles) - 1}, "
        f"a tile name ({names}), auto or off"
    )


def audio_tile(choice: str) -> int | None:
    """The tile index a canonical ``audio=`` value names, -1 for the default (the first tile
    with audio), None for ``off``."""
    if choice == "off":
        return None
    return int(choice) if choice else -1


class _WithAlarms(_Picture, frozen=True, kw_only=True):
    # What a mosaic with alarm holds but the default audio encodes (as before audio= existed).
    alarms: str = ""


class _WithAudio(_WithAlarms, frozen=True, kw_only=True):
    # What a mosaic with an audio= choice and no clock encodes (as before clock= existed).
    audio: str = ""


class _WithClock(_WithAudio, frozen=True, kw_only=True):
    # What a mosaic with a clock and the grid encodes (as before layout= existed).
    clock: bool = False


_canonical = msgspec.json.Encoder(order="deterministic")


def created(config: MosaicConfig, fp: str, at: float) -> MosaicCreated:
    """The ``mosaic created`` event that records ``config`` as mosaic ``fp`` at ``at``."""
    return MosaicCreated(at=at, fp=fp, **msgspec.structs.asdict(config))


def fingerprint(config: MosaicConfig) -> str:
    """32 lowercase hex chars identifying ``config``.

    ``config.alarms`` is read and made canonical first, so that equal holds typed differently
    (``freeze:5,black:3`` and ``black:3,freeze:5``, or ``black:2`` and ``""``) are one mosaic.
    ``config.audio`` must be canonical already (:func:`canonical_audio`). Fields added after
    the first (alarms, audio, clock, layout) are encoded only when they differ from their
    defaults, so a mosaic that does not use them keeps the fingerprint it had before they
    existed.

    Raises:
        AlarmSyntaxError: ``config.alarms`` is not an ``alarms=`` value.
        LayoutChoiceError: ``config.layout`` names no layout.
    """
    alarms = canonical(parse_alarms(config.alarms))
    kind = canonical_layout(config.layout)
    # The narrowest encoding that holds every field not at its default.
    shape: type[_Picture]
    if kind:
        shape = MosaicConfig
    elif config.clock:
        shape = _WithClock
    elif config.audio:
        shape = _WithAudio
    elif alarms:
        shape = _WithAlarms
    else:
        shape = _Picture
    fields = {name: getattr(config, name) for name in shape.__struct_fields__}
    if "alarms" in fields:
        fields["alarms"] = alarms
    if "layout" in fields:
        fields["layout"] = kind
    encoded = shape(**fields)
    return hashlib.sha256(b"tessera-mosaic/1\n" + _canonical.encode(encoded)).hexdigest()[:32]


def config_of(state: MosaicState) -> MosaicConfig:
    """The mosaic config a projected mosaic state describes."""
    return MosaicConfig(**{name: getattr(state, name) for name in MosaicConfig.__struct_fields__})


@functools.lru_cache(maxsize=4096)
def picture_key(state: MosaicState) -> str:
    """What decides a mosaic's output (pictures and sound): its config but the title, which
    names the mosaic on its pages and is drawn nowhere. Mosaics with one picture key make
    the same stream, so one stitcher serves them all (:func:`outputs`). Cached by state (a
    frozen struct): the controller's every pass and the gateway's every mosaic change ask for
    all of them, and a mosaic's state changes only when its events do."""
    return fingerprint(msgspec.structs.replace(config_of(state), title=""))


def outputs(mosaics: Mapping[str, MosaicState]) -> dict[str, str]:
    """For every mosaic, the fingerprint whose stitcher makes its stream: the earliest created
    of the mosaics with its picture key (:func:`picture_key`; ties by fingerprint), so the
    choice never changes while they last: a mosaic created later joins the stream that runs,
    and a stitcher is never restarted because another title appeared."""
    first: dict[str, tuple[float, str]] = {}
    keys: dict[str, str] = {}
    for fp, state in mosaics.items():
        key = keys[fp] = picture_key(state)
        seen = first.get(key)
        if seen is None or (state.created_at, fp) < seen:
            first[key] = (state.created_at, fp)
    return {fp: first[key][1] for fp, key in keys.items()}


class Shaped(Protocol):
    """What decides a mosaic's layout: a :class:`MosaicConfig` or a projected mosaic state."""

    @property
    def tiles(self) -> tuple[Tile, ...]: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def cols(self) -> int | None: ...
    @property
    def layout(self) -> str: ...


def layout_of(mosaic: Shaped) -> Layout:
    """Where each of ``mosaic``'s tiles goes in its picture."""
    return layout(len(mosaic.tiles), mosaic.width, mosaic.height, mosaic.cols, mosaic.layout)


def _even(value: int) -> int:
    return value - (value % 2)


def source_key(url: str) -> str:
    """The key of a source URL, whatever its tile size: 20 hex chars of its SHA-256 (what
    alarms are kept under: KV ``alarms``, ``events.source.<key>``)."""
    return hashlib.sha256(url.encode()).hexdigest()[:20]


def source_id(url: str, tile_width: int, tile_height: int) -> str:
    """The id of ``url``'s tiles of ``tile_width`` x ``tile_height``: ``<source key>-<W>x<H>``
    (:func:`~pipeline.messages.workers.tile_source_id`)."""
    return tile_source_id(source_key(url), tile_width, tile_height)


def key_of_source(source_id: str) -> str:
    """The source key a source id starts with."""
    return source_id.split("-", 1)[0]


def source_ids(mosaic: Shaped) -> tuple[str, ...]:
    """The source id of each tile of ``mosaic``, in tile order (duplicates kept): each at its
    own tile's size."""
    rects = layout_of(mosaic).rects
    return tuple(source_id(t.url, r.w, r.h) for t, r in zip(mosaic.tiles, rects, strict=True))


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
