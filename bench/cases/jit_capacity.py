"""Case 17, issue 19's acceptance: JIT sessions per machine at each size, with sessions that
*play*, and memory per session with its decoded-picture cache filled; through the whole stack as
case 6 (``POST /session`` on the gateway, the controller starting ``jit`` worker processes,
WHEP through the gateway, aiortc viewers from :mod:`bench.jitclient` in this process).

For each size, a 12 s 25 fps H.264 master with a 250-frame GOP and B-frames
(:mod:`bench.longgop_media`, its frame number in the picture) at 1280x720, 1920x1080 and
3840x2160, each session opened with the default options (what a client gets: one slice thread,
the output at the file's size up to the worker's ``TESSERA_JIT_MAX_OUTPUT``, 1920x1080 by
default, the seek proxy on):

- **playing sessions per machine, measured**: sessions are started one at a time, each with a
  viewer that decodes every picture it receives and sends ``play``. After each new one, every
  session is sent back to frame 0 (the file is 12 s long), and after :data:`SETTLE` seconds a
  window measures each viewer: the frame numbers read off its pictures must advance at
  ≥ :data:`REALTIME` of the file's rate, at least that share of the pictures must arrive (a
  worker that falls behind skips frames to keep time, so the numbers alone would not show it),
  and in order. ``sessions_playing_<size>`` is the largest count at which every session kept
  real time; the case stops at the first count that fails (or at a cap, or a time budget:
  then the figure is a lower bound and the note says so); a failed window is measured again
  (:data:`BUSY`). Each count's CPU of the stack's processes (by role), of the runner (the
  viewers, on the same cores) and of the rest of the machine (others may measure on it too)
  is recorded.
- **memory per session with the cache**: then a new session, alone, plays :data:`PLAYED`
  seconds, pauses, seeks to random frames and steps back and forth, each command until its
  exact picture arrives, so its cache of decoded pictures (``CACHE_BYTES``) is full; the PSS
  of its worker process is ``memory_per_session_<size>``, and the note gives the idle
  sessions that memory allows (90 % of the machine's RAM ÷ that PSS).

The viewers run in the runner and decode every picture (VP8, what aiortc's viewer negotiates
with the worker), so they share the machine's cores with the stack: a figure is what one
machine does with its viewers beside it, a floor for a machine that only serves.

Quick: 1080p only, shorter windows and a lower cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from bench.cases.jit import mem_total, pss_bytes
from bench.core import Context, Result, fmt, median
from bench.cpu import TICK, CpuWindow, cpu_seconds, rss_bytes
from bench.jitclient import Viewer, browser_like_jitter_buffer
from bench.longgop_media import RATE, Master, master, number_in
from bench.stack import StackError, StackHost
from pipeline.messages.control import FrameReport, Pause, Play, Seek, SessionCommand, Step
from pipeline.messages.heartbeats import JitStats
from pipeline.producers.jit.decoder import CACHE_BYTES

NAME = "jit_capacity"
TITLE = "17. JIT capacity: playing sessions and memory per session at each size"
SIZES = (("720p", 1280, 720), ("1080p", 1920, 1080), ("2160p", 3840, 2160))
REALTIME = 0.95
"""Share of the file's frame rate a session must keep, in frame numbers and in pictures."""
SETTLE = 2.0
"""Seconds after the sessions are sent back to frame 0 before a window starts."""
START_TIMEOUT = 30.0
"""Seconds a new session has from ``POST /session`` to its viewer's first picture."""
RESTART_TIMEOUT = 5.0
"""Seconds a session has to show an early frame after being sent back to frame 0."""
COMMAND_TIMEOUT = 20.0
"""Seconds a seek or step has for its exact picture (a seek into a UHD GOP at one thread
decodes up to 250 frames at ~13 a second)."""
STEPS_BACK = 6
"""Steps back after each seek: within the frames the seek decoded before its target."""
STEPS_FORWARD = 3
PLAYED = 3.0
"""Seconds the memory case's session plays before it pauses for the seeks and steps."""
BUSY = 0.25
"""A count that fails is measured once more (a hiccup of a shared machine is not a limit),
and in the full run a third time when other work on the machine took more than this many
CPU-s per second during the second window; after a window that busy, the case first waits
(5 s quick, 10 s full at most) for the other work to drop below it."""

_reports = msgspec.json.Decoder(FrameReport)


class Watcher(Viewer):
    """A :class:`~bench.jitclient.Viewer` of a master that also keeps the size of the pictures
    it decodes and, for each frame report, whether it was the exact picture (or the seek
    proxy's)."""

    def __init__(self, master_width: int) -> None:
        self.master_width = master_width
        """Width of the master: a session sends a smaller picture of a big one."""
        self.size: tuple[int, int] | None = None
        """Width and height of the pictures decoded."""
        self.codec = "?"
        """The video codec negotiated (known once connected)."""
        super().__init__(self._number)
        self.exact: list[tuple[float, int, bool]] = []
        """(arrival, frame, exact) of every frame report."""
        self.channel.on("message", self._on_report)

    def answered_codec(self) -> str:
        """The video codec the answer chose (its first payload type), e.g. ``VP8``."""
        answer = self.pc.remoteDescription
        if answer is None:
            return "?"
        lines = answer.sdp.splitlines()
        media = next((line.split() for line in lines if line.startswith("m=video")), [])
        for line in lines:
            if len(media) > 3 and line.startswith(f"a=rtpmap:{media[3]} "):
                return line.split()[1].split("/")[0]
        return "?"

    def _number(self, luma: Any) -> int | None:
        self.size = (int(luma.shape[1]), int(luma.shape[0]))
        return number_in(luma, self.master_width)

    def _on_report(self, message: str | bytes) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            report = _reports.decode(message)
            self.exact.append((time.monotonic(), report.frame, report.exact))
            del self.exact[:-1000]


@dataclass
class Session:
    sid: str
    viewer: Watcher


@dataclass(frozen=True)
class Pace:
    """How one viewer played over a window, as shares of the file's frame rate."""

    advance: float
    """Frame numbers gained per second (the last number at the end less the last before)."""
    shown: float
    """Pictures with a new, higher number per second."""
    disorder: int
    """Pictures whose number was lower than one shown before."""
    unreadable: int

    @property
    def ok(self) -> bool:
        return self.advance >= REALTIME and self.shown >= REALTIME and not self.disorder


@dataclass
class Count:
    """One count of sessions playing together."""

    sessions: int
    paces: list[Pace] = field(default_factory=list)
    seconds: float = 0.0
    stack_cpu: float = 0.0
    """CPU-s per second of every process of the stack host (host, nats-server, workers)."""
    roles: dict[str, float] = field(default_factory=dict)
    runner_cpu: float = 0.0
    """CPU-s per second of this process: the viewers."""
    machine_cpu: float = 0.0
    """CPU-s per second of the whole machine (``/proc/stat``): others' work is the rest."""
    pss_mib: list[float] = field(default_factory=list)
    late: int = 0
    """Frames the workers skipped to keep real time in the window (from their heartbeats)."""
    dropped: int = 0
    failure: str = ""
    """Why the count failed before a window could measure it."""
    unconnected: int = 0
    """Viewers whose peer connection was not ``connected`` at the end of the window."""
    retried: list[Count] = field(default_factory=list)
    """Earlier windows of this count that failed (see :data:`BUSY`)."""

    @property
    def others(self) -> float:
        """CPU-s per second the rest of the machine spent (not the stack, not the viewers)."""
        return max(0.0, self.machine_cpu - self.stack_cpu - self.runner_cpu)

    @property
    def ok(self) -> bool:
        return not self.failure and bool(self.paces) and all(p.ok for p in self.paces)

    def slowest(self) -> Pace | None:
        return min(self.paces, key=lambda p: min(p.advance, p.shown), default=None)


@dataclass
class Memory:
    pss: float | None = None
    rss: float | None = None
    commands: int = 0
    exact_ms: list[float] = field(default_factory=list)
    missed: int = 0
    seeks: int = 0
    proxy: str = ""
    proxy_frames: int = 0
    connection: str = ""
    """The viewer's peer connection state after the commands (``connected``)."""
    failure: str = ""


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> list[Result]:
    browser_like_jitter_buffer()
    sizes = [s for s in SIZES if s[0] in ctx.pick(("1080p",), ("720p", "1080p", "2160p"))]
    masters = []
    for label, width, height in sizes:
        ctx.progress(f"making the {label} GOP-250 master (cached)")
        masters.append(master(ctx.cache_dir, f"h264-{label}", width, height))
    roots = ":".join(sorted({str(m.path.parent) for m in masters}))
    env = {"JIT_MEDIA_ROOTS": roots, "JIT_CAPACITY": "64", "TESSERA_SESSION_RATE": "1000"}
    results: list[Result] = []
    async with StackHost(ctx.work_dir, "jit-capacity", env) as host:
        for media in masters:
            counts, memory, seen = await _one_size(ctx, host, media)
            results += _results(ctx, media, counts, memory, seen)
    return results


async def _one_size(
    ctx: Context, host: StackHost, media: Master
) -> tuple[list[Count], Memory, Watcher | None]:
    cap = ctx.pick(6, 12)
    window = ctx.pick(4.0, 6.0)
    budget = ctx.pick(40.0, 60.0)
    label = media.label.removeprefix("h264-")
    counts: list[Count] = []
    sessions: list[Session] = []
    memory = Memory()
    seen: Watcher | None = None  # the first session's viewer: what the sessions send
    began = time.monotonic()
    try:
        while len(sessions) < cap:
            count = Count(len(sessions) + 1)
            counts.append(count)
            try:
                sessions.append(await _open(host, media))
            except (RuntimeError, TimeoutError) as exc:
                count.failure = f"session {count.sessions} did not start: {exc}"[:200]
                ctx.progress(f"{label}: {count.failure}")
                break
            seen = seen or sessions[-1].viewer
            for attempt in range(ctx.pick(2, 3)):
                if attempt:
                    ctx.progress(
                        f"{label}: {count.sessions} failed (others {count.others:.2f} "
                        "CPU-s/s): measuring again"
                    )
                    if count.others >= BUSY:
                        others = await _quiet(host, ctx.pick(5.0, 10.0))
                        ctx.progress(f"{label}: others at {others:.2f} CPU-s/s")
                    counts[-1] = count = Count(count.sessions, retried=[*count.retried, count])
                await _measure(host, sessions, count, window)
                if count.ok or count.failure or (attempt and count.others < BUSY):
                    break
                if time.monotonic() - began > budget:
                    break  # no time to measure it again
            slow = count.slowest()
            how = count.failure or (
                f"slowest {slow.advance:.2f}× in numbers, {slow.shown:.2f}× in pictures"
                if slow is not None
                else "not measured"
            )
            ctx.progress(
                f"{label}: {count.sessions} playing: {how}; CPU-s/s: stack "
                f"{count.stack_cpu:.2f}, viewers {count.runner_cpu:.2f}, others {count.others:.2f}"
            )
            if not count.ok:
                break
            if time.monotonic() - began > budget:
                ctx.progress(f"{label}: time budget ({budget:.0f} s) spent at {count.sessions}")
                break
        while sessions:
            await _close(host, sessions.pop())
        with contextlib.suppress(StackError):
            await host.wait_no_workers(30.0)
        memory = await _memory(ctx, host, media)
        ctx.progress(
            f"{label}: memory after {memory.commands} seeks/steps: PSS {fmt(memory.pss)} MiB, "
            f"RSS {fmt(memory.rss)} MiB, proxy {memory.proxy or '?'} {memory.failure}"
        )
    finally:
        for session in sessions:
            await _close(host, session)
        with contextlib.suppress(StackError):
            await host.wait_no_workers(30.0)
    return counts, memory, seen


async def _open(host: StackHost, media: Master, options: dict[str, Any] | None = None) -> Session:
    """``POST /session`` of ``media`` (``options``: fields of ``SessionOptions``), a viewer
    over WHEP, ``play``; return once it shows a picture."""
    assert host.http is not None
    body = {"inputs": [{"url": str(media.path)}], **(options or {})}
    got = await host.http.post("/session", json=body)
    if got.status_code != 201:
        raise RuntimeError(f"POST /session answered {got.status_code}: {got.text[:120]}")
    session = Session(got.json()["id"], Watcher(media.width))
    try:
        await session.viewer.connect(host.http, got.json()["whep_url"])
        session.viewer.codec = session.viewer.answered_codec()
        await asyncio.wait_for(session.viewer.opened.wait(), START_TIMEOUT)
        session.viewer.send(Play())
        if not await session.viewer.until(partial(_shows, session.viewer), START_TIMEOUT):
            raise RuntimeError(f"no picture within {START_TIMEOUT:g} s")
    except BaseException:
        await _close(host, session)
        raise
    return session


def _shows(viewer: Viewer) -> bool:
    return any(n is not None for _, n in viewer.frames)


async def _close(host: StackHost, session: Session) -> None:
    await session.viewer.close()
    if host.http is not None:
        with contextlib.suppress(Exception):
            await host.http.delete(f"/session/{session.sid}")


async def _measure(host: StackHost, sessions: list[Session], count: Count, window: float) -> None:
    """Send every session back to frame 0, playing; settle; measure one window."""
    sent = time.monotonic()
    for session in sessions:
        session.viewer.send(Seek(frame=0))
        session.viewer.send(Play())
    for i, session in enumerate(sessions):
        viewer = session.viewer
        if not await viewer.until(partial(_restarted, viewer, sent), RESTART_TIMEOUT):
            count.failure = f"session {i + 1} showed no early frame {RESTART_TIMEOUT:g} s after "
            count.failure += "being sent back to frame 0"
            return
    await asyncio.sleep(SETTLE)
    procs = await host.processes()
    sids = {s.sid for s in sessions}
    beats = {sid: _stats(host, sid) for sid in sids}
    cpu = CpuWindow(procs).begin()
    runner = cpu_seconds(os.getpid()) or 0.0
    busy = machine_busy()
    t0 = cpu.started
    await asyncio.sleep(window)
    cpu.end()
    t1 = cpu.ended
    runner = (cpu_seconds(os.getpid()) or 0.0) - runner
    count.machine_cpu = (machine_busy() - busy) / cpu.seconds
    count.seconds = cpu.seconds
    count.stack_cpu = cpu.spent() / cpu.seconds
    count.roles = {role: spent / cpu.seconds for role, spent in cpu.by_role().items()}
    count.runner_cpu = runner / cpu.seconds
    count.paces = [pace(s.viewer.frames, t0, t1, float(RATE)) for s in sessions]
    count.unconnected = sum(s.viewer.pc.connectionState != "connected" for s in sessions)
    count.pss_mib = [
        m / 2**20 for p in procs if p.role == "jit" and (m := pss_bytes(p.pid)) is not None
    ]
    for sid, before in beats.items():
        after = _stats(host, sid)
        if before is not None and after is not None:
            count.late += after.late_frames - before.late_frames
            count.dropped += after.dropped - before.dropped


async def _quiet(host: StackHost, within: float) -> float:
    """Wait, at most ``within`` seconds, until other work leaves the machine (below
    :data:`BUSY`, in 1 s samples of the machine's CPU less the stack's and this process's);
    return the last sample."""
    deadline = time.monotonic() + within
    while True:
        cpu = CpuWindow(await host.processes()).begin()
        runner, busy = cpu_seconds(os.getpid()) or 0.0, machine_busy()
        await asyncio.sleep(1.0)
        cpu.end()
        runner = (cpu_seconds(os.getpid()) or 0.0) - runner
        others = max(0.0, (machine_busy() - busy - cpu.spent() - runner) / cpu.seconds)
        if others < BUSY or time.monotonic() >= deadline:
            return others


def machine_busy() -> float:
    """CPU-seconds the whole machine has been busy since boot (all CPUs: ``/proc/stat``'s
    ``cpu`` line less idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def _restarted(viewer: Viewer, since: float) -> bool:
    return any(a > since and n is not None and n < RATE for a, n in viewer.frames[-50:])


def _stats(host: StackHost, sid: str) -> JitStats | None:
    beat = host.beats.of("jit", sid)
    return beat.stats if beat is not None and isinstance(beat.stats, JitStats) else None


def pace(frames: Sequence[tuple[float, int | None]], t0: float, t1: float, fps: float) -> Pace:
    """How the pictures ``frames`` ((arrival, number)) played between ``t0`` and ``t1``."""
    before = [n for a, n in frames if a <= t0 and n is not None]
    inside = [(a, n) for a, n in frames if t0 < a <= t1]
    unreadable = sum(n is None for _, n in inside)
    start = before[-1] if before else None
    began = t0
    last, shown, disorder = start, 0, 0
    for arrived, number in inside:
        if number is None:
            continue
        if last is None:
            start, began = number, arrived  # nothing before the window: count from here
        elif number < last:
            disorder += 1
            continue
        elif number == last:
            continue
        shown += 1
        last = number
    span = max(1e-6, t1 - began)
    advance = 0.0 if start is None or last is None else (last - start) / span / fps
    return Pace(advance, shown / span / fps, disorder, unreadable)


async def _memory(ctx: Context, host: StackHost, media: Master) -> Memory:
    """A new session alone: it plays :data:`PLAYED` seconds, then :func:`_fill_cache`."""
    try:
        session = await _open(host, media)
    except (RuntimeError, TimeoutError) as exc:
        return Memory(failure=f"the session did not start: {exc}"[:200])
    try:
        await asyncio.sleep(PLAYED)
        return await _fill_cache(ctx, host, session, media)
    finally:
        await _close(host, session)


async def _fill_cache(ctx: Context, host: StackHost, session: Session, media: Master) -> Memory:
    """Pause the session, seek to random frames and step back and forth from each (every
    command until its exact picture, within a time budget), then read its worker's memory."""
    memory = Memory()
    viewer = session.viewer
    viewer.send(Pause())
    rng = random.Random(20261217)
    deadline = time.monotonic() + ctx.pick(20.0, 25.0)
    for _ in range(ctx.pick(2, 3)):
        target = rng.randrange(STEPS_BACK, media.frames - STEPS_FORWARD)
        plan: list[tuple[SessionCommand, int]] = [(Seek(frame=target), target)]
        plan += [(Step(delta=-1), target - k) for k in range(1, STEPS_BACK + 1)]
        plan += [(Step(delta=1), target - STEPS_BACK + k) for k in range(1, STEPS_FORWARD + 1)]
        for command, frame in plan:
            left = min(COMMAND_TIMEOUT, deadline - time.monotonic())
            if left <= 0:
                break
            memory.commands += 1
            memory.seeks += isinstance(command, Seek)
            mark = len(viewer.exact)
            sent = viewer.send(command)
            if await viewer.until(partial(_exact, viewer, mark, frame), left):
                at = next(a for a, n, e in viewer.exact[mark:] if n == frame and e)
                memory.exact_ms.append((at - sent) * 1000)
            else:
                memory.missed += 1
    memory.connection = viewer.pc.connectionState
    await asyncio.sleep(2.0)  # the proxy builder at work, a heartbeat with it
    workers = [p for p in await host.workers("jit") if p.target == session.sid]
    pss = [m for p in workers if (m := pss_bytes(p.pid)) is not None]
    rss = [m for p in workers if (m := rss_bytes(p.pid)) is not None]
    memory.pss = sum(pss) / 2**20 if pss else None
    memory.rss = sum(rss) / 2**20 if rss else None
    stats = _stats(host, session.sid)
    if stats is not None:
        memory.proxy, memory.proxy_frames = stats.proxy, stats.proxy_frames
    return memory


def _exact(viewer: Watcher, mark: int, frame: int) -> bool:
    return any(n == frame and e for _, n, e in viewer.exact[mark:])


def _results(
    ctx: Context, media: Master, counts: list[Count], memory: Memory, seen: Watcher | None
) -> list[Result]:
    label = media.label.removeprefix("h264-")
    size = seen.size if seen is not None else None
    what = f"{label} GOP-{media.gop} H.264 ({media.width}x{media.height} {RATE} fps"
    if size is not None and seen is not None:
        what += f", sent as {size[0]}x{size[1]} {seen.codec}"
    what += ")"
    good = [c for c in counts if c.ok]
    best = good[-1] if good else None
    failed = next((c for c in counts if not c.ok), None)
    value = best.sessions if best else 0
    parts = [f"{value} session{'s' if value != 1 else ''} of {what} played at 1× together"]
    if failed is not None:
        slow = failed.slowest()
        tries = f", {len(failed.retried) + 1} windows" if failed.retried else ""
        if failed.failure or slow is None:
            parts[0] += f"; {failed.sessions} did not: {failed.failure or 'not measured'}"
        else:
            parts[0] += (
                f"; {failed.sessions} fell to {slow.shown:.2f}× in pictures, {slow.advance:.2f}× "
                f"in frame numbers{tries}"
                + (f", {slow.disorder} out of order" if slow.disorder else "")
                + (f", {failed.unconnected} viewers lost" if failed.unconnected else "")
            )
        if failed.paces and failed.others >= BUSY:
            parts[0] += (
                f" while other work took {failed.others:.2f} CPU-s/s of the machine (a busy "
                "machine: a lower bound)"
            )
    elif counts:
        parts[0] += " (the most tried: a lower bound)"
    for c in (best, failed):
        if c is not None and c.paces:
            jit = c.roles.get("jit", 0.0)
            parts.append(
                f"at {c.sessions}: CPU-s/s stack {c.stack_cpu:.2f} (workers {jit:.2f}), viewers "
                f"{c.runner_cpu:.2f}, others {c.others:.2f}; worker PSS "
                f"{fmt(median(c.pss_mib))} MiB; workers skipped {c.late} frames"
            )
    parts.append(
        f"{ctx.cpus} cores; the viewers decode on them; default session options "
        "(1 slice thread, output at the file's size up to 1920x1080)"
    )
    results = [
        Result(
            NAME, f"sessions_playing_{label}", float(value), "sessions", note="; ".join(parts),
            details={"counts": [_count_json(c) for c in counts], "realtime": REALTIME,
                     "output_size": list(size) if size else None,
                     "codec": seen.codec if seen is not None else "",
                     "file": media.path.name},
        )
    ]  # fmt: skip
    if memory.pss:
        by_memory = int(0.9 * mem_total() / (memory.pss * 2**20))
        picture = size[0] * size[1] * 3 // 2 if size else media.width * media.height * 3 // 2
        results.append(Result(
            NAME, f"memory_per_session_{label}", memory.pss, "MiB",
            note=f"PSS of a session's worker on {what} after it played {PLAYED:g} s alone, then "
            f"{memory.seeks} "
            f"seeks and {memory.commands - memory.seeks} steps ±1 paused ({len(memory.exact_ms)} "
            f"exact pictures, median {fmt(median(memory.exact_ms))} ms, max "
            f"{fmt(max(memory.exact_ms, default=None))} ms; {memory.missed} not in time"
            + (f", the viewer's connection {memory.connection}" if memory.connection not in
               ("", "connected") else "")
            + f"): its picture cache is {CACHE_BYTES // 2**20} MiB, "
            f"~{CACHE_BYTES // picture} pictures; RSS {fmt(memory.rss)} MiB; seek proxy "
            f"{memory.proxy or '?'}, {memory.proxy_frames} frames built; idle sessions by memory: "
            f"{by_memory} (90 % of {mem_total() / 2**30:.0f} GiB)",
            details={"pss_mib": memory.pss, "rss_mib": memory.rss, "by_memory": by_memory,
                     "command_ms": memory.exact_ms, "missed": memory.missed,
                     "proxy": memory.proxy, "proxy_frames": memory.proxy_frames,
                     "connection": memory.connection},
        ))  # fmt: skip
    else:
        results.append(Result(
            NAME, f"memory_per_session_{label}", None, "MiB",
            note=f"not measured: {memory.failure or 'no worker process found'}",
        ))  # fmt: skip
    return results


def _count_json(count: Count) -> dict[str, Any]:
    return {
        "sessions": count.sessions,
        "ok": count.ok,
        "failure": count.failure,
        "seconds": count.seconds,
        "advance": [p.advance for p in count.paces],
        "shown": [p.shown for p in count.paces],
        "disorder": [p.disorder for p in count.paces],
        "unreadable": [p.unreadable for p in count.paces],
        "stack_cpu": count.stack_cpu,
        "cpu_by_role": count.roles,
        "runner_cpu": count.runner_cpu,
        "machine_cpu": count.machine_cpu,
        "others_cpu": count.others,
        "pss_mib": count.pss_mib,
        "late_frames": count.late,
        "dropped": count.dropped,
        "unconnected": count.unconnected,
        "failed_before": [_count_json(c) for c in count.retried],
    }
