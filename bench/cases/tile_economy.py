"""Case 11, tile economy (issue 18): decode what a tile shows, from sources that offer several
renditions; the largest wall that keeps real time; mosaics that share their work.

Sources: :data:`~bench.media.CLIP_VARIANTS` HLS master playlists (:func:`bench.media.masters`:
one hue each; 1920x1080, 1280x720, 640x360 and 320x180 H.264 at 25 fps, 20 s VOD, listed
biggest first), served over loopback under distinct names per tile (``camNN_master.m3u8``, the
master of hue NN mod 4), so every tile is its own URL and its own grabber. Mosaics are 1280x720
at 25 fps with case 1's encoder settings (veryfast, crf 23), monitoring as shipped.

**Renditions vs ffmpeg** (``cpu_ratio_16_tiles_masters``, target ≤ 0.35): a 16-tile mosaic
(320x180 tiles: each grabber picks the 320x180 rendition, checked in its heartbeat) against one
``ffmpeg`` doing the same xstack mosaic given the same master URLs (FFmpeg's HLS reader decodes
a master's first video stream, the 1080p one: what an ffmpeg pointed at a master does); and
(``cpu_ratio_16_tiles_best_fit``, target ≤ 1.0) against ffmpeg given the best-fit variants' URLs
by hand. CPU-seconds per output second, per round, median of rounds.

**The largest wall** (``largest_wall_tessera``, target ≥ 64 tiles; ``largest_wall_ffmpeg``, no
target): 16, 36 and 64 tiles (4x4, 6x6, 8x8 grids) in turn; real time for Tessera is the
stitcher making at least 97 % of its pictures with every grabber at 24 fps or more, for ffmpeg
an output speed of at least 0.97× (given the best-fit variants: its strongest setting). The
figure is the largest count that kept real time; the CPU of each is in the details.

**A second tile size** (``second_size_own_fit_ms``, ``second_size_scale_down_ms``, no target):
a URL shown at 320x180 in one mosaic and at 160x90 in another has two grabbers today, each
fitting its own rendition (both pick the 320x180 variant: the smallest that fills either tile);
scaling the larger grabber's tiles down instead would leave out the second demux and decode.
Both per frame, by :func:`bench.stages.grabber_stages` on a segment of that variant: the own
fit is demux + decode + scale + pack, the scale-down scale + pack of the same frames.

**Shared mosaics** (``k4_mosaics_cpu_ratio``, target ≤ 1.1): four mosaics of the same 16 tiles
and size (four ``/create`` calls that differ only in their titles: four fingerprints, four
pages, one picture) against one. They share the earliest one's stitcher
(:func:`pipeline.state.mosaic.outputs`) as well as the grabbers; mosaics whose pictures differ
(holds, sound, layout) each have a stitcher, which case 2 measures.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from bench import mosaicrun
from bench.cases.mosaic_cost import PRESET, ffmpeg_inputs_sample
from bench.core import Context, Result, fmt, median
from bench.media import Master, masters
from bench.stack import StackHost, Watchers
from bench.stages import WARMUP, grabber_stages
from pipeline.sources.synthetic import SourceServer
from pipeline.state.layouts import layout

NAME = "tile_economy"
TITLE = "11. Tile economy: renditions, the largest wall, shared mosaics"
SIZE = (1280, 720)
TILES = 16
WALLS = (16, 36, 64)
REALTIME = 0.97
GRABBER_FPS = 24.0
K = 4


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


def serve(server: SourceServer, made: list[Master], count: int) -> list[str]:
    """Serve the masters' files, and ``count`` distinct master URLs over them; their names."""
    for master in made:
        for name, path in master.files.items():
            server.add_file(name, path.read_bytes())
    names = []
    for i in range(count):
        name = f"cam{i:02d}"
        master = made[i % len(made)]
        server.add_file(f"{name}_master.m3u8", master.files[master.name].read_bytes())
        names.append(name)
    return names


def pattern(port: int, names: list[str]) -> str:
    return f"http://127.0.0.1:{port}/files/{{{','.join(names)}}}[n]_master.m3u8"


def best_fit(port: int, made: list[Master], n: int) -> list[str]:
    """The variant URLs a person would give ffmpeg by hand for ``n`` tiles: the smallest
    rendition that fills the tile."""
    rect = layout(n, *SIZE).rects[0]
    sizes = sorted(made[0].variants, key=lambda s: s[0] * s[1])
    fit = next((s for s in sizes if s[0] >= rect.w and s[1] >= rect.h), sizes[-1])
    return [f"http://127.0.0.1:{port}/files/{made[i % len(made)].variants[fit]}" for i in range(n)]


def master_urls(port: int, names: list[str]) -> list[str]:
    return [f"http://127.0.0.1:{port}/files/{name}_master.m3u8" for name in names]


async def _run(ctx: Context) -> list[Result]:
    ctx.progress("making the master playlists (1080p to 180p; cached after the first run)")
    made = masters(ctx.cache_dir)
    env = {"TESSERA_IDLE_TIMEOUT": "2", "TESSERA_X264_PRESET": PRESET, "TESSERA_X264_CRF": "23"}
    results: list[Result] = []
    with SourceServer(workers=96) as server:
        names = serve(server, made, max(WALLS))
        async with StackHost(ctx.work_dir, "tile-economy", env) as host, Watchers(host) as watchers:
            rig = Rig(host, watchers, server.port, made, names)
            results += await _ratios(ctx, rig)
            results += await _walls(ctx, rig)
            results += await _shared(ctx, host, watchers, server.port, names[:TILES])
    results += _second_size(made)
    return results


@dataclass
class Rig:
    """What every part of the case works with: the stack, its watchers, the source server's
    port, the masters and the tile names served over them."""

    host: StackHost
    watchers: Watchers
    port: int
    made: list[Master]
    names: list[str]


async def _ratios(ctx: Context, rig: Rig) -> list[Result]:
    host, watchers, port, made, names = (
        rig.host,
        rig.watchers,
        rig.port,
        rig.made,
        rig.names[:TILES],
    )
    rounds = ctx.pick(1, 3)
    window = ctx.pick(4.0, 6.0)
    warmup = ctx.pick(2.0, 3.0)
    tessera: list[mosaicrun.Sample] = []
    renditions: set[str] = set()
    vs_master: list[dict[str, float]] = []
    vs_fit: list[dict[str, float]] = []
    for r in range(rounds):
        mosaic = [(pattern(port, names), "")]
        fps: list[str] = []
        try:
            fps, took = await mosaicrun.start(host, watchers, mosaic, size=SIZE)
            sample = await mosaicrun.sample(host, fps, window=window, warmup=warmup)
            sample.start_s = took
            for sid in mosaicrun.sources_of(mosaic[0][0], SIZE):
                stats = host.beats.grabber(sid)
                renditions.add(stats.rendition if stats is not None else "?")
        finally:
            await mosaicrun.stop(host, watchers, fps)
        tessera.append(sample)
        ctx.progress(f"round {r + 1}/{rounds} Tessera {TILES} tiles from masters: "
                     f"{sample.cpu:.3f} CPU-s/s (pictures made {sample.realtime:.0%}; "
                     f"renditions {', '.join(sorted(renditions))})")  # fmt: skip
        ff = await ffmpeg_inputs_sample(
            ctx, master_urls(port, names), window, warmup, f"masters-r{r}", within=120.0
        )
        vs_master.append(ff)
        ctx.progress(f"round {r + 1}/{rounds} ffmpeg given the masters: {ff['cpu']:.3f} "
                     f"CPU-s/s (speed {ff['realtime']:.2f}×)")  # fmt: skip
        ff = await ffmpeg_inputs_sample(
            ctx, best_fit(port, made, len(names)), window, warmup, f"fit-r{r}", within=120.0
        )
        vs_fit.append(ff)
        ctx.progress(f"round {r + 1}/{rounds} ffmpeg given the best-fit variants: "
                     f"{ff['cpu']:.3f} CPU-s/s (speed {ff['realtime']:.2f}×)")  # fmt: skip
    t = median([s.cpu for s in tessera])
    rows = []
    for name, refs, target, what in (
        ("cpu_ratio_16_tiles_masters", vs_master, 0.35, "the master URLs (decodes 1080p)"),
        ("cpu_ratio_16_tiles_best_fit", vs_fit, 1.0, "the best-fit variant URLs"),
    ):
        ratios = [s.cpu / f["cpu"] for s, f in zip(tessera, refs, strict=True)]
        f = median([x["cpu"] for x in refs])
        speed = median([x["realtime"] for x in refs])
        chose = ", ".join(sorted(renditions))
        note = (f"Tessera {fmt(t)} vs ffmpeg given {what} {fmt(f)} CPU-s/s (ffmpeg speed "
                f"{speed:.2f}×); Tessera's renditions: {chose}")  # fmt: skip
        rows.append(
            Result(
                NAME,
                name,
                median(ratios),
                "× ffmpeg",
                target=target,
                op="<=",
                note=note,
                details={
                    "ratios": ratios,
                    "tessera_cpu_per_s": [s.cpu for s in tessera],
                    "ffmpeg_cpu_per_s": [x["cpu"] for x in refs],
                    "ffmpeg_realtime": [x["realtime"] for x in refs],
                    "tessera_realtime": [s.realtime for s in tessera],
                    "tessera_by_process": tessera[-1].roles,
                    "rounds": rounds,
                },
            )  # fmt: skip
        )
    return rows


async def _walls(ctx: Context, rig: Rig) -> list[Result]:
    host, watchers, port, made, names = rig.host, rig.watchers, rig.port, rig.made, rig.names
    window = ctx.pick(4.0, 6.0)
    warmup = ctx.pick(2.0, 3.0)
    walls = ctx.pick(WALLS[-1:], WALLS)
    seen: dict[int, dict[str, Any]] = {}
    tessera_best = ffmpeg_best = 0
    for n in walls:
        mosaic = [(pattern(port, names[:n]), "")]
        fps: list[str] = []
        try:
            fps, took = await mosaicrun.start(host, watchers, mosaic, size=SIZE, within=180.0)
            sample = await mosaicrun.sample(host, fps, window=window, warmup=warmup)
        finally:
            await mosaicrun.stop(host, watchers, fps)
        keeps = sample.realtime >= REALTIME and sample.grabber_fps >= GRABBER_FPS
        ff = await ffmpeg_inputs_sample(
            ctx, best_fit(port, made, n), window, warmup, f"wall-{n}", within=180.0
        )
        ff_keeps = ff["realtime"] >= REALTIME
        if keeps:
            tessera_best = max(tessera_best, n)
        if ff_keeps:
            ffmpeg_best = max(ffmpeg_best, n)
        seen[n] = {"tessera_cpu": sample.cpu, "tessera_pictures": sample.realtime,
                   "tessera_grabber_fps": sample.grabber_fps, "tessera_ready_s": took,
                   "tessera_by_process": sample.roles, "ffmpeg_cpu": ff["cpu"],
                   "ffmpeg_speed": ff["realtime"]}  # fmt: skip
        ctx.progress(f"{n} tiles: Tessera {sample.cpu:.3f} CPU-s/s, pictures made "
                     f"{sample.realtime:.0%}, grabbers at {sample.grabber_fps:.1f} fps "
                     f"({'real time' if keeps else 'behind'}); ffmpeg {ff['cpu']:.3f} "
                     f"CPU-s/s, speed {ff['realtime']:.2f}× "
                     f"({'real time' if ff_keeps else 'behind'})")  # fmt: skip
    largest = max(walls)
    at = seen[largest]
    note = (f"{largest} tiles: Tessera {fmt(at['tessera_cpu'])} CPU-s/s, "
            f"{at['tessera_pictures']:.0%} of its pictures, grabbers at "
            f"{at['tessera_grabber_fps']:.1f} fps; ffmpeg (best-fit variants) speed "
            f"{at['ffmpeg_speed']:.2f}× at {fmt(at['ffmpeg_cpu'])} CPU-s/s; tried "
            f"{', '.join(map(str, walls))}")  # fmt: skip
    return [
        Result(NAME, "largest_wall_tessera", float(tessera_best), "tiles", target=64.0, op=">=",
               note=note, details={"walls": seen}),
        Result(NAME, "largest_wall_ffmpeg", float(ffmpeg_best), "tiles",
               note="ffmpeg given the best-fit variant URLs, one process (xstack)",
               details={"walls": seen}),
    ]  # fmt: skip


async def _shared(
    ctx: Context, host: StackHost, watchers: Watchers, port: int, names: list[str]
) -> list[Result]:
    window = ctx.pick(4.0, 6.0)
    warmup = ctx.pick(2.0, 3.0)
    rounds = ctx.pick(1, 2)
    ratios = []
    ones, fours = [], []
    for r in range(rounds):
        one = await mosaicrun.measure(
            host, watchers, [(pattern(port, names), "one")], window=window, warmup=warmup
        )
        four = await mosaicrun.measure(
            host,
            watchers,
            [(pattern(port, names), f"wall {k}") for k in range(K)],
            window=window,
            warmup=warmup,
        )
        ones.append(one.cpu)
        fours.append(four.cpu)
        ratios.append(four.cpu / one.cpu)
        stitchers = four.processes.get("stitcher", 0)
        ctx.progress(f"round {r + 1}/{rounds}: one mosaic {one.cpu:.3f}, {K} of the same tiles "
                     f"{four.cpu:.3f} CPU-s/s ({stitchers} stitchers)")  # fmt: skip
    note = (f"one {fmt(median(ones))}, {K} {fmt(median(fours))} CPU-s/s; the {K} titles ran "
            f"{stitchers} stitcher(s)")  # fmt: skip
    return [
        Result(NAME, "k4_mosaics_cpu_ratio", median(ratios), "× one", target=1.1, op="<=",
               note=note, details={"one": ones, "four": fours})
    ]  # fmt: skip


def _second_size(made: list[Master]) -> list[Result]:
    """Per frame: a 160x90 tile fitted from its own rendition, against the 320x180 grabber's
    decoded pictures scaled down."""
    segment = made[0].files[made[0].variants[(320, 180)].replace(".m3u8", "_0.ts")]
    stages, _ = grabber_stages(segment, (160, 90), 50 - WARMUP)
    own = sum(stages.values())
    down = stages["scale"] + stages["pack"]
    split = ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
    note = (f"own fit {own:.3f} ms a frame ({split}) against {down:.3f} ms to scale the larger "
            f"tile down: {own / down:.1f}× the CPU, and the variant's segments fetched twice; "
            "not built yet: a grabber per URL and tile size")  # fmt: skip
    return [
        Result(NAME, "second_size_own_fit_ms", own, "ms/frame", note=note, details=stages),
        Result(NAME, "second_size_scale_down_ms", down, "ms/frame", note="scale + pack only"),
    ]
