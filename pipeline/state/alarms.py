"""A mosaic's alarms, pure: what its tiles show, derived from its sources' alarm states.

Grabbers raise a source's *conditions* once they have lasted the detection debounce; a mosaic
shows a condition as an *alarm* on a tile once it has lasted the mosaic's hold for its kind
(:class:`~pipeline.monitoring.alarms.AlarmSettings`, from the mosaic's ``alarms=``), counted
from the onset's wall time. So one source state (KV ``alarms``, by source key) serves every
mosaic that shows the URL, each with its own holds; a condition shorter than a mosaic's hold
never shows there, and a cleared one shows in its recent list only if it did.

:func:`mosaic_alarms` gives, at one wall time, the alarms each tile shows, the conditions not
yet due (with when they are, so a caller can wake then) and the recently cleared ones that
showed. The gateway's ``/mosaics/<fp>/alarms``, its SSE stream and the stitcher's tile borders
all read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.monitoring.alarms import AlarmKind, AlarmSettings, parse_alarms
from pipeline.state.model import MosaicState, SourceState
from pipeline.state.mosaic import source_key

# Float slack for wall-clock comparisons.
_EPS = 1e-6


@dataclass(frozen=True)
class TileAlarm:
    """One alarm a tile shows (or showed)."""

    tile: int
    """The tile's 0-based index."""
    name: str
    """The tile's name ("" if it has none)."""
    source: str
    """The source key (KV ``alarms``)."""
    kind: AlarmKind
    onset: float
    """Source time the condition began, seconds."""
    onset_wall: float
    """Wall-clock time it began, Unix seconds."""
    shown_at: float
    """Wall-clock time the mosaic shows it from: onset + the mosaic's hold."""
    value: float
    end_wall: float | None = None
    """When it ended (cleared alarms only)."""
    worst: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class MosaicAlarms:
    """A mosaic's alarms at one wall time."""

    active: tuple[TileAlarm, ...]
    """Shown now, by tile then kind."""
    pending: tuple[TileAlarm, ...]
    """Raised conditions not yet held long enough; ``shown_at`` is when they will be."""
    recent: tuple[TileAlarm, ...]
    """Cleared alarms that were shown (lasted the hold), newest end first."""

    @property
    def next_due(self) -> float | None:
        """The earliest wall time a pending condition becomes an alarm, or None."""
        return min((a.shown_at for a in self.pending), default=None)

    def tile_kinds(self, tiles: int) -> tuple[tuple[AlarmKind, ...], ...]:
        """For each of ``tiles`` tiles, the kinds it shows now (in :class:`AlarmKind` order)."""
        kinds: list[list[AlarmKind]] = [[] for _ in range(tiles)]
        for alarm in self.active:
            if 0 <= alarm.tile < tiles and alarm.kind not in kinds[alarm.tile]:
                kinds[alarm.tile].append(alarm.kind)
        order = list(AlarmKind)
        return tuple(tuple(sorted(k, key=order.index)) for k in kinds)


def tile_sources(mosaic: MosaicState) -> tuple[str, ...]:
    """The source key of each tile of ``mosaic``, in tile order."""
    return tuple(source_key(t.url) for t in mosaic.tiles)


def mosaic_alarms(
    mosaic: MosaicState,
    sources: Mapping[str, SourceState],
    now: float,
    recent: int = 20,
) -> MosaicAlarms:
    """The alarms ``mosaic`` shows at wall time ``now``, from ``sources`` (source key → state;
    keys the mosaic does not use are ignored, missing ones have no alarms). ``recent``: how many
    cleared alarms to keep."""
    settings = parse_alarms(mosaic.alarms)
    return derive(
        tuple(t.name for t in mosaic.tiles), tile_sources(mosaic), settings, sources, now, recent
    )


def derive(
    names: Sequence[str],
    keys: Sequence[str],
    settings: AlarmSettings,
    sources: Mapping[str, SourceState],
    now: float,
    recent: int = 20,
) -> MosaicAlarms:
    """:func:`mosaic_alarms` on its parts: tile names and source keys in tile order."""
    active: list[TileAlarm] = []
    pending: list[TileAlarm] = []
    cleared: list[TileAlarm] = []
    for tile, (name, key) in enumerate(zip(names, keys, strict=True)):
        state = sources.get(key)
        if state is None:
            continue
        for alarm in state.active:
            kind = _kind(alarm.kind)
            hold = None if kind is None else settings.hold(kind)
            if kind is None or hold is None:
                continue
            shown_at = alarm.onset_wall + hold
            item = TileAlarm(
                tile, name, key, kind, alarm.onset, alarm.onset_wall, shown_at, alarm.value
            )
            (active if now >= shown_at - _EPS else pending).append(item)
        for done in state.recent:
            kind = _kind(done.kind)
            hold = None if kind is None else settings.hold(kind)
            if kind is None or hold is None:
                continue
            shown_at = done.onset_wall + hold
            if done.end_wall < shown_at - _EPS:
                continue  # shorter than this mosaic's hold: it never showed here
            cleared.append(
                TileAlarm(
                    tile,
                    name,
                    key,
                    kind,
                    done.onset,
                    done.onset_wall,
                    shown_at,
                    done.value,
                    end_wall=done.end_wall,
                    worst=done.worst,
                    reason=done.reason,
                )
            )
    order = list(AlarmKind)
    active.sort(key=lambda a: (a.tile, order.index(a.kind)))
    pending.sort(key=lambda a: a.shown_at)
    cleared.sort(key=lambda a: -(a.end_wall or 0.0))
    return MosaicAlarms(tuple(active), tuple(pending), tuple(cleared[:recent]))


def _kind(value: str) -> AlarmKind | None:
    try:
        return AlarmKind(value)
    except ValueError:
        return None  # a kind a newer Tessera raises: not this one's to show
