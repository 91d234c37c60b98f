"""Running mosaics on a stack host and measuring what they cost: the shared core of the mosaic
cost (1) and shared sources (2) cases.

:func:`start` creates mosaics, keeps them watched and waits until every stitcher has stored a
segment and every grabber publishes; :func:`sample` lets them settle, then measures the CPU of
every Tessera process (the host with gateway, controller and projector; nats-server; grabbers;
stitchers) over a window; :func:`stop` stops watching and waits until the controller has
stopped every worker, so the next measurement starts from nothing. :func:`measure` is the
three in a row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import urldsl
from bench.cpu import CpuWindow
from bench.stack import StackHost, Watchers, until
from pipeline.state.layouts import layout
from pipeline.state.mosaic import source_id

FPS = 25
SIZE = (1280, 720)


@dataclass
class Sample:
    """One measurement window."""

    cpu: float
    """CPU-seconds per output second of every Tessera process (see :func:`sample`)."""
    roles: dict[str, float]
    """The same, per role: host (gateway + controller + projector), nats-server, grabber,
    stitcher."""
    realtime: float
    """Pictures the stitchers made per picture due (1.0: kept up; less: the machine was too
    busy, and the figure is less sure)."""
    window: float
    main_threads: dict[str, float] = field(default_factory=dict)
    """CPU-seconds per output second of the main threads (event loops) per role: in workers,
    the loop publishes (grabber) or receives (stitcher) frames; the other threads decode,
    scale and pack (grabber) or compose and encode (stitcher)."""
    processes: dict[str, int] = field(default_factory=dict)
    grabber_fps: float = 0.0
    """Mean frames per second published per grabber."""
    start_s: float = 0.0
    """Seconds from /create to every stitcher ready and every grabber publishing."""


def sources_of(pattern: str, size: tuple[int, int]) -> list[str]:
    """Source ids of the tiles ``pattern`` makes in a mosaic of ``size``."""
    streams = urldsl.expand(pattern)
    grid = layout(len(streams), *size)
    return [source_id(s.url, r.w, r.h) for s, r in zip(streams, grid.rects, strict=True)]


async def start(
    host: StackHost,
    watchers: Watchers,
    mosaics: list[tuple[str, str]],
    *,
    size: tuple[int, int] = SIZE,
    within: float = 90.0,
    query: dict[str, str] | None = None,
    queries: Sequence[dict[str, str]] | None = None,
) -> tuple[list[str], float]:
    """Create ``mosaics`` (pattern, title), with the ``/create`` parameters ``query`` if any
    (and ``queries[i]`` for the i-th), keep them watched, and wait until every stitcher has
    stored a segment and every grabber publishes; their fingerprints and the seconds that
    took."""
    began = asyncio.get_running_loop().time()
    size_text = f"{size[0]}x{size[1]}"
    each = list(queries) if queries is not None else [{} for _ in mosaics]
    fps = [
        await host.create(p, title=t, size=size_text, query={**(query or {}), **q})
        for (p, t), q in zip(mosaics, each, strict=True)
    ]
    watchers.fps.update(fps)
    sources = sorted({sid for pattern, _ in mosaics for sid in sources_of(pattern, size)})

    async def streaming(fp: str) -> bool:
        # Its own stitcher is ready, or (a mosaic that differs from an earlier one only in its
        # title plays that one's stream) its playlist lists a whole segment.
        if host.beats.stitcher_ready(fp):
            return True
        return "#EXTINF" in await host.playlist(fp)

    async def ready() -> bool:
        stats = [host.beats.grabber(sid) for sid in sources]
        if not all(s is not None and s.connected and s.fps_out > FPS * 0.8 for s in stats):
            return False
        return all([await streaming(fp) for fp in fps])

    try:
        await until(ready, within, f"{len(fps)} mosaics of {len(sources)} sources running")
    except BaseException:
        watchers.fps.difference_update(fps)  # not left watched (and running) by a failed start
        raise
    return fps, asyncio.get_running_loop().time() - began


async def stop(host: StackHost, watchers: Watchers, fps: list[str]) -> None:
    """Stop watching ``fps`` and wait until the controller has stopped every worker."""
    watchers.fps.difference_update(fps)
    await host.wait_no_workers(60.0)


async def sample(host: StackHost, fps: list[str], *, window: float, warmup: float) -> Sample:
    """Measure the running mosaics ``fps`` (and everything else the stack runs) over a window.

    CPU is per second of output: every process's CPU per wall second, except the stitchers',
    whose CPU is divided by the share of pictures they made (a stitcher that falls behind skips
    pictures, and spends less; the grabbers decode every frame whatever the stitcher does).
    """
    await asyncio.sleep(warmup)
    procs = await host.processes()
    counts: dict[str, int] = {}
    for proc in procs:
        counts[proc.role] = counts.get(proc.role, 0) + 1
    cpu = CpuWindow(procs).begin()
    await asyncio.sleep(window)
    cpu.end()
    # The stitchers that run: one per mosaic, or one for mosaics that differ only in titles.
    stitchers = sorted({p.target for p in procs if p.role == "stitcher"}) or fps
    realtime = _realtime(host, stitchers, cpu.started, cpu.ended)
    scale = {"stitcher": 1.0 / max(0.05, realtime)}

    def per_s(role: str, spent: float) -> float:
        return spent * scale.get(role, 1.0) / cpu.seconds

    roles = {role: per_s(role, spent) for role, spent in cpu.by_role().items()}
    mains = {
        role: per_s(role, cpu.main_thread([p for p in procs if p.role == role])) for role in counts
    }
    grabbers = [p.target for p in procs if p.role == "grabber"]
    rates = [s.fps_out for sid in grabbers if (s := host.beats.grabber(sid)) is not None]
    return Sample(
        cpu=sum(roles.values()),
        roles=roles,
        main_threads=mains,
        realtime=realtime,
        window=cpu.seconds,
        processes=counts,
        grabber_fps=sum(rates) / max(1, len(rates)),
    )


async def measure(
    host: StackHost,
    watchers: Watchers,
    mosaics: list[tuple[str, str]],
    *,
    window: float,
    warmup: float,
    size: tuple[int, int] = SIZE,
    query: dict[str, str] | None = None,
) -> Sample:
    """:func:`start` ``mosaics``, :func:`sample` them, :func:`stop` them."""
    fps: list[str] = []
    try:
        fps, took = await start(host, watchers, mosaics, size=size, query=query)
        got = await sample(host, fps, window=window, warmup=warmup)
        got.start_s = took
        return got
    finally:
        await stop(host, watchers, fps)


def _realtime(host: StackHost, fps: list[str], start: float, end: float) -> float:
    """Mean over the stitchers of output seconds per wall second, from their late frames."""
    rates = []
    for fp in fps:
        trail = host.beats.stitcher_trail(fp)
        if len(trail) < 2:
            continue
        first = min(trail, key=lambda item: abs(item[0] - start))
        last = min(trail, key=lambda item: abs(item[0] - end))
        span = last[0] - first[0]
        if span <= 0:
            continue
        late = last[1].late_frames - first[1].late_frames
        rates.append(max(0.0, 1.0 - late / (span * FPS)))
    return sum(rates) / len(rates) if rates else 1.0
