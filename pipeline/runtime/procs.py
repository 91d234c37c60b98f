"""Child processes that never outlive Tessera: own process group, parent-death signal, and a
stop that always reaps (SIGTERM to the group, SIGKILL after a grace period)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from typing import Protocol

log = logging.getLogger("tessera.procs")

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: ask the kernel to SIGTERM this child when its parent dies.

    Runs between fork and exec. With it, a ``kill -9`` of Tessera still takes its children
    down, so no orphan nats-server or worker is left behind.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: stop() below still applies
        pass


class Process(Protocol):
    """What :func:`stop_process` needs of a process: an ``asyncio`` child, or a worker forked
    by the fork server (:class:`pipeline.workers.forked.ForkedProcess`)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


def _signal_group(proc: Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the child leads its own group (start_new_session=True)


async def stop_process(proc: Process, grace: float, what: str) -> int:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` s; return the exit code."""
    if proc.returncode is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            log.warning("did not stop in time; killing it", extra={"what": what, "pid": proc.pid})
            _signal_group(proc, signal.SIGKILL)
            await proc.wait()
    # The group may hold grandchildren that outlived the leader: end them too.
    _signal_group(proc, signal.SIGKILL)
    code = await proc.wait()
    return code
