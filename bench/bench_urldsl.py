"""UrlDsl benchmark: refusing huge patterns must cost microseconds, expanding is cheap.

Run ``python bench/bench_urldsl.py [--quick] [--json OUT]``; a bench runner can import
:func:`run`. Each case reports the median over many repeats (``time.perf_counter_ns``).

Cases:

- ``refuse_1e6_streams``: ``expand`` of ``{0,...,999}{0,...,999}`` (10^6 streams, the
  issue's example) raising the cap error. Target: under 1 ms (1000 us).
- ``refuse_2e1000_streams``: ``{a,b}`` repeated 1000 times (2^1000 streams, 6 kB): the
  cost here is parsing, linear in the pattern. Target: under 10 ms.
- ``expand_18_streams``: the original 18-stream example, parse included, as streams per
  second. Target: at least 50 000/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from urldsl import UrlDslError, expand

EIGHTEEN = "https://mystream.xyz/{MEL,SYD,BRI,ADE,PER,ABC}[n,npre=PRI-]{1,2,3}[n]/master.m3u8"


def _thousand() -> str:
    return "{" + ",".join(str(number) for number in range(1000)) + "}"


def _median_ns(action: Callable[[], object], repeats: int) -> float:
    action()  # warm up: regex compilation, first-call allocations
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        action()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples)


def _refusal(pattern: str) -> Callable[[], object]:
    def refuse() -> object:
        try:
            expand(pattern)
        except UrlDslError as error:
            return error
        raise AssertionError("the pattern was expected to be refused")

    return refuse


def run(quick: bool) -> list[dict[str, Any]]:
    """Run every case; ``quick`` uses fewer repeats. Returns the JSON-ready cases."""
    repeats = 200 if quick else 2000
    cases: list[dict[str, Any]] = []

    million = _thousand() + _thousand()
    refuse_us = _median_ns(_refusal(million), repeats) / 1000
    cases.append(_case("refuse_1e6_streams", refuse_us, "us", 1000.0, refuse_us < 1000.0))

    many_groups = "{a,b}" * 1000
    groups_us = _median_ns(_refusal(many_groups), max(repeats // 10, 20)) / 1000
    cases.append(_case("refuse_2e1000_streams", groups_us, "us", 10000.0, groups_us < 10000.0))

    expand_ns = _median_ns(lambda: expand(EIGHTEEN), repeats)
    rate = 18 / (expand_ns / 1e9)
    cases.append(_case("expand_18_streams", rate, "streams/s", 50000.0, rate >= 50000.0))
    return cases


def _case(name: str, value: float, unit: str, target: float, ok: bool) -> dict[str, Any]:
    return {"name": name, "value": round(value, 3), "unit": unit, "target": target, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the cases here")
    arguments = parser.parse_args(argv)
    cases = run(arguments.quick)
    print(f"{'case':<24} {'value':>14} {'unit':<10} {'target':>10}  ok")
    for case in cases:
        bound = "<" if case["unit"] == "us" else ">="
        print(
            f"{case['name']:<24} {case['value']:>14,.1f} {case['unit']:<10}"
            f" {bound}{case['target']:>8,.0f}  {'yes' if case['ok'] else 'NO'}"
        )
    if arguments.json is not None:
        arguments.json.write_text(json.dumps({"cases": cases}, indent=2) + "\n")
    return 0 if all(case["ok"] for case in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
