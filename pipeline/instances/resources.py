"""What an agent's machine gives its workers: CPU cores and memory, as the agent advertises them
in its heartbeat (``InstanceHeartbeat.cores`` / ``memory_mb``) for placement by cost.

- **Cores**: the CPUs this process may run on (``os.sched_getaffinity``), lowered by a CPU
  quota of its control group if there is one (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``: a container given 1.5 CPUs has 1.5 cores, however many the host has).
- **Memory**: ``MemTotal`` of ``/proc/meminfo``, lowered by a memory limit of its control group
  (v2 ``memory.max``, v1 ``memory.limit_in_bytes``).

A control group's files are looked for under the group ``/proc/self/cgroup`` names and at the
root of the hierarchy (what a container sees of its own group). ``TESSERA_AGENT_CORES`` and
``TESSERA_AGENT_MEMORY_MB`` override what is found (:mod:`pipeline.config.instances`). The
parsers are pure functions of the files' text; :func:`detect` reads them under ``root``
(``/`` but in tests).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MIB = 2**20
_UNLIMITED = 2**60
"""cgroup v1 writes "no limit" as a page-rounded 2^63-1: anything above this is none."""


@dataclass(frozen=True)
class Resources:
    """Cores and memory (MiB) workers may use on this machine."""

    cores: float
    memory_mb: int


def quota_v2(text: str) -> float | None:
    """Cores a cgroup v2 ``cpu.max`` (``"<quota> <period>"``, ``max`` for none) allows."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1])
    except ValueError:
        return None  # a file we do not understand: no limit, rather than no agent
    return quota / period if quota > 0 and period > 0 else None


def quota_v1(quota: str, period: str) -> float | None:
    """Cores a cgroup v1 CFS quota allows (``-1``: none)."""
    try:
        q, p = float(quota.strip()), float(period.strip())
    except ValueError:
        return None  # a file we do not understand: no limit, rather than no agent
    return q / p if q > 0 and p > 0 else None


def limit_bytes(text: str) -> int | None:
    """A cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) in bytes, or
    None for none (``max``, or v1's huge number)."""
    value = text.strip()
    if value == "max" or not value.isdigit():
        return None
    limit = int(value)
    return limit if 0 < limit < _UNLIMITED else None


def mem_total(meminfo: str) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` text, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def cgroup_paths(text: str) -> dict[str, str]:
    """Controller → group path from ``/proc/self/cgroup`` text (``""`` is the v2 hierarchy)."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = parts[2]
    return paths


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _places(root: Path, mount: str, group: str | None) -> Iterator[Path]:
    """Where a group's files may be: under its own path, then at the hierarchy's root."""
    base = root / "sys/fs/cgroup" / mount if mount else root / "sys/fs/cgroup"
    if group and group != "/":
        yield base / group.lstrip("/")
    yield base


def _cgroup_cores(root: Path, groups: dict[str, str]) -> float | None:
    found: list[float] = []
    for place in _places(root, "", groups.get("")):
        if (text := _read(place / "cpu.max")) is not None and (cores := quota_v2(text)):
            found.append(cores)
    for mount in ("cpu", "cpu,cpuacct"):
        for place in _places(root, mount, groups.get("cpu")):
            quota, period = _read(place / "cpu.cfs_quota_us"), _read(place / "cpu.cfs_period_us")
            if quota is not None and period is not None and (cores := quota_v1(quota, period)):
                found.append(cores)
    return min(found) if found else None


def _cgroup_memory(root: Path, groups: dict[str, str]) -> int | None:
    found: list[int] = []
    for place in _places(root, "", groups.get("")):
        if (text := _read(place / "memory.max")) is not None and (limit := limit_bytes(text)):
            found.append(limit)
    for place in _places(root, "memory", groups.get("memory")):
        text = _read(place / "memory.limit_in_bytes")
        if text is not None and (limit := limit_bytes(text)):
            found.append(limit)
    return min(found) if found else None


def detect(root: Path = Path("/"), cpus: int | None = None) -> Resources:
    """This machine's cores and memory as its control groups limit them.

    ``cpus``: the CPUs this process may run on (default: ``os.sched_getaffinity``).
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    groups = cgroup_paths(_read(root / "proc/self/cgroup") or "")
    cores = float(cpus)
    quota = _cgroup_cores(root, groups)
    if quota is not None:
        cores = min(cores, quota)
    memory = mem_total(_read(root / "proc/meminfo") or "") or 0
    limit = _cgroup_memory(root, groups)
    if limit is not None:
        memory = min(memory, limit) if memory else limit
    return Resources(cores=round(cores, 2), memory_mb=math.floor(memory / MIB))
