"""Case 16, issue 19 part 1: A/B compare sessions against sessions of one video, in the same run.

Through the whole stack, as case 6 (``POST /session``, the controller starting a ``jit`` worker
process, WHEP through the gateway, an aiortc viewer on loopback), on case 6's 720p GOP-50 H.264
file, alternating a session of the file alone and a side-by-side compare of it with itself
(two containers and two decoders, as two versions of a cut are; B read in its own thread):

- first frame: ``POST /session`` → the first picture decoded by the viewer;
- seek: ``seek`` sent on the data channel → the viewer decodes exactly that frame, the same
  random targets on both sessions, one after the other; a compare picture counts only when
  both halves show the target (A's frame beside B's, offset 0).

Target (issue 19): compare-mode first frame and seek ≤ 1.5× the single-file figures, as the
ratio of the medians (first frame) and of the p50 and p95 (seek) measured in this run.
"""

from __future__ import annotations

import asyncio
import random
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.cases.jit import media
from bench.core import Context, Result, fmt, median, percentile
from bench.jitclient import Viewer, browser_like_jitter_buffer
from bench.stack import StackHost
from pipeline.messages.control import Seek

NAME = "jit_compare"
TITLE = "16. JIT A/B compare (first frame, seek) against one video"
TARGET_RATIO = 1.5
FRAMES = 500
KINDS = ("single", "compare")


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


def _reader(kind: str) -> Any:
    """Reads a picture's frame number: the whole picture's, or for a side-by-side compare
    (1280x720: A and B each 640x360, centred in their halves) A's when B's is the same, else
    None (not the pair asked for)."""
    from tests.jitmedia import read_frame_number

    if kind == "single":
        return read_frame_number

    def pair(luma: Any) -> int | None:
        a = read_frame_number(luma[180:540, :640])
        return a if a is not None and read_frame_number(luma[180:540, 640:]) == a else None

    return pair


def _body(video: Path, kind: str) -> dict[str, Any]:
    inputs = [{"url": str(video)}] * (2 if kind == "compare" else 1)
    return {"inputs": inputs} | ({"compare": "side-by-side"} if kind == "compare" else {})


async def _open(host: StackHost, video: Path, kind: str) -> tuple[str, Viewer, float]:
    """A new session of ``kind`` with its viewer, and seconds from the POST to its first
    picture."""
    assert host.http is not None
    t0 = time.monotonic()
    got = await host.http.post("/session", json=_body(video, kind))
    if got.status_code != 201:
        raise RuntimeError(f"POST /session answered {got.status_code}: {got.text}")
    body = got.json()
    viewer = Viewer(_reader(kind))
    try:
        await viewer.connect(host.http, body["whep_url"])
        if not await viewer.until(partial(_pictured, viewer), 30):
            raise RuntimeError(f"no first {kind} picture within 30 s")
    except BaseException:
        await viewer.close()
        raise
    return body["id"], viewer, viewer.frames[0][0] - t0


def _pictured(viewer: Viewer) -> bool:
    return bool(viewer.frames)


async def _seek(viewer: Viewer, target: int) -> float | None:
    """Milliseconds from sending ``Seek(target)`` to the viewer decoding it; None: not in 5 s."""
    mark = len(viewer.frames)
    sent = viewer.send(Seek(frame=target))

    def arrived() -> bool:
        return any(number == target for _, number in viewer.frames[mark:])

    if not await viewer.until(arrived, 5.0):
        return None
    return (next(a for a, n in viewer.frames[mark:] if n == target) - sent) * 1000


async def _run(ctx: Context) -> list[Result]:
    browser_like_jitter_buffer()
    video = media(ctx.cache_dir)
    rounds = ctx.pick(3, 6)
    seeks = ctx.pick(20, 50)
    env = {"JIT_MEDIA_ROOTS": str(video.parent), "TESSERA_SESSION_RATE": "1000"}
    first: dict[str, list[float]] = {kind: [] for kind in KINDS}
    seek_ms: dict[str, list[float]] = {kind: [] for kind in KINDS}
    missed = dict.fromkeys(KINDS, 0)
    async with StackHost(ctx.work_dir, NAME, env) as host:
        assert host.http is not None
        opened: dict[str, list[tuple[str, Viewer]]] = {kind: [] for kind in KINDS}
        try:
            for i in range(rounds):
                for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
                    sid, viewer, seconds = await _open(host, video, kind)
                    opened[kind].append((sid, viewer))
                    first[kind].append(seconds)
                ctx.progress(f"round {i + 1}/{rounds}: first frame single "
                             f"{first['single'][-1]:.2f} s, compare "
                             f"{first['compare'][-1]:.2f} s")  # fmt: skip
                # One session of each stays (the seeks'), the others end: each round starts
                # from the same load.
                for kind in KINDS:
                    while len(opened[kind]) > 1:
                        await _close(host, *opened[kind].pop())
            viewers = {kind: opened[kind][0][1] for kind in KINDS}
            for viewer in viewers.values():
                await asyncio.wait_for(viewer.opened.wait(), 10)
            rng = random.Random(20261207)
            for i in range(seeks):
                target = rng.randrange(1, FRAMES)
                for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
                    ms = await _seek(viewers[kind], target)
                    if ms is None:
                        missed[kind] += 1
                    else:
                        seek_ms[kind].append(ms)
                    await asyncio.sleep(0.05)
            ctx.progress(
                "seeks: "
                + ", ".join(
                    f"{k} p50 {fmt(percentile(seek_ms[k], 50))} ms, p95 "
                    f"{fmt(percentile(seek_ms[k], 95))} ms"
                    for k in KINDS
                )
            )
        finally:
            for kind in KINDS:
                for sid, viewer in opened[kind]:
                    await _close(host, sid, viewer)
    return _results(first, seek_ms, missed)


async def _close(host: StackHost, sid: str, viewer: Viewer) -> None:
    assert host.http is not None
    await viewer.close()
    await host.http.delete(f"/session/{sid}")


def _ratio(compare: float, single: float) -> float:
    return compare / single if single > 0 else float("nan")


def _results(
    first: dict[str, list[float]], seek_ms: dict[str, list[float]], missed: dict[str, int]
) -> list[Result]:
    single_first, compare_first = median(first["single"]), median(first["compare"])
    results = [
        Result(
            NAME, "first_frame_ratio", _ratio(compare_first, single_first), "×",
            target=TARGET_RATIO,
            note=f"median POST /session → first picture: compare {fmt(compare_first)} s, one "
            f"video {fmt(single_first)} s ({len(first['compare'])} sessions each, alternating)",
            details={"first_frame_s": first},
        ),
    ]  # fmt: skip
    for q in (50, 95):
        single, compare = percentile(seek_ms["single"], q), percentile(seek_ms["compare"], q)
        lost = missed["compare"] + missed["single"]
        results.append(Result(
            NAME, f"seek_p{q}_ratio", _ratio(compare, single), "×", target=TARGET_RATIO,
            ok=False if lost else None,
            note=f"seek → exact frame p{q}: compare {fmt(compare)} ms (both halves the target), "
            f"one video {fmt(single)} ms; {len(seek_ms['compare'])} seeks each on a 720p GOP-50 "
            "H.264 file" + (f"; {missed} never arrived within 5 s" if lost else ""),
            details={"latency_samples_ms": seek_ms["compare"],
                     "single_samples_ms": seek_ms["single"], "missed": missed,
                     "label": "compare seek → exact pair"} if q == 95 else {},
        ))  # fmt: skip
    results.append(Result(NAME, "compare_first_frame", compare_first, "s"))
    results.append(Result(NAME, "compare_seek_p95", percentile(seek_ms["compare"], 95), "ms"))
    return results
