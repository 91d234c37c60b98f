"""The Docker provider, with the real docker SDK talking HTTP to a fake engine.

No Docker engine runs where these tests run, so :mod:`tests.fakes.docker_api` stands in: a
small Starlette app on loopback implementing the documented Engine API subset the provider
uses, recording every request. The tests check the exact requests of a launch and a stop,
what the container would be created with (image, command, labels, environment, network,
ports), idempotency, ``--prune`` / ``--remove-running`` / ``--keep-containers``, pulls with
registry credentials, and the errors. The last test runs against a real engine, and is
skipped unless ``/var/run/docker.sock`` answers.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from pipeline.config import instances as instance_settings
from pipeline.instances.base import (
    CapacityError,
    LaunchError,
    LaunchRequest,
    ProviderUnavailableError,
    load_provider,
)
from pipeline.instances.docker import DockerProvider
from tests.fakes.docker_api import FakeDocker

NATS = "nats://127.0.0.1:4222"


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[FakeDocker]:
    fake = FakeDocker(
        images=["tessera:latest"],
        registry={"registry.example/tessera:2": ("ci", "s3cret"), "tessera:dev": None},
    )
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def provider(engine: FakeDocker, **env: str) -> DockerProvider:
    config = instance_settings.load(env={"DOCKER_HOST": engine.base_url, **env})
    built = load_provider("docker", config, nats_url=NATS)
    assert isinstance(built, DockerProvider)
    built.poll_interval = 0.02
    return built


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container["Config"]["Env"])


async def test_launch_and_stop_make_exactly_these_requests(engine: FakeDocker) -> None:
    docker = provider(engine)
    try:
        info = await docker.launch(LaunchRequest("inst-1", {"jit": 2, "grabber": 4}))
        name = "/containers/tessera-inst-1/json"
        cid = info.external_id
        assert engine.requests() == [
            ("GET", "/version"),
            ("GET", name),
            ("GET", "/images/tessera:latest/json"),
            ("GET", "/containers/json"),
            ("POST", "/containers/create"),
            ("GET", name),
            ("POST", f"/containers/{cid}/start"),
            ("GET", name),
        ]
        assert info.instance_id == "inst-1" and info.status == "ready"
        assert info.address == "127.0.0.1:8081"

        created = engine.containers[cid]
        assert created["Name"] == "/tessera-inst-1"
        assert created["Config"]["Image"] == "tessera:latest"
        assert created["Config"]["Entrypoint"] == ["tessera"]
        assert created["Config"]["Cmd"] == ["agent"]
        assert created["Config"]["Labels"] == {
            "jit": "tessera",
            "jit.instance": "inst-1",
            "jit.slot": "0",
        }
        assert created["HostConfig"]["NetworkMode"] == "host"
        env = env_of(created)
        assert env["NATS_URL"] == NATS and env["TESSERA_INSTANCE_ID"] == "inst-1"
        assert env["JIT_INSTANCE_AGENT_PORT"] == "8081"
        assert (env["JIT_CONTAINER_PORT_MIN"], env["JIT_CONTAINER_PORT_MAX"]) == (
            "49152",
            "50789",
        )
        assert env["TESSERA_CAPACITY_JIT"] == "2" and env["TESSERA_CAPACITY_STITCHER"] == "0"
        assert "JIT_TURN" not in env

        # Launching the same id again only looks.
        again = await docker.launch(LaunchRequest("inst-1", {"jit": 2, "grabber": 4}))
        assert again.external_id == cid
        assert engine.requests() == [("GET", name)]

        # The next container gets the next agent port and UDP share.
        second = await docker.launch(LaunchRequest("inst-2", {"jit": 2}))
        assert second.address == "127.0.0.1:8082"
        listing = next(c for c in engine.calls if c.path == "/containers/json")
        assert json.loads(listing.query["filters"]) == {"label": ["jit=tessera"]}
        env2 = env_of(engine.containers[second.external_id])
        assert env2["JIT_INSTANCE_AGENT_PORT"] == "8082"
        assert env2["JIT_CONTAINER_PORT_MIN"] == str(49152 + 1638)
        engine.requests()

        ready = await docker.wait_ready("inst-1", 5)
        assert ready.status == "ready"
        assert [i.instance_id for i in await docker.list_owned()] == ["inst-1", "inst-2"]
        engine.requests()

        await docker.terminate("inst-1", "idle")
        stop, remove = engine.calls[-2:]
        assert stop.query == {"t": "10"}
        assert remove.query == {"v": "True", "link": "False", "force": "False"}
        assert engine.requests() == [
            ("GET", name),
            ("POST", f"/containers/{cid}/stop"),
            ("DELETE", f"/containers/{cid}"),
        ]
        assert cid not in engine.containers
        await docker.terminate("inst-1", "idle")  # gone: a no-op
        assert [i.instance_id for i in await docker.list_owned()] == ["inst-2"]
    finally:
        await docker.close()
        await docker.close()


async def test_stop_keeps_containers_when_asked(engine: FakeDocker) -> None:
    docker = provider(engine, JIT_CONTAINER_KEEP="1", JIT_CONTAINER_NETWORK="bridge")
    try:
        info = await docker.launch(LaunchRequest("inst-k", {"jit": 1}))
        host = engine.containers[info.external_id]["HostConfig"]
        assert host["NetworkMode"] == "bridge"
        assert host["PortBindings"] == {"8081/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8081"}]}
        engine.calls.clear()
        await docker.terminate("inst-k", "max-up-time")
        stop = engine.calls[-1]
        assert (stop.method, stop.path, stop.query) == (
            "POST",
            f"/containers/{info.external_id}/stop",
            {"t": "10"},
        )
        kept = engine.containers[info.external_id]
        assert kept["State"]["Status"] == "exited"
        assert await docker.list_owned() == []
    finally:
        await docker.close()


async def test_prune_and_remove_running_at_start(engine: FakeDocker) -> None:
    running = engine.add("old-running", {"jit": "tessera"})
    stopped = engine.add("old-stopped", {"jit": "tessera"}, status="exited")
    theirs = engine.add("someone-else", {"jit": "other-controller"}, status="exited")
    plain = engine.add("unrelated", {})
    docker = provider(engine, JIT_CONTAINER_PRUNE="1", JIT_CONTAINER_REMOVE_RUNNING="1")
    try:
        assert await docker.list_owned() == []
        calls = list(engine.calls)
        assert [(c.method, c.path) for c in calls] == [
            ("GET", "/version"),
            ("GET", "/containers/json"),
            ("DELETE", f"/containers/{running}"),
            ("POST", "/containers/prune"),
            ("GET", "/containers/json"),
        ]
        assert json.loads(calls[1].query["filters"]) == {
            "label": ["jit=tessera"],
            "status": ["running"],
        }
        assert calls[2].query["force"] == "True"
        assert json.loads(calls[3].query["filters"]) == {"label": ["jit=tessera"]}
        assert set(engine.containers) == {theirs, plain}
        assert stopped not in engine.containers
    finally:
        await docker.close()


async def test_dev_pulls_with_credentials(engine: FakeDocker) -> None:
    docker = provider(engine, JIT_DEV="1")
    try:
        info = await docker.launch(LaunchRequest("inst-d", {"jit": 1}))
        env = env_of(engine.containers[info.external_id])
        assert env["JIT_TURN"] == "1" and env["TESSERA_VERBOSE"] == "1"
        pull = next(c for c in engine.calls if c.path == "/images/create")
        assert pull.query == {"fromImage": "tessera", "tag": "dev"}
    finally:
        await docker.close()
    engine.calls.clear()

    private = {"JIT_CONTAINER_IMAGE": "registry.example/tessera:2"}
    creds = {"DOCKER_REGISTRY_USERNAME": "ci", "DOCKER_REGISTRY_PASSWORD": "s3cret"}
    docker = provider(engine, **private, **creds)
    try:
        await docker.launch(LaunchRequest("inst-p", {"jit": 1}))
        pull = next(c for c in engine.calls if c.path == "/images/create")
        header = pull.headers["x-registry-auth"]
        sent = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        assert (sent["username"], sent["password"]) == ("ci", "s3cret")
    finally:
        await docker.close()

    engine.images.discard("registry.example/tessera:2")
    docker = provider(engine, **private)  # no credentials
    try:
        with pytest.raises(LaunchError, match="DOCKER_REGISTRY_USERNAME/PASSWORD"):
            await docker.launch(LaunchRequest("inst-q", {"jit": 1}))
    finally:
        await docker.close()


async def test_errors_name_the_fix(engine: FakeDocker) -> None:
    docker = provider(engine, JIT_CONTAINER_AGENT_PORT_MAX="8082")
    try:
        await docker.launch(LaunchRequest("inst-1", {"jit": 1}))
        await docker.launch(LaunchRequest("inst-2", {"jit": 1}))
        with pytest.raises(CapacityError, match="JIT_CONTAINER_AGENT_PORT_MAX"):
            await docker.launch(LaunchRequest("inst-3", {"jit": 1}))
        cid = engine.add(
            "tessera-inst-dead", {"jit": "tessera", "jit.instance": "inst-dead"}, "exited"
        )
        engine.containers[cid]["State"]["ExitCode"] = 3
        with pytest.raises(LaunchError, match="exited with 3.*docker logs tessera-inst-dead"):
            await docker.wait_ready("inst-dead", 5)
    finally:
        await docker.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    nowhere = DockerProvider(nats_url=NATS, image="tessera:latest", base_url=refused)
    with pytest.raises(ProviderUnavailableError, match="DOCKER_HOST"):
        await nowhere.list_owned()


def _engine_answers(path: str = "/var/run/docker.sock") -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in sock.recv(256)
        except OSError:
            return False


@pytest.mark.skipif(
    not _engine_answers(), reason="no Docker engine answers on /var/run/docker.sock"
)
async def test_against_a_real_engine() -> None:
    docker = DockerProvider(
        nats_url=NATS,
        image="busybox:latest",
        owner="tessera-test",
        network="bridge",
        command=["sleep", "60"],
        agent_ports=(18081, 18082),
        poll_interval=0.1,
    )
    try:
        info = await docker.launch(LaunchRequest("inst-real", {"jit": 1}))
        await docker.wait_ready("inst-real", 60)
        assert [i.external_id for i in await docker.list_owned()] == [info.external_id]
    finally:
        await docker.terminate("inst-real", "test")
        assert await docker.list_owned() == []
        await docker.close()
