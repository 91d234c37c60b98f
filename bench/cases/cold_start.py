"""Case 3, cold start: from ``GET /create`` to the first moment the playlist names a segment in
which every tile shows its source (the last picture of the segment, each tile's colour within
40 of its source's, as the end-to-end tests check), with 1 s segments. Target: median ≤ 2 s.

Two kinds of start, interleaved (cold, warm, cold, warm, ...):

- **cold**: no grabber runs for the sources (each repeat uses fresh URLs), so the controller
  starts a grabber per tile and a stitcher;
- **warm**: the sources are already live (another watched mosaic shows them: the cold one just
  measured), so only a stitcher starts.

Sources: :class:`~pipeline.sources.synthetic.LiveHlsSource` cameras of distinct colours on loopback
(live HLS, 1 s segments). The stack runs with its shipped settings (1 s controller poll, 1 s
heartbeats, the local provider's fork server). Where the time goes, per start: the controller
starting the workers (when the provider started or assigned each one), grabbers publishing (their
first "connected" heartbeat), the stitcher's first stored segment, and the first segment with every
tile live.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from bench import mosaicrun
from bench.core import Context, Result, fmt, median
from bench.media import near, tile_mean
from bench.play import PlaylistPoller, decode
from bench.stack import StackHost, Watchers
from pipeline.messages.heartbeats import GrabberStats, StitcherStats
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from pipeline.state.mosaic import key_of_source

NAME = "cold_start"
TITLE = "3. Cold start (/create → all tiles live)"
TARGET_S = 2.0
SIZE = (1280, 720)
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "cyan": (30, 210, 210),
    "magenta": (210, 40, 210),
    "white": (225, 225, 225),
    "orange": (235, 140, 20),
    "purple": (110, 30, 160),
}
POLL = 0.05
"""Seconds between playlist polls while waiting (the figure's resolution)."""


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


async def one_start(
    host: StackHost, pattern: str, title: str, colours: list[tuple[int, int, int]], within: float
) -> dict[str, Any]:
    """Create a mosaic and time it; return the timings (seconds from /create)."""
    t0_wall, t0 = time.time(), time.monotonic()
    fp = await host.create(pattern, title=title, size=f"{SIZE[0]}x{SIZE[1]}")
    # Grabbers work on source keys (one per URL, whatever the tile size).
    sources = [key_of_source(sid) for sid in mosaicrun.sources_of(pattern, SIZE)]
    poller = PlaylistPoller(host, fp)
    pending: list[Any] = []
    spawned: dict[int, float] = {}
    timings: dict[str, Any] = {"fp": fp, "segments_checked": 0}
    deadline = t0 + within
    while time.monotonic() < deadline:
        for proc in await host.workers():
            if proc.pid not in spawned and (proc.target == fp or proc.target in sources):
                started = host.started_at.get(proc.pid)
                if started is not None and started >= t0_wall - 0.05:  # new: not a live grabber
                    spawned[proc.pid] = started - t0_wall
        pending += await poller.poll()
        while pending:
            listed = pending.pop(0)
            data = await poller.media(listed)
            if not data:
                continue
            timings["segments_checked"] += 1
            timings.setdefault("first_segment_s", listed.listed_mono - t0)
            picture = decode(data)[-1]
            n = len(colours)
            if all(near(tile_mean(picture, i, n), colours[i]) for i in range(n)):
                timings["all_live_s"] = listed.listed_mono - t0
                break
        if "all_live_s" in timings:
            break
        await asyncio.sleep(POLL)
    timings["spawn_s"] = max(spawned.values()) if spawned else None
    timings["workers_started"] = len(spawned)
    timings["grabbers_live_s"] = _first_beat(host, "grabber", set(sources), t0)
    timings["stitcher_ready_s"] = _first_beat(host, "stitcher", {fp}, t0)
    return timings


def _first_beat(host: StackHost, kind: str, targets: set[str], t0: float) -> float | None:
    """Seconds from ``t0`` until the worker of every target had beaten "connected" (a grabber
    publishing) or "ready" (a stitcher with a stored segment): the latest of them. None when
    one never did, or already had before ``t0`` (a live grabber of a warm start)."""
    firsts: dict[str, float] = {}
    for beats in host.beats.history.values():
        for at, beat in beats:
            if beat.kind != kind or beat.target not in targets or beat.target in firsts:
                continue
            stats = beat.stats
            ok = stats.connected if isinstance(stats, GrabberStats) else beat.ready
            if ok and isinstance(stats, GrabberStats | StitcherStats):
                firsts[beat.target] = at - t0
    if len(firsts) < len(targets) or min(firsts.values()) < 0:
        return None
    return max(firsts.values())


async def _run(ctx: Context) -> list[Result]:
    repeats = ctx.pick(3, 5)
    names = list(COLOURS)
    colours = [COLOURS[n] for n in names]
    samples: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    sources = {n: LiveHlsSource(rgb, width=320, height=180, fps=25) for n, rgb in COLOURS.items()}
    with SourceServer(sources, workers=64) as server:
        # Shipped timings, apart from a short idle timeout so that each repeat starts clean.
        env = {"TESSERA_IDLE_TIMEOUT": "2"}
        async with StackHost(ctx.work_dir, "cold-start", env) as host, Watchers(host) as watchers:
            for r in range(repeats):
                # Fresh URLs (a query the source server ignores) make fresh sources: cold.
                pattern = (
                    f"http://127.0.0.1:{server.port}/{{{','.join(names)}}}[n]/index.m3u8?r={r}-"
                    f"{os.getpid()}"
                )
                for kind in ("cold", "warm"):
                    timing = await one_start(host, pattern, f"{kind} {r}", colours, 30.0)
                    watchers.fps.add(timing["fp"])  # keeps the sources live for the warm start
                    samples[kind].append(timing)
                    ctx.progress(
                        f"repeat {r + 1}/{repeats} {kind}: all live in "
                        f"{fmt(timing.get('all_live_s'))} s (workers started "
                        f"{fmt(timing['spawn_s'])} s, grabbers live "
                        f"{fmt(timing['grabbers_live_s'])} s, first segment "
                        f"{fmt(timing.get('first_segment_s'))} s)"
                    )
                watchers.fps.clear()
                await host.wait_no_workers(60.0)
    results = []
    for kind in ("warm", "cold"):
        runs = samples[kind]
        values = [s["all_live_s"] for s in runs if s.get("all_live_s") is not None]
        failed = len(runs) - len(values)

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return median([s[key] for s in runs if s.get(key) is not None])

        note = (
            f"median: workers started {fmt(med('spawn_s'))} s → grabbers publishing "
            f"{fmt(med('grabbers_live_s'))} s → stitcher's first segment stored "
            f"{fmt(med('stitcher_ready_s'))} s → first segment listed "
            f"{fmt(med('first_segment_s'))} s → all tiles live {fmt(median(values))} s"
        )
        if failed:
            note += f"; {failed} of {len(runs)} never showed every tile within 30 s"
        if values and median(values) > TARGET_S and kind == "cold":
            note += (
                f"; next: worker processes take {fmt(med('grabbers_live_s') - med('spawn_s'))} s "
                f"from start to publishing, {len(names) + 1} of them at once on "
                f"{ctx.cpus} cores, mostly importing (PyAV, nats-py, Tessera): start them "
                "(the fork server is on: is it still importing?); then cut the first segment short"
            )
        results.append(
            Result(
                NAME,
                f"cold_start_{kind}",
                median(values) if values else None,
                "s",
                target=TARGET_S,
                op="<=",
                ok=None if values else False,
                note=note,
                details={
                    "samples": values,
                    "latency_samples_ms": [v * 1000 for v in values],
                    "label": f"/create → all tiles live ({kind})",
                    "target_ms": TARGET_S * 1000,
                    "runs": runs,
                    "tiles": len(names),
                },
            )  # fmt: skip
        )
    return results
