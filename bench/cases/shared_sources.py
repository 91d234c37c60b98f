"""Case 2, shared sources: k = 1, 2, 4 mosaics over the same 9 sources (1280x720 25 fps H.264
clips, as in case 1; the mosaics differ by their titles and alarm holds (``alarms=black:N``), so
they share tile size and grabbers but not their pictures: each has a stitcher of its own.
Mosaics that differ by title alone share one stitcher and cost nothing more: case 11 measures
that).
Figure: total CPU of every Tessera process relative to k = 1, measured in the same round (a
round runs k = 1, adds a mosaic for k = 2 and two more for k = 4, then stops them all; rounds
repeat); target ≤ 1 + 0.2·(k−1). What each extra mosaic adds is one
stitcher (compose + encode) and its share of the bus (nats-server fans every frame out once
more).
"""

from __future__ import annotations

import asyncio

from bench import mosaicrun
from bench.cases.mosaic_cost import pattern, serve_clips
from bench.core import Context, Result, fmt, median
from bench.media import clips
from bench.stack import StackHost, Watchers
from pipeline.sources.synthetic import SourceServer

NAME = "shared_sources"
TITLE = "2. k mosaics on shared sources"
SOURCES = 9
KS = (1, 2, 4)


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> list[Result]:
    rounds = ctx.pick(1, 3)
    window = ctx.pick(4.0, 8.0)
    warmup = ctx.pick(1.5, 3.0)
    paths = clips(ctx.cache_dir)
    samples: dict[int, list[mosaicrun.Sample]] = {k: [] for k in KS}
    # The shipped encoder preset (case 1 compares with ffmpeg at one preset for both sides;
    # here the question is what one more mosaic costs as Tessera ships).
    env = {"TESSERA_IDLE_TIMEOUT": "2"}
    with SourceServer(workers=32) as server:
        names = serve_clips(server, paths, SOURCES)
        source = pattern(server.port, names)
        async with StackHost(ctx.work_dir, "shared", env) as host, Watchers(host) as watchers:
            for r in range(rounds):
                # One round: k = 1, then more mosaics over the same running grabbers, then
                # everything stops, so each round starts from nothing.
                fps: list[str] = []
                try:
                    for k in KS:
                        added = range(len(fps), k)
                        more = [(source, f"wall {i + 1}") for i in added]
                        holds = [{"alarms": f"black:{i + 2}"} for i in added]
                        new, _ = await mosaicrun.start(host, watchers, more, queries=holds)
                        fps += new
                        got = await mosaicrun.sample(host, fps, window=window, warmup=warmup)
                        samples[k].append(got)
                        ctx.progress(
                            f"round {r + 1}/{rounds} k={k}: {got.cpu:.3f} CPU-s/s, "
                            f"{got.processes.get('stitcher', 0)} stitchers, "
                            f"{got.processes.get('grabber', 0)} grabbers "
                            f"(pictures made {got.realtime:.0%})"
                        )
                finally:
                    await mosaicrun.stop(host, watchers, fps)
    results = []
    base = samples[1]
    for k in KS:
        relative = [s.cpu / b.cpu for s, b in zip(samples[k], base, strict=True)]
        roles = {
            role: median([s.roles.get(role, 0.0) for s in samples[k]])
            for role in ("host", "nats-server", "grabber", "stitcher")
        }
        extra = ""
        if k > 1:
            added = median([s.cpu - b.cpu for s, b in zip(samples[k], base, strict=True)])
            extra = f"; each extra mosaic adds {fmt(added / (k - 1))} CPU-s/s"
        note = (
            f"{fmt(median([s.cpu for s in samples[k]]))} CPU-s/s: "
            + ", ".join(f"{role} {fmt(v)}" for role, v in roles.items())
            + extra
        )
        if k > 1 and median(relative) > 1 + 0.2 * (k - 1):
            stitcher = roles["stitcher"] / k
            allowed = 0.2 * median([b.cpu for b in base])
            note += (
                f"; next: an extra mosaic is a whole stitcher ({fmt(stitcher)} CPU-s/s: its "
                f"1280x720 x264 encode, ~3.4 ms a picture at ultrafast, and composing {SOURCES} "
                f"tiles, ~0.6 ms) where {fmt(allowed)} is allowed: one stitcher for mosaics "
                "whose pictures are the same, or a cheaper encoder"
            )
        busy = [s.realtime for s in samples[k] if s.realtime < 0.9]
        if busy:
            note += (
                f"; the machine could not keep up (stitchers made {min(busy):.0%} of their "
                "pictures; their CPU is scaled to every picture)"
            )
        results.append(
            Result(
                NAME,
                f"relative_cpu_k{k}",
                median(relative),
                "× k=1",
                target=1 + 0.2 * (k - 1) if k > 1 else None,
                op="<=",
                note=note,
                details={
                    "k": k,
                    "relative": relative,
                    "cpu_per_s": [s.cpu for s in samples[k]],
                    "by_process": roles,
                    "processes": samples[k][-1].processes,
                    "realtime": [s.realtime for s in samples[k]],
                    "window_s": window,
                    "rounds": rounds,
                },
            )  # fmt: skip
        )
    return results
