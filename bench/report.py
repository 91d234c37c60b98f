"""Writing a run: ``<stamp>.json`` (everything, with samples) and ``<stamp>.md`` (the summary
people read: one row per figure with its target, ✓/✗ and where the time goes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.core import ROOT, Result, fmt


def commit() -> str:
    """The checked-out commit, read from ``.git`` (no git command), or "unknown"."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        path = git / ref
        if path.exists():
            return path.read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return "unknown"


def value_text(result: Result) -> str:
    """The value with its unit, or "—"."""
    if result.value is None:
        return "—"
    return f"{fmt(result.value)} {result.unit}".strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(run: dict[str, Any], results: list[Result]) -> str:
    """The summary table and the run's context."""
    mode = "quick" if run["quick"] else "full"
    machine = run["machine"]
    lines = [
        f"# Tessera benchmarks — {run['stamp']} ({mode} run)",
        "",
        f"Commit {run.get('commit', commit())} (plus any uncommitted changes); "
        f"{machine['cpus']} CPUs, Python {machine['python']}, {machine['platform']}; "
        f"total {run['seconds']:.0f} s.",
        "",
        "| case | figure | value | target | ok | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        mark = {True: "✓", False: "✗", None: "—"}[r.ok]
        title = run["cases"].get(r.case, {}).get("title", r.case)
        lines.append(
            f"| {_cell(title)} | {_cell(r.name)} | {_cell(value_text(r))} | "
            f"{_cell(r.target_text)} | {mark} | {_cell(r.note)} |"
        )
    lines += ["", "## Cases", "", "| case | seconds | load before → after (1 min) |",
              "| --- | --- | --- |"]  # fmt: skip
    for name, meta in run["cases"].items():
        before, after = meta.get("load_before", [0])[0], meta.get("load_after", [0])[0]
        lines.append(f"| {name} | {meta['seconds']:.0f} | {before:.2f} → {after:.2f} |")
    lines += [
        "",
        "Every timing is a median over repeated runs; every comparison is a ratio measured in "
        "the same run, interleaved. Samples, splits and settings are in the JSON next to this "
        "file; `bench/README.md` says what each case measures.",
        "",
    ]
    return "\n".join(lines)


def write(out: Path, stamp: str, run: dict[str, Any], results: list[Result]) -> list[Path]:
    """Write the JSON and the markdown; return their paths."""
    run = {**run, "commit": commit()}
    json_path = out / f"{stamp}.json"
    json_path.write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n")
    md_path = out / f"{stamp}.md"
    md_path.write_text(markdown(run, results))
    return [json_path, md_path]
