"""Where the instance pool believes each worker runs, and what follows from it: pure.

:class:`~pipeline.instances.pool.InstancePool` keeps a :class:`Placed` per worker it sent to an
agent (or found in an agent's heartbeat) and asks these functions, with the agents' views
(:mod:`pipeline.instances.reaping`), which workers vanished and how much work is on its way to
each instance. Values in, values out: tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.instances.reaping import InstanceView
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec, WorkerSpec
from pipeline.state.costs import ZERO, Cost


@dataclass(frozen=True)
class Placed:
    """A worker this pool believes runs on ``instance_id``.

    ``since`` is when that became known on the pool's clock: when the agent accepted the start,
    or when a heartbeat first listed a worker nobody here started (after a restart).
    """

    spec: WorkerSpec
    instance_id: str
    since: float
    started_at: float


def spec_from_id(worker_id: str) -> WorkerSpec | None:
    """The spec of a worker known only by its id (``<kind>-<target>``): one an agent's beat
    lists that this pool did not start (it was started before the controller restarted).

    Exact for stitchers and JIT sessions: their target is their whole spec. A grabber's id
    holds no URL, tile size or rate, so its spec here has none (an empty URL, no tile size):
    never equal to a wanted spec, the controller restarts it as "changed" with the right ones.
    None for a kind this Tessera does not know.
    """
    kind, _, target = worker_id.partition("-")
    match kind:
        case "grabber":
            return GrabberSpec(key=target, url="", sizes=(), fps=0.0)
        case "stitcher":
            return StitcherSpec(fp=target)
        case "jit":
            return JitSpec(session_id=target)
    return None


def vanished(
    placed: Mapping[str, Placed], views: Mapping[str, InstanceView], settle: float
) -> list[str]:
    """Workers that are no longer running where they were placed.

    A worker has vanished when its instance is unknown (ended), or when a heartbeat of its
    instance that arrived more than ``settle`` s after the worker was placed does not list it.
    The ``settle`` margin covers a beat that was on its way while the agent started it.
    """
    out = []
    for wid, where in sorted(placed.items()):
        view = views.get(where.instance_id)
        if view is None:
            out.append(wid)
        elif (
            view.last_beat is not None
            and view.last_beat > where.since + settle
            and wid not in view.workers
        ):
            out.append(wid)
    return out


def in_flight(
    placed: Mapping[str, Placed],
    waiting: Mapping[str, tuple[str, str]],
    views: Mapping[str, InstanceView],
) -> dict[str, dict[str, int]]:
    """Per instance and kind, workers sent or promised to it that its beats do not show yet.

    ``waiting``: worker id → (instance id, kind) of workers waiting for a starting instance.
    """
    out: dict[str, dict[str, int]] = {}

    def add(iid: str, kind: str) -> None:
        kinds = out.setdefault(iid, {})
        kinds[kind] = kinds.get(kind, 0) + 1

    for wid, where in placed.items():
        view = views.get(where.instance_id)
        if view is not None and wid not in view.workers:
            add(where.instance_id, where.spec.kind)
    for iid, kind in waiting.values():
        add(iid, kind)
    return out


def load_of(
    placed: Mapping[str, Placed],
    waiting: Mapping[str, tuple[str, str]],
    views: Mapping[str, InstanceView],
    specs: Mapping[str, WorkerSpec],
    cost: Callable[[WorkerSpec], Cost],
) -> dict[str, Cost]:
    """Per instance, the cost of every worker it runs (its beats list them), was sent (not
    listed yet) or is promised (``waiting``: worker id → (instance id, kind)), each once.

    ``specs``: the specs of workers this pool knows (a worker only a beat names is priced by
    :func:`spec_from_id`; one of an unknown kind costs nothing here, as it is not ours).
    """
    where: dict[str, str] = {}
    for iid, view in views.items():
        for wid in view.workers:
            where[wid] = iid
    for wid, at in placed.items():
        where.setdefault(wid, at.instance_id)
    for wid, (iid, _) in waiting.items():
        where.setdefault(wid, iid)
    out: dict[str, Cost] = {}
    for wid, iid in where.items():
        known = placed.get(wid)
        spec = known.spec if known is not None else specs.get(wid) or spec_from_id(wid)
        if spec is not None:
            out[iid] = out.get(iid, ZERO) + cost(spec)
    return out
