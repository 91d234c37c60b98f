"""Placement by advertised capacity, against a real nats-server and two real ``tessera agent``
processes (``python -m pipeline.instances.agent``, each with its own data dir), under a
``tessera up`` Stack whose provider is ``agents`` (it launches nothing: the agents registered
themselves).

Each agent advertises just enough cores for one small mosaic (a stitcher and its four
grabbers, by their measured costs, under the 0.85 ceiling). The first mosaic lands whole on
one agent (its grabbers beside its stitcher), the second whole on the other; a third is a
``503`` from ``/create`` naming each agent's room, and so is a JIT session (no agent runs
them); the pool, asked for one more worker, refuses it with the same kind of reason and the
provider's advice. The grabbers pull a refused loopback URL: harmless, they keep reconnecting.

A provider that can launch but whose launch is refused for want of room (a CapacityError, as
Docker without a free port) makes the pool place on what it has for a while, and a worker with
no room fails with the reason and the provider's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.cli.up import Stack
from pipeline.config import instances as instance_settings
from pipeline.config.settings import load
from pipeline.errors import WorkerPending
from pipeline.instances.base import CapacityError, InstanceInfo, LaunchRequest
from pipeline.instances.pool import InstancePool
from pipeline.instances.ready import status_url_of
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import PlacementHeartbeat
from pipeline.messages.workers import GrabberSpec
from pipeline.nats import subjects
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import HEARTBEATS
from pipeline.sources.synthetic import refused_url
from pipeline.state import costs
from tests.natsenv import server_env
from tests.test_agent import until

CEILING = 0.85
SIZE = (320, 180)
TILES = 4
GRABBER = costs.grabber_cost(SIZE[0] // 2, SIZE[1] // 2, 25)
STITCHER = costs.stitcher_cost(*SIZE, 25, TILES)
ONE_MOSAIC = STITCHER.cores + TILES * GRABBER.cores
CORES = round(ONE_MOSAIC / CEILING * 1.05, 3)
"""Room for one mosaic, not for a second one, nor for one more grabber beside it."""


def tree(pid: int) -> set[int]:
    """``pid`` and its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] not in ("Z", "X"):
                    parents[int(entry.name)] = int(fields[1])
    found = {pid} if pid in parents else set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return found


@contextlib.asynccontextmanager
async def agents(
    server: EmbeddedNats, root: Path, names: tuple[str, ...]
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """``tessera agent`` processes, one per name, each told its cores; stopped (SIGTERM, then
    SIGKILL) on the way out, workers and all."""
    procs: list[asyncio.subprocess.Process] = []
    try:
        for name in names:
            env = {
                **os.environ,
                **server_env(server),
                "TESSERA_DATA_DIR": str(root / name),
                "TESSERA_INSTANCE_ID": name,
                "TESSERA_AGENT_CORES": str(CORES),
                "TESSERA_AGENT_MEMORY_MB": "4096",
                "TESSERA_CAPACITY_GRABBER": "16",
                "TESSERA_CAPACITY_STITCHER": "2",
                "TESSERA_CAPACITY_JIT": "0",
                "JIT_INSTANCE_AGENT_PORT": "0",
                "JIT_INSTANCE_AGENT_HOST": "127.0.0.1",
                "TESSERA_HEARTBEAT_INTERVAL": "0.2",
                "TESSERA_SHUTDOWN_TIMEOUT": "3",
            }
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "pipeline.instances.agent",
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )  # fmt: skip
            )
        for proc in procs:
            assert proc.stdout is not None
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line, "an agent ended before it was ready"
                if status_url_of(line.decode().strip()):
                    break
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def room_where(
    js: JetStreamContext, check: Callable[[PlacementHeartbeat], bool], within: float = 10.0
) -> PlacementHeartbeat:
    """The first room the pool publishes (read from ``HEARTBEATS``) for which ``check``
    holds."""
    subject = subjects.service_heartbeat("placement", "tessera")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(NotFoundError):
            beat = decode_heartbeat((await js.get_last_msg(HEARTBEATS.name, subject)).data or b"")
            if isinstance(beat, PlacementHeartbeat) and check(beat):
                return beat
        await asyncio.sleep(0.05)
    pytest.fail(f"no placement beat as wanted within {within} s")


async def test_mosaics_fill_agents_by_cost_beside_their_stitchers_then_503(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> None:
    config = load(
        env={
            **server_env(nats_server),
            "TESSERA_DATA_DIR": str(tmp_path / "control"),
            "JIT_ORCHESTRATOR_PORT": "0",
            "JIT_MEDIA_ROOTS": str(tmp_path),
            "TESSERA_HEARTBEAT_INTERVAL": "0.2",
            "TESSERA_POLL_INTERVAL": "0.25",
            "TESSERA_SHUTDOWN_TIMEOUT": "3",
        }
    )
    icfg = instance_settings.load(
        env={
            "JIT_INSTANCE_PROVIDER_CLASS_PATH": "agents",
            "JIT_INSTANCE_POLL_INTERVAL": "0.25",
            "TESSERA_INSTANCE_HEARTBEAT_TIMEOUT": "5",
            "TESSERA_PLACEMENT_CEILING": str(CEILING),
        }
    )
    names = ("agent-a", "agent-b")
    async with agents(nats_server, tmp_path, names) as procs:
        stack = Stack(config, instances=icfg)
        await stack.start()
        try:
            pool = stack.pool
            assert pool is not None and stack.gateway is not None and not pool.can_launch
            await until(lambda: all(n in pool.views for n in names), 10, "both agents' beats")
            assert all(pool.views[n].cores == CORES for n in names)
            assert all(pool.views[n].memory_mb == 4096 for n in names)
            async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=20) as http:

                async def create(n: int) -> httpx.Response:
                    base = refused_url(f"/m{n}")
                    pattern = f"{base}/{{{','.join(f'c{i}' for i in range(TILES))}}}.m3u8"
                    size = f"{SIZE[0]}x{SIZE[1]}"
                    return await http.get("/create", params={"urls": pattern, "size": size})

                def workers_of(fp: str) -> dict[str, str | None]:
                    """Where the pool put mosaic ``fp``'s stitcher and grabbers."""
                    controller = stack.controller
                    assert controller is not None
                    stitcher = f"stitcher-{fp}"
                    ids = [stitcher, *sorted(controller.near.get(stitcher, ()))]
                    return {wid: pool.instance_of(wid) for wid in ids}

                fps = []
                for n in (1, 2):
                    got = await create(n)
                    assert got.status_code == 302, got.text
                    fp = got.headers["location"].split("/")[2]
                    fps.append(fp)
                    await until(
                        lambda fp=fp: (
                            len(workers_of(fp)) == TILES + 1  # type: ignore[misc]
                            and all(workers_of(fp).values())
                        ),
                        15,
                        f"mosaic {n}'s workers placed",
                    )
                first, second = (set(workers_of(fp).values()) for fp in fps)
                # Each mosaic whole on one agent: grabbers beside their stitcher.
                assert first == {"agent-a"} and second == {"agent-b"}, (first, second)

                # Never past an agent's budget: what the pool counts, and what it tells.
                beat = pool.room_beat()
                assert not beat.can_launch and beat.provider == "agents"
                for room in beat.agents:
                    assert room.cores_used <= room.cores * CEILING + 1e-9
                    assert room.used == {"grabber": TILES, "stitcher": 1}

                # The gateway learns it from the pool's beat: wait for a beat showing both
                # full, and one more (the gateway follows the same stream).
                busy = await room_where(js, lambda r: all(a.used.get("stitcher") for a in r.agents))
                await room_where(js, lambda r: r.at > busy.at)

                refused = await create(3)
                assert refused.status_code == 503 and refused.headers["retry-after"] == "10"
                why = refused.json()["error"]
                assert why.startswith("no agent has room for "), why
                assert "agent-a: cores " in why and "agent-b: cores " in why
                assert f"of {CORES * CEILING:.2f}" in why and "stitcher 1 of 2" in why
                assert why.endswith("add an agent, or stop some work")

                clip = str(tmp_path / "clip.mp4")  # never opened: nothing is started
                session = await http.post("/session", json={"inputs": [{"url": clip}]})
                assert session.status_code == 503, session.text
                assert session.json()["error"].startswith("no agent has room for 1 jit")

            # The pool itself refuses one more worker, naming the room and the provider's fix.
            spec = GrabberSpec(key="extra", url=refused_url(), sizes=((160, 90),))
            with pytest.raises(CapacityError) as full:
                await pool.start_worker(spec)
            text = str(full.value)
            assert text.startswith("no agent has room for grabber-extra (grabber, ")
            assert "start another `tessera agent`" in text
            assert "grabber-extra" in pool.room_beat().unplaced
            trees = [tree(p.pid) for p in procs]
            assert all(len(t) > 1 for t in trees)  # agents with their workers
        finally:
            await stack.stop()
    await until(lambda: not any(tree(p) for t in trees for p in t), 10, "agents and workers gone")


class NoPorts:
    """A provider that can launch, but has no room to now (as Docker without a free port)."""

    name = "noports"

    async def launch(self, request: LaunchRequest) -> InstanceInfo:
        raise CapacityError("no free agent port in 8081-8081: raise JIT_CONTAINER_AGENT_PORT_MAX")

    async def wait_ready(self, instance_id: str, timeout: float) -> InstanceInfo:  # noqa: ASYNC109
        raise NotImplementedError

    async def list_owned(self) -> list[InstanceInfo]:
        return []

    async def terminate(self, instance_id: str, reason: str) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_provider_out_of_room_makes_placement_say_so(
    nc: Client, js: JetStreamContext
) -> None:
    """A launch refused for want of room (CapacityError) is not retried at every pass: for a
    while the pool places on what it has, and a worker with no room fails with the reason."""
    icfg = instance_settings.load(env={"JIT_INSTANCE_POLL_INTERVAL": "3600"})
    pool = InstancePool(nc, js, NoPorts(), icfg)
    spec = GrabberSpec(key="s1", url=refused_url(), sizes=((320, 180),))
    try:
        assert pool.can_launch
        with pytest.raises(WorkerPending, match="waits for instance"):
            await pool.start_worker(spec)  # launches one, in the background
        await until(lambda: not pool.can_launch, 5, "the refused launch")
        with pytest.raises(CapacityError) as full:
            await pool.start_worker(spec)
        assert str(full.value).startswith("no agent has room for grabber-s1 (grabber, 0.08 cores")
        assert str(full.value).endswith("raise JIT_CONTAINER_AGENT_PORT_MAX")
        beat = pool.room_beat()
        assert not beat.can_launch and beat.unplaced == ("grabber-s1",)
    finally:
        await pool.close()
