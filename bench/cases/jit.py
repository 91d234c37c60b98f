"""Case 6, JIT sessions, through the whole stack: ``POST /session`` on the gateway, the
controller starting a ``jit`` worker process, WHEP through the gateway, an aiortc viewer
(:mod:`bench.jitclient`) on loopback.

- first frame: from ``POST /session`` to the first picture decoded by the viewer (target median
  ≤ 0.5 s), split into the POST, the worker process starting, the WHEP answer and the media;
- seek: from sending ``seek`` on the data channel to decoding exactly that frame, random
  targets over a 720p H.264 file with a 50-frame GOP and B-frames (targets p50 ≤ 80 ms,
  p95 ≤ 150 ms);
- memory per idle session (PSS of a paused session's worker with its viewer connected) and
  its CPU; sessions per machine: what memory and CPU allow (target 64 on 2 cores / 24 GiB).

The file shows its frame number in every picture (``tests/jitmedia.py``'s pattern).
"""

from __future__ import annotations

import asyncio
import random
import time
from functools import partial
from pathlib import Path

from bench.core import Context, Result, fmt, median, percentile
from bench.cpu import CpuWindow
from bench.jitclient import Viewer, browser_like_jitter_buffer
from bench.stack import StackHost
from pipeline.messages.control import Seek

NAME = "jit"
TITLE = "6. JIT sessions (first frame, seek, capacity)"
FRAMES = 500
SIZE = (1280, 720)
GOP = 50
TARGET_FIRST_S = 0.5
TARGET_SEEK_P50_MS = 80.0
TARGET_SEEK_P95_MS = 150.0
TARGET_SESSIONS = 64


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


def media(cache_dir: Path, frames: int = FRAMES) -> Path:
    """The 720p numbered file of ``frames`` frames (made once, cached)."""
    from fractions import Fraction

    from tests.jitmedia import make_video

    folder = cache_dir / "jit"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"numbered-{SIZE[0]}x{SIZE[1]}-gop{GOP}-{frames}.mp4"
    if not path.exists():
        partial = path.with_name("partial-" + path.name)
        make_video(partial, frames=frames, rate=Fraction(25), width=SIZE[0], height=SIZE[1],
                   gop=GOP)  # fmt: skip
        partial.rename(path)
    return path


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of ``pid`` (shared pages divided among their users)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


async def _run(ctx: Context) -> list[Result]:
    from tests.jitmedia import read_frame_number

    browser_like_jitter_buffer()
    video = media(ctx.cache_dir)
    count = ctx.pick(3, 8)
    seeks = ctx.pick(20, 60)
    env = {"JIT_MEDIA_ROOTS": str(video.parent), "JIT_CAPACITY": "64",
           "TESSERA_SESSION_RATE": "1000"}  # fmt: skip
    starts: list[dict[str, float]] = []
    seek_ms: list[float] = []
    seek_report_ms: list[float] = []
    missed = 0
    memory: list[int] = []
    idle_cpu = 0.0
    open_sessions: list[tuple[str, Viewer]] = []
    async with StackHost(ctx.work_dir, "jit", env) as host:
        assert host.http is not None
        try:
            for i in range(count):
                t0, t0_wall = time.monotonic(), time.time()
                got = await host.http.post("/session", json={"inputs": [{"url": str(video)}]})
                if got.status_code != 201:
                    raise RuntimeError(f"POST /session answered {got.status_code}: {got.text}")
                created = time.monotonic()
                body = got.json()
                viewer = Viewer(read_frame_number)
                open_sessions.append((body["id"], viewer))
                steps = await viewer.connect(host.http, body["whep_url"])
                if not await viewer.until(partial(_has_frames, viewer), 30):
                    raise RuntimeError("no first frame within 30 s of the answer")
                first = viewer.frames[0][0]
                spawned = await _spawned(host, body["id"], t0_wall)
                starts.append({
                    "first_frame_s": first - t0,
                    "post_s": created - t0,
                    "worker_started_s": spawned if spawned is not None else float("nan"),
                    "whep_answered_s": steps["answered"] - t0,
                    "answer_to_frame_s": first - steps["answered"],
                    "first_number": viewer.frames[0][1] if viewer.frames[0][1] is not None else -1,
                })  # fmt: skip
                ctx.progress(
                    f"session {i + 1}/{count}: first frame {first - t0:.2f} s (answer "
                    f"{steps['answered'] - t0:.2f} s, then {first - steps['answered']:.2f} s)"
                )
            viewer = open_sessions[0][1]
            await asyncio.wait_for(viewer.opened.wait(), 10)
            rng = random.Random(20261120)
            position = 0
            for _ in range(seeks):
                target = rng.randrange(0, FRAMES)
                if target == position:
                    target = (target + GOP // 2) % FRAMES
                mark, report_mark = len(viewer.frames), len(viewer.reports)
                sent = viewer.send(Seek(frame=target))

                def arrived(v: Viewer = viewer, m: int = mark, t: int = target) -> bool:
                    return any(number == t for _, number in v.frames[m:])

                if await viewer.until(arrived, 5.0):
                    at = next(a for a, n in viewer.frames[mark:] if n == target)
                    seek_ms.append((at - sent) * 1000)
                    reported = [a for a, n in viewer.reports[report_mark:] if n == target]
                    if reported:
                        seek_report_ms.append((reported[0] - sent) * 1000)
                    position = target
                else:
                    missed += 1
                await asyncio.sleep(0.05)
            ctx.progress(f"{len(seek_ms)} seeks: p50 {fmt(percentile(seek_ms, 50))} ms, "
                         f"p95 {fmt(percentile(seek_ms, 95))} ms, {missed} missed")  # fmt: skip
            workers = await host.workers("jit")
            memory = [m for p in workers if (m := pss_bytes(p.pid)) is not None]
            window = CpuWindow(workers).begin()
            await asyncio.sleep(ctx.pick(2.0, 5.0))
            window.end()
            idle_cpu = window.spent() / max(1, len(workers)) / window.seconds
        finally:
            for sid, viewer in open_sessions:
                await viewer.close()
                await host.http.delete(f"/session/{sid}")
    return _results(ctx, starts, (seek_ms, seek_report_ms), missed, memory, idle_cpu, count)


def _has_frames(viewer: Viewer) -> bool:
    return bool(viewer.frames)


async def _spawned(host: StackHost, sid: str, t0_wall: float) -> float | None:
    """Seconds from ``t0_wall`` until the provider started (or assigned) the session's worker."""
    for proc in await host.workers("jit"):
        if proc.target == sid:
            started = host.started_at.get(proc.pid)
            return None if started is None else started - t0_wall
    return None


def _results(
    ctx: Context, starts: list[dict[str, float]], seeks: tuple[list[float], list[float]],
    missed: int, memory: list[int], idle_cpu: float, count: int,
) -> list[Result]:  # fmt: skip
    seek_ms, report_ms = seeks
    firsts = [s["first_frame_s"] for s in starts]

    def med(key: str) -> float:
        return median([s[key] for s in starts])

    results = [
        Result(
            NAME, "first_frame", median(firsts), "s", target=TARGET_FIRST_S,
            note=f"median: POST answered {fmt(med('post_s'))} s, worker process started "
            f"{fmt(med('worker_started_s'))} s, WHEP answered {fmt(med('whep_answered_s'))} s, "
            f"first frame {fmt(med('answer_to_frame_s'))} s after the answer"
            + (
                "; next: the WHEP answer waits for a new worker process to import aiortc and "
                "PyAV and open the file: start session workers from a pre-imported parent "
                "(fork server) or keep one warm"
                if median(firsts) > TARGET_FIRST_S
                else ""
            ),
            details={"runs": starts, "latency_samples_ms": [f * 1000 for f in firsts],
                     "label": "POST /session → first frame",
                     "target_ms": TARGET_FIRST_S * 1000},
        ),
        Result(
            NAME, "seek_p50", percentile(seek_ms, 50), "ms", target=TARGET_SEEK_P50_MS,
            ok=None if seek_ms else False,
            note=f"{len(seek_ms)} seeks to random frames of a 720p GOP-{GOP} H.264 file; "
            f"median seek → the worker's report of sending it {fmt(median(report_ms))} ms "
            "(decode, convert, encode), the rest is RTP, jitter buffer and the viewer's decode"
            + (f"; {missed} never arrived within 5 s" if missed else ""),
            details={"latency_samples_ms": seek_ms, "target_ms": TARGET_SEEK_P95_MS,
                     "label": "seek → exact frame",
                     "missed": missed, "to_report_ms": report_ms},
        ),
        Result(NAME, "seek_p95", percentile(seek_ms, 95), "ms", target=TARGET_SEEK_P95_MS,
               ok=None if seek_ms else False),
    ]  # fmt: skip
    pss = median([float(m) for m in memory]) if memory else None
    if pss:
        by_memory = int(0.9 * mem_total() / pss)
        by_cpu = int(0.9 * ctx.cpus / idle_cpu) if idle_cpu > 0 else 10**6
        results.append(
            Result(
                NAME,
                "memory_per_idle_session",
                pss / 2**20,
                "MiB",
                note=f"PSS of a paused session's worker process with a viewer; {count} sessions; "
                f"idle CPU {idle_cpu:.3f} cores each",
                details={"pss_bytes": memory, "idle_cpu_per_session": idle_cpu},
            )
        )
        results.append(Result(
            NAME, "sessions_per_machine", float(min(by_memory, by_cpu)), "sessions",
            target=float(TARGET_SESSIONS), op=">=",
            note=f"idle sessions that fit: {by_memory} by memory (90 % of "
            f"{mem_total() / 2**30:.0f} GiB), {by_cpu} by idle CPU (90 % of {ctx.cpus} cores); "
            f"extrapolated from {count} sessions, not all started at once",
            details={"by_memory": by_memory, "by_cpu": by_cpu},
        ))  # fmt: skip
    return results
