"""Churn: 200 WebRTC connect/disconnect cycles against JIT sessions leave nothing behind.

The stack (``tessera up``'s :class:`~pipeline.cli.up.Stack`: projector, controller, local provider,
gateway) runs in a child process of its own (``python -m tests.test_jit_churn``, :func:`host`),
so that what is measured is the process that serves the viewers and relays their signalling,
not this test's own viewers. Each session's worker is a process of its own under it.

A viewer is an aiortc peer connection here (video and audio, a ``control`` data channel),
signalling over WHEP through the gateway. A cycle connects one (the answer, ICE and DTLS
connected, the control channel open); a sample of cycles then seek and read the frame number
off the picture; then the viewer leaves one of three ways:

- ``hangup``: WHEP DELETE of its ``Location``, then close (what the viewer page does);
- ``close``: the peer connection closes without the DELETE (a closed tab: DTLS close_notify
  tells the worker);
- ``drop``: it vanishes without a word (a crashed browser, a lost network): its ICE transport
  stops, so no DTLS or SCTP goodbye leaves, and the worker learns it only from ICE consent
  freshness failing (RFC 7675; about 30 s with aioice).

Short sessions (24, 5 cycles each, on 6 lanes) are then DELETEd or abandoned (the controller
ends an abandoned one after the idle timeout). One long session, kept watched by a "keeper"
viewer, takes 80 cycles on 2 lanes of its own, so that one worker process serves them all.
8 cycles run at a time; 14 of the 200 are drops, and they come first, so that their 30 s run
out while the others churn.

Then: the stack's process and the long session's worker are back to their baseline (taken
after a warm-up of about a hundred cycles of the same kinds) within 10 % in RSS, threads and
open fds; every session ended (``deleted`` or ``idle``), its worker process is gone and its
slot free; no process of the run outlives the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from aiortc import RTCSessionDescription
from nats.js import JetStreamContext

from pipeline.control import admission
from pipeline.messages.control import Seek
from pipeline.nats.server import EmbeddedNats
from pipeline.runtime.procs import die_with_parent
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.state.reconcile import jit_spec
from tests.jitmedia import make_video
from tests.natsenv import server_env
from tests.test_jit_worker import RATE_25, Viewer, browser_like_jitter_buffer  # noqa: F401
from tests.waiting import until

REPO = Path(__file__).resolve().parents[1]
FRAMES = 250
LANES = 6
"""Lanes of short sessions; with the long session's 2, 8 cycles run at a time."""
SHORT_SESSIONS = 24
DROP_ROUNDS = 1
"""Short sessions of the first round (one per lane) have drops among their cycles."""
LONG_LANES = 2
LONG_CYCLES = 40
"""Cycles per lane of the long session: 24 x 5 + 2 x 40 = 200 cycles."""
WARM_CYCLES = 16
"""Cycles per lane (6 lanes) of the warm-up on the long session."""
TOLERANCE = 0.10
EARLY = ("hangup", "drop", "hangup", "drop", "close")
"""Cycles of a short session of the first rounds."""
LATE = ("hangup", "close", "hangup", "close", "hangup")
SAMPLED = (0, 2)
"""Cycles of a short session that seek and read the frame number."""
LONG_DROPS = (3,)
IDLE_TIMEOUT = 8.0
"""Seconds without a viewer before the controller ends a session: above the gap between two
cycles on a loaded machine, short enough for abandoned sessions to end within the test."""
CONSENT_REAP = 45.0
"""Seconds a dropped viewer may take to be reaped: aioice's consent check fails after 6
unanswered checks 4-6 s apart (at most 36 s), plus a loaded machine's slack."""
EVERY = 0.2
"""Seconds between the checks of ``until``: ``Host.quiet`` wants the same process tree at two
checks in a row."""


# -- the stack's process -----------------------------------------------------------------------


async def host() -> None:
    """The child process: a Stack from the environment, its gateway URL on stdout, then one
    JSON line ``{worker id: pid}`` for each line on stdin; stop at the end of stdin."""
    from pipeline.cli.up import Stack
    from pipeline.config.settings import load
    from pipeline.runtime import logs

    logs.setup(fmt="text")
    stack = Stack(load())
    await stack.start()
    try:
        assert stack.gateway is not None and stack.provider is not None
        print(json.dumps({"gateway": stack.gateway.url}), flush=True)
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        while await stdin.readline():
            provider = stack.provider
            pids = {wid: provider.pid(wid) for wid in provider.running()}
            print(json.dumps(pids), flush=True)
    finally:
        await stack.stop()


@dataclass(frozen=True)
class Usage:
    """What a process holds: resident memory, threads, open file descriptors."""

    rss_mb: float
    threads: int
    fds: int

    def __str__(self) -> str:
        return f"RSS {self.rss_mb:.1f} MB, {self.threads} threads, {self.fds} fds"


def usage(pid: int) -> Usage:
    """Read from /proc (no psutil)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return Usage(
        rss_mb=int(fields["VmRSS"][0]) / 1024,
        threads=int(fields["Threads"][0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (each of its threads may have forked some); none
    once it is gone (it may end while we look)."""
    out: set[int] = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def descendants(pid: int) -> set[int]:
    """Live processes under ``pid``: its children, theirs, and so on (a worker may be the
    child of a helper process of the provider rather than of the stack's)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()) - found:
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """A process that runs (a zombie nobody reaped counts: it is a leak too)."""
    return Path(f"/proc/{pid}").exists()


async def settled(pid: int) -> Usage:
    """The least of a few readings 0.2 s apart: a socket in the middle of closing (an HTTP
    request just answered) is not a leak, and what leaks stays in every reading."""
    readings = []
    for _ in range(3):
        readings.append(usage(pid))
        await asyncio.sleep(0.2)
    return Usage(
        rss_mb=min(r.rss_mb for r in readings),
        threads=min(r.threads for r in readings),
        fds=min(r.fds for r in readings),
    )


def assert_back(name: str, baseline: Usage, after: Usage) -> None:
    """``after`` within :data:`TOLERANCE` of ``baseline``, each measure."""
    for measure in ("rss_mb", "threads", "fds"):
        base, now = getattr(baseline, measure), getattr(after, measure)
        assert abs(now - base) <= base * TOLERANCE, f"{name}: {measure} {base} -> {now}"


class Host:
    """The stack's child process, seen from the test."""

    def __init__(self, proc: asyncio.subprocess.Process, gateway: str, log: Path) -> None:
        self.proc = proc
        self.gateway = gateway
        self.log = log
        self.seen: dict[str, int] = {}
        """Every worker id seen running, and its pid."""
        self.processes: set[int] = set()
        """Every process seen under the stack's (workers and the provider's helpers)."""
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def workers(self) -> dict[str, int]:
        """The workers the stack's provider runs now, by id."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write(b"workers\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        running: dict[str, int] = json.loads(line)
        self.seen.update(running)
        return running

    def tree(self) -> set[int]:
        """The processes under the stack's now (remembered in :attr:`processes`)."""
        now = descendants(self.pid)
        self.processes |= now
        return now

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])


@pytest_asyncio.fixture
async def stack_host(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[Host]:
    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "clip.mp4", frames=FRAMES, rate=RATE_25)
    env = {
        **os.environ,
        **server_env(nats_server),
        "TESSERA_DATA_DIR": str(tmp_path / "data"),
        "JIT_ORCHESTRATOR_PORT": "0",
        "JIT_MEDIA_ROOTS": str(media),
        "JIT_CAPACITY": "24",
        "JIT_SESSION_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
        "TESSERA_SESSION_RATE": "1000",
        "TESSERA_HEARTBEAT_INTERVAL": "0.5",
        "TESSERA_POLL_INTERVAL": "0.3",
    }
    log = tmp_path / "host.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.test_jit_churn",
            cwd=REPO, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=stderr, preexec_fn=die_with_parent,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, f"the stack did not start:\n{log.read_text()}"
        yield Host(proc, json.loads(line)["gateway"], log)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise


# -- viewers -------------------------------------------------------------------------------------


async def watch(http: httpx.AsyncClient, sid: str) -> tuple[Viewer, str]:
    """A viewer connected over WHEP (answered, connected, control channel open), and its
    ``Location``."""
    viewer = Viewer()
    try:
        await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
        answer = await http.post(
            f"/session/{sid}/whep",
            content=viewer.pc.localDescription.sdp,
            headers={"content-type": "application/sdp"},
        )
        assert answer.status_code == 201, answer.text
        await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
        await viewer.until(lambda: viewer.channel.readyState == "open", 20, "the channel open")
    except BaseException:
        await viewer.close()
        raise
    return viewer, answer.headers["location"]


async def leave(http: httpx.AsyncClient, viewer: Viewer, location: str, mode: str) -> None:
    """End a viewer the ``mode`` way (see the module docstring)."""
    if mode == "hangup":
        assert (await http.delete(location)).status_code == 204
    elif mode == "drop":
        # Stop the ICE transport first: it sends nothing when it stops, and what the close
        # below would send (DTLS close_notify, SCTP ABORT, RTCP BYE) then has no way out.
        for transceiver in viewer.pc.getTransceivers():
            await transceiver.receiver.transport.transport.stop()
    await viewer.close()


@dataclass
class Run:
    """The churn's client side, and what it did, for the checks after it."""

    http: httpx.AsyncClient
    host: Host
    clip: str
    ended: dict[str, str] = field(default_factory=dict)
    """Session id -> the reason it must end with."""
    cycles: int = 0
    modes: dict[str, int] = field(default_factory=dict)
    frames_read: int = 0
    long_pid: int | None = None
    """The long session's worker, once measured: :meth:`sample` keeps its peak usage."""
    peak: Usage = Usage(0.0, 0, 0)

    async def sample(self) -> None:
        """Until cancelled: remember every worker and process, and the long worker's peak."""
        while True:
            await self.host.workers()
            self.host.tree()
            if self.long_pid is not None:
                now, peak = usage(self.long_pid), self.peak
                self.peak = Usage(
                    max(peak.rss_mb, now.rss_mb), max(peak.threads, now.threads),
                    max(peak.fds, now.fds),
                )  # fmt: skip
            await asyncio.sleep(0.25)

    async def create(self) -> str:
        """A new session of the clip (waiting while at capacity)."""
        deadline = time.monotonic() + 30
        while True:
            got = await self.http.post("/session", json={"inputs": [{"url": self.clip}]})
            if got.status_code != 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)  # abandoned sessions still winding down
        assert got.status_code == 201, got.text
        return str(got.json()["id"])

    async def cycle(self, sid: str, mode: str, seek: int | None = None) -> None:
        """Connect a viewer, seek to ``seek`` and read it off the picture (if given), leave."""
        viewer, location = await watch(self.http, sid)
        try:
            if seek is not None:
                await viewer.ready()
                count = len(viewer.frames)
                reply = await viewer.send(Seek(seek))
                assert reply.ok and reply.position == seek, reply
                await viewer.until(lambda: len(viewer.frames) > count, 10, f"frame {seek}")
                assert viewer.numbers(count)[0] == seek
                self.frames_read += 1
        except BaseException:
            await viewer.close()
            raise
        await leave(self.http, viewer, location, mode)
        self.cycles += 1
        self.modes[mode] = self.modes.get(mode, 0) + 1

    async def short_lane(self, lane: int) -> None:
        """Short sessions one after the other: 5 cycles each, then DELETE or abandon."""
        for job in range(lane, SHORT_SESSIONS, LANES):
            sid = await self.create()
            modes = EARLY if job < DROP_ROUNDS * LANES else LATE
            for index, mode in enumerate(modes):
                seek = (37 * job + 11 * index) % FRAMES if index in SAMPLED else None
                await self.cycle(sid, mode, seek)
            if job % 2:
                self.ended[sid] = "idle"  # abandoned: the controller ends it
            else:
                assert (await self.http.delete(f"/session/{sid}")).status_code == 200
                self.ended[sid] = "deleted"

    async def long_lane(self, sid: str, count: int, drops: tuple[int, ...] = ()) -> None:
        """``count`` cycles on the long session (it is shared: no seeks)."""
        for index in range(count):
            mode = "drop" if index in drops else ("hangup", "hangup", "close")[index % 3]
            await self.cycle(sid, mode)

    async def state(self, sid: str) -> dict[str, Any]:
        got = await self.http.get(f"/session/{sid}")
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def viewers(self, sid: str) -> int | None:
        """Viewers of a running session, as its worker's last heartbeat says."""
        stats = (await self.state(sid)).get("stats")
        return None if stats is None else int(stats["viewers"])

    async def quiet(self, long_sid: str, within: float, processes: int | None = None) -> int:
        """Wait until only the long session's worker runs, its keeper its only viewer, and
        the processes under the stack's are ``processes`` (None: the same twice in a row,
        whatever helpers the provider keeps); return how many there are."""
        wid = jit_spec(long_sid).worker_id
        last: set[int] = set()
        seen = ""

        async def check() -> bool:
            nonlocal last, seen
            tree, previous = self.host.tree(), last
            last = tree
            workers = await self.host.workers()
            viewers = await self.viewers(long_sid)
            seen = f"workers {sorted(workers)}, processes {sorted(tree)}, viewers {viewers}"
            if set(workers) != {wid} or viewers != 1:
                return False
            return tree == previous if processes is None else len(tree) == processes

        try:
            await until(check, within, "only the long session's worker, its keeper alone", EVERY)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (last seen: {seen})") from None
        return len(last)


async def test_churn_of_200_viewers_leaves_nothing_behind(
    stack_host: Host, js: JetStreamContext, tmp_path: Path
) -> None:
    began = time.monotonic()

    def mark(what: str) -> None:
        print(f"{time.monotonic() - began:5.1f} s  {what}")

    # No keep-alive: an idle pooled connection would count among the stack's fds.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=stack_host.gateway, timeout=30, limits=limits) as http:
        run = Run(http, stack_host, clip=str(tmp_path / "media" / "clip.mp4"))
        sampling = asyncio.create_task(run.sample())
        try:
            await churn(run, js, mark)
        except BaseException:
            print(f"--- the stack's log ---\n{stack_host.tail()}")
            raise
        finally:
            await cancel_and_wait(sampling)


async def churn(run: Run, js: JetStreamContext, mark: Callable[[str], None]) -> None:
    host = run.host
    long_sid, keeper, keeper_location = await warm_up(run)
    processes = await run.quiet(long_sid, 30)
    long_pid = (await host.workers())[jit_spec(long_sid).worker_id]
    host_base, long_base = await settled(host.pid), await settled(long_pid)
    mark(f"warmed up ({run.cycles} cycles): stack {host_base}; long worker {long_base}")
    run.cycles, run.modes, run.long_pid, run.peak = 0, {}, long_pid, long_base

    await asyncio.gather(
        *(run.short_lane(lane) for lane in range(LANES)),
        *(run.long_lane(long_sid, LONG_CYCLES, LONG_DROPS) for _ in range(LONG_LANES)),
    )
    mark(f"{run.cycles} cycles {run.modes}, {run.frames_read} frames read")
    assert run.cycles == SHORT_SESSIONS * len(EARLY) + LONG_LANES * LONG_CYCLES == 200
    await run.quiet(long_sid, CONSENT_REAP, processes)
    host_after, long_after = await settled(host.pid), await settled(long_pid)
    mark(f"reaped: stack {host_after}; long worker {long_after} (peak {run.peak})")
    # The measure sees what a viewer holds (its sockets), so their return means something.
    assert run.peak.fds > long_base.fds
    assert_back("the stack's process", host_base, host_after)
    assert_back("the long session's worker", long_base, long_after)

    await check_ended(run, js, keep=long_sid)
    # The long session still shows exact frames, then ends like the others.
    count = len(keeper.frames)
    assert (await keeper.send(Seek(123))).ok
    await keeper.until(lambda: len(keeper.frames) > count, 10, "frame 123")
    assert keeper.numbers(count)[0] == 123
    await leave(run.http, keeper, keeper_location, "hangup")
    assert (await run.http.delete(f"/session/{long_sid}")).status_code == 200
    run.ended[long_sid] = "deleted"

    async def no_worker() -> bool:
        return not await host.workers()

    await until(no_worker, 20, "no worker left", EVERY)
    await check_ended(run, js)

    # Stopping the stack leaves no process of the run behind (the provider's helpers too).
    host.tree()
    assert host.proc.stdin is not None
    host.proc.stdin.close()
    assert await asyncio.wait_for(host.proc.wait(), 30) == 0
    left = [pid for pid in host.processes | set(host.seen.values()) if alive(pid)]
    assert not left, f"processes left behind: {left}"
    mark("every session reaped, the stack stopped, no process left")


async def warm_up(run: Run) -> tuple[str, Viewer, str]:
    """Imports, the first workers, a worker's encoder threads and allocator arenas grown by
    as many viewers at once as the churn has (and its RSS to its working set: a hundred
    cycles), one short session through its whole life. Returns the long session, its keeper
    and the keeper's ``Location``."""
    long_sid = await run.create()
    keeper, location = await watch(run.http, long_sid)
    await keeper.ready()
    warm = await run.create()

    async def warm_short() -> None:
        for index, mode in enumerate(("hangup", "close", "hangup")):
            await run.cycle(warm, mode, seek=5 if index == 0 else None)

    await asyncio.gather(*(run.long_lane(long_sid, WARM_CYCLES) for _ in range(6)), warm_short())
    assert (await run.http.delete(f"/session/{warm}")).status_code == 200
    run.ended[warm] = "deleted"
    return long_sid, keeper, location


async def check_ended(run: Run, js: JetStreamContext, keep: str | None = None) -> None:
    """Every session of :attr:`Run.ended` ended the way it should, its worker process is
    gone and its admission slot free; ``keep`` alone still holds one."""
    for sid, reason in run.ended.items():
        state = await run.state(sid)
        assert (state["state"], state["reason"]) == ("ended", reason), state
        wid = jit_spec(sid).worker_id
        assert wid in run.host.seen, f"{wid} was never seen running"
        assert not alive(run.host.seen[wid]), f"{wid} ({run.host.seen[wid]}) outlived its session"
    wanted = set() if keep is None else {keep}

    async def slots_free() -> bool:
        # The controller frees the slots of ended sessions every few passes, not at once.
        return {sid for sid, _ in (await admission.holders(js)).values()} == wanted

    await until(slots_free, 10, f"every admission slot free but {wanted}", EVERY)


if __name__ == "__main__":
    asyncio.run(host())
