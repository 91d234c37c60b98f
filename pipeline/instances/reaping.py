"""Instance decisions, pure: what the controller knows of each instance, which instances to
terminate, how much room each has per worker kind, and where a new worker should go.

No I/O and no asyncio: inputs are values on the controller's own clock (heartbeat times are
the times beats *arrived*, so other machines' clocks do not matter), outputs are values the
controller turns into provider calls and agent commands.

Rules:

- An instance is **ready** once its agent's first heartbeat arrived. One that is not ready
  ``ready_timeout`` s after launch is terminated (``not-ready``).
- A ready instance whose last heartbeat is older than ``heartbeat_timeout`` is terminated
  (``lost``) and, when work needs a place, replaced by the placement below.
- An instance up longer than ``max_up`` is terminated (``max-up-time``), busy or not: the
  original's hard cap, so no machine lives for ever.
- An instance that has run no worker for ``max_idle`` s is terminated (``idle``).
- An instance the controller launched that the provider no longer lists (after a grace of
  ``heartbeat_timeout`` s) is gone: forgotten, and recorded as terminated.
- An instance the provider says we own but the controller does not know, launched more than
  ``ready_timeout`` s ago, is an orphan (a launch whose record was lost in a crash, or a
  previous controller's) and is terminated (``orphaned``).
- Placement fits a worker where both its kind's capacity (workers per kind) and the agent's
  advertised cores and memory allow: the workers an agent runs, was sent and is promised, by
  their measured costs (:mod:`pipeline.state.costs`), plus the new one, stay within
  ``ceiling`` of what it advertises (an agent that advertises none is held to the per-kind
  capacity alone). Never past either.
- Placement keeps work together: a worker goes to the instance running (or getting) most of
  the workers it should sit beside (its ``near``: a grabber's stitchers, a stitcher's
  grabbers), then packs: the ready instance with the *least* free room for its kind (so others
  empty out and are reaped), else a starting instance that will have room (its cores are not
  known until it beats: the per-kind capacity decides), else a new instance; several new
  workers share new instances up to their capacity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from pipeline.instances.base import InstanceInfo
from pipeline.messages.heartbeats import AgentRoom, InstanceHeartbeat
from pipeline.state.costs import ZERO, Cost, budget_of, choose, describe

if TYPE_CHECKING:
    from pipeline.config.instances import InstanceConfig

ReapReason = Literal["orphaned", "not-ready", "lost", "max-up-time", "idle"]


@dataclass(frozen=True)
class Policy:
    """The instance clocks, in seconds (defaults: the original's)."""

    max_idle: float = 600.0
    max_up: float = 14400.0
    ready_timeout: float = 120.0
    heartbeat_timeout: float = 15.0

    @classmethod
    def from_config(cls, config: InstanceConfig) -> Policy:
        """The policy the instance settings describe."""
        return cls(
            max_idle=config.max_idle_time,
            max_up=config.max_up_time,
            ready_timeout=config.ready_timeout,
            heartbeat_timeout=config.heartbeat_timeout,
        )


@dataclass(frozen=True)
class InstanceView:
    """What the controller knows of one instance, on the controller's clock."""

    instance_id: str
    launched_at: float
    capacity: Mapping[str, int] = field(default_factory=dict)
    used: Mapping[str, int] = field(default_factory=dict)
    workers: tuple[str, ...] = ()
    last_beat: float | None = None
    """When its agent's last heartbeat arrived; None until the first one (not ready)."""
    idle_since: float | None = None
    """Since when it runs no worker; None while busy (or before its first beat)."""
    managed: bool = True
    """Launched by this controller's provider (False: an agent that showed up by itself,
    such as Nomad's system job on every node; those are never terminated, only forgotten)."""
    cores: float = 0.0
    """Cores its agent advertises (0: none said, or not ready)."""
    memory_mb: int = 0
    """Memory its agent advertises, MiB (0: none said, or not ready)."""

    @property
    def ready(self) -> bool:
        """Its agent has sent a heartbeat."""
        return self.last_beat is not None

    @property
    def busy(self) -> int:
        """Workers it runs."""
        return sum(self.used.values())


def launched(instance_id: str, capacity: Mapping[str, int], now: float) -> InstanceView:
    """The view of an instance just launched (not ready until its agent beats)."""
    return InstanceView(instance_id=instance_id, launched_at=now, capacity=dict(capacity))


def observe(view: InstanceView | None, beat: InstanceHeartbeat, received_at: float) -> InstanceView:
    """Fold one agent heartbeat, received at ``received_at``, into the instance's view.

    Durations the agent reports (up time, idle time) are carried over to our clock, so the
    agent's wall clock may be off. An instance first seen through its beat is not ``managed``.
    """
    idle_since = None
    if beat.idle_since is not None:
        idle_since = received_at - max(0.0, beat.at - beat.idle_since)
    if view is None:
        up = max(0.0, beat.at - beat.started_at) if beat.started_at else 0.0
        view = InstanceView(
            instance_id=beat.instance_id, launched_at=received_at - up, managed=False
        )
    return replace(
        view,
        capacity=dict(beat.capacity),
        used=dict(beat.used),
        workers=tuple(beat.workers),
        last_beat=received_at,
        idle_since=idle_since,
        cores=beat.cores,
        memory_mb=beat.memory_mb,
    )


# --- reaping ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reap:
    """Terminate ``instance_id`` because of ``reason``."""

    instance_id: str
    reason: ReapReason


@dataclass(frozen=True)
class Decision:
    """What to do about instances now."""

    terminate: tuple[Reap, ...] = ()
    forget: tuple[str, ...] = ()
    """Known instances that are gone (not owned any more, or unmanaged and silent): record
    them as terminated and drop them."""


def reap_reason(view: InstanceView, now: float, policy: Policy) -> ReapReason | None:
    """Why this instance should be terminated now, or None."""
    if view.last_beat is None:
        return "not-ready" if now - view.launched_at > policy.ready_timeout else None
    if now - view.last_beat > policy.heartbeat_timeout:
        return "lost"
    if now - view.launched_at > policy.max_up:
        return "max-up-time"
    if view.busy == 0 and view.idle_since is not None and now - view.idle_since > policy.max_idle:
        return "idle"
    return None


def decide(
    owned: Iterable[InstanceInfo],
    known: Mapping[str, InstanceView],
    now: float,
    policy: Policy,
) -> Decision:
    """Which owned instances to terminate, and which known ones to forget.

    ``owned``: what the provider lists as ours. ``known``: the controller's views by id.
    """
    terminate: list[Reap] = []
    owned_ids: set[str] = set()
    for info in sorted(owned, key=lambda i: i.instance_id):
        owned_ids.add(info.instance_id)
        view = known.get(info.instance_id)
        if view is None:
            if now - info.launched_at > policy.ready_timeout:
                terminate.append(Reap(info.instance_id, "orphaned"))
            continue
        reason = reap_reason(view, now, policy)
        if reason is not None:
            terminate.append(Reap(info.instance_id, reason))
    forget: list[str] = []
    for iid, view in sorted(known.items()):
        if iid in owned_ids:
            continue
        if view.managed:
            # Launched by us, not listed by the provider: it died. A moment after launch the
            # provider may not list it yet (EC2's reads lag its writes), hence the grace.
            if now - view.launched_at > policy.heartbeat_timeout:
                forget.append(iid)
        elif view.last_beat is None or now - view.last_beat > policy.heartbeat_timeout:
            forget.append(iid)
    return Decision(terminate=tuple(terminate), forget=tuple(forget))


# --- capacity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    """Workers of one kind on one instance: how many run and how many may."""

    used: int
    total: int

    @property
    def free(self) -> int:
        """How many more may start (never negative)."""
        return max(0, self.total - self.used)


def rooms(view: InstanceView, pending: Mapping[str, int] | None = None) -> dict[str, Room]:
    """Room per kind on one instance; ``pending`` counts workers sent but not yet reported."""
    pending = pending or {}
    kinds = set(view.capacity) | set(view.used) | set(pending)
    return {
        kind: Room(
            used=view.used.get(kind, 0) + pending.get(kind, 0), total=view.capacity.get(kind, 0)
        )
        for kind in sorted(kinds)
    }


def totals(views: Iterable[InstanceView]) -> dict[str, Room]:
    """Room per kind over all ``views`` (for metrics and status pages)."""
    used: dict[str, int] = {}
    total: dict[str, int] = {}
    for view in views:
        for kind, room in rooms(view).items():
            used[kind] = used.get(kind, 0) + room.used
            total[kind] = total.get(kind, 0) + room.total
    return {kind: Room(used[kind], total[kind]) for kind in sorted(used)}


# --- placement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """One worker to place: its id and kind, what it costs, and the workers (by id) it should
    run beside."""

    worker_id: str
    kind: str
    cost: Cost = ZERO
    near: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Placement:
    """Where new workers go."""

    assign: Mapping[str, str] = field(default_factory=dict)
    """worker id → ready instance with room: send it ``StartWorker`` now."""
    wait: Mapping[str, str] = field(default_factory=dict)
    """worker id → instance still starting that will have room: send it once it is ready."""
    launch: tuple[tuple[str, ...], ...] = ()
    """One entry per instance to launch: the workers meant for it."""
    impossible: tuple[str, ...] = ()
    """Workers of a kind no instance may run (capacity 0 everywhere, new ones too)."""


def usable(view: InstanceView, now: float, policy: Policy) -> bool:
    """Can take new work: alive and not about to be reaped (idle ones can: work saves them)."""
    reason = reap_reason(view, now, policy)
    return reason is None or reason == "idle"


def agent_rooms(
    views: Iterable[InstanceView],
    now: float,
    policy: Policy,
    pending: Mapping[str, Mapping[str, int]] | None = None,
    load: Mapping[str, Cost] | None = None,
) -> tuple[AgentRoom, ...]:
    """Every usable instance as placement counts it, by instance id.

    ``pending``: per instance, workers per kind sent or promised to it that its beats do not
    show yet. ``load``: per instance, the cost of every worker it runs, was sent or is promised.
    """
    pending = pending or {}
    load = load or {}
    out = []
    for view in sorted(views, key=lambda v: v.instance_id):
        if not usable(view, now, policy):
            continue
        used = load.get(view.instance_id, ZERO)
        room = rooms(view, pending.get(view.instance_id))
        out.append(
            AgentRoom(
                instance_id=view.instance_id,
                ready=view.ready,
                cores=view.cores,
                memory_mb=view.memory_mb,
                cores_used=round(used.cores, 4),
                memory_used_mb=round(used.memory_mb, 1),
                capacity={kind: r.total for kind, r in room.items() if r.total > 0},
                used={kind: r.used for kind, r in room.items() if r.used > 0},
            )
        )
    return tuple(out)


def place(
    workers: Sequence[Want | tuple[str, str]],
    views: Iterable[InstanceView],
    new_capacity: Mapping[str, int],
    now: float,
    policy: Policy,
    pending: Mapping[str, Mapping[str, int]] | None = None,
    *,
    load: Mapping[str, Cost] | None = None,
    where: Mapping[str, str] | None = None,
    ceiling: float = 1.0,
) -> Placement:
    """Place ``workers`` (:class:`Want`, or ``(worker_id, kind)`` pairs costing nothing), in
    order, on instances.

    ``new_capacity``: the capacity a newly launched instance would have. ``pending``: per
    instance, workers already sent to it that its heartbeats do not show yet. ``load``: per
    instance, the cost of all its workers, those pending included. ``where``: worker id →
    instance it runs on, was sent to or waits for (to find a worker's neighbours). ``ceiling``:
    the share of an agent's advertised cores and memory that may be filled.
    """
    views = [v for v in views if usable(v, now, policy)]
    agents = agent_rooms(views, now, policy, pending, load)
    budgets = {room.instance_id: budget_of(room, ceiling) for room in agents}
    ready_ids = [room.instance_id for room in agents if room.ready]
    starting_ids = [room.instance_id for room in agents if not room.ready]
    located = dict(where or {})
    assign: dict[str, str] = {}
    wait: dict[str, str] = {}
    new: list[tuple[dict[str, int], list[str]]] = []
    impossible: list[str] = []
    for item in workers:
        want = item if isinstance(item, Want) else Want(*item)
        wid, kind, cost = want.worker_id, want.kind, want.cost
        near: dict[str, int] = {}
        for other in want.near:
            if (iid := located.get(other)) is not None:
                near[iid] = near.get(iid, 0) + 1
        target = choose(kind, cost, budgets, ready_ids, near)
        if target is not None:
            budgets[target] = budgets[target].take(kind, cost)
            assign[wid] = located[wid] = target
            continue
        target = choose(kind, cost, budgets, starting_ids, near)
        if target is not None:
            budgets[target] = budgets[target].take(kind, cost)
            wait[wid] = located[wid] = target
            continue
        if new_capacity.get(kind, 0) <= 0:
            impossible.append(wid)
            continue
        for room, members in new:
            if room.get(kind, 0) > 0:
                room[kind] -= 1
                members.append(wid)
                break
        else:
            room = dict(new_capacity)
            room[kind] -= 1
            new.append((room, [wid]))
    return Placement(
        assign=assign,
        wait=wait,
        launch=tuple(tuple(members) for _, members in new),
        impossible=tuple(impossible),
    )


def no_room(want: Want, agents: Sequence[AgentRoom], ceiling: float, advice: str = "") -> str:
    """Why ``want`` fits on no agent, in one line that names each agent's room and the fix
    (``advice``, the provider's words, when it has some)."""
    return (
        f"no agent has room for {want.worker_id} ({want.kind}, {want.cost}): "
        f"{describe(agents, ceiling)}; {advice or 'add an agent, or stop some work'}"
    )
