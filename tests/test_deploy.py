"""Tessera on several machines with plain commands (docs/deploy.md, "Three machines"):

- ``tessera deploy nats`` renders each server's config; three ``nats-server -c FILE`` form a
  JetStream cluster that knows Tessera's users (each role gets in with its password, a wrong
  one does not);
- ``tessera controller`` and ``tessera gateway`` are separate processes on ``NATS_URL``: the
  gateway's ``/readyz`` follows the projector's heartbeat (ready once it caught up, not ready
  once it stopped or went silent), and both stop cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from gateway.health import PROJECTOR_BEAT, ProjectorBeat
from pipeline.messages.heartbeats import ServiceHeartbeat
from pipeline.nats import auth as natsauth
from pipeline.nats.beats import HeartbeatCache
from pipeline.nats.cluster import free_ports
from pipeline.nats.connect import servers
from pipeline.nats.server import EmbeddedNats, find_binary
from tests.natsenv import server_env

TESSERA = [sys.executable, "-m", "pipeline"]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "TESSERA_", "JIT_"))}
    return {**env, "TESSERA_DATA_DIR": str(data_dir), **extra}


async def _run(*argv: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _start(
    *argv: str, env: dict[str, str], ready: str
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    if not line.startswith(ready):
        proc.kill()
        _, err = await proc.communicate()
        raise AssertionError(f"{argv[3:]}: no ready line ({line!r}):\n{err.decode()[-3000:]}")
    return proc, line.split(": ", 1)[1].strip()


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(30):
            await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return proc.returncode


async def test_three_nats_servers_from_tessera_deploy_nats_form_a_cluster(tmp_path: Path) -> None:
    client, route = free_ports(3), free_ports(3)
    users = tmp_path / "nats-users.json"
    procs = []
    try:
        for i in range(3):
            others = ",".join(f"127.0.0.1:{route[j]}" for j in range(3) if j != i)
            conf = tmp_path / f"nats-{i}.conf"
            printed = await _run(
                *TESSERA, "deploy", "nats", "--out", str(conf), "--server-name", f"nats-{i}",
                "--routes", others, "--cluster-listen", f"127.0.0.1:{route[i]}",
                "--store-dir", str(tmp_path / f"store-{i}"), "--monitor", "",
                env=_env(tmp_path, TESSERA_NATS_USERS=str(users)),
            )  # fmt: skip
            assert f"nats-server -c {conf} -a 0.0.0.0 -p 4222" in printed
            assert conf.stat().st_mode & 0o777 == 0o600  # it holds the passwords
            procs.append(
                await asyncio.create_subprocess_exec(
                    find_binary(),
                    "-c",
                    str(conf),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(client[i]),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            )
        passwords = natsauth.load(users)
        url = ",".join(f"nats://127.0.0.1:{port}" for port in client)
        admin = natsauth.with_credentials(url, "admin", passwords["admin"])
        deadline = time.monotonic() + 30
        while True:  # until the three have a JetStream meta leader and a stream of 3 copies
            try:
                nc = await nats.connect(servers(admin), connect_timeout=2)
                try:
                    await nc.jetstream().add_stream(
                        StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3)
                    )
                    break
                finally:
                    await nc.close()
            except (nats.errors.Error, APIError, OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        for role in natsauth.ROLES:
            nc = await nats.connect(
                servers(natsauth.with_credentials(url, role, passwords[role])), connect_timeout=2
            )
            await nc.close()
        with pytest.raises(nats.errors.Error):
            await nats.connect(
                servers(natsauth.with_credentials(url, "gateway", "wrong")),
                connect_timeout=2,
                max_reconnect_attempts=1,
            )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


async def test_controller_and_gateway_as_processes_of_their_own(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> None:
    env = _env(tmp_path, **server_env(nats_server), TESSERA_HEARTBEAT_INTERVAL="0.2")
    controller, line = await _start(
        *TESSERA, "controller", "--instance-provider", "agents",
        env={**env, "TESSERA_DATA_DIR": str(tmp_path / "a")},
        ready="Tessera controller is up: ",
    )  # fmt: skip
    try:
        assert "agents instances" in line and nats_server.url.split("//")[1] in line
        gateway, url = await _start(
            *TESSERA, "gateway", "--port", "0",
            env={**env, "TESSERA_DATA_DIR": str(tmp_path / "b")},
            ready="Tessera gateway is up: ",
        )  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:
                await _until(http, 200)  # the projector's heartbeat says it caught up
                assert await _stop(controller) == 0
                body = await _until(http, 503)  # its last beat says it stopped
                assert body["projections"] == {"caught_up": False}
                assert (await http.get("/healthz")).status_code == 200  # alive all the same
        finally:
            assert await _stop(gateway) == 0
    finally:
        await _stop(controller)


async def _until(http: httpx.AsyncClient, status: int, within: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + within
    while True:
        got = await http.get("/readyz")
        if got.status_code == status:
            body: dict[str, object] = got.json()
            return body
        assert time.monotonic() < deadline, f"/readyz stayed {got.status_code}: {got.text}"
        await asyncio.sleep(0.1)


def test_readiness_from_the_projectors_heartbeat() -> None:
    """Ready while the newest projector beat is caught up, running and fresh."""
    now = [1000.0]
    beats = HeartbeatCache(None, clock=lambda: now[0])  # type: ignore[arg-type]  # never started
    ready = ProjectorBeat(beats, stale_after=3.0)

    def beat(at: float, *, caught_up: bool = True, running: bool = True) -> None:
        sent = ServiceHeartbeat(
            at=at, service="projector", id="main", caught_up=caught_up, running=running
        )
        beats.latest[PROJECTOR_BEAT] = (sent, now[0])

    assert not ready()  # never heard of
    beat(999.0, caught_up=False)
    assert not ready()  # still folding
    beat(999.5)
    assert ready()
    now[0] = 1003.0
    assert not ready()  # 3.5 s old: the controller went away
    beat(1002.9, running=False)
    assert not ready()  # it stopped
