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
a URL shown at 320x180 in one mosaic and at 160x90 in another had two grabbers, each fitting
its own rendition (both pick the 320x180 variant: the smallest that fills either tile); one
grabber per URL now makes both sizes from one demux and decode. Both per frame, by
:func:`bench.stages.grabber_stages` on a segment of that variant: the own fit is demux +
decode + scale + pack, the scale-down scale + pack of the same frames.

**Where the smaller size is scaled from** (``second_size_via_tile_ms``, no target): the
smaller tiles of a grabber are scaled from the largest tile's picture, not from the decoded
one: per frame, the 160x90 scale from a 720p picture against from its 320x180 tile (a 720p
camera shown at both sizes), with the PSNR between the two tiles (the note; from the tile is
kept when it is cheaper and the two stay within rounding, ≥ 38 dB).

**Two mosaics of different sizes** (``two_sizes_cpu_ratio``, no target): the same 16 masters
in a 1280x720 mosaic (320x180 tiles) and a 640x360 one (160x90 tiles), together (16 grabbers
making both sizes) against the sum of each alone: what running them apart costs, which is what
the grabber per URL and size of before did (both sizes pick the 320x180 variant).

**Shared mosaics** (``k4_mosaics_cpu_ratio``, target ≤ 1.1): four mosaics of the same 16 tiles
and size (four ``/create`` calls that differ only in their titles: four fingerprints, four
pages, one picture) against one. They share the earliest one's stitcher
(:func:`pipeline.state.mosaic.outputs`) as well as the grabbers; mosaics whose pictures differ
(holds, sound, layout) each have a stitcher, which case 2 measures.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import mosaicrun
from bench.cases.mosaic_cost import PRESET, ffmpeg_inputs_sample
from bench.core import Context, Result, fmt, median
from bench.media import Master, masters
from bench.stack import StackHost, Watchers
from bench.stages import WARMUP, decoded, grabber_stages
from pipeline.producers.scale import TileScaler
from pipeline.sources.synthetic import SourceServer
from pipeline.state.layouts import layout

NAME = "tile_economy"
TITLE = "11. Tile economy: renditions, the largest wall, shared mosaics"
SIZE = (1280, 720)
SMALL = (640, 360)
"""The second mosaic of ``_two_sizes``: the same 16 tiles at 160x90."""
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
            results += await _two_sizes(ctx, rig)
    results += _second_size(made)
    results += _scale_via(made)
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
            "built: one grabber per URL makes every size")  # fmt: skip
    return [
        Result(NAME, "second_size_own_fit_ms", own, "ms/frame", note=note, details=stages),
        Result(NAME, "second_size_scale_down_ms", down, "ms/frame", note="scale + pack only"),
    ]


async def _two_sizes(ctx: Context, rig: Rig) -> list[Result]:
    """The same 16 sources at two tile sizes: two mosaics together against each alone."""
    host, watchers = rig.host, rig.watchers
    window = ctx.pick(4.0, 6.0)
    warmup = ctx.pick(2.0, 3.0)
    rounds = ctx.pick(1, 2)
    mosaic = pattern(rig.port, rig.names[:TILES])
    small = {"size": f"{SMALL[0]}x{SMALL[1]}"}
    ratios, alone, together = [], [], []
    sizes: set[tuple[str, ...]] = set()
    grabbers = 0
    for r in range(rounds):
        big_one = await mosaicrun.measure(host, watchers, [(mosaic, "big")], window=window,
                                          warmup=warmup, size=SIZE)  # fmt: skip
        small_one = await mosaicrun.measure(host, watchers, [(mosaic, "small")], window=window,
                                            warmup=warmup, size=SMALL)  # fmt: skip
        fps: list[str] = []
        try:
            fps, _ = await mosaicrun.start(host, watchers, [(mosaic, "big"), (mosaic, "small")],
                                           size=SIZE, queries=[{}, small])  # fmt: skip
            both = await mosaicrun.sample(host, fps, window=window, warmup=warmup)
            for sid in mosaicrun.sources_of(mosaic, SIZE):
                stats = host.beats.grabber(sid)
                sizes.add(stats.sizes if stats is not None else ())
        finally:
            await mosaicrun.stop(host, watchers, fps)
        grabbers = both.processes.get("grabber", 0)
        apart = big_one.cpu + small_one.cpu
        alone.append(apart)
        together.append(both.cpu)
        ratios.append(both.cpu / apart)
        ctx.progress(f"round {r + 1}/{rounds}: 1280x720 alone {big_one.cpu:.3f}, 640x360 alone "
                     f"{small_one.cpu:.3f}, both together {both.cpu:.3f} CPU-s/s ({grabbers} "
                     f"grabbers, sizes {sorted(sizes)})")  # fmt: skip
    note = (f"both together {fmt(median(together))} CPU-s/s against {fmt(median(alone))} for "
            f"each alone (summed): {grabbers} grabbers made "
            f"{', '.join(' + '.join(x) for x in sorted(sizes))}")  # fmt: skip
    return [
        Result(NAME, "two_sizes_cpu_ratio", median(ratios), "× apart", note=note,
               details={"together": together, "apart": alone, "grabbers": grabbers,
                        "sizes": sorted(sizes)})
    ]  # fmt: skip


def _scale_via(made: list[Master], count: int = 50 - WARMUP) -> list[Result]:
    """Per frame of a 720p picture: its 160x90 tile scaled from the picture against from its
    320x180 tile, and how far apart the two tiles are (PSNR)."""
    segment = made[0].files[made[0].variants[(1280, 720)].replace(".m3u8", "_0.ts")]
    first, direct, via = TileScaler(320, 180), TileScaler(160, 90), TileScaler(160, 90)
    spent = {"first": 0.0, "from_picture": 0.0, "from_tile": 0.0}
    errors: list[float] = []
    timed = 0
    for index, frame in enumerate(decoded(segment, count + WARMUP)):
        if index == WARMUP:
            spent.update(dict.fromkeys(spent, 0.0))
            errors.clear()
        began = time.thread_time()
        first.scale(frame)
        spent["first"] += time.thread_time() - began
        began = time.thread_time()
        want = bytes(direct.scale(frame))
        spent["from_picture"] += time.thread_time() - began
        began = time.thread_time()
        got = bytes(via.scale(frame, via=first.picture))
        spent["from_tile"] += time.thread_time() - began
        a = np.frombuffer(want, np.uint8).astype(np.float64)
        b = np.frombuffer(got, np.uint8).astype(np.float64)
        errors.append(float(((a - b) ** 2).mean()))
        timed += index >= WARMUP
    ms = {k: v * 1000 / max(1, timed) for k, v in spent.items()}
    mse = sum(errors) / max(1, len(errors))
    db = float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)
    ratio = ms["from_picture"] / ms["from_tile"]
    note = (f"160x90 from the 720p picture {ms['from_picture']:.3f} ms, from the 320x180 tile "
            f"{ms['from_tile']:.3f} ms a frame ({ratio:.1f}×; the 320x180 itself "
            f"{ms['first']:.3f} ms); the two tiles {db:.1f} dB PSNR apart")  # fmt: skip
    return [
        Result(NAME, "second_size_via_tile_ms", ms["from_tile"], "ms/frame", note=note,
               details={**ms, "psnr_db": db, "frames": timed}),
    ]  # fmt: skip
