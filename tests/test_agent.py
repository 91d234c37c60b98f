"""The agent against a real nats-server.

- In process, with a recording worker launcher: commands within and beyond capacity, repeated
  commands, heartbeats, ``GET /status``, and a stop that is safe twice and stops the workers.
- Two agents as local instances (``python -m pipeline.instances.agent`` children, the local
  provider): a ``StartWorker`` lands on the one with room for its kind (placement decides, the other
  one refuses), an agent that stops heartbeating (frozen with SIGSTOP) is found ``lost`` by the
  reaping rules on a shortened clock and replaced, and after stop no process remains. The worker is
  a real ``tessera worker grabber`` pointed at a refused loopback URL: harmless, it just keeps
  reconnecting until stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from pipeline.errors import InstanceError
from pipeline.instances.agent import Agent
from pipeline.instances.base import CapacityError, LaunchRequest
from pipeline.instances.control import start_worker_on
from pipeline.instances.local import LocalInstanceProvider
from pipeline.instances.reaping import InstanceView, Policy, Reap, decide, launched, observe, place
from pipeline.messages.codec import decode_heartbeat, decode_reply, encode
from pipeline.messages.control import CommandReply, StartWorker, StopWorker
from pipeline.messages.heartbeats import InstanceHeartbeat
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec, WorkerSpec
from pipeline.nats import subjects
from pipeline.sources.synthetic import refused_url
from pipeline.state.reconcile import Running
from tests.natsenv import server_env

FAST = {"TESSERA_HEARTBEAT_INTERVAL": "0.2", "TESSERA_SHUTDOWN_TIMEOUT": "3"}


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait for ``condition`` (checked every 20 ms), or fail naming ``what``."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


async def command(nc: Client, instance_id: str, message: msgspec.Struct) -> CommandReply:
    msg = await nc.request(subjects.agent_control(instance_id), encode(message), timeout=10)
    return decode_reply(msg.data)


def gone(pid: int) -> bool:
    """The process has ended (a zombie counts: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


class Beats:
    """The controller's side: instance heartbeats folded into views, on our clock."""

    def __init__(self) -> None:
        self.views: dict[str, InstanceView] = {}
        self.last: dict[str, InstanceHeartbeat] = {}

    async def on_beat(self, msg: Msg) -> None:
        beat = decode_heartbeat(msg.data, msg.subject)
        assert isinstance(beat, InstanceHeartbeat)
        self.last[beat.instance_id] = beat
        self.views[beat.instance_id] = observe(self.views.get(beat.instance_id), beat, time.time())


# --- in process ------------------------------------------------------------------------------


class RecordingLauncher:
    """Stands in for LocalProvider: remembers what runs, starts nothing."""

    def __init__(self) -> None:
        self.runs: dict[str, Running] = {}
        self.started: list[WorkerSpec] = []
        """Every spec ``start_worker`` was given, in order."""
        self.closed = 0

    def running(self) -> dict[str, Running]:
        return dict(self.runs)

    def pid(self, worker_id: str) -> int | None:
        return 4242 if worker_id in self.runs else None

    async def start_worker(self, spec: WorkerSpec) -> int:
        self.started.append(spec)
        self.runs[spec.worker_id] = Running(spec=spec, started_at=time.time())
        return 4242

    async def stop_worker(self, worker_id: str, reason: str = "not-needed") -> int | None:
        return 0 if self.runs.pop(worker_id, None) else None

    async def close(self) -> None:
        self.closed += 1
        self.runs.clear()


@pytest_asyncio.fixture
async def agent(nc: Client) -> AsyncIterator[tuple[Agent, RecordingLauncher, Beats]]:
    launcher = RecordingLauncher()
    beats = Beats()
    sub = await nc.subscribe(subjects.instance_heartbeat("agent-t1"), cb=beats.on_beat)
    service = Agent(
        nc,
        "agent-t1",
        {"jit": 1, "grabber": 2, "stitcher": 0},
        host="127.0.0.1",
        port=0,
        heartbeat_interval=0.1,
        worker_launcher=launcher,
    )
    await service.start()
    try:
        yield service, launcher, beats
    finally:
        await service.stop()
        await sub.unsubscribe()


async def test_agent_obeys_capacity_and_reports(
    nc: Client, agent: tuple[Agent, RecordingLauncher, Beats]
) -> None:
    service, launcher, beats = agent
    await until(lambda: "agent-t1" in beats.last, 5, "the registration beat")
    first = beats.last["agent-t1"]
    assert first.capacity == {"jit": 1, "grabber": 2} and first.used == {}
    assert first.idle_since is not None and first.started_at == service.started_at

    s1 = JitSpec(session_id="s1")
    assert (await command(nc, "agent-t1", StartWorker(spec=s1))).ok
    assert (await command(nc, "agent-t1", StartWorker(spec=s1))).ok  # again: a no-op
    assert list(launcher.runs) == ["jit-s1"]
    refused = await command(nc, "agent-t1", StartWorker(spec=JitSpec(session_id="s2")))
    assert not refused.ok and refused.code == "full"
    assert refused.error == (
        "instance agent-t1 is full for jit workers (1 of 1 running): "
        "place jit-s2 on another instance"
    )
    none = await command(nc, "agent-t1", StartWorker(spec=StitcherSpec(fp="fp")))
    assert not none.ok and none.code == "full" and "(0 of 0 running)" in none.error
    with pytest.raises(CapacityError, match="agent-t1 is full for jit workers"):
        await start_worker_on(nc, "agent-t1", JitSpec(session_id="s3"))
    bad = await command(nc, "agent-t1", StartWorker(spec=JitSpec(session_id="a.b")))
    assert not bad.ok and bad.code == "" and "cannot be a subject token" in bad.error
    garbage = await nc.request(subjects.agent_control("agent-t1"), b"{}", timeout=5)
    assert "cannot decode agent command" in decode_reply(garbage.data).error
    with pytest.raises(InstanceError, match="no agent listens on ctl.agent.agent-nobody"):
        await start_worker_on(nc, "agent-nobody", s1)

    await until(lambda: beats.last["agent-t1"].used == {"jit": 1}, 5, "a beat with the worker")
    busy = beats.last["agent-t1"]
    assert busy.workers == ("jit-s1",) and busy.idle_since is None

    async with httpx.AsyncClient() as http:
        status = (await http.get(service.status_url)).json()
        base = service.status_url.rsplit("/", 1)[0]
        assert (await http.get(f"{base}/healthz")).json()["nats"]["connected"] is True
        ready = await http.get(f"{base}/readyz")
        assert ready.status_code == 200 and ready.json()["state"] == "running"
    assert status["instance_id"] == "agent-t1"
    assert status["used"] == {"jit": 1} and status["capacity"] == {"jit": 1, "grabber": 2}
    assert status["workers"][0]["worker_id"] == "jit-s1" and status["workers"][0]["pid"] == 4242
    assert status["nats"]["connected"] and status["idle_s"] is None

    assert (await command(nc, "agent-t1", StopWorker(worker_id="jit-s1"))).ok
    assert (await command(nc, "agent-t1", StopWorker(worker_id="jit-s1"))).ok  # gone: fine
    await until(lambda: beats.last["agent-t1"].idle_since is not None, 5, "an idle beat")

    await service.start()  # a second start does nothing
    await launcher.start_worker(StitcherSpec(fp="g1"))
    await service.stop()
    await service.stop()
    assert launcher.closed == 1 and not launcher.runs
    last = beats.last["agent-t1"]
    assert last.used == {} and last.idle_since is not None


async def test_the_worker_gets_exactly_the_spec_the_controller_sent(
    nc: Client, agent: tuple[Agent, RecordingLauncher, Beats]
) -> None:
    """The spec crosses NATS whole: the launcher is given a struct equal to the one sent, of
    the same type, every field as it was (a URL with a query and a password, a fractional
    rate), with no string form on the way."""
    service, launcher, _ = agent
    spec = GrabberSpec(
        key="src1",
        url="rtsp://user:p%40ss@cam.example:554/live?channel=1&subtype=0",
        sizes=((64, 36), (32, 18)),
        fps=12.5,
    )
    await start_worker_on(nc, service.instance_id, spec)
    assert launcher.started == [spec]
    assert type(launcher.started[0]) is GrabberSpec
    assert launcher.runs[spec.worker_id].spec == spec


async def test_capacity_is_told_by_the_reply_code_not_its_words(nc: Client) -> None:
    """``start_worker_on`` raises CapacityError on ``code="full"`` whatever the error says,
    and a plain InstanceError on any other refusal, even one that reads like a full agent."""
    replies = {
        "agent-words": CommandReply(ok=False, error="instance agent-words is full for jit"),
        "agent-code": CommandReply(ok=False, error="no room here", code="full"),
    }

    async def answer(msg: Msg) -> None:
        await msg.respond(encode(replies[msg.subject.rsplit(".", 1)[1]]))

    subs = [await nc.subscribe(subjects.agent_control(iid), cb=answer) for iid in replies]
    try:
        spec = JitSpec(session_id="s1")
        with pytest.raises(InstanceError, match="refused jit-s1") as refused:
            await start_worker_on(nc, "agent-words", spec)
        assert not isinstance(refused.value, CapacityError)
        with pytest.raises(CapacityError, match="no room here"):
            await start_worker_on(nc, "agent-code", spec)
    finally:
        for sub in subs:
            await sub.unsubscribe()


# --- agents as local instances ---------------------------------------------------------------


async def test_two_local_agents_place_replace_and_leave_nothing(
    nc: Client, nats_server: object
) -> None:
    env = server_env(nats_server)  # type: ignore[arg-type]
    provider = LocalInstanceProvider(
        nats_url=env["NATS_URL"], env={**os.environ, **FAST, **env}, grace=2.0
    )
    beats = Beats()
    sub = await nc.subscribe("hb.instance.*", cb=beats.on_beat)
    policy = Policy(max_idle=600, max_up=3600, ready_timeout=30, heartbeat_timeout=1.0)
    pids: list[int] = []

    async def launch(iid: str, capacity: dict[str, int]) -> None:
        beats.views[iid] = launched(iid, capacity, time.time())  # recorded before it runs
        info = await provider.launch(LaunchRequest(iid, capacity))
        pids.append(int(info.external_id))
        again = await provider.launch(LaunchRequest(iid, capacity))  # a retry: the same one
        assert again.external_id == info.external_id

    def views() -> list[InstanceView]:
        return list(beats.views.values())

    try:
        await asyncio.gather(launch("agent-a", {"jit": 1}), launch("agent-b", {"grabber": 1}))
        ready = await asyncio.gather(
            provider.wait_ready("agent-a", 30), provider.wait_ready("agent-b", 30)
        )
        assert all(i.status == "ready" and i.address.startswith("127.0.0.1:") for i in ready)
        await until(lambda: all(v.ready for v in views()), 10, "two registrations")
        assert all(v.managed for v in views())

        # A grabber needs a place: only agent-b has room for grabbers.
        spec = GrabberSpec(key="src1", url=refused_url(), sizes=((64, 36),), fps=5)
        placement = place([(spec.worker_id, "grabber")], views(), {}, time.time(), policy)
        assert placement.assign == {spec.worker_id: "agent-b"}
        await start_worker_on(nc, "agent-b", spec)
        with pytest.raises(CapacityError, match="agent-a is full for grabber workers \\(0 of 0"):
            await start_worker_on(nc, "agent-a", spec)
        await until(lambda: beats.last["agent-b"].used == {"grabber": 1}, 10, "agent-b running it")
        async with httpx.AsyncClient() as http:
            status = (await http.get(f"http://{ready[1].address}/status")).json()
        worker_pid = status["workers"][0]["pid"]
        assert isinstance(worker_pid, int) and not gone(worker_pid)
        pids.append(worker_pid)

        # agent-a hangs: its beats stop, the reaping rules call it lost, it is replaced.
        a_pid = provider.pid("agent-a")
        assert a_pid is not None
        os.kill(a_pid, signal.SIGSTOP)
        lost = Reap("agent-a", "lost")

        async def reaped() -> bool:
            decision = decide(await provider.list_owned(), dict(beats.views), time.time(), policy)
            return lost in decision.terminate

        await until_async(reaped, 10, "agent-a to be found lost")
        await provider.terminate("agent-a", "lost")  # SIGTERM waits, SIGKILL ends it
        beats.views.pop("agent-a")
        assert gone(a_pid)

        placement = place([("jit-s1", "jit")], views(), {"jit": 1}, time.time(), policy)
        assert placement.launch == (("jit-s1",),)  # nobody else runs JIT sessions
        await launch("agent-c", {"jit": 1})
        await provider.wait_ready("agent-c", 30)
        await until(lambda: beats.views["agent-c"].ready, 10, "agent-c's registration")
        placement = place([("jit-s1", "jit")], views(), {"jit": 1}, time.time(), policy)
        assert placement.assign == {"jit-s1": "agent-c"}
        assert [i.instance_id for i in await provider.list_owned()] == ["agent-b", "agent-c"]
    finally:
        await provider.close()
        await provider.close()  # safe twice
        await sub.unsubscribe()
    assert await provider.list_owned() == []
    await until(lambda: all(gone(pid) for pid in pids), 5, "every agent and worker to end")


async def until_async(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Like :func:`until`, for a condition that has to ask someone."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)
