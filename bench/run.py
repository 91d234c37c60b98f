"""Tessera's benchmark runner: ``python bench/run.py [--quick] [--only NAME,...] [--out DIR]``.

Runs the cases under ``bench/cases/`` in order (each prints progress lines), then writes
``<out>/<UTC timestamp>.json`` (every figure with its samples), ``<out>/<timestamp>.md`` (the
summary table: case, figure, target, ✓/✗, where the time goes) and PNG plots next to them.
``--quick`` runs the short version (under 3 minutes on 2 cores); the full run takes longer
and repeats every measurement more. Exit status: 0 when every target was met, 1 otherwise,
2 when a case crashed, 130 on Ctrl-C (what was measured so far is still written).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (`python bench/run.py`): import the checkout this file is in.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import plots, report  # noqa: E402
from bench.cases import CASES  # noqa: E402
from bench.core import ROOT, CaseSkipped, Context, Result, loadavg  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description="Run Tessera's benchmarks and write the report."
    )
    parser.add_argument("--quick", action="store_true", help="the short run (< 3 min)")
    parser.add_argument(
        "--only", default="", metavar="NAME,...", help=f"run only these cases: {', '.join(CASES)}"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="where reports go"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}: use one of {', '.join(CASES)}")
    args.cases = [c for c in CASES if not names or c in names]
    return args


def run_case(ctx: Context, name: str) -> tuple[list[Result], dict[str, Any]]:
    """Run one case; a crash or a skip becomes a result that says so."""
    module = importlib.import_module(f"bench.cases.{name}")
    ctx.case = name
    ctx.progress(f"--- {module.TITLE}")
    load_before = loadavg()
    began = time.monotonic()
    meta: dict[str, Any] = {"title": module.TITLE, "load_before": load_before}
    try:
        results: list[Result] = module.run(ctx)
    except CaseSkipped as exc:
        results = [Result(name, "not run", None, "", note=f"not run: {exc}")]
        meta["skipped"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - one case failing must not lose the others
        traceback.print_exc()
        results = [Result(name, "failed", None, "", ok=False, note=f"crashed: {exc!r}"[:300])]
        meta["error"] = traceback.format_exc()
    meta["seconds"] = time.monotonic() - began
    meta["load_after"] = loadavg()
    for result in results:
        mark = {True: "✓", False: "✗", None: " "}[result.ok]
        ctx.progress(f"{mark} {result.name} = {report.value_text(result)} {result.target_text}")
    ctx.progress(f"done in {meta['seconds']:.1f} s (load {meta['load_after'][0]:.2f})")
    return results, meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    ctx = Context(quick=args.quick, out_dir=out, cache_dir=out / "cache", work_dir=work)
    ctx.case = "bench"
    ctx.progress(
        f"{'quick' if args.quick else 'full'} run of {', '.join(args.cases)}; "
        f"{ctx.cpus} CPUs, load {loadavg()[0]:.2f}; results in {out}"
    )
    results: list[Result] = []
    cases: dict[str, dict[str, Any]] = {}
    interrupted = False
    try:
        for name in args.cases:
            case_results, meta = run_case(ctx, name)
            results += case_results
            cases[name] = meta
    except KeyboardInterrupt:
        interrupted = True
        ctx.progress("interrupted: writing what was measured")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run = {
        "stamp": stamp,
        "quick": args.quick,
        "seconds": time.monotonic() - ctx.started,
        "machine": {
            "cpus": ctx.cpus,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_at_end": loadavg(),
        },
        "cases": cases,
        "results": [r.to_json() for r in results],
        "interrupted": interrupted,
    }
    paths = report.write(out, stamp, run, results)
    try:
        paths += plots.write(out, stamp, results)
    except Exception as exc:  # noqa: BLE001 - a plot failing must not lose the report
        ctx.progress(f"plots not written: {exc!r}")
    ctx.case = "bench"
    ctx.progress(f"total {run['seconds']:.0f} s; wrote " + ", ".join(str(p) for p in paths))
    if interrupted:
        return 130
    if any(r.note.startswith("crashed") for r in results):
        return 2
    return 0 if all(r.ok is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
