"""Case 8, UrlDsl: the time to refuse a pattern of 10^6 streams (the cap is checked before
anything is expanded; target < 1 ms) and the expansion rate of the 18-stream example (target
≥ 50,000 streams/s). Runs :mod:`bench.bench_urldsl`, which can also run alone."""

from __future__ import annotations

from bench import bench_urldsl
from bench.core import Context, Result

NAME = "urldsl"
TITLE = "8. UrlDsl"
NOTES = {
    "refuse_1e6_streams": "{0,...,999}{0,...,999}: counted, not expanded, then refused",
    "refuse_2e1000_streams": "{a,b} × 1000 (6 kB): parsing is the cost, linear",
    "expand_18_streams": "the original 18-stream example, parse included",
}


def run(ctx: Context) -> list[Result]:
    results = []
    for case in bench_urldsl.run(ctx.quick):
        at_least = case["unit"].endswith("/s")
        results.append(
            Result(
                NAME,
                case["name"],
                case["value"],
                case["unit"],
                target=case["target"],
                op=">=" if at_least else "<=",
                ok=bool(case["ok"]),
                note=NOTES.get(case["name"], ""),
            )  # fmt: skip
        )
    return results
