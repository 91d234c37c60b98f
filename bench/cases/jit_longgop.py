"""Case 12, issue 19 part 4: long GOPs and big pictures at review speed, in the JIT worker's
frame reader (``VideoReader``), in this process.

On a 1080p and a UHD H.264 master with a 250-frame GOP and B-frames
(:mod:`bench.longgop_media`), each with the decoder settings of a session by default (one
slice thread) and with two frame threads:

- seek: ``read(n)`` of random frames, from the call to the exact frame decoded and converted
  (targets p95 ≤ 120 ms);
- step +1 and step −1: runs of single steps from random places (a step back across the keyframe
  included), same measure (target p95 ≤ 40 ms);
- memory: the most bytes of decoded pictures the reader's cache held (its bound is
  ``CACHE_BYTES``).

Every picture's frame number is read off its pixels and must be the one asked for. This is the
decode + convert part of case 6's seek figure (no encode, RTP or viewer decode).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from bench.core import Context, Result, fmt, percentile
from bench.longgop_media import Master, master, number_in
from pipeline.messages.events import SessionOptions
from pipeline.producers.jit.decoder import CACHE_BYTES, VideoReader
from pipeline.producers.jit.inputs import InputAccess, open_input
from pipeline.sources.policy import SourcePolicy

NAME = "jit_longgop"
TITLE = "12. JIT long GOP and big pictures (seek, step ±1)"
TARGET_SEEK_P95_MS = 120.0
TARGET_STEP_P95_MS = 40.0
SIZES = (("1080p", 1920, 1080), ("2160p", 3840, 2160))
THREADS = (("1 slice thread", SessionOptions()),
           ("2 frame threads", SessionOptions(threads=2, thread_type="frame")))  # fmt: skip


def run(ctx: Context) -> list[Result]:
    results: list[Result] = []
    for label, width, height in SIZES:
        ctx.progress(f"making the {label} GOP-250 master (cached)")
        media = master(ctx.cache_dir, f"h264-{label}", width, height)
        # UHD with one thread decodes ~13 frames a second: a seek or a step back across a
        # keyframe takes up to 20 s, so UHD is measured with two frame threads only (what a
        # UHD session should use), to keep the case a few minutes long.
        configs = THREADS[1:] if width * height > 1920 * 1080 else THREADS
        for threads, options in configs:
            figures = measure(ctx, media, options)
            results += _results(media, threads, figures)
    return results


def _reader(path: Path, options: SessionOptions) -> VideoReader:
    access = InputAccess(SourcePolicy.local(), media_roots=(path.parent,))
    return VideoReader(open_input(str(path), 1, access), options)


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
