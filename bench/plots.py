"""The plots of a run (PNG, matplotlib): what people would rather look at than a table.

- ``<stamp>-latency.png``: every latency distribution (results carrying
  ``details["latency_samples_ms"]``), one box-and-points row each, with its target.
- ``<stamp>-mosaic-cpu.png``: CPU per output second against tiles, Tessera and ffmpeg, and
  Tessera's split by stage (case 1).
- ``<stamp>-shared-sources.png``: total CPU of k mosaics on shared sources relative to one,
  against the target line (case 2).
- ``<stamp>-frame-bus.png``: frames per second through FRAMES and raw core NATS (case 7).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.core import Result


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write(out: Path, stamp: str, results: list[Result]) -> list[Path]:
    """Write every plot the results have data for; return their paths."""
    plt = _pyplot()
    paths = []
    for suffix, draw in (
        ("latency", _latency),
        ("mosaic-cpu", _mosaic_cpu),
        ("shared-sources", _shared),
        ("frame-bus", _frame_bus),
    ):
        figure = draw(plt, results)
        if figure is None:
            continue
        path = out / f"{stamp}-{suffix}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def _latency(plt: Any, results: list[Result]) -> Any:
    rows = [
        r
        for r in results
        if r.details.get("latency_samples_ms") or r.details.get("latency_points_ms")
    ]
    if not rows:
        return None
    figure, axes = plt.subplots(
        len(rows), 1, figsize=(9, 1.4 * len(rows) + 0.8), squeeze=False, constrained_layout=True
    )
    for ax, result in zip(axes[:, 0], rows, strict=True):
        samples = [s for s in result.details.get("latency_samples_ms", []) if s is not None]
        if samples:
            ax.boxplot(samples, vert=False, widths=0.6, showfliers=False)
            jitter = [1 + 0.12 * ((i * 7919) % 13 - 6) / 6 for i in range(len(samples))]
            ax.scatter(samples, jitter, s=6, alpha=0.4, color="tab:blue")
        points = result.details.get("latency_points_ms", {})
        for q, value in points.items():
            ax.scatter([value], [1], marker="|", s=400, color="tab:purple")
            ax.annotate(f"p{q}", (value, 1.3), ha="center", fontsize=8)
        target = result.details.get("target_ms")
        if target:
            ax.axvline(target, color="tab:red", linestyle="--", linewidth=1)
        label = result.details.get("label", result.name)
        ax.set_yticks([1], [f"{result.case}\n{label}"])
        ax.set_ylim(0.5, 1.5)
        ax.set_xlim(left=0)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("milliseconds (red dashes: target)")
    figure.suptitle("Latency distributions")
    return figure


def _mosaic_cpu(plt: Any, results: list[Result]) -> Any:
    rows = sorted(
        (r for r in results if r.case == "mosaic_cost" and "tessera_cpu_per_s" in r.details),
        key=lambda r: int(r.name.split("_")[2]),
    )
    if not rows:
        return None
    tiles = [int(r.name.split("_")[2]) for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label, colour in (
        ("tessera_cpu_per_s", "Tessera (all processes)", "tab:blue"),
        ("ffmpeg_cpu_per_s", "ffmpeg xstack (1 thread)", "tab:orange"),
    ):
        medians = []
        for n, r in zip(tiles, rows, strict=True):
            samples = r.details[key]
            left.scatter([n] * len(samples), samples, color=colour, alpha=0.35, s=14)
            medians.append(sorted(samples)[len(samples) // 2])
        left.plot(tiles, medians, marker="o", color=colour, label=label)
    left.set_xlabel("tiles (1280x720 25 fps H.264 sources)")
    left.set_ylabel("CPU-seconds per output second")
    left.set_xticks(tiles)
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    left.legend()
    left.set_title("CPU per mosaic vs tiles")
    stages = ["decode", "scale", "frame handling", "transport", "compose", "encode", "control"]
    bottoms = [0.0] * len(rows)
    for stage in stages:
        values = [r.details["tessera_by_stage"].get(stage, 0.0) for r in rows]
        right.bar([str(n) for n in tiles], values, bottom=bottoms, label=stage)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ff = [sorted(r.details["ffmpeg_cpu_per_s"])[len(r.details["ffmpeg_cpu_per_s"]) // 2]
          for r in rows]  # fmt: skip
    right.scatter([str(n) for n in tiles], ff, marker="_", s=900, color="black", zorder=3,
                  label="ffmpeg total")  # fmt: skip
    right.set_xlabel("tiles")
    right.set_ylabel("CPU-seconds per output second")
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    right.set_title("Tessera by stage")
    return figure


def _shared(plt: Any, results: list[Result]) -> Any:
    rows = [r for r in results if r.case == "shared_sources" and "k" in r.details]
    if not rows:
        return None
    rows.sort(key=lambda r: r.details["k"])
    ks = [r.details["k"] for r in rows]
    figure, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        samples = r.details.get("relative", [])
        ax.scatter([r.details["k"]] * len(samples), samples, color="tab:blue", alpha=0.35, s=14)
    ax.plot(ks, [r.value for r in rows], marker="o", label="Tessera (median)")
    ax.plot(ks, [1 + 0.2 * (k - 1) for k in ks], linestyle="--", color="tab:red",
            label="target 1 + 0.2·(k−1)")  # fmt: skip
    ax.plot(ks, ks, linestyle=":", color="grey", label="k separate pipelines")
    ax.set_xlabel("mosaics over the same 9 sources (k)")
    ax.set_ylabel("total CPU relative to k = 1")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Cost of k mosaics on shared sources")
    return figure


def _frame_bus(plt: Any, results: list[Result]) -> Any:
    rows = [r for r in results if r.case == "frame_bus" and "fps_samples" in r.details]
    if not rows:
        return None
    cost = next((r for r in results if r.case == "frame_bus" and "split" in r.details), None)
    figure, axes = plt.subplots(1, 2 if cost else 1, figsize=(11 if cost else 6, 4),
                                squeeze=False, constrained_layout=True)  # fmt: skip
    ax = axes[0, 0]
    labels = [r.details.get("label", r.name) for r in rows]
    values = [r.value or 0.0 for r in rows]
    ax.bar(labels, values, color=["tab:blue", "tab:grey"][: len(rows)])
    for i, r in enumerate(rows):
        samples = r.details["fps_samples"]
        ax.scatter([i] * len(samples), samples, color="black", s=10, zorder=3)
    ax.set_ylabel("frames per second (publish → receive)")
    ax.set_title("Throughput, one publisher, one subscriber")
    ax.grid(axis="y", alpha=0.3)
    if cost:
        ax = axes[0, 1]
        parts = ("publisher", "nats-server", "subscriber")
        bottoms = [0.0, 0.0]
        for part in parts:
            values = [
                sorted(run["cpu_split"][part] for run in cost.details[kind])[
                    len(cost.details[kind]) // 2
                ]
                for kind in ("frames", "raw")
            ]
            ax.bar(["FRAMES", "raw core NATS"], values, bottom=bottoms, label=part)
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
        ax.set_ylabel("CPU-seconds per second")
        ax.set_title("Cost at 400 frames/s (a 16-tile mosaic)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return figure
