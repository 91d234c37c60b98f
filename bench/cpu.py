"""CPU time of processes, from ``/proc/<pid>/stat``: user + system time of all their threads.

:func:`cpu_seconds` reads one process (optionally with its reaped children's time);
:class:`CpuWindow` takes two snapshots of a set of processes and gives the CPU each spent in
between, so a figure is "CPU-seconds spent by these processes during this window" whatever the
machine's other load. :func:`descendants` and :func:`classify` find Tessera's processes under
the stack host: the embedded ``nats-server`` and the worker processes the local provider
started (``python -m pipeline worker grabber|stitcher|jit ...``).

The clock tick is 10 ms on Linux (``SC_CLK_TCK`` = 100): over a 10 s window at one core the
error is 0.1 %.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """User + system CPU seconds of ``pid`` (all threads); with ``children``, plus the time of
    its children that have been waited for. None when the process is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def thread_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of ``pid`` (empty when gone). The main thread
    has the process's id."""
    seconds: dict[int, float] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return seconds
    for tid in tids:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = text[text.rindex(")") + 2 :].split()
        seconds[tid] = (int(fields[11]) + int(fields[12])) / TICK
    return seconds


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes (None when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (None when gone)."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields is not None else None


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` (empty when gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def descendants(root: int) -> list[int]:
    """Every live process under ``root`` (children, grandchildren, ...), excluding ``root``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent_of(int(entry.name))
            if ppid is not None:
                parents[int(entry.name)] = ppid
    found: list[int] = []
    frontier = [root]
    for _ in range(64):  # bounded: process trees here are 2-3 levels deep
        if not frontier:
            break
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


@dataclass(frozen=True)
class Proc:
    """A process of the stack: ``role`` is host, nats-server, grabber, stitcher, jit or spare."""

    pid: int
    role: str
    target: str = ""
    """The worker's source id, mosaic fingerprint or session id ("" for the others)."""


@dataclass
class CpuWindow:
    """CPU spent by a fixed set of processes between :meth:`begin` and :meth:`end`."""

    procs: list[Proc]
    started: float = 0.0
    ended: float = 0.0
    before: dict[int, float] = field(default_factory=dict)
    after: dict[int, float] = field(default_factory=dict)
    main_before: dict[int, float] = field(default_factory=dict)
    main_after: dict[int, float] = field(default_factory=dict)
    """CPU of each process's main thread (its event loop, for Tessera's workers)."""
    lost: list[Proc] = field(default_factory=list)
    """Processes that ended inside the window (their last part is not counted)."""

    def begin(self) -> CpuWindow:
        """Take the first snapshot."""
        self.started = time.monotonic()
        self.before = {p.pid: cpu_seconds(p.pid) or 0.0 for p in self.procs}
        self.main_before = {p.pid: thread_seconds(p.pid).get(p.pid, 0.0) for p in self.procs}
        return self

    def end(self) -> CpuWindow:
        """Take the second snapshot."""
        self.ended = time.monotonic()
        for proc in self.procs:
            value = cpu_seconds(proc.pid)
            if value is None:
                self.lost.append(proc)
                value = self.before[proc.pid]
            self.after[proc.pid] = value
            main = thread_seconds(proc.pid).get(proc.pid)
            self.main_after[proc.pid] = self.main_before[proc.pid] if main is None else main
        return self

    @property
    def seconds(self) -> float:
        """Wall-clock length of the window."""
        return self.ended - self.started

    def spent(self, procs: Iterable[Proc] | None = None) -> float:
        """CPU-seconds spent in the window by ``procs`` (default: all)."""
        chosen = self.procs if procs is None else list(procs)
        return sum(self.after[p.pid] - self.before[p.pid] for p in chosen)

    def main_thread(self, procs: Iterable[Proc] | None = None) -> float:
        """CPU-seconds spent in the window by the main threads of ``procs`` (default: all)."""
        chosen = self.procs if procs is None else list(procs)
        return sum(self.main_after[p.pid] - self.main_before[p.pid] for p in chosen)

    def by_role(self) -> dict[str, float]:
        """CPU-seconds per role."""
        roles: dict[str, float] = {}
        for proc in self.procs:
            roles[proc.role] = roles.get(proc.role, 0.0) + self.spent([proc])
        return roles
