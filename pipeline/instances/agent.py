"""``tessera agent``: one per instance. Starts and stops workers there on command, within the
instance's capacity per worker kind, and tells the controller how it is doing.

- Commands arrive by request/reply on ``ctl.agent.<instance_id>``: :class:`StartWorker` (the
  worker's whole spec) and :class:`StopWorker`, answered with :class:`CommandReply`. A start
  beyond the capacity for its kind is refused with code ``full`` and a one-line error;
  starting a running worker or stopping a stopped one is a no-op that answers ``ok`` (the
  controller may repeat itself after a crash).
- Every ``heartbeat_interval`` s (and at once after a change) an :class:`InstanceHeartbeat`
  goes to ``hb.instance.<instance_id>``: capacity, used, workers, started_at, idle_since, and
  the cores and memory its workers may use (:mod:`.resources`, or ``TESSERA_AGENT_CORES`` /
  ``TESSERA_AGENT_MEMORY_MB``), which the controller fills by the workers' measured costs
  (:mod:`pipeline.state.costs`). The first beat is the agent's registration: the controller
  treats the instance as ready.
- ``GET /status`` on the agent's HTTP port answers the same as JSON (the original agent's
  polling interface, handy with ``curl``).

Workers are local child processes (:class:`pipeline.workers.processes.LocalProvider`, or any
launcher with the same methods), each given the spec exactly as the command carried it.
Stopping the agent stops its workers first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipeline.config.settings import Config
from pipeline.errors import MessageError, TesseraError
from pipeline.instances.ready import ready_line
from pipeline.instances.resources import detect
from pipeline.messages.codec import decode_agent_command, encode
from pipeline.messages.control import CommandReply, StartWorker, StopWorker
from pipeline.messages.heartbeats import InstanceHeartbeat
from pipeline.messages.workers import WorkerSpec
from pipeline.nats import subjects
from pipeline.nats.heartbeat import Heartbeater
from pipeline.runtime.httpserver import HttpServer
from pipeline.runtime.service import run_command
from pipeline.state.reconcile import Running

log = logging.getLogger("tessera.agent")


class WorkerLauncher(Protocol):
    """What the agent needs to run workers (:class:`LocalProvider` is one)."""

    def running(self) -> dict[str, Running]: ...

    def pid(self, worker_id: str) -> int | None: ...

    async def start_worker(self, spec: WorkerSpec) -> int: ...

    async def stop_worker(self, worker_id: str, reason: str = ...) -> int | None: ...

    async def close(self) -> None: ...


def default_instance_id() -> str:
    """This machine's host name, made safe as a subject token."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:128].strip("-")
    return name or "agent"


class Agent:
    """The agent service: ``await start()``, then ``await stop()`` (safe twice)."""

    def __init__(
        self,
        nc: Client,
        instance_id: str,
        capacity: Mapping[str, int],
        *,
        host: str = "0.0.0.0",
        port: int = 8081,
        heartbeat_interval: float = 1.0,
        worker_launcher: WorkerLauncher | None = None,
        nats_url: str | None = None,
        worker_url_for: Callable[[str], str] | None = None,
        worker_env: dict[str, str] | None = None,
        grace: float = 5.0,
        shutdown_timeout: float = 5.0,
        cores: float = 0.0,
        memory_mb: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self.instance_id = subjects.token(instance_id)
        self.capacity = {kind: n for kind, n in capacity.items() if n > 0}
        self.cores = cores
        """Cores its workers may use, as advertised (0: not said)."""
        self.memory_mb = memory_mb
        """Memory its workers may use, MiB, as advertised (0: not said)."""
        self._clock = clock
        if worker_launcher is None:
            from pipeline.workers.processes import LocalProvider

            worker_launcher = LocalProvider(
                nats_url=nats_url or _url_of(nc),
                url_for=worker_url_for,
                on_exit=self._on_worker_exit,
                grace=grace,
                env=worker_env,
                clock=clock,
            )
        self.launcher = worker_launcher
        self.started_at = 0.0
        self.idle_since: float | None = None
        self.commands = 0
        self._lock = asyncio.Lock()
        self._sub: Subscription | None = None
        self._beats = Heartbeater(
            nc,
            subjects.instance_heartbeat(self.instance_id),
            self.heartbeat,
            interval=heartbeat_interval,
        )
        self.http = HttpServer(
            Starlette(
                routes=[
                    Route("/status", self._status_endpoint),
                    Route("/healthz", self._healthz),
                    Route("/readyz", self._readyz),
                ]
            ),
            host=host,
            port=port,
            shutdown_timeout=shutdown_timeout,
        )
        self._state = "new"

    @property
    def status_url(self) -> str:
        """Where ``GET /status`` is served."""
        return f"{self.http.url}/status"

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve HTTP, take commands, then register with the first heartbeat."""
        if self._state != "new":
            return
        self._state = "starting"
        self.started_at = self._clock()
        self.idle_since = self.started_at
        await self.http.start()
        self._sub = await self._nc.subscribe(
            subjects.agent_control(self.instance_id), cb=self._on_command
        )
        await self._nc.flush()  # the subscription exists before anyone learns of us
        self._state = "running"  # before the first beat: a command may follow it at once
        await self._beats.start()
        log.info(
            "agent started",
            extra={
                "instance": self.instance_id,
                "status": self.status_url,
                "cores": self.cores,
                "memory_mb": self.memory_mb,
                **self.capacity,
            },
        )

    async def stop(self) -> None:
        """Stop taking commands, stop every worker, stop beating and serving. Safe twice."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._state = "stopped"
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):  # closed connection: nothing to undo
                await sub.unsubscribe()
        async with self._lock:
            await self.launcher.close()
        self._refresh_idle()
        await self._beats.stop(last=self.heartbeat())
        await self.http.stop()
        log.info("agent stopped", extra={"instance": self.instance_id})

    # --- state -----------------------------------------------------------------------------

    def used(self) -> dict[str, int]:
        """Running workers per kind."""
        counts: dict[str, int] = {}
        for run in self.launcher.running().values():
            counts[run.spec.kind] = counts.get(run.spec.kind, 0) + 1
        return counts

    def _refresh_idle(self) -> None:
        busy = bool(self.launcher.running())
        if busy:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = self._clock()

    def heartbeat(self) -> InstanceHeartbeat:
        """The agent's heartbeat now."""
        self._refresh_idle()
        running = self.launcher.running()
        return InstanceHeartbeat(
            at=self._clock(),
            instance_id=self.instance_id,
            capacity=dict(self.capacity),
            used=self.used(),
            workers=tuple(sorted(running)),
            specs=tuple(running[wid].spec for wid in sorted(running)),
            started_at=self.started_at,
            idle_since=self.idle_since,
            cores=self.cores,
            memory_mb=self.memory_mb,
        )

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` answers."""
        beat = self.heartbeat()
        now = beat.at
        workers = [
            {
                "worker_id": wid,
                "kind": run.spec.kind,
                "target": run.spec.target,
                "pid": self.launcher.pid(wid),
                "started_at": run.started_at,
            }
            for wid, run in sorted(self.launcher.running().items())
        ]
        return {
            "instance_id": self.instance_id,
            "state": self._state,
            "started_at": self.started_at,
            "uptime_s": round(now - self.started_at, 3),
            "idle_since": self.idle_since,
            "idle_s": None if self.idle_since is None else round(now - self.idle_since, 3),
            "capacity": dict(self.capacity),
            "cores": self.cores,
            "memory_mb": self.memory_mb,
            "used": beat.used,
            "workers": workers,
            "commands": self.commands,
            "nats": {"connected": self._nc.is_connected},
        }

    async def _status_endpoint(self, request: Request) -> JSONResponse:
        return JSONResponse(self.status())

    async def _healthz(self, request: Request) -> JSONResponse:
        """Alive and connected to NATS."""
        ok = self._nc.is_connected
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "nats": {"connected": ok}},
            status_code=200 if ok else 503,
        )

    async def _readyz(self, request: Request) -> JSONResponse:
        """Healthy and taking commands."""
        ok = self._nc.is_connected and self._state == "running"
        return JSONResponse(
            {"status": "ready" if ok else "not-ready", "state": self._state},
            status_code=200 if ok else 503,
        )

    # --- commands --------------------------------------------------------------------------

    async def _on_command(self, msg: Msg) -> None:
        try:
            command = decode_agent_command(msg.data, msg.subject)
        except MessageError as exc:
            await self._reply(msg, CommandReply(ok=False, error=str(exc)))
            return
        async with self._lock:
            if self._state != "running":
                reply = CommandReply(
                    ok=False, error=f"agent {self.instance_id} is {self._state}: ask another"
                )
            else:
                self.commands += 1
                reply = await self.handle(command)
        await self._reply(msg, reply)
        self._beats.poke()

    async def handle(self, command: StartWorker | StopWorker) -> CommandReply:
        """Carry out one command (the caller holds the lock)."""
        match command:
            case StartWorker(spec=spec):
                return await self._start(spec)
            case StopWorker(worker_id=wid, reason=reason):
                await self.launcher.stop_worker(wid, reason)
                self._refresh_idle()
                return CommandReply(ok=True)

    async def _start(self, spec: WorkerSpec) -> CommandReply:
        try:
            # The target names the worker's subjects (hb.worker.<id>, frames.<source_id>):
            # refused here with a reason rather than by a worker that would only crash.
            subjects.token(spec.target)
        except ValueError as exc:
            return CommandReply(ok=False, error=f"bad start-worker command: {exc}")
        if spec.worker_id in self.launcher.running():
            return CommandReply(ok=True)
        limit = self.capacity.get(spec.kind, 0)
        used = self.used().get(spec.kind, 0)
        if used >= limit:
            return CommandReply(
                ok=False,
                code="full",
                error=f"instance {self.instance_id} is full for {spec.kind} workers "
                f"({used} of {limit} running): place {spec.worker_id} on another instance",
            )
        try:
            await self.launcher.start_worker(spec)
        except OSError as exc:
            return CommandReply(ok=False, error=f"cannot start {spec.worker_id}: {exc}")
        self._refresh_idle()
        return CommandReply(ok=True)

    async def _reply(self, msg: Msg, reply: CommandReply) -> None:
        if msg.reply and self._nc.is_connected:
            await msg.respond(encode(reply))

    async def _on_worker_exit(self, worker_id: str, code: int, expected: bool) -> None:
        if not expected:
            log.warning("worker exited", extra={"worker": worker_id, "code": code})
        self._refresh_idle()
        self._beats.poke()


def _url_of(nc: Client) -> str:
    url = nc.connected_url
    if url is None:
        raise TesseraError("the agent's NATS connection is not connected: cannot pass it on")
    return f"{url.scheme}://{url.netloc}"


# --- the process -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's flags: general, NATS and logging settings, plus agent and capacity ones."""
    from pipeline.config import instances as instance_settings
    from pipeline.config import settings as config_mod

    config_mod.add_arguments(parser, groups=("general", "nats", "logging"))
    instance_settings.add_arguments(parser, groups=("agent", "capacity"))


async def run(config: Config, args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT (``tessera agent``)."""
    from pipeline.config import instances as instance_settings
    from pipeline.config.settings import to_env
    from pipeline.nats.connect import connect, resolve_url
    from pipeline.runtime.service import run_until_signal

    icfg = instance_settings.from_namespace(args)
    instance_id = icfg.instance_id or default_instance_id()
    found = detect()
    url = resolve_url(config, "agent")
    nc = await connect(url, name=f"agent-{instance_id}", role="agent", forever=True)
    try:
        agent = Agent(
            nc,
            instance_id,
            icfg.capacity,
            host=icfg.agent_host,
            port=icfg.agent_port,
            heartbeat_interval=config.heartbeat_interval,
            nats_url=url,
            worker_url_for=lambda kind: resolve_url(config, kind),
            worker_env={**os.environ, **to_env(config)},
            grace=config.shutdown_timeout / 3,
            shutdown_timeout=config.shutdown_timeout / 3,
            cores=icfg.agent_cores or found.cores,
            memory_mb=icfg.agent_memory_mb or found.memory_mb,
        )

        def started() -> None:
            print(ready_line(agent.instance_id, agent.status_url), flush=True)

        await run_until_signal(agent, on_started=started)
    finally:
        if not nc.is_closed:
            await nc.drain()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.instances.agent``: the agent without the rest of the CLI (what the local
    instance provider starts)."""
    from pipeline.config import settings as config_mod
    from pipeline.runtime import logs

    parser = argparse.ArgumentParser(
        prog="tessera agent",
        description="Run the agent of one instance: start and stop workers on command.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_mod.from_namespace(args)
    except TesseraError as exc:
        parser.exit(2, f"tessera: error: {exc}\n")
    logs.setup(verbose=config.verbose, fmt=config.log_format)
    return run_command(run(config, args))


if __name__ == "__main__":
    sys.exit(main())
