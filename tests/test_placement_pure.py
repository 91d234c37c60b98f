"""Placement by advertised capacity, pure: worker costs, agents' budgets, affinity, the reason
a full cluster gives, what an agent detects of its machine, and the gateway's question.

Placement is tested on values: hypothesis checks that it never puts more on an agent than its
cores, memory (up to the ceiling) and per-kind capacity allow, places every worker once, and
launches only what no agent could take; examples check that a grabber goes beside the stitcher
that reads it while there is room there, and elsewhere when there is not.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capacity import Capacity
from pipeline.config import instances as instance_settings
from pipeline.config.settings import load
from pipeline.errors import ConfigError
from pipeline.instances import resources
from pipeline.instances.placed import Placed, load_of
from pipeline.instances.reaping import (
    InstanceView,
    Policy,
    Want,
    agent_rooms,
    launched,
    no_room,
    observe,
    place,
)
from pipeline.messages.codec import decode_heartbeat, encode
from pipeline.messages.events import Tile
from pipeline.messages.heartbeats import (
    AgentRoom,
    GrabberStats,
    InstanceHeartbeat,
    PlacementHeartbeat,
    WorkerHeartbeat,
)
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec
from pipeline.nats import subjects
from pipeline.state import costs
from pipeline.state.costs import JIT, Budget, Cost, budget_of, cost_of, refusal, unfit
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import MosaicConfig, fingerprint
from pipeline.state.reconcile import Timing, affinity, grabber_id, plan

POLICY = Policy(max_idle=600, max_up=14400, ready_timeout=120, heartbeat_timeout=15)
NOW = 1000.0


def agent(iid: str, cores: float = 0.0, memory_mb: int = 0, **capacity: int) -> InstanceView:
    """A ready agent as its beat describes it."""
    beat = InstanceHeartbeat(
        at=NOW, instance_id=iid, capacity=dict(capacity), started_at=NOW - 10,
        cores=cores, memory_mb=memory_mb,
    )  # fmt: skip
    return observe(None, beat, NOW)


def mosaic(fp: str, urls: list[str], size: tuple[int, int] = (1280, 720)) -> MosaicState:
    return MosaicState(
        fp=fp, tiles=tuple(Tile(url=u, name=u) for u in urls), width=size[0], height=size[1],
        fps=25, created_at=NOW,
    )  # fmt: skip


# --- costs -------------------------------------------------------------------------------------


def test_costs_follow_the_measured_figures_and_grow_with_size() -> None:
    small = costs.grabber_cost(320, 180, 25)
    assert small.cores == pytest.approx(0.077, abs=0.005)
    assert costs.grabber_cost(640, 360, 25).cores > small.cores
    hd = costs.stitcher_cost(1280, 720, 25, 16)
    full_hd = costs.stitcher_cost(1920, 1080, 25, 16)
    assert hd.cores == pytest.approx(0.31, abs=0.02)
    assert full_hd.cores > 1.5 * hd.cores and full_hd.memory_mb > hd.memory_mb
    assert costs.stitcher_cost(1280, 720, 25, 4).cores < hd.cores
    # Specs: a grabber by its tile, one known only by id at the default tile; a stitcher by its
    # mosaic, or the default 720p/16 without one; a session as one playing.
    spec = GrabberSpec(key="s", url="http://a", sizes=((640, 360),), fps=25.0)
    assert cost_of(spec) == costs.grabber_cost(640, 360, 25)
    # Several sizes of one source: one decode (the base once), the tile pixels of each.
    two = GrabberSpec(key="s", url="http://a", sizes=((640, 360), (320, 180)), fps=25.0)
    assert cost_of(two) == costs.grabber_cost(640, 360, 25, (320, 180))
    assert cost_of(spec).cores < cost_of(two).cores < 2 * costs.grabber_cost(320, 180, 25).cores
    adopted = GrabberSpec(key="s", url="", sizes=(), fps=0.0)
    assert cost_of(adopted) == small
    big = mosaic("f" * 32, ["http://a"] * 16, (1920, 1080))
    assert cost_of(StitcherSpec(fp="f" * 32), big) == full_hd
    assert cost_of(StitcherSpec(fp="f" * 32)) == hd
    assert cost_of(JitSpec(session_id="s")) == JIT
    assert str(Cost(0.5, 99.6)) == "0.50 cores, 100 MiB"


def test_budgets_apply_the_ceiling_and_ignore_what_is_not_advertised() -> None:
    room = AgentRoom(
        instance_id="a", cores=2.0, memory_mb=1000, cores_used=0.5, memory_used_mb=100.0,
        capacity={"grabber": 3}, used={"grabber": 1},
    )  # fmt: skip
    b = budget_of(room, 0.85)
    assert b.cores == pytest.approx(1.2) and b.memory_mb == pytest.approx(750)
    assert b.slots == {"grabber": 2}
    assert b.fits("grabber", Cost(1.2, 750)) and not b.fits("grabber", Cost(1.21, 1))
    assert not b.fits("stitcher", Cost())
    old = budget_of(AgentRoom(instance_id="old", capacity={"jit": 1}), 0.85)
    assert old.cores == math.inf and old.fits("jit", Cost(100, 10**6))
    assert old.take("jit", JIT).slots == {"jit": 0}


# --- placement -----------------------------------------------------------------------------------


def test_placement_fills_cores_up_to_the_ceiling_then_moves_on() -> None:
    views = [agent("a", cores=1.0, grabber=16), agent("b", cores=1.0, grabber=16)]
    g = Cost(0.1, 10)
    wants = [Want(f"g{i}", "grabber", g) for i in range(18)]
    p = place(wants, views, {"grabber": 16}, NOW, POLICY, ceiling=0.85)
    on = {iid: [w for w, t in p.assign.items() if t == iid] for iid in ("a", "b")}
    # 8 x 0.1 fit under 0.85 of one core; packed: a first, then b, then a new instance.
    assert len(on["a"]) == 8 and len(on["b"]) == 8
    assert p.launch == (("g16", "g17"),)
    # Already loaded: a runs 0.8 cores of work, so only b takes more.
    p = place([Want("x", "grabber", g)], views, {}, NOW, POLICY,
              load={"a": Cost(0.8, 0)}, ceiling=0.85)  # fmt: skip
    assert p.assign == {"x": "b"}
    # Memory counts too; an agent advertising nothing is held to its per-kind capacity only.
    views = [agent("m", cores=8.0, memory_mb=100, grabber=16), agent("old", grabber=1)]
    wants = [Want(w, "grabber", Cost(0.1, 90)) for w in ("y", "z", "w")]
    p = place(wants, views, {}, NOW, POLICY, ceiling=1.0)
    assert p.assign == {"y": "old", "z": "m"} and p.impossible == ("w",)


def test_a_grabber_goes_beside_its_stitcher_while_there_is_room() -> None:
    views = [agent("a", cores=1.0, grabber=16, stitcher=2),
             agent("b", cores=2.0, grabber=16, stitcher=2)]  # fmt: skip
    s = Want("stitcher-m", "stitcher", Cost(0.5, 50))
    grabbers = [
        Want(f"grabber-{i}", "grabber", Cost(0.2, 20), near=frozenset({"stitcher-m"}))
        for i in range(6)
    ]
    # The stitcher packs onto the tighter agent (a); its grabbers follow it while a has room
    # (0.5 + 0.2 = 0.7 <= 0.85), then go where there is room.
    p = place([s, *grabbers], views, {}, NOW, POLICY, ceiling=0.85)
    assert p.assign["stitcher-m"] == "a"
    assert p.assign["grabber-0"] == "a"
    assert {p.assign[f"grabber-{i}"] for i in range(1, 6)} == {"b"}
    # A stitcher already running on b (``where``) draws its grabber there, though a is tighter.
    p = place([grabbers[0]], views, {}, NOW, POLICY, where={"stitcher-m": "b"}, ceiling=0.85)
    assert p.assign == {"grabber-0": "b"}
    # A stitcher goes where most of its grabbers run.
    near = Want("stitcher-m", "stitcher", Cost(0.5, 50), near=frozenset({"g1", "g2", "g3"}))
    p = place([near], views, {}, NOW, POLICY, where={"g1": "b", "g2": "b", "g3": "a"})
    assert p.assign == {"stitcher-m": "b"}


def test_a_full_cluster_says_which_agent_has_what() -> None:
    views = [agent("a", cores=1.0, memory_mb=2000, grabber=2, stitcher=1)]
    want = Want("grabber-x", "grabber", Cost(0.4, 20))
    load = {"a": Cost(0.6, 300)}
    p = place([want], views, {}, NOW, POLICY, {"a": {"grabber": 1}}, load=load, ceiling=0.85)
    assert p.assign == {} and p.impossible == ("grabber-x",)
    rooms = agent_rooms(views, NOW, POLICY, {"a": {"grabber": 1}}, load)
    assert rooms == (
        AgentRoom(instance_id="a", cores=1.0, memory_mb=2000, cores_used=0.6, memory_used_mb=300,
                  capacity={"grabber": 2, "stitcher": 1}, used={"grabber": 1}),
    )  # fmt: skip
    assert no_room(want, rooms, 0.85) == (
        "no agent has room for grabber-x (grabber, 0.40 cores, 20 MiB): a: cores 0.60 of 0.85 "
        "(0.85 of 1), memory 300 of 1700 MiB, grabber 1 of 2, stitcher 0 of 1; add an agent, "
        "or stop some work"
    )
    assert "start another agent" in no_room(want, rooms, 0.85, "start another agent")


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[InstanceView], list[Want], dict[str, Cost], float]:
    views = []
    for i in range(draw(st.integers(0, 4))):
        cores = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0]))
        memory = draw(st.sampled_from([0, 200, 1000]))
        caps = {k: draw(st.integers(0, 4)) for k in ("grabber", "stitcher", "jit")}
        view = agent(f"i{i}", cores=cores, memory_mb=memory, **caps)
        if draw(st.booleans()):
            view = launched(f"s{i}", caps, NOW - 5)  # starting: no cores known yet
        views.append(view)
    wants = []
    for j in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["grabber", "stitcher", "jit"]))
        cost = Cost(draw(st.sampled_from([0.05, 0.2, 0.5, 1.5])), draw(st.sampled_from([10, 90])))
        near = frozenset(f"w{k}" for k in draw(st.sets(st.integers(0, 11), max_size=3)))
        wants.append(Want(f"w{j}", kind, cost, near))
    load = {v.instance_id: Cost(draw(st.sampled_from([0.0, 0.3])), 0) for v in views}
    return views, wants, load, draw(st.sampled_from([0.5, 0.85, 1.0]))


@settings(max_examples=300, deadline=None)
@given(clusters(), st.sampled_from([{}, {"grabber": 2, "stitcher": 1, "jit": 1}]))
def test_placement_never_exceeds_an_agent(
    cluster: tuple[list[InstanceView], list[Want], dict[str, Cost], float],
    new_capacity: dict[str, int],
) -> None:
    views, wants, load, ceiling = cluster
    p = place(wants, views, new_capacity, NOW, POLICY, load=load, ceiling=ceiling)
    placed = [*p.assign, *p.wait, *(w for group in p.launch for w in group), *p.impossible]
    assert sorted(placed) == sorted(w.worker_id for w in wants)  # each exactly once
    by_id = {w.worker_id: w for w in wants}
    rooms = {r.instance_id: r for r in agent_rooms(views, NOW, POLICY, None, load)}
    final: dict[str, Budget] = {iid: budget_of(r, ceiling) for iid, r in rooms.items()}
    for wid, iid in {**p.assign, **p.wait}.items():
        final[iid] = final[iid].take(by_id[wid].kind, by_id[wid].cost)
    for iid in set(p.assign.values()) | set(p.wait.values()):
        # An agent given work is within every budget after it (one already over, by work it
        # runs, is given none).
        left = final[iid]
        assert all(n >= 0 for n in left.slots.values()), (iid, left)
        assert left.cores >= -1e-9 and left.memory_mb >= -1e-9, (iid, left)
    assert all(rooms[iid].ready for iid in p.assign.values())
    assert not any(rooms[iid].ready for iid in p.wait.values())
    # What goes to a new instance (or nowhere) fits on no agent there is.
    for wid in [w for group in p.launch for w in group] + list(p.impossible):
        assert not any(b.fits(by_id[wid].kind, by_id[wid].cost) for b in final.values())


# --- who sits beside whom ------------------------------------------------------------------------


def test_affinity_pairs_grabbers_with_the_stitchers_that_read_them() -> None:
    m1 = mosaic("a" * 32, ["http://cam/1", "http://cam/2"])
    m2 = mosaic("b" * 32, ["http://cam/2", "http://cam/3"])
    twin = msgspec.structs.replace(m1, fp="c" * 32, title="other", created_at=NOW + 1)
    mosaics = {m.fp: m for m in (m1, m2, twin)}
    near = affinity(mosaics, frozenset(mosaics))
    d = plan(mosaics=mosaics, viewers={fp: NOW for fp in mosaics}, beats={}, running={},
             failures={}, now=NOW, timing=Timing())  # fmt: skip
    by_url = {s.url: s.worker_id for s in d.start if isinstance(s, GrabberSpec)}
    g1, g2, g3 = (by_url[f"http://cam/{i}"] for i in (1, 2, 3))
    s1, s2 = f"stitcher-{'a' * 32}", f"stitcher-{'b' * 32}"  # the twin shares m1's
    assert near[g2] == {s1, s2} and near[g1] == {s1} and near[g3] == {s2}
    assert near[s1] == {g1, g2} and near[s2] == {g2, g3}
    assert set(near) == {s.worker_id for s in d.start}
    # Stitchers start first, so that their grabbers can follow them.
    assert [s.kind for s in d.start] == ["stitcher", "stitcher", "grabber", "grabber", "grabber"]


def test_load_counts_every_worker_once_where_it_is() -> None:
    g = GrabberSpec(key="g1", url="http://a", sizes=((320, 180),), fps=25.0)
    view = observe(launched("a", {"grabber": 4}, NOW),
                   InstanceHeartbeat(at=NOW, instance_id="a", workers=("grabber-g1", "jit-x")),
                   NOW)  # fmt: skip
    placed = {
        "grabber-g1": Placed(g, "a", NOW, NOW),  # running and reported
        "jit-s2": Placed(JitSpec(session_id="s2"), "a", NOW, NOW),  # sent, not reported yet
    }
    waiting = {"jit-s3": ("b", "jit")}
    specs = {"jit-s3": JitSpec(session_id="s3")}
    load = load_of(placed, waiting, {"a": view}, specs, cost_of)
    # jit-x: only its beat knows it (a restart), priced from its id.
    assert load == {"a": cost_of(g) + JIT + JIT, "b": JIT}


# --- the gateway's question ----------------------------------------------------------------------


class Beats:
    """Stands in for the gateway's heartbeat cache."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[object, float]] = {}

    def age(self, subject: str) -> float | None:
        got = self.latest.get(subject)
        return None if got is None else time.time() - got[0].at  # type: ignore[attr-defined]


def test_the_gateway_refuses_what_no_agent_has_room_for() -> None:
    grabber = costs.grabber_cost(320, 180, 25)
    stitcher = costs.stitcher_cost(1280, 720, 25, 16)
    rooms = (AgentRoom(instance_id="a", cores=1.0, memory_mb=0, capacity={"grabber": 16,
             "stitcher": 2, "jit": 0}),)  # fmt: skip
    assert refusal([("stitcher", stitcher), ("grabber", grabber)], rooms, 0.85) is None
    fit = math.floor((0.85 - stitcher.cores) / grabber.cores + 1e-9)  # grabbers beside it
    assert 1 <= fit < 16
    wall = [("stitcher", stitcher)] + [("grabber", grabber)] * 16
    assert unfit(wall, rooms, 0.85) == list(range(1 + fit, 17))
    why = refusal(wall, rooms, 0.85)
    left = 16 - fit
    assert why is not None and why.startswith(
        f"no agent has room for {left} grabber{'s' if left > 1 else ''} "
        "(of 16 grabbers and 1 stitcher needing "
    )
    assert "a: cores 0.00 of 0.85 (0.85 of 1)" in why and why.endswith("or stop some work")

    config = load(env={})
    beats = Beats()
    capacity = Capacity(beats, config)  # type: ignore[arg-type]
    tiles = tuple(Tile(url=f"http://cam/{i}", name=str(i)) for i in range(16))
    mosaic_16 = MosaicConfig(tiles=tiles)
    fp = fingerprint(mosaic_16)
    assert capacity.refuse_mosaic(mosaic_16, fp) is None  # nobody publishes room: not known
    subject = subjects.service_heartbeat("placement", "tessera")
    beat = PlacementHeartbeat(at=time.time(), provider="agents", can_launch=False, ceiling=0.85,
                              agents=rooms)  # fmt: skip
    beats.latest[subject] = (beat, time.time())
    why = capacity.refuse_mosaic(mosaic_16, fp)
    assert why is not None and "no agent has room for " in why and "16 grabbers" in why
    assert capacity.refuse_session() is not None and "1 jit" in (capacity.refuse_session() or "")
    # Told to someone who may not see the cluster (a closed install, no admin token): what
    # was needed and the fix, not the agents' ids and load.
    brief = capacity.refuse_mosaic(mosaic_16, fp, name_rooms=False)
    assert brief is not None and brief.startswith(why.split(": a:")[0]) and "a:" not in brief
    assert brief.endswith("needing " + why.split("needing ")[1].split(")")[0] + "): add an "
                          "agent, or stop some work")  # fmt: skip
    assert "cores 0.00" not in (capacity.refuse_session(name_rooms=False) or "a: cores 0.00")
    # Grabbers that already run need no room: with most of them running, the rest fit.
    for tile in tiles[: 16 - fit]:
        wid = grabber_id(tile.url)
        hb = WorkerHeartbeat(at=time.time(), worker_id=wid, kind="grabber", target="t",
                             stats=GrabberStats())  # fmt: skip
        beats.latest[subjects.worker_heartbeat(wid)] = (hb, time.time())
    assert capacity.refuse_mosaic(mosaic_16, fp) is None
    # A provider that can launch, or a stale room: nothing is refused.
    beats.latest[subject] = (msgspec.structs.replace(beat, can_launch=True), time.time())
    assert capacity.refuse_session() is None
    beats.latest[subject] = (msgspec.structs.replace(beat, at=time.time() - 60), time.time())
    assert capacity.refuse_session() is None


# --- messages and settings -----------------------------------------------------------------------


def test_old_instance_beats_decode_and_room_beats_round_trip() -> None:
    old = b'{"type":"hb.instance/1","at":1.0,"instance_id":"i","capacity":{"jit":2}}'
    beat = decode_heartbeat(old)
    assert isinstance(beat, InstanceHeartbeat) and beat.cores == 0.0 and beat.memory_mb == 0
    new = InstanceHeartbeat(at=1.0, instance_id="i", cores=1.5, memory_mb=2048)
    assert decode_heartbeat(encode(new)) == new
    room = PlacementHeartbeat(
        at=1.0, provider="agents", can_launch=False, ceiling=0.85, every=1.0,
        agents=(AgentRoom(instance_id="a", cores=2.0, memory_mb=4096, cores_used=0.3,
                          memory_used_mb=40.5, capacity={"grabber": 16}, used={"grabber": 2}),),
        unplaced=("grabber-x",), reason="no agent has room",
    )  # fmt: skip
    assert decode_heartbeat(encode(room)) == room


def test_agent_and_placement_settings() -> None:
    icfg = instance_settings.load(env={})
    assert icfg.agent_cores is None and icfg.agent_memory_mb is None
    assert icfg.placement_ceiling == 0.85
    icfg = instance_settings.load(
        env={"TESSERA_AGENT_CORES": "1.5", "TESSERA_AGENT_MEMORY_MB": "2048",
             "TESSERA_PLACEMENT_CEILING": "1"},
    )  # fmt: skip
    assert (icfg.agent_cores, icfg.agent_memory_mb, icfg.placement_ceiling) == (1.5, 2048, 1.0)
    with pytest.raises(ConfigError, match="TESSERA_PLACEMENT_CEILING"):
        instance_settings.load(env={"TESSERA_PLACEMENT_CEILING": "1.2"})
    with pytest.raises(ConfigError, match="TESSERA_AGENT_CORES"):
        instance_settings.load(env={"TESSERA_AGENT_CORES": "0"})


# --- what an agent detects -----------------------------------------------------------------------


def _write(root: Path, path: str, text: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_detect_reads_affinity_meminfo_and_cgroup_limits(tmp_path: Path) -> None:
    assert resources.quota_v2("max 100000") is None
    assert resources.quota_v2("150000 100000") == 1.5
    assert resources.quota_v1("-1", "100000") is None
    assert resources.limit_bytes("9223372036854771712") is None
    assert resources.limit_bytes("max") is None
    assert resources.cgroup_paths("0::/a/b\n4:memory:/m\n2:cpu,cpuacct:/c\n") == {
        "": "/a/b", "memory": "/m", "cpu": "/c", "cpuacct": "/c",
    }  # fmt: skip
    meminfo = "MemTotal:       8192000 kB\nMemFree: 1 kB\n"
    _write(tmp_path, "proc/meminfo", meminfo)
    _write(tmp_path, "proc/self/cgroup", "0::/box\n")
    assert resources.detect(tmp_path, cpus=4) == resources.Resources(4.0, 8000)
    # cgroup v2: a quota of 1.5 CPUs and 1 GiB in the group's own directory.
    _write(tmp_path, "sys/fs/cgroup/box/cpu.max", "150000 100000\n")
    _write(tmp_path, "sys/fs/cgroup/box/memory.max", str(2**30))
    assert resources.detect(tmp_path, cpus=4) == resources.Resources(1.5, 1024)
    # cgroup v1, as a container sees it (the hierarchy's root is its own group).
    v1 = tmp_path / "v1"
    _write(v1, "proc/meminfo", meminfo)
    _write(v1, "proc/self/cgroup", "4:memory:/docker/x\n2:cpu,cpuacct:/docker/x\n")
    _write(v1, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "50000")
    _write(v1, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000")
    _write(v1, "sys/fs/cgroup/memory/memory.limit_in_bytes", str(512 * 2**20))
    assert resources.detect(v1, cpus=2) == resources.Resources(0.5, 512)
    # This machine: some cores, some memory.
    here = resources.detect()
    assert here.cores > 0 and here.memory_mb > 0
