"""The local provider (the embedded default): workers as child processes of this machine.

Each worker is ``python -m pipeline worker <kind> ...`` in its own process group, with the
parent-death signal set, ``NATS_URL`` in its environment and its log on our stderr. Stopping
sends SIGTERM to the group and SIGKILL after the grace period; every child is always reaped
(one watcher task per child, owned here and cancelled on close). Starting a worker id that is
already running is a no-op, so a repeated decision never starts a second copy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.procs import die_with_parent, stop_process
from pipeline.state.reconcile import Running, WorkerSpec
from pipeline.tasks import cancel_and_wait

log = logging.getLogger("tessera.local")

ExitCallback = Callable[[str, int, bool], Awaitable[None]]
"""``(worker_id, exit code, expected)``: called when a worker process ended."""


@dataclass
class _Child:
    spec: WorkerSpec
    proc: asyncio.subprocess.Process
    started_at: float
    watcher: asyncio.Task[None] | None = None
    stopping: bool = False


def worker_argv(spec: WorkerSpec, python: str = sys.executable) -> list[str]:
    """The command line of a worker process."""
    argv = [python, "-m", "pipeline", "worker", spec.kind, spec.target]
    for name, value in spec.args:
        argv += [f"--{name.replace('_', '-')}", value]
    return argv


class LocalProvider:
    """Runs workers as local child processes."""

    name = "local"

    def __init__(
        self,
        *,
        nats_url: str,
        on_exit: ExitCallback | None = None,
        grace: float = 5.0,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        spares: int = 0,
        url_for: Callable[[str], str] | None = None,
    ) -> None:
        self.nats_url = nats_url
        self._url_for = url_for
        """Worker kind -> the URL with that role's NATS user; None: ``nats_url`` for all."""
        self.on_exit = on_exit
        self.grace = grace
        self._env = env
        self._clock = clock
        self._children: dict[str, _Child] = {}
        self.spares = spares
        self._spares: list[asyncio.subprocess.Process] = []
        self._refill: asyncio.Task[None] | None = None
        self._closed = False

    def running(self) -> dict[str, Running]:
        """The workers whose processes are alive (or being stopped), by worker id."""
        return {
            wid: Running(spec=c.spec, started_at=c.started_at)
            for wid, c in self._children.items()
            if not c.stopping
        }

    def pid(self, worker_id: str) -> int | None:
        """Process id of a running worker."""
        child = self._children.get(worker_id)
        return child.proc.pid if child else None

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ if self._env is None else self._env)
        env["NATS_URL"] = self.nats_url
        # A worker gets its own role's credentials (in NATS_URL), never the others'.
        env.pop("TESSERA_NATS_USERS", None)
        return env

    def _worker_env(self, spec: WorkerSpec) -> dict[str, str]:
        """What a worker's environment adds to the base one."""
        env = {"TESSERA_WORKER_ID": spec.worker_id}
        if self._url_for is not None:
            env["NATS_URL"] = self._url_for(spec.kind)
        return env

    async def _spawn_spare(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "spare",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            env=self._base_env(),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip

    def _keep_spares(self) -> None:
        """Top the spares up to ``spares`` in the background (one task at a time)."""
        if self._closed or self.spares <= 0 or (self._refill and not self._refill.done()):
            return

        async def refill() -> None:
            while not self._closed and len(self._spares) < self.spares:
                self._spares.append(await self._spawn_spare())

        self._refill = asyncio.create_task(refill(), name="spare workers")

    async def start(self) -> None:
        """Start the spare processes (if any): later starts then skip Python's imports."""
        self._keep_spares()

    async def _assign_spare(self, spec: WorkerSpec) -> asyncio.subprocess.Process | None:
        while self._spares:
            spare = self._spares.pop(0)
            if spare.returncode is not None or spare.stdin is None:
                continue
            argv = worker_argv(spec)[3:]  # after "python -m pipeline"
            line = json.dumps({"argv": argv, "env": self._worker_env(spec)})
            try:
                spare.stdin.write(line.encode() + b"\n")
                await spare.stdin.drain()
                spare.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                continue
            return spare
        return None

    async def start_worker(self, spec: WorkerSpec) -> int:
        """Start ``spec`` unless it runs (on a warm spare when one is ready); return its pid."""
        existing = self._children.get(spec.worker_id)
        if existing is not None:
            return existing.proc.pid
        proc = await self._assign_spare(spec)
        self._keep_spares()
        if proc is None:
            env = {**self._base_env(), **self._worker_env(spec)}
            proc = await asyncio.create_subprocess_exec(
                *worker_argv(spec),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        child = _Child(spec=spec, proc=proc, started_at=self._clock())
        self._children[spec.worker_id] = child
        child.watcher = asyncio.create_task(self._watch(child), name=f"watch {spec.worker_id}")
        log.info("worker started", extra={"worker": spec.worker_id, "pid": proc.pid})
        return proc.pid

    async def _watch(self, child: _Child) -> None:
        code = await child.proc.wait()
        if self._children.get(child.spec.worker_id) is child:
            del self._children[child.spec.worker_id]
        if not child.stopping:
            log.warning("worker exited", extra={"worker": child.spec.worker_id, "code": code})
        if self.on_exit is not None:
            await self.on_exit(child.spec.worker_id, code, child.stopping)

    async def stop_worker(self, worker_id: str, reason: str = "not-needed") -> int | None:
        """Stop a worker and wait for it to end; return its exit code (None: not running)."""
        child = self._children.get(worker_id)
        if child is None:
            return None
        child.stopping = True
        code = await stop_process(child.proc, self.grace, worker_id)
        if child.watcher is not None:
            await child.watcher  # runs the exit callback once, then ends
        log.info("worker stopped", extra={"worker": worker_id, "reason": reason, "code": code})
        return code

    async def close(self) -> None:
        """Stop every worker and spare (in parallel, each within the grace period). Safe
        twice."""
        self._closed = True
        await cancel_and_wait(self._refill)
        spares, self._spares = self._spares, []
        await asyncio.gather(*(stop_process(p, self.grace, "spare") for p in spares))
        children = list(self._children)
        await asyncio.gather(*(self.stop_worker(wid, "shutdown") for wid in children))
        for child in list(self._children.values()):
            await cancel_and_wait(child.watcher)
        self._children.clear()
