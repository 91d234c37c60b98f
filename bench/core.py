"""What every case shares: the :class:`Result` of a figure, the run :class:`Context` (quick or
full, where files go, progress lines) and the statistics every figure is made of.

Statistics: a timing is the median of repeated runs; a comparison is the median of ratios
measured in the same run, A and B interleaved (A, B, A, B, ...), so drift in the machine's load
hits both sides alike.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
"""The repository checkout the suite measures."""

Op = Literal["<=", ">="]


@dataclass
class Result:
    """One figure of a case, with its target and whether it was met.

    ``ok`` is None when the figure has no target (context for another figure) or was not
    measured (``value`` None, ``note`` says why). ``details`` carries samples, splits and
    anything a plot or a reader of the JSON wants; ``note`` is the one line the summary shows
    (where the time goes, the next step).
    """

    case: str
    name: str
    value: float | None
    unit: str
    target: float | None = None
    op: Op = "<="
    ok: bool | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ok is None and self.target is not None and self.value is not None:
            self.ok = meets(self.value, self.op, self.target)

    @property
    def target_text(self) -> str:
        """``≤ 1.0``, ``≥ 5000``, or ``—``."""
        if self.target is None:
            return "—"
        return f"{'≤' if self.op == '<=' else '≥'} {fmt(self.target)}"

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready form (NaN and inf become None)."""
        clean: dict[str, Any] = _clean(asdict(self))
        return clean


def meets(value: float, op: Op, target: float) -> bool:
    """Whether ``value`` meets ``op target``."""
    return value <= target if op == "<=" else value >= target


def not_run(case: str, name: str, unit: str, reason: str, **target: Any) -> Result:
    """A figure that could not be measured, saying why."""
    return Result(case, name, None, unit, note=f"not run: {reason}", **target)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for people: 3 significant digits, thousands separated."""
    if value is None or not math.isfinite(value):
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(magnitude))))
    return f"{value:.{decimals}f}"


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (/proc/loadavg)."""
    try:
        parts = Path("/proc/loadavg").read_text().split()
        return float(parts[0]), float(parts[1]), float(parts[2])
    except (OSError, ValueError, IndexError):
        return (math.nan, math.nan, math.nan)


class CaseSkipped(Exception):
    """A case cannot run here (a missing tool, an unfinished component); the message says why."""


@dataclass
class Context:
    """One run of the suite: its mode, where its files go, progress output, shared figures."""

    quick: bool
    out_dir: Path
    cache_dir: Path
    work_dir: Path
    """A temporary folder for this run (deleted at the end)."""
    started: float = field(default_factory=time.monotonic)
    case: str = ""
    shared: dict[str, Any] = field(default_factory=dict)
    """Figures one case leaves for a later one (case 7 uses case 1's CPU per mosaic)."""

    def progress(self, message: str) -> None:
        """Print one progress line: elapsed time, case, message."""
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {self.case:<16} {message}", file=sys.stdout, flush=True)

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in a quick run, else ``full``."""
        return quick if self.quick else full

    @property
    def cpus(self) -> int:
        """CPUs this process may use."""
        return len(os.sched_getaffinity(0))
