"""The instance pool: workers on instances through their agents, against a real nats-server.

- **Pure helpers** (:mod:`pipeline.instances.placed`): which placed workers vanished (with
  the settle margin for a beat on its way), how much work is in flight per instance, and the
  spec of a worker known only by its id.
- **A full agent**: the agent a placement chose refuses with code ``full`` (its beat was
  behind): the pool sees a CapacityError and tells the controller to ask again (WorkerPending).
- **Local agents under a Stack**: ``tessera up`` with ``--instance-provider local`` and room for
  one JIT session per instance. A session lands on an instance with room (one is launched for
  it), a second one on another; the agent of the first is frozen (SIGSTOP), found lost,
  terminated and replaced, and its session's worker restarted on the new instance. After stop
  no process of the test remains (checked by walking ``/proc``).
- **EC2 on moto's server, on a made-up clock**: an idle instance is terminated after the max
  idle time and a busy one after the max up time (its worker reported as exited); a launch
  recorded before a crash gives exactly one instance when a new pool starts, whether or not
  the provider was called before the crash; an instance with our tag that no fact knows is
  terminated as an orphan. The agents there are played by heartbeats this test publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from msgspec.structs import replace as replace_struct
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from pipeline.cli.up import Stack
from pipeline.config import instances as instance_settings
from pipeline.config.settings import load
from pipeline.errors import WorkerPending
from pipeline.instances.base import CapacityError, LaunchRequest, load_provider, new_instance_id
from pipeline.instances.ec2 import ID_TAG, Ec2Provider
from pipeline.instances.local import LocalInstanceProvider
from pipeline.instances.placed import Placed, in_flight, spec_from_id, vanished
from pipeline.instances.pool import InstancePool, recorded_instances
from pipeline.instances.reaping import launched, observe
from pipeline.messages.codec import encode
from pipeline.messages.control import CommandReply
from pipeline.messages.events import InstanceLaunched
from pipeline.messages.heartbeats import InstanceHeartbeat
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec
from pipeline.nats import subjects
from pipeline.nats.eventlog import append
from pipeline.nats.server import EmbeddedNats
from tests import test_ec2_provider as ec2_tests
from tests.jitmedia import make_video
from tests.natsenv import server_env
from tests.test_ec2_provider import config_env, instances

# moto's server and a fresh account in it, as the EC2 provider's own tests use them.
moto = ec2_tests.moto
aws = ec2_tests.aws


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait (bounded, checking every 50 ms) until ``check()`` holds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


# --- pure helpers ----------------------------------------------------------------------------


def test_vanished_workers_and_work_in_flight() -> None:
    jit = JitSpec(session_id="s1")
    placed = {
        "jit-s1": Placed(jit, "a", since=100.0, started_at=100.0),
        "jit-s2": Placed(JitSpec(session_id="s2"), "a", since=100.0, started_at=100.0),
        "jit-s3": Placed(JitSpec(session_id="s3"), "gone", since=50.0, started_at=50.0),
    }
    view = observe(
        launched("a", {"jit": 4}, 90.0),
        InstanceHeartbeat(at=101.0, instance_id="a", used={"jit": 1}, workers=("jit-s1",)),
        received_at=101.0,
    )
    # A beat 1 s after the start may predate it: only s3 (its instance is gone) vanished.
    assert vanished(placed, {"a": view}, settle=2.0) == ["jit-s3"]
    later = replace(view, last_beat=103.0)
    assert vanished(placed, {"a": later}, settle=2.0) == ["jit-s2", "jit-s3"]
    # Sent to "a" but not in its beat (s2), plus one waiting for "b" that is starting.
    waiting = {"jit-s4": ("b", "jit")}
    assert in_flight(placed, waiting, {"a": view}) == {"a": {"jit": 1}, "b": {"jit": 1}}

    # Workers known only by id (adopted from a beat after a restart): exact for stitchers and
    # sessions; a grabber's options are not in its id, so its spec never equals a wanted one.
    assert spec_from_id("jit-s1") == jit
    assert spec_from_id(f"stitcher-{'f' * 32}") == StitcherSpec(fp="f" * 32)
    adopted = spec_from_id("grabber-ab12")
    assert isinstance(adopted, GrabberSpec) and adopted.worker_id == "grabber-ab12"
    assert adopted.url == "" and adopted.sizes == ()
    assert spec_from_id("painter-x") is None


async def test_a_full_agent_makes_the_worker_wait_for_the_next_pass(
    nc: Client, js: JetStreamContext
) -> None:
    """Placement trusts the agents' last beats; an agent that filled up since answers code
    ``full``: the pool sees CapacityError and raises WorkerPending (place again, no failure)."""
    icfg = instance_settings.load(env={"TESSERA_CAPACITY_JIT": "1"})
    pool = InstancePool(nc, js, LocalInstanceProvider(nats_url="nats://unused"), icfg)
    now = time.time()
    # An agent this pool did not launch, known from its beat: room for one session.
    beat = InstanceHeartbeat(at=now, instance_id="agent-full", capacity={"jit": 1}, started_at=now)
    pool.fold(beat, now)
    refusals: list[CommandReply] = []

    async def full(msg: Msg) -> None:
        reply = CommandReply(ok=False, error="instance agent-full has no room", code="full")
        refusals.append(reply)
        await msg.respond(encode(reply))

    sub = await nc.subscribe(subjects.agent_control("agent-full"), cb=full)
    try:
        with pytest.raises(WorkerPending, match="no room; placing jit-s1 again") as pending:
            await pool.start_worker(JitSpec(session_id="s1"))
        assert isinstance(pending.value.__cause__, CapacityError)
        assert len(refusals) == 1 and pool.running() == {}
    finally:
        await sub.unsubscribe()
        await pool.close()


# --- processes -------------------------------------------------------------------------------


def _table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, state) of every process."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(entry.name)] = (int(fields[1]), fields[0])
    return out


def descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below ``pid``."""
    table = _table()
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return {p for p in found if table[p][1] not in ("Z", "X")}


def children_of(pid: int) -> set[int]:
    return {p for p, (ppid, state) in _table().items() if ppid == pid and state not in "ZX"}


# --- local agents under a Stack --------------------------------------------------------------


async def wait_state(http: httpx.AsyncClient, sid: str, state: str) -> None:
    """Poll the gateway (bounded) until the session is in ``state``."""
    deadline = time.monotonic() + 30
    while (await http.get(f"/session/{sid}")).json()["state"] != state:
        if time.monotonic() > deadline:
            pytest.fail(f"session {sid} not {state} within 30 s")
        await asyncio.sleep(0.1)


async def test_a_retiled_grabber_keeps_its_new_spec_whatever_its_agent_says(
    nc: Client, js: JetStreamContext
) -> None:
    """A grabber adopted from its agent's beat (the spec the agent started it with), then
    retiled in place: the pool runs the new spec from then on, though the agent's beats still
    tell the old one (retiles go to the worker, not through its agent)."""
    icfg = instance_settings.load(env={"TESSERA_CAPACITY_GRABBER": "4"})
    pool = InstancePool(nc, js, LocalInstanceProvider(nats_url="nats://unused"), icfg)
    old = GrabberSpec(key="k" * 20, url="http://cams/a.m3u8", sizes=((320, 180),))
    new = replace_struct(old, sizes=((640, 360), (320, 180)))
    wid = old.worker_id

    def agent_beat(now: float, cores: float = 2.0) -> InstanceHeartbeat:
        return InstanceHeartbeat(
            at=now, instance_id="agent-a", capacity={"grabber": 4}, used={"grabber": 1},
            workers=(wid,), specs=(old,), started_at=now, cores=cores, memory_mb=4000,
        )  # fmt: skip

    try:
        now = time.time()
        pool.fold(agent_beat(now), now)
        assert pool.running()[wid].spec == old
        pool.retiled(new)
        assert pool.running()[wid].spec == new
        pool.fold(agent_beat(now + 1), now + 1)
        assert pool.running()[wid].spec == new
        assert pool.instance_of(wid) == "agent-a"
        # Growing in place only where its agent has room for what the new spec costs more: a
        # 1080p tile at 25 fps adds about 0.23 cores; 0.3 cores at a 0.85 ceiling do not.
        huge = replace_struct(old, sizes=((1920, 1080), (320, 180)))
        assert pool.can_retile(huge)
        assert pool.can_retile(old)  # costs less: always
        pool.fold(agent_beat(now + 2, cores=0.3), now + 2)
        assert not pool.can_retile(huge) and pool.can_retile(old)
        assert not pool.can_retile(replace_struct(old, key="other"))  # not placed here
    finally:
        await pool.close()


async def test_sessions_land_on_agents_with_room_and_leave_a_lost_one(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> None:
    before = descendants(os.getpid())
    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "clip.mp4", frames=50, rate=fractions.Fraction(25))
    config = load(
        env={
            **server_env(nats_server),
            "TESSERA_DATA_DIR": str(tmp_path / "data"),
            "JIT_ORCHESTRATOR_PORT": "0",
            "JIT_MEDIA_ROOTS": str(media),
            "TESSERA_HEARTBEAT_INTERVAL": "0.2",
            "TESSERA_POLL_INTERVAL": "0.25",
            "TESSERA_SHUTDOWN_TIMEOUT": "3",
        }
    )
    icfg = instance_settings.load(
        env={
            "JIT_INSTANCE_PROVIDER_CLASS_PATH": "local",
            "TESSERA_CAPACITY_JIT": "1",
            "TESSERA_CAPACITY_GRABBER": "0",
            "TESSERA_CAPACITY_STITCHER": "0",
            "JIT_INSTANCE_POLL_INTERVAL": "0.25",
            "TESSERA_INSTANCE_HEARTBEAT_TIMEOUT": "2.5",
            "JIT_INSTANCE_READY_TIMEOUT": "30",
        }
    )
    stack = Stack(config, instances=icfg)
    frozen: int | None = None
    await stack.start()
    try:
        pool = stack.pool
        assert pool is not None and stack.provider is None and stack.gateway is not None
        agents = pool.provider
        assert isinstance(agents, LocalInstanceProvider)
        async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=20) as http:

            async def session() -> str:
                got = await http.post(
                    "/session", json={"inputs": [{"url": str(media / "clip.mp4")}]}
                )
                assert got.status_code == 201, got.text
                sid = str(got.json()["id"])
                await wait_state(http, sid, "running")
                return sid

            s1 = await session()
            first = pool.instance_of(f"jit-{s1}")
            assert first is not None and pool.views[first].managed
            s2 = await session()  # the first instance is full for JIT: another one
            second = pool.instance_of(f"jit-{s2}")
            assert second is not None and second != first
            await until(
                lambda: all(pool.views[i].used == {"jit": 1} for i in (first, second)),
                10,
                "both agents reporting their session",
            )
            frozen = agents.pid(first)
            assert frozen is not None
            (old_worker,) = children_of(frozen)

            # The first agent hangs: its beats stop, it is found lost and terminated, and its
            # session's worker goes to a new instance (the second one has no room).
            os.kill(frozen, signal.SIGSTOP)
            await until(lambda: first not in pool.views, 15, "the frozen instance to be lost")
            third = ""

            def moved() -> bool:
                nonlocal third
                third = pool.instance_of(f"jit-{s1}") or ""
                view = pool.views.get(third)
                return view is not None and f"jit-{s1}" in view.workers

            await until(moved, 30, "the session's worker restarted on a new instance")
            assert third not in (first, second)
            await until(lambda: not children_of(frozen or 0), 10, "the frozen agent to be gone")
            assert old_worker not in descendants(os.getpid())
            assert (await http.get(f"/session/{s1}")).json()["state"] == "running"

            facts = await recorded_instances(js)
            assert (facts[first].phase, facts[first].reason) == ("terminated", "lost")
            assert facts[second].phase == "ready"
            deadline = time.monotonic() + 5  # recorded by the pool's next pass
            while facts[third].phase != "ready" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                facts = await recorded_instances(js)
            assert facts[third].phase == "ready"
            assert facts[third].capacity == {"jit": 1}
            ids = {first, second, third}
    finally:
        if frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGCONT)
        await stack.stop()
        await stack.stop()  # safe twice
    facts = await recorded_instances(js)
    assert set(facts) == ids and all(f.phase == "terminated" for f in facts.values())
    await until(lambda: descendants(os.getpid()) <= before, 10, "every agent and worker to end")


# --- EC2 on moto, on a made-up clock ---------------------------------------------------------


class Clock:
    """A clock that moves only when told (starting at the real time, as moto's launch times
    are real)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ec2_pool(
    nc: Client, js: JetStreamContext, aws: dict[str, Any], clock: Clock, **env: str
) -> InstancePool:
    settings = {
        "JIT_INSTANCE_READY_TIMEOUT": "20",
        "TESSERA_INSTANCE_HEARTBEAT_TIMEOUT": "3",
        "JIT_INSTANCE_POLL_INTERVAL": "3600",  # the test runs each pass itself
        "TESSERA_CAPACITY_JIT": "1",
        "TESSERA_CAPACITY_GRABBER": "0",
        "TESSERA_CAPACITY_STITCHER": "0",
        **env,
    }
    icfg = instance_settings.load(env=config_env(aws, **settings))
    provider = load_provider("ec2", icfg, nats_url="nats://nats.internal:4222")
    assert isinstance(provider, Ec2Provider)
    provider.poll_interval = 0.05
    return InstancePool(nc, js, provider, icfg, clock=clock)


async def beat(
    nc: Client,
    pool: InstancePool,
    clock: Clock,
    iid: str,
    *,
    workers: tuple[str, ...] = (),
    idle: float = 0,
) -> None:
    """Play the agent of ``iid``: one heartbeat now, and wait until the pool has it."""
    now = clock()
    message = InstanceHeartbeat(
        at=now,
        instance_id=iid,
        capacity={"jit": 1},
        used={"jit": len(workers)} if workers else {},
        workers=workers,
        started_at=now,
        idle_since=None if workers else now - idle,
    )
    await nc.publish(subjects.instance_heartbeat(iid), encode(message))
    await until(lambda: iid in pool.views and pool.views[iid].last_beat == now, 5, f"{iid}'s beat")


def live(aws: dict[str, Any], iid: str) -> list[str]:
    """EC2 ids of the live instances tagged with our instance id ``iid``."""
    found = instances(aws["ec2"], {"Name": f"tag:{ID_TAG}", "Values": [iid]})
    return [i["InstanceId"] for i in found if i["State"]["Name"] in ("pending", "running")]


async def test_idle_and_up_time_reaping_on_a_short_clock(
    nc: Client, js: JetStreamContext, aws: dict[str, Any]
) -> None:
    clock = Clock()
    pool = ec2_pool(
        nc, js, aws, clock, JIT_INSTANCE_MAX_IDLE_TIME="5", JIT_INSTANCE_MAX_UP_TIME="50"
    )
    exits: list[tuple[str, int, bool]] = []

    async def on_exit(wid: str, code: int, expected: bool) -> None:
        exits.append((wid, code, expected))

    pool.on_exit = on_exit
    await pool.start()
    try:
        # Two sessions, room for one per instance: two launches, the workers wait for them.
        for sid in ("s1", "s2"):
            with pytest.raises(WorkerPending, match=f"jit-{sid} waits for instance inst-"):
                await pool.start_worker(JitSpec(session_id=sid))
        idle, busy = pool.instance_of("jit-s1"), pool.instance_of("jit-s2")
        assert idle and busy and idle != busy
        await until(lambda: not pool.launching, 10, "the launch calls")
        assert len(live(aws, idle)) == len(live(aws, busy)) == 1
        assert pool.running() == {}  # waiting is not running

        await beat(nc, pool, clock, idle)
        await beat(nc, pool, clock, busy, workers=("jit-s2",))  # its agent runs s2 (s1 went away)
        assert set(pool.running()) == {"jit-s2"}
        await pool.tick()
        facts = await recorded_instances(js)
        assert facts[idle].phase == facts[busy].phase == "ready"

        clock.advance(4)
        await beat(nc, pool, clock, idle, idle=4)
        await beat(nc, pool, clock, busy, workers=("jit-s2",))
        await pool.tick()
        assert set(pool.views) == {idle, busy}

        clock.advance(3)  # idle for 7 s > 5
        await beat(nc, pool, clock, idle, idle=7)
        await beat(nc, pool, clock, busy, workers=("jit-s2",))
        await pool.tick()
        assert set(pool.views) == {busy} and live(aws, idle) == []
        assert (await recorded_instances(js))[idle].reason == "idle"
        assert exits == []

        clock.advance(42)  # up 49 s: busy, not old yet
        await beat(nc, pool, clock, busy, workers=("jit-s2",))
        await pool.tick()
        assert set(pool.views) == {busy}
        clock.advance(2)  # up 51 s > 50: terminated, busy or not
        await beat(nc, pool, clock, busy, workers=("jit-s2",))
        await pool.tick()
        assert pool.views == {} and live(aws, busy) == []
        assert (await recorded_instances(js))[busy].reason == "max-up-time"
        assert exits == [("jit-s2", -1, False)] and pool.running() == {}
        assert await pool.provider.list_owned() == []
    finally:
        await pool.close()
        await pool.close()  # safe twice


async def test_a_crash_around_a_launch_gives_one_instance_and_orphans_are_reaped(
    nc: Client, js: JetStreamContext, aws: dict[str, Any]
) -> None:
    clock = Clock()
    # A controller recorded a launch and called the provider, then crashed (stop: no close).
    crashed = ec2_pool(nc, js, aws, clock)
    await crashed.start()
    with pytest.raises(WorkerPending):
        await crashed.start_worker(JitSpec(session_id="s1"))
    called = crashed.instance_of("jit-s1")
    assert called is not None
    await until(lambda: not crashed.launching, 10, "the launch call")
    await crashed.stop()
    # Another one recorded a launch and crashed before calling the provider.
    uncalled = new_instance_id()
    event = InstanceLaunched(at=clock(), instance_id=uncalled, provider="ec2", capacity={"jit": 1})
    await append(js, event)
    # An instance with our tag that no fact knows: launched by hand, or by a lost controller.
    provider = crashed.provider
    orphan = await provider.launch(LaunchRequest("inst-orphan", {"jit": 1}))
    assert len(live(aws, called)) == 1 and live(aws, uncalled) == []

    clock.advance(1)
    pool = ec2_pool(nc, js, aws, clock)
    await pool.start()
    try:
        # Both recorded launches are repeated under their ids: one instance each.
        await until(lambda: not pool.launching, 10, "the repeated launch calls")
        assert len(live(aws, called)) == 1 and len(live(aws, uncalled)) == 1
        assert {called, uncalled} <= set(pool.views) and "inst-orphan" not in pool.views
        owned = {i.instance_id for i in await pool.provider.list_owned()}
        assert owned == {called, uncalled, "inst-orphan"}

        await beat(nc, pool, clock, called)  # their agents come up
        await beat(nc, pool, clock, uncalled)
        await pool.tick()
        clock.advance(25)  # past the ready timeout: the orphan is old enough to be one
        await beat(nc, pool, clock, called)
        await beat(nc, pool, clock, uncalled)
        await pool.tick()
        assert live(aws, "inst-orphan") == [] and len(live(aws, called)) == 1
        facts = await recorded_instances(js)
        assert (facts["inst-orphan"].phase, facts["inst-orphan"].reason) == (
            "terminated",
            "orphaned",
        )
        assert facts[called].phase == facts[uncalled].phase == "ready"
        assert orphan.external_id not in {i.external_id for i in await provider.list_owned()}
    finally:
        await pool.close()
    assert await pool.provider.list_owned() == []
    facts = await recorded_instances(js)
    assert facts[called].reason == facts[uncalled].reason == "shutdown"
