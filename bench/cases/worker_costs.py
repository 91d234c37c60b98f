"""Case 13, worker costs: what one grabber, one stitcher and one JIT session cost the machine
that runs them, in cores (CPU-seconds per wall second) and memory, as placement counts them
(:mod:`pipeline.state.costs` holds the figures this case measured).

Every worker runs as it runs on an agent: a process forked by the provider's fork server, with
every tile frame on NATS (``TESSERA_FRAME_TRANSPORT=nats``: grabber and stitcher may be on two
machines, so no shared-memory slot).

- **Mosaics** of 1280x720 25 fps H.264 sources (:mod:`bench.media`'s clips, one distinct URL per
  tile): 16 tiles into 1280x720 (grabbers at 320x180), 16 tiles into 1920x1080 (480x270) and
  4 tiles into 1280x720 (640x360). Per grabber: the median over the mosaic's grabbers of each
  process's CPU over the window. nats-server's share is apart.
- **Stitchers**: the same three mosaics again over 480x270 clips of the same noisy pictures
  (an encoder's cost depends on what it encodes: a flat synthetic picture costs it a third),
  so that sixteen 720p decodes do not take the two cores the stitcher needs; its CPU per
  output second (divided by the share of pictures it made, as :func:`bench.mosaicrun.sample`
  does).
- **A JIT session** playing a 1280x720 25 fps H.264 file (GOP 50, B-frames) to one aiortc
  viewer over WHEP at real time: the worker's CPU over the window.
- **Memory**: each process's RSS and PSS (``/proc/<pid>/smaps_rollup``: shared pages divided
  among the processes that map them; a forked worker shares the fork server's imports).

No targets: the figures are inputs to placement. The note of each says how it was taken.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench import mosaicrun
from bench.cases.jit import media, pss_bytes
from bench.cases.mosaic_cost import pattern, serve_clips
from bench.core import Context, Result, fmt, median
from bench.cpu import CpuWindow, Proc, rss_bytes
from bench.jitclient import Viewer, browser_like_jitter_buffer
from bench.media import CLIP_BITRATE, CLIP_SIZE, _made, clip_args, clips
from bench.stack import StackHost, Watchers
from pipeline.messages.control import Play
from pipeline.sources.synthetic import SourceServer

NAME = "worker_costs"
TITLE = "13. Worker costs for placement (cores, memory)"
MOSAICS = (
    ("720p16", 16, (1280, 720)),
    ("1080p16", 16, (1920, 1080)),
    ("720p4", 4, (1280, 720)),
)
LIGHT_SIZE = (480, 270)
LIGHT_BITRATE = "450k"
JIT_FRAMES = 1500
MIB = 2**20


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> list[Result]:
    results = await _mosaics(ctx)
    results += await _jit(ctx)
    return results


def light_clips(cache_dir: Path) -> list[Path]:
    """The clips of :mod:`bench.media` at 480x270: the same noisy pictures (so the stitcher
    encodes what it would of cameras), at a decode cost that leaves the stitcher the machine."""
    big = "size={}x{}".format(*CLIP_SIZE)
    small = "size={}x{}".format(*LIGHT_SIZE)

    def args(variant: int, out: Path) -> list[str]:
        # The bit rate scaled with the picture (a decoder's cost follows the bits too).
        return [
            {CLIP_BITRATE: LIGHT_BITRATE}.get(a, a.replace(big, small))
            for a in clip_args(variant * 90, out)
        ]

    return _made(cache_dir, "light", args)


def _memory(procs: list[Proc]) -> tuple[float, float]:
    """Median RSS and PSS of ``procs``, MiB."""
    rss = [float(m) / MIB for p in procs if (m := rss_bytes(p.pid)) is not None]
    pss = [float(m) / MIB for p in procs if (m := pss_bytes(p.pid)) is not None]
    return (median(rss) if rss else 0.0), (median(pss) if pss else 0.0)


async def _mosaics(ctx: Context) -> list[Result]:
    rounds = ctx.pick(1, 2)
    window = ctx.pick(5.0, 10.0)
    warmup = ctx.pick(2.0, 4.0)
    paths = clips(ctx.cache_dir)
    light = [path.read_bytes() for path in light_clips(ctx.cache_dir)]
    env = {"TESSERA_IDLE_TIMEOUT": "2", "TESSERA_FRAME_TRANSPORT": "nats"}
    figures: dict[str, dict[str, list[float]]] = {}
    runs = 0
    with SourceServer(workers=32) as server:
        for i in range(max(tiles for _, tiles, _ in MOSAICS)):
            server.add_file(f"light{i:02d}.mp4", light[i % len(light)], "video/mp4")
        async with StackHost(ctx.work_dir, "costs", env) as host, Watchers(host) as watchers:
            for r in range(rounds):
                for name, tiles, size in MOSAICS:
                    for sources in ("720p", "light"):
                        if sources == "720p":
                            names = serve_clips(server, paths, tiles)
                            source = pattern(server.port, names)
                        else:
                            # Each tile its own URL (its own grabber) over the light clips.
                            urls = ",".join(f"light{i:02d}" for i in range(tiles))
                            source = f"http://127.0.0.1:{server.port}/files/{{{urls}}}.mp4"
                        # A picture of its own in every run (alarm holds are part of it), so
                        # no earlier run's stream stands in for this one's.
                        runs += 1
                        holds = {"alarms": f"black:{runs + 1}"}
                        key = f"{name}-{sources}"
                        fps: list[str] = []
                        try:
                            fps, _ = await mosaicrun.start(
                                host, watchers, [(source, key)], size=size, query=holds
                            )
                            got = await _sample(host, fps, window=window, warmup=warmup)
                        finally:
                            await mosaicrun.stop(host, watchers, fps)
                        for item, value in got.items():
                            figures.setdefault(key, {}).setdefault(item, []).append(value)
                        ctx.progress(
                            f"round {r + 1}/{rounds} {key}: grabber {got['grabber']:.3f} cores "
                            f"(PSS {got['grabber_pss']:.0f} MiB), stitcher "
                            f"{got['stitcher']:.3f} (PSS {got['stitcher_pss']:.0f} MiB), "
                            f"nats-server {got['nats']:.3f}, pictures {got['realtime']:.0%}"
                        )
    results = []
    for name, tiles, (w, h) in MOSAICS:
        g = {item: median(values) for item, values in figures[f"{name}-720p"].items()}
        s = {item: median(values) for item, values in figures[f"{name}-light"].items()}
        side = 4 if tiles == 16 else 2
        tile = f"{w // side}x{h // side}"
        results.append(Result(
            NAME, f"grabber_cores_{name}", g["grabber"], "cores",
            note=f"one grabber of a 1280x720 25 fps source into a {tile} tile (median of "
            f"{tiles}); RSS {fmt(g['grabber_rss'])} MiB, PSS {fmt(g['grabber_pss'])} MiB; "
            f"nats-server {fmt(g['nats'] / tiles)} cores a tile",
            details={"samples": figures[f"{name}-720p"]},
        ))  # fmt: skip
        results.append(Result(
            NAME, f"stitcher_cores_{name}", s["stitcher"], "cores",
            note=f"the stitcher of {tiles} tiles into {w}x{h} at 25 fps (480x270 clips of the "
            f"same pictures, so that the grabbers leave it room); RSS "
            f"{fmt(s['stitcher_rss'])} MiB, PSS {fmt(s['stitcher_pss'])} MiB; pictures made "
            f"{s['realtime']:.0%}",
            details={"samples": figures[f"{name}-light"]},
        ))  # fmt: skip
    return results


async def _sample(
    host: StackHost, fps: list[str], *, window: float, warmup: float
) -> dict[str, float]:
    """One window over a running mosaic: per-process CPU and memory of its workers."""
    await asyncio.sleep(warmup)
    procs = await host.processes()
    cpu = CpuWindow(procs).begin()
    await asyncio.sleep(window)
    cpu.end()
    realtime = mosaicrun._realtime(host, fps, cpu.started, cpu.ended)
    grabbers = [p for p in procs if p.role == "grabber"]
    stitchers = [p for p in procs if p.role == "stitcher"]
    nats = [p for p in procs if p.role == "nats-server"]
    g_rss, g_pss = _memory(grabbers)
    s_rss, s_pss = _memory(stitchers)
    return {
        "grabber": median([cpu.spent([p]) / cpu.seconds for p in grabbers]),
        "grabber_rss": g_rss,
        "grabber_pss": g_pss,
        # Per output second, as bench.mosaicrun.sample counts a stitcher that fell behind.
        "stitcher": cpu.spent(stitchers) / cpu.seconds / max(0.05, realtime),
        "stitcher_rss": s_rss,
        "stitcher_pss": s_pss,
        "nats": cpu.spent(nats) / cpu.seconds,
        "realtime": realtime,
    }


async def _jit(ctx: Context) -> list[Result]:
    from tests.jitmedia import read_frame_number

    browser_like_jitter_buffer()
    video = media(ctx.cache_dir, JIT_FRAMES)  # a minute: it plays through every window
    window = ctx.pick(5.0, 10.0)
    rounds = ctx.pick(1, 3)
    env = {"JIT_MEDIA_ROOTS": str(video.parent), "TESSERA_SESSION_RATE": "1000"}
    cores: list[float] = []
    rss: list[float] = []
    pss: list[float] = []
    sent: list[float] = []
    async with StackHost(ctx.work_dir, "costs-jit", env) as host:
        assert host.http is not None
        for r in range(rounds):
            got = await host.http.post("/session", json={"inputs": [{"url": str(video)}]})
            if got.status_code != 201:
                raise RuntimeError(f"POST /session answered {got.status_code}: {got.text}")
            body = got.json()
            viewer = Viewer(read_frame_number)
            try:
                await viewer.connect(host.http, body["whep_url"])
                await asyncio.wait_for(viewer.opened.wait(), 30)
                viewer.send(Play())
                await asyncio.sleep(2.0)  # playing steadily
                workers = [p for p in await host.workers("jit") if p.target == body["id"]]
                window_cpu = CpuWindow(workers).begin()
                before = len(viewer.frames)
                began = time.monotonic()
                await asyncio.sleep(window)
                window_cpu.end()
                made = (len(viewer.frames) - before) / (time.monotonic() - began)
                cores.append(window_cpu.spent() / window_cpu.seconds)
                m_rss, m_pss = _memory(workers)
                rss.append(m_rss)
                pss.append(m_pss)
                sent.append(made)
                ctx.progress(
                    f"round {r + 1}/{rounds} jit 720p playing: {cores[-1]:.3f} cores, "
                    f"RSS {m_rss:.0f} MiB, PSS {m_pss:.0f} MiB, {made:.1f} frames/s at the viewer"
                )
            finally:
                await viewer.close()
                await host.http.delete(f"/session/{body['id']}")
    return [
        Result(
            NAME, "jit_cores_720p_playing", median(cores), "cores",
            note=f"a JIT session playing a 1280x720 25 fps H.264 file to one viewer at real "
            f"time ({fmt(median(sent))} frames/s decoded at the viewer); RSS "
            f"{fmt(median(rss))} MiB, PSS {fmt(median(pss))} MiB",
            details={"cores": cores, "rss_mib": rss, "pss_mib": pss},
        ),
    ]  # fmt: skip
