"""Case 12, issue 19 part 4: long GOPs and big pictures at review speed, in the JIT worker's
frame reader (``VideoReader``), in this process.

On a 1080p and a UHD H.264 master with a 250-frame GOP and B-frames
(:mod:`bench.longgop_media`), each with one slice thread (the original program's default) and
with two frame threads (what a session of a video above 720p decodes with by default,
:func:`~pipeline.producers.jit.decoder.decode_threads`; UHD with these only):

- seek: ``read(n)`` of random frames, from the call to the exact frame decoded and converted
  (targets p95 ≤ 120 ms);
- step +1 and step −1: runs of single steps from random places (a step back across the keyframe
  included), same measure (target p95 ≤ 40 ms);
- memory: the most bytes of decoded pictures the reader's cache held (its bound is
  ``CACHE_BYTES``).

Every picture's frame number is read off its pixels and must be the one asked for. This is the
decode + convert part of case 6's seek figure (no encode, RTP or viewer decode).

Then the same with the seek proxy (:mod:`pipeline.producers.jit.proxy`), through the session's
own player (:class:`~pipeline.producers.jit.player.Player`, with a viewer that keeps what it
is offered instead of a WebRTC track), with a session's default decoder settings (two frame
threads at 1080p and UHD):

- the proxy's build: wall and CPU seconds (the whole process: the builder's decoder threads
  included) and MiB, per minute of video, built at nice 19 with nothing else to do;
- seek, step +1 and step −1 (as above), each command until its exact picture: ms to the first
  picture offered (the proxy's, or the exact one when it came within the player's grace,
  :mod:`pipeline.producers.jit.grace`) and to the exact one;
- scrub: a seek every :data:`SCRUB_GAP` s without waiting for the exact picture (each seek
  calls off the decode of the one before): ms to its first picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bench.core import Context, Result, fmt, percentile
from bench.longgop_media import Master, master, number_in
from pipeline.messages.control import FrameReport
from pipeline.messages.events import SessionOptions
from pipeline.producers.jit import proxyplan
from pipeline.producers.jit.audio import AudioReader
from pipeline.producers.jit.decoder import CACHE_BYTES, VideoReader, decode_threads
from pipeline.producers.jit.inputs import InputAccess, open_input
from pipeline.producers.jit.playback import Playback
from pipeline.producers.jit.player import Player
from pipeline.producers.jit.proxy import (
    BUILD_NICE,
    BUILD_THREADS,
    ProxyBuilder,
    ProxyReader,
    ProxyStore,
)
from pipeline.producers.jit.threads import MediaThread
from pipeline.producers.jit.worker import PROXY_BYTES
from pipeline.sources.policy import SourcePolicy

NAME = "jit_longgop"
TITLE = "12. JIT long GOP and big pictures (seek, step ±1)"
TARGET_SEEK_P95_MS = 120.0
TARGET_STEP_P95_MS = 40.0
SIZES = (("1080p", 1920, 1080), ("2160p", 3840, 2160))
SCRUB_GAP = 0.2
KINDS = tuple(f"{k}_{w}" for k in ("seek", "step+1", "step-1", "scrub") for w in ("first", "exact"))
THREADS = (("1 slice thread", SessionOptions(threads=1)),
           ("2 frame threads", SessionOptions(threads=2, thread_type="frame")))  # fmt: skip


def run(ctx: Context) -> list[Result]:
    results: list[Result] = []
    for label, width, height in SIZES:
        ctx.progress(f"making the {label} GOP-250 master (cached)")
        media = master(ctx.cache_dir, f"h264-{label}", width, height)
        # UHD with one thread decodes ~13 frames a second: a seek or a step back across a
        # keyframe takes up to 20 s, so UHD is measured with two frame threads only, to keep
        # the case a few minutes long.
        configs = THREADS[1:] if width * height > 1920 * 1080 else THREADS
        for threads, options in configs:
            figures = measure(ctx, media, options)
            results += _results(media, threads, figures)
        # With the seek proxy, as a session plays it by default: its threads chosen for the
        # video (decoder.decode_threads: two frame threads above 720p).
        count, kind = decode_threads(SessionOptions(), width, height)
        threads = f"{count} {kind} thread{'s' if count > 1 else ''} (the default)"
        proxied = measure_proxied(ctx, media, SessionOptions(), ctx.work_dir / f"proxy-{label}")
        results += _proxied_results(media, threads, proxied)
    return results


def _proxied_results(media: Master, threads: str, figures: dict[str, list[float]]) -> list[Result]:
    what = f"{media.label} GOP-{media.gop} H.264, {threads}, with the seek proxy"
    wrong = len(figures["wrong_proxied"])
    bad = f"; {wrong} pictures were not the frame asked for" if wrong else ""
    results = []
    for kind in KINDS:
        samples = figures[kind]
        if not samples:
            continue
        base = kind.split("_")[0]
        target = TARGET_STEP_P95_MS if base.startswith("step") else TARGET_SEEK_P95_MS
        shown = "first picture (proxy or exact)" if kind.endswith("first") else "exact picture"
        results.append(Result(
            NAME, f"{media.label}_proxied_{base.replace('+1', '_fwd').replace('-1', '_back')}_"
            f"{kind.split('_')[1]}_p95", percentile(samples, 95), "ms", target=target,
            ok=False if wrong else None,
            note=f"{what}: {base} → {shown}, {len(samples)} commands, median "
            f"{fmt(percentile(samples, 50))} ms, max {fmt(max(samples))} ms; "
            f"{int(figures['proxy_pictures'][0])} proxy pictures sent in all" + bad,
            details={"latency_samples_ms": samples, "target_ms": target,
                     "label": f"{base} → {shown} ({what})"},
        ))  # fmt: skip
    wall, cpu, mib = figures["build"]
    frames = int(figures["build_status"][0])
    for name, value, unit, text in (
        ("proxy_build_wall_per_min", wall, "s", "wall seconds to build the proxy of a minute"),
        ("proxy_build_cpu_per_min", cpu, "CPU-s", "CPU seconds (all threads) per minute"),
        ("proxy_size_per_min", mib, "MiB", "proxy on disk per minute of video"),
        ("proxy_build_memory", figures["build_rss"][0], "MiB",
         "memory the build added to the process at most (resident, sampled every 0.2 s)"),
    ):  # fmt: skip
        results.append(Result(
            NAME, f"{media.label}_{name}", value, unit,
            note=f"{what}: {text}; {frames} frames, JPEG q {proxyplan.QUALITY} at "
            f"{'x'.join(map(str, proxyplan.proxy_size(media.width, media.height)))}, "
            f"decoded with {BUILD_THREADS} frame threads at nice {BUILD_NICE}",
        ))  # fmt: skip
    return results


def _reader(path: Path, options: SessionOptions, cache_bytes: int = CACHE_BYTES) -> VideoReader:
    access = InputAccess(SourcePolicy.local(), media_roots=(path.parent,))
    return VideoReader(open_input(str(path), 1, access), options, cache_bytes=cache_bytes)


def _timed(video: VideoReader, n: int, wrong: list[int]) -> float:
    t0 = time.perf_counter()
    picture = video.read(n)
    ms = (time.perf_counter() - t0) * 1000
    if picture is None or number_in(picture.data[: picture.height]) != n:
        wrong.append(n)
    return ms


def measure(ctx: Context, media: Master, options: SessionOptions) -> dict[str, list[float]]:
    """Seek and step timings (ms) on ``media``, and the cache's peak bytes."""
    rng = random.Random(1904)
    # A UHD seek decodes up to a GOP at ~13 frames a second (seconds each): fewer of them, so
    # the case stays a few minutes long.
    uhd = media.width * media.height > 1920 * 1080
    seeks = ctx.pick(3, 5) if uhd else ctx.pick(8, 16)
    runs, run_length = (1 if uhd else ctx.pick(1, 2)), ctx.pick(25, 40)
    wrong: list[int] = []
    out: dict[str, list[float]] = {"seek": [], "step+1": [], "step-1": []}
    video = _reader(media.path, options)
    try:
        for _ in range(seeks):
            out["seek"].append(_timed(video, rng.randrange(media.frames), wrong))
        starts: list[tuple[str, int, Callable[[int], int]]] = []
        for _ in range(runs):
            starts.append(("step+1", rng.randrange(media.frames - run_length), lambda i: i))
            # Backwards from just after the keyframe, so every run crosses it.
            back = min(media.frames - 1, media.gop + rng.randrange(run_length // 2))
            starts.append(("step-1", back, lambda i: -i))
        for kind, start, sign in starts:
            video.read(start)  # the seek to the run's start is not a step
            for i in range(1, run_length):
                out[kind].append(_timed(video, start + sign(i), wrong))
        out["peak_bytes"] = [float(video.cache_peak_bytes)]
        out["wrong"] = [float(n) for n in wrong]
        out["seeks_decoded"] = [float(video.seeks), float(video.decoded)]
    finally:
        video.close()
    ctx.progress(
        f"{media.label} threads={options.threads}/{options.thread_type}: "
        + ", ".join(
            f"{k} p95 {fmt(percentile(out[k], 95))} ms" for k in ("seek", "step+1", "step-1")
        )
        + f", {len(wrong)} wrong"
    )
    return out


def _results(media: Master, threads: str, figures: dict[str, list[float]]) -> list[Result]:
    what = f"{media.label} GOP-{media.gop} H.264, {threads}"
    wrong = len(figures["wrong"])
    bad = f"; {wrong} pictures were not the frame asked for" if wrong else ""
    seeks, decoded = figures["seeks_decoded"]
    results = []
    for kind, target in (("seek", TARGET_SEEK_P95_MS), ("step+1", TARGET_STEP_P95_MS),
                         ("step-1", TARGET_STEP_P95_MS)):  # fmt: skip
        samples = figures[kind]
        results.append(Result(
            NAME, f"{media.label}_{kind.replace('+1', '_fwd').replace('-1', '_back')}_p95_"
            f"{threads.split()[0]}t", percentile(samples, 95), "ms", target=target,
            ok=False if wrong else None,
            note=f"{what}: {len(samples)} reads, median {fmt(percentile(samples, 50))} ms, "
            f"max {fmt(max(samples, default=float('nan')))} ms" + bad,
            details={"latency_samples_ms": samples, "target_ms": target,
                     "label": f"{kind} → exact frame ({what})"},
        ))  # fmt: skip
    peak = figures["peak_bytes"][0]
    results.append(Result(
        NAME, f"{media.label}_cache_peak_{threads.split()[0]}t", peak / 2**20, "MiB",
        target=CACHE_BYTES / 2**20,
        note=f"{what}: decoded pictures held by one session's reader at most; "
        f"{int(seeks)} decoder seeks, {int(decoded)} frames decoded in all",
    ))  # fmt: skip
    return results


# -- the session's player with a seek proxy ----------------------------------------------------


class _Track:
    """What the player offers a viewer's video track: kept, to read the frame number off."""

    def __init__(self) -> None:
        self.pictures: list[Any] = []
        self.dropped = 0

    def offer(self, data: Any, pts: int) -> None:
        del pts
        self.pictures.append(data)
        del self.pictures[:-2]

    def flush(self) -> None:
        """Nothing is queued here."""


class _Viewer:
    """A viewer without WebRTC: each report with the picture offered just before it."""

    def __init__(self) -> None:
        self.video = _Track()
        self.audio = None
        self.reports: list[tuple[float, FrameReport, int | None]] = []
        self.changed = asyncio.Event()

    def send_text(self, text: str) -> None:
        report = msgspec.json.decode(text, type=FrameReport)
        data = self.video.pictures[-1]
        height = data.shape[0] * 2 // 3
        self.reports.append((time.perf_counter(), report, number_in(data[:height])))
        self.changed.set()


def measure_proxied(
    ctx: Context, media: Master, options: SessionOptions, folder: Path
) -> dict[str, list[float]]:
    """The proxy's build, then seeks, steps and a scrub through the session's player."""
    return asyncio.run(_proxied(ctx, media, options, folder))


async def _proxied(
    ctx: Context, media: Master, options: SessionOptions, folder: Path
) -> dict[str, list[float]]:
    video_thread = MediaThread("bench-jit-video")
    audio_thread = MediaThread("bench-jit-audio")
    proxy_thread = MediaThread("bench-jit-proxy")
    video = await video_thread.run(_reader, media.path, options)
    audio = AudioReader([])
    playback = Playback(video.rate, video.frame_count)
    store = ProxyStore(folder, PROXY_BYTES)
    size = (video.converter.width, video.converter.height)
    build_options = msgspec.structs.replace(options, threads=BUILD_THREADS, thread_type="frame")
    builder = ProxyBuilder(
        store,
        lambda: _reader(media.path, build_options, cache_bytes=0),
        frame_count=media.frames,
        rate=video.rate,
        size=size,
        playhead=lambda: playback.position,
        busy=lambda: playback.playing,
        name="bench-jit-proxy-build",
    )
    out: dict[str, list[float]] = {}
    player: Player | None = None
    try:
        cpu0, wall0, rss0 = _process_cpu(), time.monotonic(), _rss()
        rss = rss0
        builder.start()
        deadline = wall0 + 1800
        while not await asyncio.to_thread(builder.wait_done, 0.2):
            rss = max(rss, _rss())  # the builder's reader, decoder and encoder
            if time.monotonic() > deadline:
                raise AssertionError(f"the proxy was not built in 1800 s: {builder.stats}")
        wall, cpu = time.monotonic() - wall0, _process_cpu() - cpu0
        minutes = media.frames / float(video.rate) / 60
        out["build"] = [wall / minutes, cpu / minutes, store.bytes / 2**20 / minutes]
        out["build_rss"] = [(rss - rss0) / 2**20]
        out["build_status"] = [float(store.frames)]
        ctx.progress(
            f"{media.label} proxy: {store.frames} frames in {wall:.1f} s ({cpu:.1f} CPU-s), "
            f"{store.bytes / 2**20:.1f} MiB, status {builder.stats.status}"
        )
        player = Player(
            playback=playback,
            video=video,
            video_thread=video_thread,
            audio=audio,
            audio_thread=audio_thread,
            selection=audio.layout.default_selection(),
            proxy=ProxyReader(store, size),
            proxy_thread=proxy_thread,
            cached=video.cached,
        )
        viewer = _Viewer()
        player.start()
        player.add(viewer)  # type: ignore[arg-type]
        await _until(viewer, 0, 0, exact=True)
        out |= await _commands(ctx, media, playback, player, viewer)
    finally:
        if player is not None:
            await player.stop()
        await asyncio.to_thread(builder.stop)
        await proxy_thread.close()
        await video_thread.close(video.close)
        await audio_thread.close()
        store.close()
    return out


def _rss() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _until(viewer: _Viewer, since: int, frame: int, *, exact: bool) -> None:
    deadline = time.monotonic() + 120
    while not any(
        r.frame == frame and (r.exact or not exact) for _, r, _ in viewer.reports[since:]
    ):
        viewer.changed.clear()
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no picture of frame {frame} within 120 s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(viewer.changed.wait(), left)


async def _command(
    playback: Playback, player: Player, viewer: _Viewer, target: int, delta: int | None, wait: bool
) -> tuple[float, float | None, list[int]]:
    """Seek (or step ``delta``) to ``target``: ms to its first picture and to its exact one
    (None when not waited for), and the wrong frame numbers seen."""
    since = len(viewer.reports)
    t0 = time.perf_counter()
    if delta is None:
        playback.seek(target, time.monotonic())
    else:
        playback.step(delta, time.monotonic())
    player.discard_queued()
    player.wake()
    await _until(viewer, since, target, exact=wait)
    mine = [(t, r, n) for t, r, n in viewer.reports[since:] if r.frame == target]
    wrong = [r.frame for _, r, n in mine if n != target]
    first = (mine[0][0] - t0) * 1000
    exact = next(((t - t0) * 1000 for t, r, _ in mine if r.exact), None)
    return first, exact, wrong


async def _commands(
    ctx: Context, media: Master, playback: Playback, player: Player, viewer: _Viewer
) -> dict[str, list[float]]:
    rng = random.Random(1904)
    uhd = media.width * media.height > 1920 * 1080
    seeks = ctx.pick(3, 5) if uhd else ctx.pick(8, 16)
    run_length = ctx.pick(25, 40)
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    wrong: list[int] = []

    async def one(kind: str, target: int, delta: int | None, wait: bool = True) -> None:
        first, exact, bad = await _command(playback, player, viewer, target, delta, wait)
        out[f"{kind}_first"].append(first)
        if exact is not None and wait:  # a scrub's next seek comes before its exact one
            out[f"{kind}_exact"].append(exact)
        wrong.extend(bad)

    for _ in range(seeks):
        await one("seek", rng.randrange(media.frames), None)
    start = rng.randrange(media.frames - run_length)
    await one("seek", start, None)
    for i in range(1, run_length):
        await one("step+1", start + i, 1)
    back = min(media.frames - 1, media.gop + rng.randrange(run_length // 2))
    await one("seek", back, None)
    for i in range(1, run_length):
        await one("step-1", back - i, -1)
    # Scrubbing: a seek every SCRUB_GAP s, each while the last one's exact picture decodes.
    for _ in range(ctx.pick(10, 20)):
        t0 = time.perf_counter()
        await one("scrub", rng.randrange(media.frames), None, wait=False)
        await asyncio.sleep(max(0.0, SCRUB_GAP - (time.perf_counter() - t0)))
    out["wrong_proxied"] = [float(n) for n in wrong]
    out["proxy_pictures"] = [float(player.proxy_pictures)]
    ctx.progress(
        f"{media.label} with the proxy: "
        + ", ".join(
            f"{k} first p95 {fmt(percentile(out[k + '_first'], 95))} ms"
            for k in ("seek", "step+1", "step-1", "scrub")
        )
        + f", {len(wrong)} wrong"
    )
    return out
