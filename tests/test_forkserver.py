"""The local provider's fork server, with real workers against the session's nats-server.

Workers are ``tessera worker grabber`` pointed at a refused loopback URL (harmless: they keep
reconnecting and heartbeating until stopped) and, for an exit code, a stitcher of a mosaic that
does not exist (it exits 1). Each connects as its role's NATS user, which it can only do with
the ``NATS_URL`` of its own environment: the session's server has no anonymous access.

Also, without processes: the spec reaches a worker whole by either road (the fork server's
request, a spawned worker's ``--spec`` argument), and ``tessera worker grabber ...`` typed by a
person builds the same spec.

Proved here: ten workers started at once heartbeat far sooner forked than spawned; a forked
worker leads its own session under the fork server; exit codes reach ``on_exit`` once each;
stop is SIGTERM, then SIGKILL after the grace period; a ``kill -9`` of the fork server takes
its workers down, the provider spawns meanwhile and restarts it; close leaves no process and no
zombie.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec, WorkerSpec
from pipeline.nats.server import EmbeddedNats
from pipeline.sources.synthetic import refused_url
from pipeline.workers import forkserver
from pipeline.workers.processes import LocalProvider, worker_argv
from pipeline.workers.run import add_parser, spec_from_args

GRACE = 1.0


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait for ``check`` (every 20 ms), or fail naming ``what``."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (None: no such process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def gone(pid: int) -> bool:
    """The process has ended (a zombie counts as ended here; :func:`zombies` finds those)."""
    fields = stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def parent(pid: int) -> int | None:
    fields = stat(pid)
    return int(fields[1]) if fields else None


def environ(pid: int) -> bytes:
    """The environment ``pid`` was started with (a forked worker shows its fork server's)."""
    return Path(f"/proc/{pid}/environ").read_bytes()


def pending_signals(pid: int) -> int:
    """The signals pending for the whole process (a mask: bit n-1 for signal n)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("ShdPnd:")[1].split()[0], 16)


def zombies() -> list[int]:
    """Children of this test process that ended and were never reaped."""
    kids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        kids |= {int(c) for c in (task / "children").read_text().split()}
    return [pid for pid in kids if (stat(pid) or ["?"])[0] == "Z"]


def grabber(n: int) -> GrabberSpec:
    return GrabberSpec(key=f"fs{os.getpid()}x{n}", url=refused_url(), sizes=((320, 180),), fps=25)


# --- the spec on its way, without processes ---------------------------------------------------

SPECS: list[WorkerSpec] = [
    GrabberSpec(
        key="abc", url="rtsp://u:p@cam/x?a=1&b=two words", sizes=((320, 180), (160, 90)),
        fps=12.5,
    ),
    StitcherSpec(fp="f" * 32),
    JitSpec(session_id="s1"),
]  # fmt: skip


def _worker_command(argv: list[str]) -> WorkerSpec:
    """The spec ``tessera`` ``argv`` (``worker ...``) runs, as the CLI parses it."""
    parser = argparse.ArgumentParser(prog="tessera")
    add_parser(parser.add_subparsers(dest="command"))
    return spec_from_args(parser.parse_args(argv))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_the_spec_reaches_the_worker_whole_forked_or_spawned(spec: WorkerSpec) -> None:
    # Forked: the provider's request line, as the fork server decodes it.
    line = msgspec.json.encode(forkserver.ForkRequest(id=7, spec=spec, env={"A": "1"}))
    request = forkserver.decode_request(line)
    assert (request.id, request.spec, request.env) == (7, spec, {"A": "1"})
    assert type(request.spec) is type(spec)
    # Spawned: python -m pipeline worker --spec JSON.
    argv = worker_argv(spec, python="python3")
    assert argv[:5] == ["python3", "-m", "pipeline", "worker", "--spec"] and len(argv) == 6
    assert _worker_command(argv[3:]) == spec


def test_a_worker_typed_by_a_person_is_the_same_spec() -> None:
    grabber_spec = SPECS[0]
    assert isinstance(grabber_spec, GrabberSpec)
    typed = [
        "worker", "grabber", grabber_spec.key, "--url", grabber_spec.url,
        "--size", "160x90", "--size", "320x180", "--fps", "12.5",
    ]  # fmt: skip
    assert _worker_command(typed) == grabber_spec
    assert _worker_command(["worker", "stitcher", "f" * 32]) == SPECS[1]
    assert _worker_command(["worker", "jit", "s1"]) == SPECS[2]


class Exits:
    """``on_exit`` calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []

    async def __call__(self, worker_id: str, code: int, expected: bool) -> None:
        self.calls.append((worker_id, code, expected))

    def of(self, worker_id: str) -> list[tuple[int, bool]]:
        return [(code, expected) for wid, code, expected in self.calls if wid == worker_id]


class Beats:
    """When each worker's first heartbeat arrived (monotonic)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    async def on_msg(self, msg: Msg) -> None:
        self.first.setdefault(msg.subject.removeprefix("hb.worker."), time.monotonic())


@pytest_asyncio.fixture
async def beats(nc: Client, js: JetStreamContext) -> AsyncIterator[Beats]:
    seen = Beats()
    sub = await nc.subscribe("hb.worker.>", cb=seen.on_msg)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


def make_provider(nats_server: EmbeddedNats, exits: Exits, *, fork: bool) -> LocalProvider:
    # The base environment carries the role passwords' path, as `tessera up`'s does: no worker
    # (and not the fork server) may see it.
    env = {**os.environ, "TESSERA_NATS_USERS": "/nonexistent/nats-users.json"}
    return LocalProvider(
        nats_url=nats_server.url,
        url_for=nats_server.url_for,
        on_exit=exits,
        grace=GRACE,
        env=env,
        fork_server=fork,
    )


async def ready(provider: LocalProvider) -> int:
    """Start the provider and wait for its fork server; return the server's pid."""
    await provider.start()
    forks = provider.forks
    assert forks is not None, "this system cannot run the fork server (Linux >= 5.3)"
    await until(lambda: forks.state == "ready", 30, "the fork server to be ready")
    assert forks.pid is not None
    return forks.pid


@dataclass
class Rig:
    """A provider with a ready fork server, and what it reported."""

    provider: LocalProvider
    exits: Exits
    server: int
    """The fork server's pid."""


@pytest_asyncio.fixture
async def rig(nats_server: EmbeddedNats, beats: Beats) -> AsyncIterator[Rig]:
    exits = Exits()
    provider = make_provider(nats_server, exits, fork=True)
    try:
        yield Rig(provider, exits, await ready(provider))
    finally:
        await provider.close()


async def ten_at_once(provider: LocalProvider, beats: Beats, round_: int) -> list[float]:
    """Start ten grabbers at once; seconds from the start until each one's first heartbeat."""
    specs = [grabber(100 * round_ + i) for i in range(10)]
    began = time.monotonic()
    await asyncio.gather(*(provider.start_worker(s) for s in specs))
    await until(lambda: all(s.worker_id in beats.first for s in specs), 60, "ten heartbeats")
    return sorted(beats.first[s.worker_id] - began for s in specs)


async def test_ten_workers_at_once_start_far_sooner_forked_than_spawned(
    nats_server: EmbeddedNats, beats: Beats
) -> None:
    exits = Exits()
    figures: dict[str, list[float]] = {}
    for round_, mode in enumerate(("spawn", "fork")):
        provider = make_provider(nats_server, exits, fork=mode == "fork")
        try:
            server = await ready(provider) if mode == "fork" else None
            figures[mode] = await ten_at_once(provider, beats, round_)
            for wid in provider.running():
                pid = provider.pid(wid)
                assert pid is not None
                assert os.getsid(pid) == pid, "a worker leads its own session"
                assert parent(pid) == (server or os.getpid())
            if server is not None:
                assert b"TESSERA_NATS_USERS=" not in environ(server)
        finally:
            await provider.close()
    spawn, fork = figures["spawn"], figures["fork"]
    print(
        f"\n10 workers at once, start -> first heartbeat: spawned median "
        f"{statistics.median(spawn):.3f} s, last {spawn[-1]:.3f} s; forked median "
        f"{statistics.median(fork):.3f} s, last {fork[-1]:.3f} s"
    )
    assert fork[-1] < spawn[-1] / 2, figures
    # Each stopped once, by the close (on a loaded machine a slow one may be killed: -9).
    assert len(exits.calls) == 20 and all(expected for *_, expected in exits.calls), exits.calls


async def test_exit_codes_reach_on_exit_once(rig: Rig, beats: Beats) -> None:
    provider, exits = rig.provider, rig.exits
    # A stitcher of a mosaic nobody created exits 1 by itself.
    failing = StitcherSpec(fp=f"nomosaic{os.getpid()}")
    killed, stopped = grabber(1), grabber(2)
    for spec in (failing, killed, stopped):
        await provider.start_worker(spec)
    await until(lambda: bool(exits.of(failing.worker_id)), 30, "the stitcher to exit")
    await until(
        lambda: {killed.worker_id, stopped.worker_id} <= beats.first.keys(),
        30,
        "the grabbers' heartbeats",
    )
    pid = provider.pid(killed.worker_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await until(lambda: bool(exits.of(killed.worker_id)), 10, "the killed grabber's exit")
    assert await provider.stop_worker(stopped.worker_id) == 0
    assert await provider.stop_worker(stopped.worker_id) is None  # not running any more
    await asyncio.sleep(0.3)  # room for a second report, which must not come
    assert exits.of(failing.worker_id) == [(1, False)]
    assert exits.of(killed.worker_id) == [(-signal.SIGKILL, False)]
    assert exits.of(stopped.worker_id) == [(0, True)]
    assert provider.running() == {}


async def test_stop_is_sigterm_then_sigkill_after_the_grace(rig: Rig, beats: Beats) -> None:
    provider, exits, server = rig.provider, rig.exits, rig.server
    spec = grabber(3)
    pid = await provider.start_worker(spec)
    assert parent(pid) == server
    await until(lambda: spec.worker_id in beats.first, 30, "the grabber's heartbeat")
    # A stopped process acts on no signal but SIGKILL: SIGTERM stays pending, ignored.
    os.kill(pid, signal.SIGSTOP)
    # Stopped for good once every thread is: a SIGTERM before that would be handled.
    await until(lambda: (stat(pid) or ["?"])[0] == "T", 10, "the worker to be stopped")
    began = time.monotonic()
    stopping = asyncio.create_task(provider.stop_worker(spec.worker_id))
    await asyncio.sleep(GRACE / 2)
    assert pending_signals(pid) & (1 << (signal.SIGTERM - 1)), "SIGTERM first"
    assert not stopping.done()
    assert await stopping == -signal.SIGKILL
    assert time.monotonic() - began >= GRACE
    assert exits.of(spec.worker_id) == [(-signal.SIGKILL, True)]
    assert gone(pid)


async def test_a_kill_9_of_the_fork_server_takes_its_workers_down(rig: Rig, beats: Beats) -> None:
    provider, exits, server = rig.provider, rig.exits, rig.server
    specs = [grabber(10 + i) for i in range(3)]
    pids = [await provider.start_worker(s) for s in specs]
    await until(lambda: all(s.worker_id in beats.first for s in specs), 30, "heartbeats")
    forks = provider.forks
    assert forks is not None
    forks.backoff = (2.0, 2.0)  # long enough to see a start while it is down
    os.kill(server, signal.SIGKILL)
    # Each worker got SIGTERM from the kernel (its parent-death signal) and stopped.
    await until(lambda: all(gone(p) for p in pids), 10, "the workers to end")
    await until(lambda: len(exits.calls) == 3, 10, "three exit reports")
    for spec in specs:
        assert exits.of(spec.worker_id) == [(-signal.SIGTERM, False)]
    assert provider.running() == {}
    # While the fork server is down, a worker is spawned: our own child.
    spawned = grabber(13)
    assert parent(await provider.start_worker(spawned)) == os.getpid()
    assert forks.state == "down"
    # The fork server comes back (after its backoff) and forks again.
    await until(lambda: forks.state == "ready" and forks.pid != server, 30, "a new server")
    again = grabber(14)
    assert parent(await provider.start_worker(again)) == forks.pid
    assert forks.restarts == 1


async def test_close_leaves_no_process_and_no_zombie(
    nats_server: EmbeddedNats, beats: Beats
) -> None:
    exits = Exits()
    provider = make_provider(nats_server, exits, fork=True)
    server = await ready(provider)
    specs = [grabber(20 + i) for i in range(4)]
    pids = [await provider.start_worker(s) for s in specs]
    await until(lambda: all(s.worker_id in beats.first for s in specs), 30, "heartbeats")
    # One worker already gone before the close: its report must not be lost or repeated.
    await provider.stop_worker(specs[0].worker_id)
    await provider.close()
    await provider.close()  # safe twice
    assert all(gone(p) for p in (*pids, server))
    assert not [p for p in zombies() if p in (*pids, server)]
    assert all(parent(p) is None for p in (*pids, server)), "no zombie anywhere"
    assert sorted(exits.calls) == sorted((s.worker_id, 0, True) for s in specs)
    assert provider.running() == {} and provider.spares == 0
