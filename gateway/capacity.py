"""Is there room for a new mosaic or JIT session? Asked before either is recorded.

The controller's instance pool publishes the room it counts on its agents
(:class:`~pipeline.messages.heartbeats.PlacementHeartbeat` on ``hb.service.placement.<owner>``:
each agent's advertised cores, memory and capacity per kind, what its workers cost, and
whether the provider can launch another instance), and the gateway follows every heartbeat
(:class:`~pipeline.nats.beats.HeartbeatCache`). ``/create`` of a mosaic that is not recorded
yet asks :meth:`Capacity.refuse_mosaic`, ``POST /session`` asks :meth:`Capacity.refuse_session`:
the workers the new work would start (a mosaic's stitcher and the grabbers of its sources that
no worker pulls yet, priced by :mod:`pipeline.state.costs`) are fitted into that room as the
controller would place them, and what does not fit is the ``503``'s reason, naming every
agent's room to whoever may see it (an open install, or an ``admin`` token:
:meth:`~gateway.guard.Guard.may_see_rooms`); others are told what was needed and the fix,
not the cluster's machines and load.

Nothing is refused when nobody publishes a room (workers run as ``tessera up``'s own
processes), when the last room is stale (three beats late: the controller is away, and decides
when it is back), or when the provider can launch another instance (local, Docker, EC2, Nomad:
the work waits for it). A mosaic that differs from a running one only in its title shares its
stitcher, but is priced here with one of its own (its earliest twin is not looked up): near a
full cluster, such a mosaic may be refused although it would fit.

What is known at ``/create`` is a second old at most; the pool decides for real, and a worker
it cannot place fails with the same reason in the controller's log and in the room's
``unplaced`` (tried again, backing off), while the mosaic shows what runs (a dead tile for a
grabber not placed; an empty live playlist while its stitcher is not).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.config.settings import Config
from pipeline.messages.heartbeats import PlacementHeartbeat
from pipeline.nats import subjects
from pipeline.nats.beats import HeartbeatCache
from pipeline.state.costs import JIT, cost_of, refusal
from pipeline.state.evolve import evolve
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import MosaicConfig, created
from pipeline.state.reconcile import desired, start_order

PLACEMENT_PREFIX = subjects.service_heartbeat("placement", "x")[: -len("x")]
"""``hb.service.placement.``: where instance pools publish their room."""
STALE_BEATS = 3
"""A room this many beats old (plus a second) is not trusted."""


class Capacity:
    """The gateway's view of the room on the agents, from the heartbeats it follows."""

    def __init__(
        self, beats: HeartbeatCache, config: Config, clock: Callable[[], float] = time.time
    ) -> None:
        self.beats = beats
        self.config = config
        self._clock = clock

    def placement(self) -> PlacementHeartbeat | None:
        """The newest fresh room a controller published; None if none."""
        newest: PlacementHeartbeat | None = None
        for subject, (beat, _) in self.beats.latest.items():
            if not subject.startswith(PLACEMENT_PREFIX) or not isinstance(beat, PlacementHeartbeat):
                continue
            if newest is None or beat.at > newest.at:
                newest = beat
        if newest is None or self._clock() - newest.at > STALE_BEATS * newest.every + 1.0:
            return None
        return newest

    def _running(self, worker_id: str) -> bool:
        """A worker whose heartbeat is fresh (it needs no new room)."""
        age = self.beats.age(subjects.worker_heartbeat(worker_id))
        return age is not None and age <= self.config.worker_heartbeat_timeout

    def refuse_mosaic(
        self, config: MosaicConfig, fp: str, *, name_rooms: bool = True
    ) -> str | None:
        """Why a new mosaic ``config`` (fingerprint ``fp``) cannot be placed; None if it can
        (or that cannot be known: see the module's doc). ``name_rooms``: say each agent's
        room (:func:`~pipeline.state.costs.refusal`)."""
        room = self.placement()
        if room is None or room.can_launch:
            return None
        state = evolve(None, created(config, fp, self._clock()))
        assert isinstance(state, MosaicState)
        specs = sorted(desired({fp: state}, frozenset({fp})).values(), key=start_order)
        wants = [
            (spec.kind, cost_of(spec, state)) for spec in specs if not self._running(spec.worker_id)
        ]
        return refusal(wants, room.agents, room.ceiling, name_rooms=name_rooms)

    def refuse_session(self, *, name_rooms: bool = True) -> str | None:
        """Why a new JIT session cannot be placed; None if it can (or cannot be known)."""
        room = self.placement()
        if room is None or room.can_launch:
            return None
        return refusal([("jit", JIT)], room.agents, room.ceiling, name_rooms=name_rooms)
