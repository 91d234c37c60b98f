"""What a stitcher draws on its tiles beside their pictures: each tile's alarms and audio meter.

- **Alarms**: KV ``alarms`` followed in memory (a :class:`~pipeline.nats.follow.KvFollower`;
  only this mosaic's sources are kept) with the mosaic's holds applied
  (:func:`pipeline.state.alarms.derive`), so the borders drawn on the tiles agree with
  ``GET /mosaics/<fp>/alarms``. Derived again only when a source's state changed or a pending
  condition's hold ran out, so a tick costs a comparison. A mosaic with every kind off follows
  nothing.
- **Meters**: a subscription to each tile source's ``levels.<sid>``; every reading goes to a
  :class:`~pipeline.consumers.meters.MeterBook` on arrival, and a tick asks it for each tile's
  meter (none for a source without audio).

:meth:`TileMarks.mark` puts both on the tiles' views at every tick of the stitcher's clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from pipeline.consumers.compositor import TileView
from pipeline.consumers.meters import MeterBook
from pipeline.errors import MessageError
from pipeline.messages.levels import decode_levels
from pipeline.monitoring.alarms import AlarmKind, parse_alarms
from pipeline.nats import subjects
from pipeline.nats.follow import KvFollower
from pipeline.nats.topology import ALARMS
from pipeline.state.alarms import derive
from pipeline.state.alarms import tile_sources as source_keys
from pipeline.state.model import MosaicState, SourceState
from pipeline.state.stored import decode_entry

log = logging.getLogger("tessera.stitcher")

Kinds = tuple[tuple[AlarmKind, ...], ...]
"""Per tile, in tile order, the alarm kinds it shows."""


class TileMarks:
    """The alarms and meters of ``mosaic``'s tiles (whose sources are ``tile_sources``);
    ``await start()``, ``await stop()``. ``clock``: the stitcher's monotonic clock."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        mosaic: MosaicState,
        tile_sources: Sequence[str],
        clock: Callable[[], float],
    ) -> None:
        self._nc = nc
        self._clock = clock
        self._tile_sources = tuple(tile_sources)
        self.meters = MeterBook()
        self._subs: list[Any] = []
        self.bad_levels = 0
        """Level readings that did not decode (counted, not fatal)."""
        self._settings = parse_alarms(mosaic.alarms)
        self._names = tuple(t.name for t in mosaic.tiles)
        self._keys = source_keys(mosaic)
        self._wanted = frozenset(self._keys)
        self._sources: dict[str, SourceState] = {}
        self._none: Kinds = tuple(() for _ in self._keys)
        self._kinds: Kinds = self._none
        self._valid_until = float("-inf")
        """Wall time until which :attr:`_kinds` holds (a pending hold runs out then)."""
        self._dirty = True
        self.enabled = any(self._settings.hold(kind) is not None for kind in AlarmKind)
        self._follower = KvFollower(
            js,
            ALARMS,
            load=self._load,
            apply=self._apply,
            required=False,
            missing="tiles show no alarms until it is back",
        )

    async def start(self) -> None:
        """Subscribe to the tiles' levels; load the sources' alarm states and follow them
        (unless every kind is off)."""
        for sid in dict.fromkeys(self._tile_sources):
            self._subs.append(await self._nc.subscribe(subjects.levels(sid), cb=self._levels))
        if self.enabled:
            await self._follower.start()

    async def stop(self) -> None:
        """Stop following and unsubscribe. Safe to call twice."""
        await self._follower.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def mark(self, views: Sequence[TileView], wall: float) -> list[TileView]:
        """``views`` (one per tile) with each tile's alarms at wall time ``wall`` and its meter
        now."""
        kinds = self.kinds(wall)
        now = self._clock()
        marked: list[TileView] = []
        for index, view in enumerate(views):
            meter = self.meters.meter(self._tile_sources[index], now)
            alarms = kinds[index]
            if meter is None and not alarms:
                marked.append(view)
            else:
                marked.append(dataclasses.replace(view, alarms=alarms, meter=meter))
        return marked

    async def _levels(self, msg: Msg) -> None:
        try:
            levels = decode_levels(msg.data, msg.subject)
        except MessageError:
            self.bad_levels += 1
            return
        self.meters.feed(levels, self._clock())

    def kinds(self, now: float) -> Kinds:
        """Per tile, the kinds it shows at wall time ``now``."""
        if not self._dirty and now < self._valid_until:
            return self._kinds
        if not self._sources:
            self._kinds, self._valid_until = self._none, float("inf")
        else:
            alarms = derive(self._names, self._keys, self._settings, self._sources, now, recent=0)
            self._kinds = alarms.tile_kinds(len(self._keys))
            due = alarms.next_due
            self._valid_until = float("inf") if due is None else due
        self._dirty = False
        return self._kinds

    # --- the follower's callbacks ---------------------------------------------------------

    def _load(self, snapshot: dict[str, bytes]) -> None:
        self._sources = {}
        for key, value in snapshot.items():
            self._apply(key, value)
        self._dirty = True

    def _apply(self, key: str, value: bytes | None) -> None:
        if key not in self._wanted:
            return
        if value is None:
            self._sources.pop(key, None)
        else:
            state = decode_entry(ALARMS.name, value).state
            assert isinstance(state, SourceState)
            self._sources[key] = state
        self._dirty = True
