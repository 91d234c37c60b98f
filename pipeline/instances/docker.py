"""Instances as Docker containers on one host (the docker SDK's low-level ``APIClient``).

Each instance is a container of the configured image running ``tessera agent``, named
``tessera-<instance id>`` and labelled ``jit=<owner>`` (ownership), ``jit.instance=<id>`` and
``jit.slot=<n>``. The slot gives the container its own agent port (8081-8090 by default:
``JIT_CONTAINER_AGENT_PORT_MIN/MAX``) and its own share of the WebRTC UDP range
(``JIT_CONTAINER_PORT_MIN/MAX``), so containers on host networking never collide. On another
network the agent port is published on loopback and WebRTC goes through TURN (``--turn``).

- **Idempotency**: the container name is the launch token; launching an existing name starts
  and returns that container, and a create that loses a race (409 Conflict) does the same.
- **Start-up**: ``--prune`` removes stopped ``jit`` containers of this owner, and
  ``--remove-running`` running ones, the first time the engine is used.
- **Terminate**: stop (SIGTERM, then SIGKILL after the stop timeout), then remove unless
  ``--keep-containers``.
- **Pulls** use ``DOCKER_REGISTRY_USERNAME/PASSWORD`` when set, only if the image is missing.

Docker Engine API calls made (all under ``/v<api version>``): ``GET /version`` (version
negotiation), ``GET /containers/json`` (list by label), ``GET /containers/{id}/json``,
``POST /containers/create``, ``POST /containers/{id}/start``, ``POST /containers/{id}/stop``,
``DELETE /containers/{id}``, ``POST /containers/prune``, ``GET /images/{name}/json``,
``POST /images/create`` (pull). The SDK is synchronous: calls run in a thread, one at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pipeline.config.instances import capacity_env
from pipeline.errors import ConfigError, InstanceError
from pipeline.instances.base import (
    CapacityError,
    InstanceInfo,
    InstanceNotFoundError,
    InstanceStatus,
    LaunchError,
    LaunchRequest,
    ProviderUnavailableError,
)
from pipeline.instances.polling import poll_until

if TYPE_CHECKING:
    from pipeline.config.instances import InstanceConfig

log = logging.getLogger("tessera.instances.docker")

OWNER_LABEL = "jit"
INSTANCE_LABEL = "jit.instance"
SLOT_LABEL = "jit.slot"
AGENT_COMMAND = ("tessera", "agent")

_STATUS: dict[str, InstanceStatus] = {
    "created": "pending",
    "restarting": "pending",
    "running": "ready",
    "paused": "ready",
    "removing": "stopping",
    "exited": "stopped",
    "dead": "stopped",
}
_LIVE = ("created", "restarting", "running", "paused")


@dataclass(frozen=True)
class Slot:
    """One container's ports: its agent's TCP port and its share of the WebRTC UDP range."""

    index: int
    agent_port: int
    udp_min: int
    udp_max: int


def slot(index: int, agent_ports: tuple[int, int], udp_ports: tuple[int, int]) -> Slot:
    """The ports of slot ``index``: the UDP range split evenly over the agent ports."""
    count = agent_ports[1] - agent_ports[0] + 1
    if not 0 <= index < count:
        raise ValueError(f"slot {index} is outside 0-{count - 1}")
    size = (udp_ports[1] - udp_ports[0] + 1) // count
    if size < 1:
        raise ConfigError(
            f"the UDP range {udp_ports[0]}-{udp_ports[1]} is smaller than the {count} agent ports "
            "it is shared by: widen JIT_CONTAINER_PORT_MIN/MAX or narrow "
            "JIT_CONTAINER_AGENT_PORT_MIN/MAX"
        )
    low = udp_ports[0] + index * size
    return Slot(index, agent_ports[0] + index, low, low + size - 1)


def free_slot(used: Iterable[int], count: int) -> int | None:
    """The lowest slot in ``0..count-1`` not in ``used``; None when all are taken."""
    taken = set(used)
    return next((i for i in range(count) if i not in taken), None)


def container_name(instance_id: str) -> str:
    """The container of an instance (the launch token)."""
    return f"tessera-{instance_id}"


class DockerProvider:
    """Launches instances as containers. Build it with :meth:`from_config`."""

    name = "docker"

    def __init__(
        self,
        *,
        nats_url: str,
        image: str,
        owner: str = "tessera",
        base_url: str | None = None,
        network: str = "host",
        prune: bool = False,
        remove_running: bool = False,
        keep_containers: bool = False,
        turn: bool = False,
        verbose: bool = False,
        agent_ports: tuple[int, int] = (8081, 8090),
        udp_ports: tuple[int, int] = (49152, 65535),
        registry_auth: Mapping[str, str] | None = None,
        agent_env: Mapping[str, str] | None = None,
        stop_timeout: int = 10,
        poll_interval: float = 0.5,
        api_version: str = "auto",
        command: Sequence[str] = AGENT_COMMAND,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nats_url = nats_url
        self.image = image
        self.owner = owner
        self.base_url = base_url or "unix:///var/run/docker.sock"
        self.network = network
        self.prune = prune
        self.remove_running = remove_running
        self.keep_containers = keep_containers
        self.turn = turn
        self.verbose = verbose
        self.agent_ports = agent_ports
        self.udp_ports = udp_ports
        slot(0, agent_ports, udp_ports)  # ConfigError now if the ranges cannot be shared
        self.registry_auth = dict(registry_auth) if registry_auth else None
        self.agent_env = dict(agent_env or {})
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.api_version = api_version
        self.command = list(command)
        self._clock = clock
        self._api: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: InstanceConfig, *, nats_url: str) -> DockerProvider:
        """The provider the settings describe."""
        auth = None
        if config.registry_username and config.registry_password:
            auth = {"username": config.registry_username, "password": config.registry_password}
        return cls(
            nats_url=nats_url,
            image=config.container_image,
            owner=config.owner_id,
            base_url=config.docker_host,
            network=config.network,
            prune=config.prune,
            remove_running=config.remove_running,
            keep_containers=config.keep_containers,
            turn=config.dev,
            verbose=config.dev,
            agent_ports=(config.agent_port_min, config.agent_port_max),
            udp_ports=(config.container_port_min, config.container_port_max),
            registry_auth=auth,
        )

    @property
    def slots(self) -> int:
        """How many containers may run at once (one per agent port)."""
        return self.agent_ports[1] - self.agent_ports[0] + 1

    # --- the engine ------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One SDK call in a thread, errors translated (the caller holds the lock)."""
        import docker.errors

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            error = _Conflict if exc.status_code == 409 else InstanceError
            raise error(f"Docker {what} failed: {exc.explanation or exc}") from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise ProviderUnavailableError(
                f"Docker {what} failed at {self.base_url}: {exc}: is Docker running? "
                "(DOCKER_HOST / --docker-host)"
            ) from exc

    async def _engine(self) -> Any:
        """The API client; on first use, prune and remove as the settings say."""
        if self._api is not None:
            return self._api
        import docker
        import docker.errors

        try:
            api = await asyncio.to_thread(
                docker.APIClient, base_url=self.base_url, version=self.api_version, timeout=30
            )
        except docker.errors.DockerException as exc:
            raise ProviderUnavailableError(
                f"cannot reach the Docker engine at {self.base_url}: {exc}: is Docker running? "
                "Point DOCKER_HOST (--docker-host) at it"
            ) from exc
        self._api = api
        label = f"{OWNER_LABEL}={self.owner}"
        if self.remove_running:
            running = await self._call(
                "list", api.containers, filters={"label": [label], "status": ["running"]}
            )
            for c in running:
                await self._call("remove", api.remove_container, c["Id"], v=True, force=True)
                log.info("removed running container", extra={"container": c["Id"][:12]})
        if self.prune:
            await self._call("prune", api.prune_containers, filters={"label": [label]})
        return api

    async def _containers(self, *, all_states: bool = True) -> list[dict[str, Any]]:
        api = await self._engine()
        label = f"{OWNER_LABEL}={self.owner}"
        found: list[dict[str, Any]] = await self._call(
            "list", api.containers, all=all_states, filters={"label": [label]}
        )
        return found

    async def _inspect(self, name: str) -> dict[str, Any] | None:
        import docker.errors

        api = await self._engine()
        try:
            found: dict[str, Any] = await self._call("inspect", api.inspect_container, name)
        except docker.errors.NotFound:
            return None
        labels = found.get("Config", {}).get("Labels") or {}
        if labels.get(OWNER_LABEL) != self.owner:
            return None  # same name, not ours: never touch it
        return found

    def _address(self, port: int) -> str:
        host = "127.0.0.1"
        if self.base_url.startswith(("tcp://", "http://", "https://")):
            host = urlparse(self.base_url).hostname or host
        return f"{host}:{port}"

    def _info_of(
        self, labels: Mapping[str, str], cid: str, state: str, created: float
    ) -> InstanceInfo:
        index = int(labels.get(SLOT_LABEL, "0"))
        port = slot(index, self.agent_ports, self.udp_ports).agent_port
        return InstanceInfo(
            instance_id=labels.get(INSTANCE_LABEL, cid[:12]),
            provider=self.name,
            external_id=cid,
            status=_STATUS.get(state, "stopped"),
            launched_at=created,
            address=self._address(port),
        )

    def _info_inspected(self, c: Mapping[str, Any]) -> InstanceInfo:
        labels = c.get("Config", {}).get("Labels") or {}
        state = c.get("State", {}).get("Status", "")
        return self._info_of(labels, str(c["Id"]), state, _parse_time(c.get("Created")))

    # --- the provider ----------------------------------------------------------------------

    def environment(self, request: LaunchRequest, ports: Slot) -> dict[str, str]:
        """The agent's environment in the container of ``request``."""
        env = {**self.agent_env, **capacity_env(request.capacity)}
        env.update(
            {
                "NATS_URL": self.nats_url,
                "TESSERA_INSTANCE_ID": request.instance_id,
                "JIT_INSTANCE_AGENT_HOST": "0.0.0.0",
                "JIT_INSTANCE_AGENT_PORT": str(ports.agent_port),
                "JIT_CONTAINER_PORT_MIN": str(ports.udp_min),
                "JIT_CONTAINER_PORT_MAX": str(ports.udp_max),
            }
        )
        if self.turn:
            env["JIT_TURN"] = "1"
        if self.verbose:
            env["TESSERA_VERBOSE"] = "1"
        return env

    async def launch(self, request: LaunchRequest) -> InstanceInfo:
        """Create and start the container, or start and return the one with this name."""
        import docker.errors

        name = container_name(request.instance_id)
        async with self._lock:
            api = await self._engine()
            existing = await self._inspect(name)
            if existing is None:
                await self._ensure_image(api)
                used = [
                    int(c.get("Labels", {}).get(SLOT_LABEL, "-1"))
                    for c in await self._containers()
                    if c.get("State") in _LIVE
                ]
                index = free_slot(used, self.slots)
                if index is None:
                    raise CapacityError(
                        f"all {self.slots} agent ports {self.agent_ports[0]}-{self.agent_ports[1]}"
                        " are in use: raise JIT_CONTAINER_AGENT_PORT_MAX to run more containers"
                    )
                ports = slot(index, self.agent_ports, self.udp_ports)
                try:
                    await self._create(api, name, request, ports)
                except docker.errors.NotFound as exc:
                    raise LaunchError(f"Docker create {name}: {exc}") from exc
                except _Conflict:
                    pass  # created by a racing launch of the same id: use that one
                existing = await self._inspect(name)
                if existing is None:
                    raise LaunchError(f"container {name} vanished right after it was created")
            if not existing.get("State", {}).get("Running"):
                await self._call("start", api.start, existing["Id"])
                existing = await self._inspect(name) or existing
        info = self._info_inspected(existing)
        log.info("instance launched", extra={"instance": request.instance_id, "container": name})
        return InstanceInfo(
            instance_id=request.instance_id,
            provider=info.provider,
            external_id=info.external_id,
            status=info.status,
            launched_at=info.launched_at,
            address=info.address,
            capacity=dict(request.capacity),
        )

    async def _create(self, api: Any, name: str, request: LaunchRequest, ports: Slot) -> None:
        labels = {
            OWNER_LABEL: self.owner,
            INSTANCE_LABEL: request.instance_id,
            SLOT_LABEL: str(ports.index),
        }
        if self.network == "host":
            host_config = api.create_host_config(network_mode="host")
            exposed = None
        else:
            host_config = api.create_host_config(
                network_mode=self.network,
                port_bindings={ports.agent_port: ("127.0.0.1", ports.agent_port)},
            )
            exposed = [ports.agent_port]
        await self._call(
            "create",
            api.create_container,
            self.image,
            entrypoint=self.command[:1],  # explicit, whatever the image's ENTRYPOINT is
            command=self.command[1:],
            name=name,
            environment=self.environment(request, ports),
            labels=labels,
            ports=exposed,
            host_config=host_config,
            stop_signal="SIGTERM",
        )

    async def _ensure_image(self, api: Any) -> None:
        import docker.errors

        try:
            await self._call("inspect image", api.inspect_image, self.image)
            return
        except docker.errors.NotFound:
            pass
        log.info("pulling image", extra={"image": self.image})
        try:
            output = await self._call("pull", api.pull, self.image, auth_config=self.registry_auth)
        except docker.errors.NotFound as exc:
            raise LaunchError(
                f"image {self.image} not found: build it, or check JIT_CONTAINER_IMAGE"
            ) from exc
        except ProviderUnavailableError:
            raise
        except InstanceError as exc:
            raise LaunchError(
                f"cannot pull {self.image}: {exc} (registry credentials: "
                "DOCKER_REGISTRY_USERNAME/PASSWORD)"
            ) from exc
        for line in str(output).splitlines():
            try:
                error = json.loads(line).get("error")
            except ValueError:
                continue
            if error:
                raise LaunchError(
                    f"cannot pull {self.image}: {error} (registry credentials: "
                    "DOCKER_REGISTRY_USERNAME/PASSWORD)"
                )

    async def wait_ready(self, instance_id: str, timeout: float) -> InstanceInfo:  # noqa: ASYNC109
        """Wait until the container runs; LaunchError if it exits first."""
        name = container_name(instance_id)

        async def check() -> InstanceInfo | None:
            async with self._lock:
                found = await self._inspect(name)
            if found is None:
                raise InstanceNotFoundError(f"no container {name} of ours")
            state = found.get("State", {})
            if state.get("Status") in ("exited", "dead"):
                raise LaunchError(
                    f"container {name} exited with {state.get('ExitCode')} while starting: "
                    f"see `docker logs {name}`"
                )
            info = self._info_inspected(found)
            return info if state.get("Running") else None

        return await poll_until(
            check, timeout=timeout, interval=self.poll_interval, what=f"container {name}"
        )

    async def list_owned(self) -> list[InstanceInfo]:
        """Our containers that have not exited."""
        async with self._lock:
            found = await self._containers()
        infos = [
            self._info_of(
                c.get("Labels") or {}, str(c["Id"]), str(c.get("State")), float(c["Created"])
            )
            for c in found
            if c.get("State") in _LIVE
        ]
        return sorted(infos, key=lambda i: i.instance_id)

    async def terminate(self, instance_id: str, reason: str) -> None:
        """Stop the container and remove it (unless ``--keep-containers``); gone is fine."""
        import docker.errors

        name = container_name(instance_id)
        async with self._lock:
            found = await self._inspect(name)
            if found is None:
                return
            api = await self._engine()
            try:
                if found.get("State", {}).get("Running"):
                    await self._call("stop", api.stop, found["Id"], timeout=self.stop_timeout)
                if not self.keep_containers:
                    await self._call("remove", api.remove_container, found["Id"], v=True)
            except docker.errors.NotFound:
                return
        log.info("instance terminated", extra={"instance": instance_id, "reason": reason})

    async def close(self) -> None:
        """Close the engine client. Safe twice."""
        api, self._api = self._api, None
        if api is not None:
            await asyncio.to_thread(api.close)


class _Conflict(InstanceError):
    """The engine answered 409: the name is taken (a racing create)."""


def _parse_time(text: Any) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, ``Z``) as Unix seconds."""
    if not isinstance(text, str) or not text:
        return time.time()
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    digits = "".join(ch for ch in frac if ch.isdigit())[:6]
    return stamp + (int(digits) / 10 ** len(digits) if digits else 0.0)
