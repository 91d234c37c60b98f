"""What a worker costs the agent that runs it, in cores and memory, and how much room an agent
has left for more: pure.

Placement (:func:`pipeline.instances.reaping.place`) fits workers into what each agent
advertises (``InstanceHeartbeat.cores`` and ``memory_mb``) by these costs, up to a ceiling
(``TESSERA_PLACEMENT_CEILING``); the gateway (``gateway/capacity.py``) asks the same question
of a new mosaic or session before it records it, and answers ``503`` with the reason when no
agent has room.

**The figures** were measured by bench case 13 (``bench/cases/worker_costs.py``;
``python3 bench/run.py --only worker_costs``) on 2026-12-07, on this project's 2-core, 24 GiB
machine (Python 3.11.7, PyAV's FFmpeg, libx264 ``ultrafast``), each worker running as it runs
on an agent: a process forked by the fork server, every tile frame on NATS as JPEG
(``TESSERA_FRAME_ENCODING=auto``; the stitcher decodes each tile it shows, ~0.2 ms). *Cores*
are CPU-seconds per wall second of the worker's process (user + system, all threads, from
``/proc/<pid>/stat`` over 10 s windows; a stitcher's per second of output, as it skips
pictures when starved); *memory* is its proportional set size (PSS: pages shared with the fork
server and the other workers counted in shares, which is what one more worker adds), with RSS
beside it. Medians of 4 windows (2 runs of 2 rounds; sessions: 6). Grabbers pulled 1280x720
25 fps H.264 camera-like clips (``testsrc2`` with noise, 3 Mbit/s); stitchers were measured
over 480x270 clips of the same pictures, so that sixteen 720p decodes left them the machine.
Other work shared the machine then (load 5 to 16 on 2 cores): the figures lean high (an
earlier run at load 0.3 gave 0.22 cores for the 16-tile 720p stitcher), which a packed agent
is not far from.

========================================================  ======  =======  =======
worker (25 fps)                                            cores   PSS MiB  RSS MiB
========================================================  ======  =======  =======
grabber, 1280x720 H.264 source into a 320x180 tile         0.077       22       70
grabber, same source into 480x270                          0.083       25       73
grabber, same source into 640x360                          0.096       34       77
stitcher, 16 tiles into 1280x720                           0.31        45       90
stitcher, 16 tiles into 1920x1080                          0.52        64      110
stitcher, 4 tiles into 1280x720                            0.21        46       88
JIT session, 1280x720 H.264 file playing to one viewer     0.21   224-247  240-282
========================================================  ======  =======  =======

**The model** (a straight line through those points, so that other sizes are priced honestly
and never below what was measured):

- A *grabber* decodes its whole source whatever the tile (the source's size is not known
  before it is opened; the 720p camera is the case measured), then scales and publishes the
  tile: :data:`GRABBER_BASE` plus :data:`GRABBER_PER_MPX` per million tile pixels a second.
  Its fps cap matters little: the decode is most of it, and frames over the cap are still
  decoded (unless not referenced). A grabber that makes several tile sizes of its source
  decodes it once and scales each frame to each size: the base once, the tile pixels of
  every size (a 160x90 size scaled from the 320x180 tile measured 0.06 ms a frame, bench
  case 11; with its pack and publish the line's share is about right).
- A *stitcher* composes and encodes its output (its pixels a second: 1080p costs 2.25× 720p in
  the encoder) and takes in each tile's frames: :data:`STITCHER_BASE`, plus
  :data:`STITCHER_PER_MPX` per million output pixels a second, plus :data:`STITCHER_PER_TILE`.
- A *JIT session* is priced as the 720p session playing (:data:`JIT`): its file's size is not
  known until its worker opens it, and a paused session costs far less (bench case 6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.messages.heartbeats import AgentRoom
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec, WorkerSpec
from pipeline.state.model import MosaicState

_EPS = 1e-9


@dataclass(frozen=True)
class Cost:
    """What one worker takes from its agent: cores (CPU-seconds a second) and MiB."""

    cores: float = 0.0
    memory_mb: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.cores + other.cores, self.memory_mb + other.memory_mb)

    def __str__(self) -> str:
        return f"{self.cores:.2f} cores, {self.memory_mb:.0f} MiB"


ZERO = Cost()

GRABBER_BASE = Cost(0.0707, 18.0)
"""A grabber's decode of a 1280x720 25 fps H.264 source, and its process."""
GRABBER_PER_MPX = Cost(0.0044, 2.9)
"""What each million tile pixels a second adds (scale, pack, publish; the frame buffers)."""
STITCHER_BASE = Cost(0.0181, 31.0)
STITCHER_PER_MPX = Cost(0.00705, 0.68)
"""Per million output pixels a second: compose and encode."""
STITCHER_PER_TILE = Cost(0.0083, 0.0)
"""Per tile: its frames taken in from NATS."""
JIT = Cost(0.21, 250.0)
"""A JIT session playing a 1280x720 file to one viewer."""
DEFAULT_TILE = (320, 180, 25.0)
"""The tile a grabber known only by its id is priced at (one adopted after a restart)."""
DEFAULT_MOSAIC = (1280, 720, 25.0, 16)
"""The mosaic a stitcher whose mosaic is not known is priced at."""


def _scaled(unit: Cost, amount: float) -> Cost:
    return Cost(unit.cores * amount, unit.memory_mb * amount)


def grabber_cost(width: int, height: int, fps: float, *more: tuple[int, int]) -> Cost:
    """One grabber of a camera-like source into a ``width`` x ``height`` tile at ``fps``, and
    into tiles of the ``more`` sizes (width, height) too."""
    pixels = sum(w * h for w, h in ((width, height), *more))
    return GRABBER_BASE + _scaled(GRABBER_PER_MPX, pixels * fps / 1e6)


def stitcher_cost(width: int, height: int, fps: float, tiles: int) -> Cost:
    """One stitcher of ``tiles`` tiles into a ``width`` x ``height`` picture at ``fps``."""
    pixels = _scaled(STITCHER_PER_MPX, width * height * fps / 1e6)
    return STITCHER_BASE + pixels + _scaled(STITCHER_PER_TILE, tiles)


def cost_of(spec: WorkerSpec, mosaic: MosaicState | None = None) -> Cost:
    """What ``spec`` costs; ``mosaic``: a stitcher's mosaic (priced as the default without)."""
    match spec:
        case GrabberSpec(sizes=((w, h), *more), fps=fps) if w > 0 and h > 0:
            return grabber_cost(w, h, fps or DEFAULT_TILE[2], *more)
        case GrabberSpec():
            return grabber_cost(*DEFAULT_TILE)
        case StitcherSpec():
            if mosaic is None:
                return stitcher_cost(*DEFAULT_MOSAIC)
            return stitcher_cost(mosaic.width, mosaic.height, mosaic.fps, len(mosaic.tiles))
        case JitSpec():
            return JIT


@dataclass(frozen=True)
class Demand:
    """What placing one worker needs to know beyond its kind: its cost, and the workers it
    should run beside (a grabber the stitchers that read its source, a stitcher its grabbers),
    by worker id. The controller answers it (it knows which mosaics show which sources)."""

    cost: Cost = ZERO
    near: frozenset[str] = frozenset()


def demand_of(spec: WorkerSpec) -> Demand:
    """The demand of ``spec`` known from the spec alone (no mosaic, no neighbours)."""
    return Demand(cost_of(spec))


# --- room --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What one agent may still take: cores and MiB under its ceiling (``inf``: it advertises
    none), and workers of each kind."""

    cores: float = math.inf
    memory_mb: float = math.inf
    slots: Mapping[str, int] = field(default_factory=dict)

    def fits(self, kind: str, cost: Cost) -> bool:
        """A worker of ``kind`` costing ``cost`` fits."""
        return self.slots.get(kind, 0) > 0 and self.holds(cost)

    def holds(self, cost: Cost) -> bool:
        """``cost`` more fits in the cores and memory left (a running worker that grows)."""
        return cost.cores <= self.cores + _EPS and cost.memory_mb <= self.memory_mb + _EPS

    def take(self, kind: str, cost: Cost) -> Budget:
        """The budget left once that worker is placed here."""
        slots = dict(self.slots)
        slots[kind] = slots.get(kind, 0) - 1
        return Budget(self.cores - cost.cores, self.memory_mb - cost.memory_mb, slots)


def budget_of(room: AgentRoom, ceiling: float) -> Budget:
    """What ``room``'s agent may still take when placement fills ``ceiling`` of it."""
    cores = room.cores * ceiling - room.cores_used if room.cores > 0 else math.inf
    memory = room.memory_mb * ceiling - room.memory_used_mb if room.memory_mb > 0 else math.inf
    slots = {kind: n - room.used.get(kind, 0) for kind, n in room.capacity.items()}
    return Budget(cores, memory, slots)


def choose(
    kind: str,
    cost: Cost,
    budgets: Mapping[str, Budget],
    among: Sequence[str],
    near: Mapping[str, int] | None = None,
) -> str | None:
    """The agent among ``among`` to take a worker of ``kind`` costing ``cost``, or None.

    Of those it fits, the one with the most of its ``near`` workers (agent → how many), then
    the one with the least room left for its kind, then the fewest cores left: work is packed,
    so that other agents empty out and are reaped.
    """
    near = near or {}
    best: tuple[int, int, float, str] | None = None
    for iid in among:
        room = budgets[iid]
        if not room.fits(kind, cost):
            continue
        key = (-near.get(iid, 0), room.slots.get(kind, 0), room.cores, iid)
        if best is None or key < best:
            best = key
    return None if best is None else best[3]


def unfit(
    wants: Sequence[tuple[str, Cost]], rooms: Sequence[AgentRoom], ceiling: float
) -> list[int]:
    """Which of ``wants`` (``(kind, cost)`` pairs, placed in order as the controller would:
    :func:`choose`, without neighbours) no agent of ``rooms`` has room for: their indexes."""
    budgets = {room.instance_id: budget_of(room, ceiling) for room in rooms}
    among = sorted(budgets)
    left: list[int] = []
    for i, (kind, cost) in enumerate(wants):
        target = choose(kind, cost, budgets, among)
        if target is None:
            left.append(i)
        else:
            budgets[target] = budgets[target].take(kind, cost)
    return left


def describe(rooms: Sequence[AgentRoom], ceiling: float) -> str:
    """The agents' room in one line: ``a: cores 1.62 of 1.70 (0.85 of 2), memory 900 of
    3400 MiB, grabber 16 of 16, stitcher 1 of 2; b: ...`` ("no agent" when there is none)."""
    if not rooms:
        return "no agent"
    parts = []
    for room in sorted(rooms, key=lambda r: r.instance_id):
        said = []
        if room.cores > 0:
            said.append(
                f"cores {room.cores_used:.2f} of {room.cores * ceiling:.2f} "
                f"({ceiling:g} of {room.cores:g})"
            )
        if room.memory_mb > 0:
            said.append(f"memory {room.memory_used_mb:.0f} of {room.memory_mb * ceiling:.0f} MiB")
        for kind, total in sorted(room.capacity.items()):
            said.append(f"{kind} {room.used.get(kind, 0)} of {total}")
        if not room.ready:
            said.append("starting")
        parts.append(f"{room.instance_id}: {', '.join(said) or 'runs nothing'}")
    return "; ".join(parts)


def _kinds(kinds: Sequence[str]) -> str:
    """``3 grabbers and 1 stitcher``."""
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    said = [f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in sorted(counts.items())]
    return " and ".join([", ".join(said[:-1]), said[-1]] if len(said) > 1 else said)


def refusal(
    wants: Sequence[tuple[str, Cost]],
    rooms: Sequence[AgentRoom],
    ceiling: float,
    *,
    name_rooms: bool = True,
) -> str | None:
    """Why new work (``(kind, cost)`` pairs: the workers a new mosaic or session would start)
    cannot be placed on the agents of ``rooms``, in one line; None when it fits.
    ``name_rooms``: say each agent's room (:func:`describe`: its id, cores, memory and
    workers), for the operator; without it, what was needed and the fix only."""
    left = unfit(wants, rooms, ceiling)
    if not left:
        return None
    need = ZERO
    for _, cost in wants:
        need = need + cost
    some = "" if len(left) == len(wants) else f"of {_kinds([kind for kind, _ in wants])} "
    rooms_said = f": {describe(rooms, ceiling)};" if name_rooms else ":"
    return (
        f"no agent has room for {_kinds([wants[i][0] for i in left])} "
        f"({some}needing {need}){rooms_said} add an agent, or stop some work"
    )
