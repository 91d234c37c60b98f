"""The local provider (the embedded default): workers as child processes of this machine.

Each worker runs its :data:`~pipeline.messages.workers.WorkerSpec`, handed over whole
(:mod:`pipeline.workers.run`), in its own process group (session), with the parent-death signal
set, its role's ``NATS_URL`` and ``TESSERA_WORKER_ID`` in its environment, stdin and stdout on
``/dev/null`` and its log on our stderr. By default it is forked by the provider's fork server
(:mod:`pipeline.workers.forked`), a process that has imported the workers' modules already, so
a worker starts in milliseconds instead of ~0.6 s of CPU; it is then the fork server's child,
and dies with it as the fork server dies with us. Without a fork server (``fork_server=False``,
not Linux ≥ 5.3, or while it restarts) the worker is spawned as ``python -m pipeline worker
--spec JSON``. Stopping sends SIGTERM to the group and SIGKILL after the grace period; every
worker is always reaped (by us, or by the fork server, which reports its exit code), with one
watcher task per worker, in one group owned here and cancelled on close. Starting a worker id
that is already running is a no-op, so a repeated decision never starts a second copy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.messages.codec import encode
from pipeline.messages.workers import WorkerSpec
from pipeline.runtime.procs import Process, die_with_parent, stop_process
from pipeline.runtime.tasks import Tasks
from pipeline.state.reconcile import Running
from pipeline.workers.forked import ForkedProcess, ForkServer, ForkUnavailable, supported

log = logging.getLogger("tessera.local")

ExitCallback = Callable[[str, int, bool], Awaitable[None]]
"""``(worker_id, exit code, expected)``: called when a worker process ended."""


@dataclass
class _Child:
    spec: WorkerSpec
    proc: Process
    started_at: float
    watcher: asyncio.Task[None] | None = None
    stopping: bool = False


def worker_argv(spec: WorkerSpec, python: str = sys.executable) -> list[str]:
    """The command line of a spawned worker process: its whole spec, as JSON."""
    return [python, "-m", "pipeline", "worker", "--spec", encode(spec).decode()]


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
        fork_server: bool = True,
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
        self._watchers = Tasks("local provider")
        """One task per worker process, waiting for its end."""
        self.forks: ForkServer | None = None
        """The fork server (None: every worker is spawned as a new process)."""
        if fork_server and supported():
            self.forks = ForkServer(env=self._base_env, grace=grace)

    def running(self) -> dict[str, Running]:
        """The workers whose processes are alive (or being stopped), by worker id."""
        return {
            wid: Running(spec=c.spec, started_at=c.started_at)
            for wid, c in self._children.items()
            if not c.stopping
        }

    def can_retile(self, spec: WorkerSpec) -> bool:
        """Always: this machine's workers are not placed by cost."""
        return True

    def retiled(self, spec: WorkerSpec) -> None:
        """The running worker ``spec.worker_id`` now runs ``spec`` (told in place)."""
        child = self._children.get(spec.worker_id)
        if child is not None:
            child.spec = spec

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

    @property
    def spares(self) -> int:
        """Processes this provider keeps beside its workers (the fork server: 0 or 1), which
        the benchmarks' stack host must not count as workers."""
        return 0 if self.forks is None or self.forks.pid is None else 1

    async def start(self) -> None:
        """Start the fork server in the background: starts from then on skip Python's imports."""
        if self.forks is not None:
            await self.forks.start()

    async def ready(self, within: float) -> bool:
        """Wait (at most ``within`` s) for the fork server to have imported everything, so that
        the first start is as fast as the rest; True when workers start by forking."""
        return self.forks is not None and await self.forks.settled(within)

    async def _fork(self, spec: WorkerSpec, env: dict[str, str]) -> ForkedProcess | None:
        """The worker forked by the fork server; None when it cannot (then spawn one)."""
        if self.forks is None:
            return None
        await self.forks.start()  # a provider nobody started (an agent's) starts it now
        try:
            return await self.forks.fork(spec, env)
        except ForkUnavailable as exc:
            log.info("spawning the worker", extra={"worker": spec.worker_id, "why": str(exc)})
            return None

    async def start_worker(self, spec: WorkerSpec) -> int:
        """Start ``spec`` unless it runs (forked when the fork server can); return its pid."""
        existing = self._children.get(spec.worker_id)
        if existing is not None:
            return existing.proc.pid
        env = {**self._base_env(), **self._worker_env(spec)}
        proc: Process | None = await self._fork(spec, env)
        if proc is None:
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
        child.watcher = self._watchers.spawn(self._watch(child), name=f"watch {spec.worker_id}")
        forked = isinstance(proc, ForkedProcess)
        log.info(
            "worker started", extra={"worker": spec.worker_id, "pid": proc.pid, "forked": forked}
        )
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
        """Stop every worker (in parallel, each within the grace period), then the fork
        server. Safe twice."""
        children = list(self._children)
        await asyncio.gather(*(self.stop_worker(wid, "shutdown") for wid in children))
        await self._watchers.close()
        self._children.clear()
        if self.forks is not None:
            await self.forks.stop()
