"""The local provider's fork server, from the provider's side (the process is
:mod:`pipeline.workers.forkserver`).

:class:`ForkServer` runs one ``python -m pipeline forkserver`` (own session, parent-death
signal, like every child of Tessera), asks it for workers and restarts it with backoff when it
dies. While it is starting, a request waits for it (it is ahead of a new process); while it is
down, :meth:`ForkServer.fork` raises :class:`ForkUnavailable` and the provider spawns a new
process instead.

A forked worker is the fork server's child, not ours, so :class:`ForkedProcess` stands in for
``asyncio.subprocess.Process``: its exit code comes from the server, which reaps it. A pidfd,
opened as soon as its pid is known, says when it ended if the server died first (the kernel
then sent it SIGTERM: its parent-death signal); its code is then unknown and reported as the
negative of the last signal it was sent. Linux ≥ 5.3 only (``os.pidfd_open``); elsewhere the
provider spawns every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from pipeline.messages.workers import WorkerSpec
from pipeline.runtime.procs import die_with_parent, stop_process
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.workers.forkserver import ForkRequest

log = logging.getLogger("tessera.forkserver")

HEALTHY_AFTER = 60.0
"""Seconds a fork server must have served for the restart backoff to start over."""


class ForkUnavailable(Exception):
    """No worker from the fork server this time (down, starting too long, or it refused): the
    provider spawns a new process instead."""


class _ForkRefused(Exception):
    """The fork server said forking is not safe here: it is not started again."""


@functools.cache
def supported() -> bool:
    """Whether this system has what the fork server needs (Linux ≥ 5.3: pidfds)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # ENOSYS: a kernel before 5.3
        return False
    return True


class ForkedProcess:
    """A worker the fork server forked: pid, returncode, ``wait()`` and signals, with the exit
    code the server reports (see the module docstring)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._last_signal = signal.SIGTERM
        self._pidfd: int | None
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # already ended and reaped: its exit report follows
            self._pidfd = None

    async def wait(self) -> int:
        """Wait until the process ended; return its exit code (negative: a signal)."""
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the process (through its pidfd: never a later process with its pid)."""
        if self.returncode is not None:
            return
        self._last_signal = signal.Signals(sig)
        with contextlib.suppress(ProcessLookupError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def exited(self, code: int) -> None:
        """The process ended with ``code`` (the first report counts)."""
        if self.returncode is not None:
            return
        self.returncode = code
        self._close_pidfd()
        self._done.set()

    def orphaned(self) -> None:
        """The fork server is gone: end when the process does, code unknown."""
        fd = self._pidfd
        if fd is None or select.select([fd], [], [], 0)[0]:  # readable: it has ended
            self.exited(-self._last_signal)
            return
        self._loop.add_reader(fd, lambda: self.exited(-self._last_signal))

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)


class ForkServer:
    """One provider's fork server: ``start()`` (in the background), ``fork()``, ``stop()``."""

    def __init__(
        self,
        *,
        env: Callable[[], dict[str, str]],
        grace: float,
        python: str = sys.executable,
        ready_timeout: float = 60.0,
        wait_ready: float = 10.0,
        reply_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self._env = env
        """The server's own environment (the provider's base one); each worker brings its own."""
        self.grace = grace
        self._python = python
        self._ready_timeout = ready_timeout
        self._wait_ready = wait_ready
        self._reply_timeout = reply_timeout
        self.backoff = backoff
        """Seconds before a restart: the first, doubled each time up to the second."""
        self.state: Literal["new", "starting", "ready", "down", "off"] = "new"
        self._settled = asyncio.Event()
        """Set when the state is not "starting"."""
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._procs: dict[int, ForkedProcess] = {}
        """Forked workers that have not ended, by pid."""
        self._orphans: set[ForkedProcess] = set()
        self._next_id = 0
        self._closed = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The fork server's process id while it runs (starting or ready)."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the server in the background (safe twice); :meth:`fork` waits for it."""
        if self._task is None and not self._closed:
            self.state = "starting"
            self._task = asyncio.create_task(self._supervise(), name="fork server")

    async def settled(self, within: float) -> bool:
        """Wait (at most ``within`` s) until the server is ready or has given up starting;
        True when it is ready."""
        if self.state == "starting":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), within)
        return self.state == "ready"

    async def fork(self, spec: WorkerSpec, env: dict[str, str]) -> ForkedProcess:
        """Fork a worker that runs ``spec`` with exactly ``env``."""
        if self.state == "starting":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), self._wait_ready)
        proc = self._proc
        if self.state != "ready" or proc is None or proc.stdin is None:
            raise ForkUnavailable(f"the fork server is {self.state}")
        self._next_id += 1
        rid = self._next_id
        reply: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._pending[rid] = reply
        try:
            request = ForkRequest(id=rid, spec=spec, env=env)
            proc.stdin.write(msgspec.json.encode(request) + b"\n")
            await proc.stdin.drain()
            return await asyncio.wait_for(reply, self._reply_timeout)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ForkUnavailable(f"the fork server's pipe closed: {exc}") from exc
        except TimeoutError as exc:
            # A late answer is killed when it comes (see _on_message): no untracked worker.
            raise ForkUnavailable(
                f"the fork server did not answer in {self._reply_timeout} s"
            ) from exc
        finally:
            self._pending.pop(rid, None)

    async def stop(self) -> None:
        """Stop the server (it stops and reaps what it still runs) and wait for it. Safe twice."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()  # end of input: the server stops its children, then exits
            await asyncio.wait({task}, timeout=self.grace + 2.0)
        await cancel_and_wait(task)  # still running (or backing off): stops the process too
        # Workers whose server died before they did are killed now, never left behind.
        for orphan in [o for o in self._orphans if o.returncode is None]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(orphan.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(orphan.wait(), 2.0)
            orphan.exited(-signal.SIGKILL)
        self._orphans.clear()
        self.state = "off"
        self._settled.set()

    # --- the server's life ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.backoff[0]
        while not self._closed:
            began = time.monotonic()
            try:
                await self._serve_once()
            except _ForkRefused as exc:
                log.warning(
                    "fork server refused; workers start as new processes",
                    extra={"error": str(exc)},
                )
                self.state = "off"
                return
            except (OSError, ValueError, KeyError, TypeError, TimeoutError) as exc:
                log.warning("fork server failed", extra={"error": str(exc) or type(exc).__name__})
            finally:
                await self._lost()
            if self._closed:
                return
            if time.monotonic() - began > HEALTHY_AFTER:
                delay = self.backoff[0]
            log.warning(
                "fork server ended; workers start as new processes until it is back",
                extra={"restart_in": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])
            self.restarts += 1

    async def _serve_once(self) -> None:
        """Start the server, wait until it is ready, then read its answers until it ends."""
        self.state = "starting"
        self._settled.clear()
        proc = self._proc = await asyncio.create_subprocess_exec(
            self._python, "-m", "pipeline", "forkserver", "--grace", str(self.grace),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env(),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), self._ready_timeout)
        hello: dict[str, Any] = json.loads(first) if first.strip() else {}
        if "error" in hello:
            raise _ForkRefused(str(hello["error"]))
        if "ready" not in hello:
            raise ValueError("the fork server ended before it was ready (see its log above)")
        self.state = "ready"
        self._settled.set()
        log.info("fork server ready", extra={"pid": proc.pid})
        while line := await proc.stdout.readline():
            self._on_message(json.loads(line))

    def _on_message(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            ended = self._procs.pop(int(message["exit"]), None)
            if ended is not None:
                ended.exited(int(message["code"]))
            return
        reply = self._pending.get(message.get("id", -1))
        if "pid" in message:
            forked = self._procs[int(message["pid"])] = ForkedProcess(int(message["pid"]))
            if reply is None or reply.done():  # its asker gave up: nobody would stop it
                forked.kill()
            else:
                reply.set_result(forked)
        elif reply is not None and not reply.done():
            reply.set_exception(ForkUnavailable(str(message.get("error"))))
        else:
            log.warning("fork server error", extra={"error": str(message.get("error"))})

    async def _lost(self) -> None:
        """The server ended (or is being stopped): fail what waits, orphan what runs, reap it."""
        if self.state != "off":
            self.state = "down"
        self._settled.set()
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(ForkUnavailable("the fork server ended"))
        procs, self._procs = self._procs, {}
        for forked in procs.values():
            forked.orphaned()
        self._orphans = {o for o in (*self._orphans, *procs.values()) if o.returncode is None}
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_process(proc, self.grace, "fork server")
