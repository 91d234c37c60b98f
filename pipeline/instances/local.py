"""Instances as local agent processes: ``python -m pipeline.instances.agent`` children of this
process.

The one-machine provider, and the one tests use to run several agents on loopback. Each agent
is a child in its own process group with the parent-death signal set
(:mod:`pipeline.runtime.procs`), its HTTP status on a free loopback port, and its stderr on
ours. It is ready once it printed its ready line (:mod:`pipeline.instances.ready`): by then it
is connected, subscribed and registered. Terminating sends SIGTERM (the agent stops its
workers), then SIGKILL after the grace period, and always reaps.

Idempotency: launching an id that runs returns it. Agents die with this process, so after a
crash there is nothing left to find, and ``list_owned`` lists only this process's children.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pipeline.config.instances import capacity_env
from pipeline.instances.base import (
    InstanceInfo,
    InstanceNotFoundError,
    LaunchError,
    LaunchRequest,
    NotReadyError,
)
from pipeline.instances.ready import status_url_of
from pipeline.runtime.procs import die_with_parent, stop_process
from pipeline.runtime.tasks import Tasks, cancel_and_wait

if TYPE_CHECKING:
    from pipeline.config.instances import InstanceConfig

log = logging.getLogger("tessera.instances.local")


@dataclass
class _Agent:
    info: InstanceInfo
    proc: asyncio.subprocess.Process
    ready: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    reader: asyncio.Task[None] | None = None


class LocalInstanceProvider:
    """Runs each instance as a local ``python -m pipeline.instances.agent`` process."""

    name = "local"

    def __init__(
        self,
        *,
        nats_url: str,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        grace: float = 10.0,
        python: str = sys.executable,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nats_url = nats_url
        self._env = dict(os.environ if env is None else env)
        self.host = host
        self.grace = grace
        self._python = python
        self._clock = clock
        self._agents: dict[str, _Agent] = {}
        self._readers = Tasks("local instances")
        """Each agent's stdout reader: one group, so that none outlives :meth:`close`."""

    @classmethod
    def from_config(cls, config: InstanceConfig, *, nats_url: str) -> LocalInstanceProvider:
        """The provider the settings describe."""
        return cls(nats_url=nats_url, host="127.0.0.1")

    def argv(self, instance_id: str) -> list[str]:
        """The command line of one agent (a free port on loopback)."""
        return [
            self._python,
            "-m",
            "pipeline.instances.agent",
            "--instance-id",
            instance_id,
            "--agent-host",
            self.host,
            "--agent-port",
            "0",
        ]

    def pid(self, instance_id: str) -> int | None:
        """Process id of a running agent."""
        agent = self._agents.get(instance_id)
        return agent.proc.pid if agent else None

    async def launch(self, request: LaunchRequest) -> InstanceInfo:
        """Start an agent process for ``request`` unless one runs under that id."""
        existing = self._agents.get(request.instance_id)
        if existing is not None:
            if existing.proc.returncode is None:
                return existing.info
            await self._forget(existing)  # it ended: start a new one under the same id
        env = dict(self._env)
        env.update(capacity_env(request.capacity))
        env["NATS_URL"] = self.nats_url
        env["TESSERA_INSTANCE_ID"] = request.instance_id
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(request.instance_id),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise LaunchError(
                f"cannot start the agent of instance {request.instance_id}: {exc}"
            ) from exc
        info = InstanceInfo(
            instance_id=request.instance_id,
            provider=self.name,
            external_id=str(proc.pid),
            status="pending",
            launched_at=self._clock(),
            capacity=dict(request.capacity),
        )
        agent = _Agent(info=info, proc=proc)
        agent.reader = self._readers.spawn(
            self._read(agent), name=f"agent {request.instance_id} stdout"
        )
        self._agents[request.instance_id] = agent
        log.info("instance launched", extra={"instance": request.instance_id, "pid": proc.pid})
        return info

    async def _read(self, agent: _Agent) -> None:
        """Wait for the ready line, then drain stdout until the agent exits."""
        assert agent.proc.stdout is not None
        async for raw in agent.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if agent.ready.done():
                continue
            try:
                url = status_url_of(line)
            except ValueError as exc:
                agent.ready.set_exception(LaunchError(f"agent {agent.info.instance_id}: {exc}"))
                continue
            if url is not None:
                agent.ready.set_result(url)
        code = await agent.proc.wait()
        if not agent.ready.done():
            agent.ready.set_exception(
                LaunchError(
                    f"the agent of instance {agent.info.instance_id} exited with {code} before "
                    "it was ready: its log is above"
                )
            )

    async def wait_ready(self, instance_id: str, timeout: float) -> InstanceInfo:  # noqa: ASYNC109
        """Wait for the agent's ready line; NotReadyError after ``timeout`` s."""
        agent = self._agents.get(instance_id)
        if agent is None:
            raise InstanceNotFoundError(f"no local instance {instance_id}")
        try:
            url = await asyncio.wait_for(asyncio.shield(agent.ready), timeout)
        except TimeoutError:
            raise NotReadyError(
                f"the agent of instance {instance_id} was not ready after {timeout:g} s: "
                "allow more time with JIT_INSTANCE_READY_TIMEOUT"
            ) from None
        address = url.removeprefix("http://").removesuffix("/status")
        agent.info = replace(agent.info, status="ready", address=address)
        return agent.info

    async def list_owned(self) -> list[InstanceInfo]:
        """The agents of this process that still run."""
        return [a.info for _, a in sorted(self._agents.items()) if a.proc.returncode is None]

    async def terminate(self, instance_id: str, reason: str) -> None:
        """Stop the agent (it stops its workers), SIGKILL after the grace period."""
        agent = self._agents.pop(instance_id, None)
        if agent is None:
            return
        code = await stop_process(agent.proc, self.grace, f"agent {instance_id}")
        await self._forget(agent)
        log.info(
            "instance terminated", extra={"instance": instance_id, "reason": reason, "code": code}
        )

    async def _forget(self, agent: _Agent) -> None:
        """Finish the stdout reader of an agent that ended, and settle its ready future."""
        if agent.reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(agent.reader), 1.0)
            await cancel_and_wait(agent.reader)
        if not agent.ready.done():
            agent.ready.cancel()
        elif not agent.ready.cancelled():
            agent.ready.exception()  # retrieved, so asyncio does not log it

    async def close(self) -> None:
        """Terminate every agent, in parallel. Safe twice."""
        await asyncio.gather(*(self.terminate(iid, "shutdown") for iid in list(self._agents)))
        await self._readers.close()  # each terminate ended its reader; this makes sure of it
