"""Workers on instances: the controller's provider when an instance provider is chosen.

:class:`InstancePool` gives the controller the same three calls as the local provider
(``running``, ``start_worker``, ``stop_worker``) but runs each worker on an *instance* that an
:class:`~pipeline.instances.base.InstanceProvider` launched, through that instance's agent:

- **Where a worker goes** is decided by :func:`reaping.place` (pure): an instance whose
  per-kind capacity and advertised cores and memory (up to ``TESSERA_PLACEMENT_CEILING``) take
  the worker's measured cost, preferring the one that runs its neighbours (:attr:`demand`, the
  controller's hook: a grabber goes beside the stitchers that read its source), then the ready
  one with the least room left, gets a ``StartWorker`` (:mod:`.control`); if only an instance
  still starting has room, the worker waits for it; otherwise a new instance is launched.
  Waiting is not failing: :class:`~pipeline.instances.base.WorkerPending` tells the controller
  to ask again on its next pass. A provider that launches nothing (``launches = False`` on it,
  as the ``agents`` provider), or whose launch just raised :class:`CapacityError` (for a
  while), makes a worker no agent has room for a :class:`CapacityError` that names every
  agent's room and the provider's advice: a failure, which the controller backs off.
- **The room** the pool counts is published as a :class:`PlacementHeartbeat` on
  ``hb.service.placement.<owner id>`` every ``room_interval`` s and at once after a change, so
  that the gateway can refuse a mosaic or session that no agent has room for.
- **Launching** records ``InstanceLaunched`` *before* calling the provider, with the new
  instance id as the launch token. A controller that crashes in between finds the event when
  it starts again and repeats the launch under the same id, which the provider turns into the
  instance the first call started (or starts it, if the first call never happened): one
  instance either way. The provider call runs in a task of the pool, so a slow cloud API never
  holds the controller's pass.
- **What runs** is what the agents report in their heartbeats (``hb.instance.<id>``, folded by
  :func:`reaping.observe` on this pool's clock), plus what was started and is not reported yet
  (one :class:`~.placed.Placed` per worker), so the controller never starts a worker twice. A
  worker an agent stops reporting (it crashed, or its instance is gone) is an exit:
  ``on_exit(worker_id, -1, False)``, and the controller restarts it, elsewhere if need be.
- **Every** ``instance_poll_interval`` s the pool asks the provider what it owns and applies
  :func:`reaping.decide`: instances that are not ready in time, lost (silent agent), up too
  long, idle too long or orphaned are terminated, each recorded as ``InstanceTerminated``;
  the first beat of an instance is recorded as ``InstanceReady``.

Lifecycle: ``start()`` loads the instance facts from ``EVENTS`` and subscribes to the agents'
heartbeats; ``stop()`` stops watching; ``close()`` also terminates every instance this pool
owns (local agents stop their workers on SIGTERM, so nothing is left). All three are safe
twice. Errors are those of :mod:`pipeline.instances.base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from pipeline.errors import InstanceError, MessageError, TesseraError, WorkerPending
from pipeline.instances.base import (
    CapacityError,
    InstanceInfo,
    InstanceProvider,
    LaunchError,
    LaunchRequest,
    new_instance_id,
)
from pipeline.instances.control import start_worker_on, stop_worker_on
from pipeline.instances.placed import Placed, in_flight, load_of, spec_from_id, vanished
from pipeline.instances.reaping import (
    InstanceView,
    Policy,
    Want,
    agent_rooms,
    decide,
    launched,
    no_room,
    observe,
    place,
)
from pipeline.messages.codec import decode_event, decode_heartbeat
from pipeline.messages.events import InstanceLaunched, InstanceReady, InstanceTerminated
from pipeline.messages.heartbeats import InstanceHeartbeat, PlacementHeartbeat
from pipeline.messages.workers import WorkerSpec
from pipeline.nats import subjects
from pipeline.nats.connect import NATS_ERRORS
from pipeline.nats.eventlog import append, matching_count
from pipeline.nats.heartbeat import Heartbeater
from pipeline.nats.topology import EVENTS, HEARTBEATS
from pipeline.runtime.tasks import Tasks, cancel_and_wait, wait_set
from pipeline.state.costs import Cost, Demand, budget_of, demand_of
from pipeline.state.evolve import evolve
from pipeline.state.model import InstanceState
from pipeline.state.reconcile import Running
from pipeline.workers.processes import ExitCallback

if TYPE_CHECKING:
    from pipeline.config.instances import InstanceConfig

log = logging.getLogger("tessera.instances.pool")

INSTANCE_EVENTS = "events.instance.*"
INSTANCE_BEATS = "hb.instance.*"
UNPLACED_FOR = 60.0
"""Seconds a worker no agent had room for is reported so (unless asked for again)."""


# --- reading the facts -----------------------------------------------------------------------


async def recorded_instances(
    js: JetStreamContext, *, within: float = 30.0
) -> dict[str, InstanceState]:
    """The instances ``EVENTS`` knows, each the fold of its events (terminated ones included).

    Read straight from the stream rather than from the ``instances`` projection, so that a
    launch recorded just before a crash is seen even if the projector had not folded it.
    """
    total = await matching_count(js, INSTANCE_EVENTS)
    if total == 0:
        return {}
    states: dict[str, InstanceState] = {}
    sub = await js.subscribe(
        INSTANCE_EVENTS, stream=EVENTS.name, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        async with asyncio.timeout(within):
            async for msg in sub.messages:
                try:
                    event = decode_event(msg.data, msg.subject)
                except MessageError as exc:
                    log.error("bad instance event", extra={"error": str(exc)})
                else:
                    iid = msg.subject.rsplit(".", 1)[-1]
                    state = evolve(states.get(iid), event)
                    if isinstance(state, InstanceState):
                        states[iid] = state
                if msg.metadata.num_pending == 0:
                    break
    except TimeoutError as exc:
        raise InstanceError(
            f"cannot read the instance facts from {EVENTS.name} within {within:g} s"
        ) from exc
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return states


# --- the pool --------------------------------------------------------------------------------


class InstancePool:
    """Runs workers on instances through their agents (the controller's ``Provider``)."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        provider: InstanceProvider,
        config: InstanceConfig,
        *,
        on_exit: ExitCallback | None = None,
        settle: float = 2.0,
        command_timeout: float = 5.0,
        launch_grace: float = 10.0,
        room_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = js
        self.provider = provider
        self.policy = Policy.from_config(config)
        self.capacity = dict(config.capacity)
        self.ceiling = config.placement_ceiling
        self.demand: Callable[[WorkerSpec], Demand] = demand_of
        """What placing a worker needs beyond its kind: its cost and its neighbours. The
        controller sets its own (:meth:`Controller.demand`: it knows which mosaics show which
        sources); without it, costs come from the specs alone and nothing is kept together."""
        self._launches_instances = bool(getattr(provider, "launches", True))
        self._no_launch_until = float("-inf")
        self.unplaced: dict[str, tuple[str, float]] = {}
        """Workers no agent had room for (and no launch could bring): the reason, and when."""
        self.interval = config.instance_poll_interval
        self.on_exit = on_exit
        self.settle = settle
        self.command_timeout = command_timeout
        self.launch_grace = launch_grace
        self._clock = clock
        self.views: dict[str, InstanceView] = {}
        """What this pool knows of each live instance, by instance id."""
        self.placed: dict[str, Placed] = {}
        """Where each running worker runs, by worker id."""
        self._specs: dict[str, WorkerSpec] = {}
        self._waiting: dict[str, tuple[str, str, float]] = {}  # wid -> (iid, kind, since)
        self._stopped: dict[str, float] = {}  # wid -> when we stopped it
        self._strays: set[tuple[str, str]] = set()  # (iid, wid) running twice: stop there
        self._ended: set[str] = set()
        self._ready_recorded: set[str] = set()
        self._relaunch: list[LaunchRequest] = []
        self._passes = Tasks("instance pool")
        """The loop of passes (:meth:`tick`)."""
        self._launching = Tasks("instance launches")
        """The provider's launch calls, each in a task so that a slow API never holds a pass."""
        self._launches: dict[str, asyncio.Task[None]] = {}
        """The launch call under way for each instance id (a task of :attr:`_launching`)."""
        self._launch_error: InstanceError | None = None
        self._sub: JetStreamContext.PushSubscription | None = None
        self._live: Subscription | None = None
        self._beat_at: dict[str, float] = {}  # instance -> ``at`` of its newest beat folded
        self._wake = asyncio.Event()
        self._stored = asyncio.Event()
        self._tick_lock = asyncio.Lock()
        self.status = "new"
        self.ticks = 0
        owner = re.sub(r"[^A-Za-z0-9_-]", "-", config.owner_id)[:128] or "tessera"
        self._room_beats = Heartbeater(
            nc,
            subjects.service_heartbeat("placement", owner),
            self.room_beat,
            interval=room_interval,
        )

    @property
    def can_launch(self) -> bool:
        """The provider may launch another instance now (False for one that launches nothing,
        and for a while after a launch it refused for want of room)."""
        return self._launches_instances and self._clock() >= self._no_launch_until

    @property
    def launching(self) -> frozenset[str]:
        """Instances whose provider launch call has not returned yet."""
        return frozenset(self._launches)

    def instance_of(self, worker_id: str) -> str | None:
        """The instance a worker runs on, was sent to, or waits for; None if none."""
        where = self.placed.get(worker_id)
        if where is not None:
            return where.instance_id
        waiting = self._waiting.get(worker_id)
        return waiting[0] if waiting else None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the instance facts, follow the agents' heartbeats, reap in the background."""
        if self.status != "new":
            return
        self.status = "starting"
        await self._load()
        # Live beats by core NATS as well as from the stream: on a cluster, the stream's
        # deliveries pause while it elects a new leader (seconds), and agents must not look
        # silent meanwhile (their workers would all be started again elsewhere).
        self._live = await self._nc.subscribe(INSTANCE_BEATS, cb=self._on_live_beat)
        self._sub = await self._js.subscribe(
            INSTANCE_BEATS,
            stream=HEARTBEATS.name,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            cb=self._on_beat,
        )
        await self._caught_up()
        relaunch, self._relaunch = self._relaunch, []
        for request in relaunch:
            self._spawn_launch(request)
        self._passes.spawn(self._run(), name="passes")
        await self._room_beats.start()
        self.status = "running"
        log.info(
            "instance pool started",
            extra={"provider": self.provider.name, "instances": len(self.views)},
        )

    async def stop(self) -> None:
        """Stop watching and reaping; launches under way may finish (bounded). Safe twice."""
        if self.status in ("new", "stopped", "closed"):
            if self.status == "new":
                self.status = "stopped"
            return
        self.status = "stopped"
        await self._room_beats.stop()
        await self._passes.close()
        subs = (self._sub, self._live)
        self._sub = self._live = None
        for sub in subs:
            if sub is not None:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        launches = list(self._launches.values())
        if launches:
            # A half-made launch call may leave an instance we cannot see: let it finish.
            await asyncio.wait(launches, timeout=self.launch_grace)
        await self._launching.close()
        self._launches.clear()
        log.info("instance pool stopped", extra={"provider": self.provider.name})

    async def close(self) -> None:
        """Stop, then terminate every instance this pool owns and close the provider. Safe
        twice. Workers on them end with them; no exits are reported (the controller stopped)."""
        if self.status == "closed":
            return
        await self.stop()
        self.status = "closed"
        try:
            owned = {info.instance_id for info in await self.provider.list_owned()}
        except InstanceError as exc:
            log.error("cannot list instances to terminate", extra={"error": str(exc)})
            owned = set()
        ids = owned | {iid for iid, view in self.views.items() if view.managed}
        results = await asyncio.gather(
            *(self._end(iid, "shutdown", report=False) for iid in sorted(ids)),
            return_exceptions=True,
        )
        _log_failures("cannot terminate instance on close", results)
        await self.provider.close()

    async def _run(self) -> None:
        while True:
            await wait_set(self._wake, self._next_pass())
            self._wake.clear()
            try:
                await self.tick()
            except TesseraError as exc:
                log.error("instance pass failed; retrying", extra={"error": str(exc)})
            except NATS_ERRORS as exc:
                # NATS is away, or a cluster is electing a leader: the next pass looks again.
                # (Letting it out would end the loop, and with it every failover.)
                log.warning(
                    "instance pass interrupted by NATS; retrying", extra={"error": repr(exc)}
                )
            except Exception:  # noqa: BLE001 - a bug or a provider's raw error: not the end
                log.exception("instance pass failed unexpectedly; retrying at the next pass")

    def _next_pass(self) -> float:
        """Seconds until the next pass: the poll interval, or sooner when an agent's heartbeat
        deadline falls before it, so that a silent agent's workers move at its deadline and
        not up to a whole interval later (failover time, bench case 15)."""
        now = self._clock()
        deadlines = [
            view.last_beat + self.policy.heartbeat_timeout - now
            for view in self.views.values()
            if view.last_beat is not None
        ]
        # A little past the deadline (the pass must see it passed), and never a busy loop.
        soonest = min((d + 0.05 for d in deadlines if d > -0.05), default=self.interval)
        return max(0.05, min(self.interval, soonest))

    def poke(self) -> None:
        """Look at the instances now rather than at the next interval."""
        self._wake.set()

    # --- inputs ----------------------------------------------------------------------------

    async def _load(self) -> None:
        """Known instances from the facts; launches cut short by a crash are repeated."""
        now = self._clock()
        for iid, state in sorted((await recorded_instances(self._js)).items()):
            if state.phase == "terminated":
                self._ended.add(iid)
                continue
            self.views[iid] = launched(iid, state.capacity, state.launched_at)
            if state.phase == "ready":
                self._ready_recorded.add(iid)
            elif now - state.launched_at <= self.policy.ready_timeout:
                # Recorded, never ready: the launch may not have happened. Repeat it; the
                # launch token makes it the same instance if it did.
                self._relaunch.append(LaunchRequest(iid, dict(state.capacity)))

    async def _caught_up(self, within: float = 5.0) -> None:
        """Wait (bounded) for the stored beats, so that workers already running on agents are
        known before the controller's first pass (which would otherwise start them again)."""
        info = await self._js.stream_info(HEARTBEATS.name, subjects_filter=INSTANCE_BEATS)
        if not info.state.subjects:
            return
        try:
            await asyncio.wait_for(self._stored.wait(), within)
        except TimeoutError:
            log.warning("stored instance beats not read in time; going on without them")

    async def _on_live_beat(self, msg: Msg) -> None:
        beat = self._newer_beat(msg)
        if beat is not None:
            self.fold(beat, self._clock())

    def _newer_beat(self, msg: Msg) -> InstanceHeartbeat | None:
        """The agent beat in ``msg`` if it is newer than the last one folded for its agent
        (each comes twice, by the stream and by core NATS, and the stream's may come late)."""
        try:
            beat = decode_heartbeat(msg.data, msg.subject)
        except MessageError:
            return None
        if not isinstance(beat, InstanceHeartbeat):
            return None
        if beat.at <= self._beat_at.get(beat.instance_id, float("-inf")):
            return None
        self._beat_at[beat.instance_id] = beat.at
        return beat

    async def _on_beat(self, msg: Msg) -> None:
        pending = msg.metadata.num_pending if msg.metadata else 0
        if pending == 0:
            self._stored.set()
        beat = self._newer_beat(msg)
        if beat is None:
            return
        now = self._clock()
        # Beats stored before we subscribed carry their own time; live ones arrive now.
        stored = pending > 0 or now - beat.at > self.policy.heartbeat_timeout
        self.fold(beat, min(beat.at, now) if stored else now)

    def fold(self, beat: InstanceHeartbeat, received_at: float) -> None:
        """Take one agent heartbeat into account (no I/O)."""
        iid = beat.instance_id
        if iid in self._ended:
            return  # its last beats may still come in after we terminated it
        view = observe(self.views.get(iid), beat, received_at)
        self.views[iid] = view
        if view.managed and iid not in self._ready_recorded:
            self.poke()  # its first beat: record it ready now, not at the next interval
        told = {spec.worker_id: spec for spec in beat.specs}
        for wid in beat.workers:
            where = self.placed.get(wid)
            if where is not None:
                if where.instance_id != iid and received_at > where.since + self.settle:
                    self._strays.add((iid, wid))
                continue
            stopped = self._stopped.get(wid)
            if stopped is not None and received_at < stopped + self.settle:
                continue  # a beat sent before the stop took effect
            # Running, but not started by us (a restart of this controller): adopt it.
            spec = self._specs.get(wid) or told.get(wid) or spec_from_id(wid)
            if spec is None:
                continue  # a kind this Tessera does not run: not ours to place or stop
            self.placed[wid] = Placed(spec, iid, received_at, received_at)

    # --- the Provider protocol -------------------------------------------------------------

    def running(self) -> dict[str, Running]:
        """Workers that run on an instance or were started and are not reported yet."""
        return {
            wid: Running(spec=where.spec, started_at=where.started_at)
            for wid, where in self.placed.items()
        }

    def can_retile(self, spec: WorkerSpec) -> bool:
        """Whether the agent that runs ``spec.worker_id`` has room for what ``spec`` costs
        more than the spec it runs (a retile adds no worker, so only cores and memory count);
        a spec that costs no more always fits. False when the worker is not placed here."""
        where = self.placed.get(spec.worker_id)
        if where is None:
            return False
        grown = self.demand(spec).cost
        now = self.demand(where.spec).cost
        extra = Cost(grown.cores - now.cores, grown.memory_mb - now.memory_mb)
        if extra.cores <= 0 and extra.memory_mb <= 0:
            return True
        rooms = {r.instance_id: r for r in self.room_beat().agents}
        room = rooms.get(where.instance_id)
        return room is not None and budget_of(room, self.ceiling).holds(extra)

    def retiled(self, spec: WorkerSpec) -> None:
        """The running worker ``spec.worker_id`` now runs ``spec`` (told in place, not through
        its agent: a later adoption that takes the agent's older spec retiles it again)."""
        wid = spec.worker_id
        self._specs[wid] = spec
        where = self.placed.get(wid)
        if where is not None:
            self.placed[wid] = dataclasses.replace(where, spec=spec)

    async def start_worker(self, spec: WorkerSpec) -> int:
        """Start ``spec`` on an instance with room; returns 0 (no local pid).

        Raises :class:`WorkerPending` while it waits for an instance (one is launched if none
        will have room), :class:`CapacityError` if no instance may ever run its kind, or no
        agent has room and the provider cannot launch one, and :class:`InstanceError` if the
        agent could not be asked or a launch failed.
        """
        wid = spec.worker_id
        self._specs[wid] = spec
        if wid in self.placed:
            return 0
        now = self._clock()
        self._waiting.pop(wid, None)
        self._expire_waiting(now)
        waiting = self._waiting_kinds()
        pending = in_flight(self.placed, waiting, self.views)
        load = self._work_cost(waiting)
        demand = self.demand(spec)
        want = Want(wid, spec.kind, demand.cost, demand.near)
        placement = place(
            [want],
            self.views.values(),
            self.capacity,
            now,
            self.policy,
            pending,
            load=load,
            where=self._where(),
            ceiling=self.ceiling,
        )
        can_launch = self.can_launch
        if wid in placement.impossible and can_launch:
            env = f"TESSERA_CAPACITY_{spec.kind.upper()}"
            raise CapacityError(
                f"no instance may run {spec.kind} workers ({wid}): set {env} above 0"
            )
        target = placement.assign.get(wid)
        if target is not None:
            try:
                await start_worker_on(self._nc, target, spec, wait=self.command_timeout)
            except CapacityError as exc:
                raise WorkerPending(f"{exc}; placing {wid} again on the next pass") from exc
            at = self._clock()
            self.placed[wid] = Placed(spec, target, at, at)
            self._stopped.pop(wid, None)
            self._placed_now(wid)
            log.info("worker sent", extra={"worker": wid, "instance": target})
            return 0
        target = placement.wait.get(wid)
        if target is None:
            failure, self._launch_error = self._launch_error, None
            if not can_launch:
                agents = agent_rooms(self.views.values(), now, self.policy, pending, load)
                reason = no_room(want, agents, self.ceiling, await self._advice(spec, failure))
                self.unplaced[wid] = (reason, now)
                self._room_beats.poke()
                raise CapacityError(reason)
            if failure is not None:
                raise LaunchError(f"no instance for {wid}: the last launch failed: {failure}")
            target = await self._launch(spec.kind)
        self._waiting[wid] = (target, spec.kind, now)
        self._placed_now(wid)
        raise WorkerPending(f"{wid} waits for instance {target} to be ready")

    async def _advice(self, spec: WorkerSpec, failure: InstanceError | None) -> str:
        """What would make room, in the provider's words: its refusal to launch (asked of a
        provider that launches nothing: the ``agents`` one says to start another agent)."""
        if failure is None and not self._launches_instances:
            try:
                await self.provider.launch(LaunchRequest(new_instance_id(), {}, spec.kind))
            except CapacityError as exc:
                failure = exc
        return str(failure) if failure is not None else ""

    def _placed_now(self, wid: str) -> None:
        """``wid`` has a place (sent, or promised): not unplaced any more; tell the gateway."""
        self.unplaced.pop(wid, None)
        self._room_beats.poke()

    def _waiting_kinds(self) -> dict[str, tuple[str, str]]:
        return {w: (iid, kind) for w, (iid, kind, _) in self._waiting.items()}

    def _where(self) -> dict[str, str]:
        """Worker id → the instance it runs on, was sent to, or waits for."""
        where = {wid: p.instance_id for wid, p in self.placed.items()}
        where.update((wid, iid) for wid, (iid, _, _) in self._waiting.items())
        return where

    def _work_cost(self, waiting: dict[str, tuple[str, str]]) -> dict[str, Cost]:
        """Per instance, what its workers (running, sent, promised) cost."""
        return load_of(self.placed, waiting, self.views, self._specs, lambda s: self.demand(s).cost)

    def room_beat(self) -> PlacementHeartbeat:
        """The room this pool counts on its agents now (its heartbeat)."""
        now = self._clock()
        waiting = self._waiting_kinds()
        pending = in_flight(self.placed, waiting, self.views)
        agents = agent_rooms(
            self.views.values(), now, self.policy, pending, self._work_cost(waiting)
        )
        # The controller asks again while it wants a worker (backing off up to 30 s): a reason
        # not renewed for a minute is about a worker nobody wants any more.
        self.unplaced = {
            w: (why, at)
            for w, (why, at) in self.unplaced.items()
            if w not in self.placed and now - at <= UNPLACED_FOR
        }
        unplaced = sorted(self.unplaced, key=lambda w: self.unplaced[w][1])
        return PlacementHeartbeat(
            at=now,
            provider=self.provider.name,
            can_launch=self.can_launch,
            ceiling=self.ceiling,
            agents=agents,
            every=self._room_beats.interval,
            unplaced=tuple(unplaced),
            reason=self.unplaced[unplaced[-1]][0] if unplaced else "",
        )

    async def stop_worker(self, worker_id: str, reason: str = "not-needed") -> int | None:
        """Ask the worker's agent to stop it; None (its exit code is not known here)."""
        self._waiting.pop(worker_id, None)
        self.unplaced.pop(worker_id, None)
        where = self.placed.get(worker_id)
        if where is None:
            return None
        self._stopped[worker_id] = self._clock()
        del self.placed[worker_id]
        self._room_beats.poke()
        try:
            await stop_worker_on(self._nc, where.instance_id, worker_id, reason)
        except InstanceError as exc:
            # A silent agent's instance is found lost and terminated, workers and all.
            log.warning("cannot stop worker", extra={"worker": worker_id, "error": str(exc)})
        return None

    # --- launching -------------------------------------------------------------------------

    async def _launch(self, kind: str | None) -> str:
        """Record a new instance, then launch it in the background; return its id."""
        iid = new_instance_id()
        now = self._clock()
        event = InstanceLaunched(
            at=now, instance_id=iid, provider=self.provider.name, capacity=dict(self.capacity)
        )
        # Recorded first: the id is the launch token a restarted controller launches again.
        await append(self._js, event, msg_id=f"instance-launched-{iid}")
        self.views[iid] = launched(iid, self.capacity, now)
        self._spawn_launch(LaunchRequest(iid, dict(self.capacity), kind=kind))
        return iid

    def _spawn_launch(self, request: LaunchRequest) -> None:
        iid = request.instance_id
        if iid not in self.views:
            self.views[iid] = launched(iid, request.capacity, self._clock())
        self._launches[iid] = self._launching.spawn(self._do_launch(request), name=iid)

    async def _do_launch(self, request: LaunchRequest) -> None:
        iid = request.instance_id
        try:
            info = await self.provider.launch(request)
        except InstanceError as exc:
            self._launches.pop(iid, None)
            self._launch_error = exc
            if isinstance(exc, CapacityError):
                # No room to launch one (no free container port, ...): place on the instances
                # there are, and say so when they are full, for a while.
                wait = max(self.interval, self.policy.heartbeat_timeout)
                self._no_launch_until = self._clock() + wait
            log.error("cannot launch instance", extra={"instance": iid, "error": str(exc)})
            await self._end(iid, "launch-failed", terminate=False)
            return
        self._launches.pop(iid, None)
        log.info(
            "instance launched",
            extra={"instance": iid, "provider": info.provider, "external_id": info.external_id},
        )

    # --- the pass --------------------------------------------------------------------------

    async def tick(self) -> None:
        """One look at the instances: record readiness, reap, then report the workers that
        vanished (the reaped instances' ones are reported as they end)."""
        async with self._tick_lock:  # the loop's pass and one asked for never interleave
            await self._tick()

    async def _tick(self) -> None:
        self.ticks += 1
        now = self._clock()
        owned = await self.provider.list_owned()
        await self._record_ready(owned)
        self._expire_waiting(now)
        self._stopped = {w: t for w, t in self._stopped.items() if now - t < self.settle}

        decision = decide(owned, self.views, now, self.policy)
        waiting = self._waiting_kinds()
        busy = in_flight(self.placed, waiting, self.views)
        ends: list[tuple[str, str, bool]] = []
        for reap in decision.terminate:
            if reap.reason == "idle" and reap.instance_id in busy:
                continue  # work is on its way there: not idle
            ends.append((reap.instance_id, reap.reason, True))
        for iid in decision.forget:
            view = self.views.get(iid)
            if iid in self._launches:
                continue  # the provider may not list it until its launch call returns
            if view is not None and not view.managed:
                self._drop_unmanaged(iid)
                continue
            ends.append((iid, "lost", True))
        results = await asyncio.gather(
            *(self._end(iid, reason, terminate=term) for iid, reason, term in ends),
            return_exceptions=True,
        )
        _log_failures("cannot terminate instance", results)

        for wid in vanished(self.placed, self.views, self.settle):
            where = self.placed.pop(wid)
            log.warning("worker vanished", extra={"worker": wid, "instance": where.instance_id})
            await self._exit(wid)
        await self._stop_strays()

    async def _record_ready(self, owned: Iterable[InstanceInfo]) -> None:
        addresses = {info.instance_id: info.address for info in owned}
        for iid, view in sorted(self.views.items()):
            if not (view.managed and view.ready) or iid in self._ready_recorded:
                continue
            event = InstanceReady(at=self._clock(), instance_id=iid, address=addresses.get(iid, ""))
            await append(self._js, event, msg_id=f"instance-ready-{iid}")
            self._ready_recorded.add(iid)
            log.info("instance ready", extra={"instance": iid})

    async def _stop_strays(self) -> None:
        strays, self._strays = self._strays, set()
        for iid, wid in sorted(strays):
            where = self.placed.get(wid)
            if where is None or where.instance_id == iid or iid not in self.views:
                continue
            log.warning("worker runs twice; stopping one", extra={"worker": wid, "instance": iid})
            try:
                await stop_worker_on(self._nc, iid, wid, "duplicate")
            except InstanceError as exc:
                log.warning("cannot stop duplicate", extra={"worker": wid, "error": str(exc)})

    def _expire_waiting(self, now: float) -> None:
        """Forget promises to starting instances that are gone or not renewed in time (the
        controller asks again on every pass while it still wants the worker, so a promise
        older than an agent's heartbeat timeout is one nobody wants any more)."""
        self._waiting = {
            wid: (iid, kind, since)
            for wid, (iid, kind, since) in self._waiting.items()
            if iid in self.views and now - since <= self.policy.heartbeat_timeout
        }

    def _drop_unmanaged(self, iid: str) -> None:
        """An agent we did not launch went silent: forget it, but do not record or terminate
        it (it is not ours, and may come back). Its workers are then found vanished."""
        self.views.pop(iid, None)
        log.info("instance forgotten", extra={"instance": iid})

    async def _end(
        self, iid: str, reason: str, *, terminate: bool = True, report: bool = True
    ) -> None:
        """Record ``iid`` as terminated, report its workers' exits, then terminate it."""
        # State first, in one synchronous step: a start or a beat arriving meanwhile sees the
        # instance gone.
        self.views.pop(iid, None)
        self._ended.add(iid)
        launch = self._launches.pop(iid, None)
        self._waiting = {w: v for w, v in self._waiting.items() if v[0] != iid}
        lost = sorted(w for w, p in self.placed.items() if p.instance_id == iid)
        for wid in lost:
            del self.placed[wid]
        await cancel_and_wait(launch)
        event = InstanceTerminated(at=self._clock(), instance_id=iid, reason=reason)
        await append(self._js, event, msg_id=f"instance-terminated-{iid}")
        log.info("instance ended", extra={"instance": iid, "reason": reason, "workers": lost})
        if report:
            for wid in lost:
                await self._exit(wid)
        if terminate:
            await self.provider.terminate(iid, reason)

    async def _exit(self, worker_id: str) -> None:
        if self.on_exit is not None:
            await self.on_exit(worker_id, -1, False)


def _log_failures(what: str, results: Iterable[object]) -> None:
    for result in results:
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, TesseraError):
            log.error(what, extra={"error": str(result)})
        elif isinstance(result, BaseException):
            raise result
