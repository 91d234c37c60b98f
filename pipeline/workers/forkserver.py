"""``python -m pipeline forkserver --grace S``: one pre-imported process that forks workers.

Most of a new worker's first second is Python importing PyAV, aiortc, numpy and nats-py: ten
workers started at once on two cores took ~3 s to publish (bench case 3). The local provider
starts this process once (:class:`pipeline.workers.forked.ForkServer`); it imports what every
worker kind needs, starts no thread and no event loop, and then forks a worker per request in
milliseconds. The child is the worker: it leads a session of its own, gets SIGTERM when this
process dies (parent-death signal), takes the requested environment (the whole of it: the
provider's base environment plus the worker's) and runs the requested worker spec, decoded here
once, with :func:`pipeline.workers.run.main`, as a spawned worker does; stdin and stdout on
``/dev/null``, stderr shared with the provider.

Protocol, one JSON object per line, requests on stdin and answers on stdout:

- first ``{"ready": pid}``, or ``{"error": "..."}`` and exit 1 when forking is not safe here;
- ``{"id": n, "spec": {WorkerSpec}, "env": {...}}`` (a :class:`ForkRequest`) is answered with
  ``{"id": n, "pid": p}`` or ``{"id": n, "error": "..."}``;
- ``{"exit": pid, "code": c}`` once a child ended and was reaped here (``c`` as asyncio gives
  it: negative for a signal). A child's pid is always answered before its exit.

End of input means the provider is closing: SIGTERM to every child's group, SIGKILL after the
grace period, all reaped, exit 0. A SIGTERM (the provider died: our own parent-death signal)
ends this process at once, and its children then get theirs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import select
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

import msgspec

from pipeline.messages.workers import WorkerSpec
from pipeline.runtime.procs import die_with_parent


class ForkRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Fork a worker that runs ``spec`` with exactly ``env`` (one line of the provider's)."""

    id: int
    spec: WorkerSpec
    env: dict[str, str]


_requests: msgspec.json.Decoder[ForkRequest] = msgspec.json.Decoder(ForkRequest)


def decode_request(line: bytes) -> ForkRequest:
    """One request line, spec and all (``msgspec.DecodeError`` if it is not one)."""
    return _requests.decode(line)


@dataclass(frozen=True)
class Job:
    """What a forked child runs: its worker's spec."""

    spec: WorkerSpec


def threads() -> int:
    """Threads of this process, native ones included (Linux: one per ``/proc/self/task``)."""
    return len(os.listdir("/proc/self/task"))


def _import_workers() -> None:
    """Import what every worker kind runs, so that a forked worker starts with it in memory."""
    # numpy's OpenBLAS starts a thread pool at import unless told to use one thread. fork()
    # copies only the calling thread, so a lock one of those threads held would stay held in
    # every child. Forked workers therefore run OpenBLAS with one thread (they do no large
    # matrix work); their environment is still exactly the one requested.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import nats.aio.client  # noqa: F401

    import pipeline.consumers.stitcher  # noqa: F401
    import pipeline.control.read  # noqa: F401
    import pipeline.producers.grabber  # noqa: F401
    import pipeline.producers.jit.worker  # noqa: F401
    import pipeline.sources.opener  # noqa: F401
    import pipeline.workers.run  # noqa: F401


class _Server:
    """The request loop: forks on request, reaps its children and reports their exits."""

    def __init__(self, requests: int, answers: int, grace: float) -> None:
        self.requests = requests
        self.answers = answers
        self.grace = grace
        self.pid = os.getpid()
        self.children: set[int] = set()
        self._buffer = b""
        self._provider_gone = False
        # SIGCHLD wakes poll() through this pipe: the Python-level handler does nothing, the
        # loop reaps, so a report is never written from inside a signal handler.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def _send(self, message: dict[str, Any]) -> None:
        if self._provider_gone:
            return
        try:
            os.write(self.answers, json.dumps(message).encode() + b"\n")
        except BrokenPipeError:  # the provider is gone: finish as on end of input
            self._provider_gone = True

    def serve(self) -> Job | None:
        """Serve until end of input (then None), or return the job in a forked child."""
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w)
        poller = select.poll()
        poller.register(self.requests, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        self._send({"ready": self.pid})
        while not self._provider_gone:
            # The timeout only bounds how late a lost wakeup could delay a reap.
            ready = {fd for fd, _ in poller.poll(1000)}
            self._drain_wakeups()
            self._reap()
            if self.requests not in ready:
                continue
            chunk = os.read(self.requests, 65536)
            if not chunk:
                break
            self._buffer += chunk
            while b"\n" in self._buffer:
                line, _, self._buffer = self._buffer.partition(b"\n")
                job = self._handle(line)
                if job is not None:
                    return job  # we are the child now
        self._shutdown()
        return None

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 512):
                pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self._send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    def _handle(self, line: bytes) -> Job | None:
        try:
            request = decode_request(line)
        except msgspec.DecodeError as exc:
            self._send({"id": None, "error": f"bad request to the fork server: {exc}"})
            return None
        rid = request.id
        count = threads()
        if count != 1:
            self._send(
                {
                    "id": rid,
                    "error": f"the fork server has {count} threads: forking now could leave a "
                    "lock held in the worker; start it as a new process",
                }
            )
            return None
        try:
            pid = os.fork()
        except OSError as exc:
            self._send({"id": rid, "error": f"fork failed: {exc}"})
            return None
        if pid == 0:
            return self._become_worker(request.spec, request.env)
        self.children.add(pid)
        self._send({"id": rid, "pid": pid})
        return None

    def _become_worker(self, spec: WorkerSpec, env: dict[str, str]) -> Job:
        """In the child: shed the server, take the worker's session, signals and environment."""
        try:
            os.setsid()
            die_with_parent()
            if os.getppid() != self.pid:  # the server died before the signal was set
                os._exit(1)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (self.requests, self.answers, self.wake_r, self.wake_w):
                os.close(fd)
            os.environ.clear()
            os.environ.update(env)
            gc.enable()
        except BaseException:
            # Never fall back into the server's loop as a second server.
            traceback.print_exc()
            os._exit(1)
        return Job(spec)

    def _shutdown(self) -> None:
        """End of input: stop every child (SIGTERM, SIGKILL after the grace), reap them all."""
        for pid in self.children:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            time.sleep(0.02)
            self._reap()
        for pid in list(self.children):
            _signal_group(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                self._send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
            self.children.discard(pid)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # each child leads its own group (setsid)


def main(argv: list[str]) -> int:
    """Import, report ready, serve; in a forked child, run its worker and return its code."""
    parser = argparse.ArgumentParser(prog="python -m pipeline forkserver")
    parser.add_argument("--grace", type=float, default=5.0)
    grace = parser.parse_args(argv).grace
    # The collector stays off here and the imported objects are frozen before any fork, so a
    # child's collections do not write to (and so copy) the pages it shares with the others.
    gc.disable()
    # The protocol moves off fds 0 and 1, which become /dev/null for us and every child.
    requests, answers = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)

    def refuse(reason: str) -> int:
        with contextlib.suppress(BrokenPipeError):
            os.write(answers, json.dumps({"error": reason}).encode() + b"\n")
        return 1

    try:
        _import_workers()
    except Exception as exc:  # whatever failed, the provider spawns workers instead
        return refuse(f"the fork server could not import the workers: {exc!r}")
    count = threads()
    if count != 1:
        return refuse(
            f"{count} threads after importing the workers (see /proc/{os.getpid()}/task): "
            "forking would be unsafe, so workers are spawned as new processes"
        )
    gc.collect()
    gc.freeze()
    job = _Server(requests, answers, grace).serve()
    if job is None:
        return 0
    from pipeline.workers.run import main as run_worker

    return run_worker(job.spec)
