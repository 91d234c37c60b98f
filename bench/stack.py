"""The runner's side of a stack host (:mod:`bench.stackhost`): start it, talk to it, find its
processes (nats-server, and the workers its provider runs, by asking it), stop it; and the
mosaic chores every mosaic case needs (create, keep watched, wait for workers and heartbeats).

Everything started here is stopped in ``__aexit__``, including on Ctrl-C (cancellation): the
host gets its stdin closed (a graceful stop of the Stack and its workers), then SIGTERM, then
SIGKILL of its process group, each within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.core import ROOT
from bench.cpu import Proc, cmdline, descendants
from pipeline.errors import MessageError
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import GrabberStats, StitcherStats, WorkerHeartbeat
from pipeline.nats.connect import connect
from pipeline.runtime.procs import die_with_parent, stop_process
from pipeline.state.mosaic import key_of_source

START_TIMEOUT = 40.0
STOP_TIMEOUT = 25.0


class StackError(RuntimeError):
    """The stack host did not start, or a wait for it timed out; the message says which."""


async def until(
    check: Callable[[], Awaitable[bool] | bool], within: float, what: str, every: float = 0.1
) -> float:
    """Wait (bounded) until ``check()`` holds; return the seconds it took."""
    began = time.monotonic()
    deadline = began + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return time.monotonic() - began
        if time.monotonic() >= deadline:
            raise StackError(f"not within {within:g} s: {what}")
        await asyncio.sleep(every)


@dataclass
class Beats:
    """The newest worker heartbeat per worker id, as it arrives on ``hb.worker.>``."""

    latest: dict[str, WorkerHeartbeat] = field(default_factory=dict)
    history: dict[str, list[tuple[float, WorkerHeartbeat]]] = field(default_factory=dict)

    async def on_msg(self, msg: Msg) -> None:
        try:
            beat = decode_heartbeat(msg.data, msg.subject)
        except MessageError:
            return
        if isinstance(beat, WorkerHeartbeat):
            self.latest[beat.worker_id] = beat
            trail = self.history.setdefault(beat.worker_id, [])
            trail.append((time.monotonic(), beat))
            del trail[:-600]  # bounded: 10 min of 1 s beats

    def of(self, kind: str, target: str) -> WorkerHeartbeat | None:
        """The newest beat of the worker of ``kind`` for ``target`` that is still running."""
        for beat in self.latest.values():
            if beat.kind == kind and beat.target == target:
                return beat
        return None

    def grabber(self, source_id: str) -> GrabberStats | None:
        """The stats of the grabber that makes ``source_id`` (a source id or key: one grabber
        per URL, whatever its tile sizes)."""
        beat = self.of("grabber", key_of_source(source_id))
        return beat.stats if beat is not None and isinstance(beat.stats, GrabberStats) else None

    def stitcher(self, fp: str) -> StitcherStats | None:
        beat = self.of("stitcher", fp)
        return beat.stats if beat is not None and isinstance(beat.stats, StitcherStats) else None

    def stitcher_ready(self, fp: str) -> bool:
        beat = self.of("stitcher", fp)
        return beat is not None and beat.ready

    def stitcher_trail(self, fp: str) -> list[tuple[float, StitcherStats]]:
        """(arrival time, stats) of every beat of the stitcher(s) of ``fp``."""
        trail = []
        for beats in self.history.values():
            for at, beat in beats:
                if beat.kind == "stitcher" and beat.target == fp:
                    if isinstance(beat.stats, StitcherStats):
                        trail.append((at, beat.stats))
        return sorted(trail, key=lambda item: item[0])


class StackHost:
    """A Tessera Stack in a child process. ``async with StackHost(...) as host:``."""

    def __init__(self, work_dir: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.dir = work_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "stack.log"
        self.env = {
            "JIT_ORCHESTRATOR_PORT": "0",
            "TESSERA_CREATE_RATE": "1000",
            **(env or {}),
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.gateway = ""
        self.nats_url = ""
        self.pid = 0
        self.nc: Client | None = None
        self.http: httpx.AsyncClient | None = None
        self.beats = Beats()
        self.token = self.env.get("TESSERA_API_TOKEN") or None
        """Sent with ``/create`` (``Authorization: Bearer``) when set: a stack that signs play
        URLs (``TESSERA_PLAY_SECRET``) asks a token with the ``mosaics`` scope."""
        self.prefixes: dict[str, str] = {}
        """``/s/<token>`` of each mosaic ``/create`` answered with a signed URL."""
        self.started_at: dict[int, float] = {}
        """Wall-clock time the provider started (or assigned) each worker pid."""
        self._log: IO[bytes] | None = None
        self._query = asyncio.Lock()

    async def __aenter__(self) -> StackHost:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        argv = [sys.executable, "-m", "bench.stackhost", "--data-dir", str(self.dir / "data")]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TESSERA_", "NATS_", "JIT_"))
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        log = self.log_path.open("ab")
        self._log = log
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line = b""
        if not line:
            raise StackError(f"the stack host did not start; see {self.log_path}:\n{self.tail()}")
        info = json.loads(line)
        self.gateway, self.nats_url, self.pid = info["gateway"], info["nats"], int(info["pid"])
        self.nc = await connect(self.nats_url, name="bench")
        await self.nc.subscribe("hb.worker.>", cb=self.beats.on_msg, pending_msgs_limit=10_000)
        self.http = httpx.AsyncClient(base_url=self.gateway, timeout=10.0)

    def tail(self, lines: int = 15) -> str:
        """The last lines of the host's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        """Stop the host (graceful, then forced). Safe to call twice."""
        http, self.http = self.http, None
        if http is not None:
            await http.aclose()
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 3.0)
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.close()  # its signal to stop gracefully
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            await stop_process(proc, 5.0, "stack host")  # then forced; its group too
        log, self._log = self._log, None
        if log is not None:
            log.close()

    # -- processes ------------------------------------------------------------------------------

    async def _workers(self) -> dict[str, Any]:
        """Ask the host which workers its provider runs (see :mod:`bench.stackhost`)."""
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        async with self._query:
            proc.stdin.write(b"workers\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), 10.0)
        if not line:
            raise StackError(f"the stack host ended; see {self.log_path}:\n{self.tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def processes(self) -> list[Proc]:
        """The host and every Tessera process under it, now: nats-server, the workers (with
        their kind and target, from the provider) and idle spare processes ("spare")."""
        answer = await self._workers()
        known = {w["pid"]: w for w in answer["workers"] if w.get("pid")}
        for pid, worker in known.items():
            self.started_at[pid] = float(worker["started_at"])
        procs = [Proc(self.pid, "host")]
        for pid in descendants(self.pid):
            argv = cmdline(pid)
            if not argv:
                continue
            if os.path.basename(argv[0]) == "nats-server":
                procs.append(Proc(pid, "nats-server"))
            elif pid in known:
                procs.append(Proc(pid, known[pid]["kind"], known[pid]["target"]))
            elif "pipeline" in argv:
                procs.append(Proc(pid, "spare"))  # idle, or a worker being stopped
        return procs

    async def workers(self, role: str | None = None) -> list[Proc]:
        """Worker processes (of ``role``), now; idle spares are not workers."""
        return [p for p in await self.processes()
                if p.role not in ("host", "nats-server", "spare")
                and (role is None or p.role == role)]  # fmt: skip

    async def wait_no_workers(self, within: float = 30.0) -> float:
        """Wait until the provider runs no worker and every stopped one has exited (all that
        is left under the host is nats-server and the idle spares)."""

        async def idle() -> bool:
            answer = await self._workers()
            if answer["workers"]:
                return False
            procs = await self.processes()
            return sum(p.role == "spare" for p in procs) <= int(answer["spares"])

        return await until(idle, within, "every worker to stop", 0.2)

    # -- mosaics --------------------------------------------------------------------------------

    async def create(
        self,
        pattern: str,
        *,
        size: str = "1280x720",
        title: str = "",
        fps: int = 25,
        query: dict[str, str] | None = None,
    ) -> str:
        """``GET /create`` (with the host's token, if it has one); return the new mosaic's
        fingerprint. ``query``: more parameters (``alarms``, ``audio``, ...). A signed answer
        (``/s/<token>/play/<fp>/...``) is remembered: :meth:`play_path` then carries its
        prefix."""
        assert self.http is not None
        params = {"urls": pattern, "size": size, "fps": str(fps), **(query or {})}
        if title:
            params["title"] = title
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        got = await self.http.get("/create", params=params, headers=headers)
        if got.status_code != 302:
            raise StackError(f"/create answered {got.status_code}: {got.text[:200]}")
        location = urlsplit(str(got.headers["location"])).path
        signed = ""
        if location.startswith("/s/"):
            token, _, rest = location[len("/s/") :].partition("/")
            signed, location = f"/s/{token}", f"/{rest}"
        parts = location.split("/")
        if len(parts) < 3 or parts[1] not in ("play", "view"):
            raise StackError(f"/create answered a Location that names no mosaic: {location!r}")
        fp = parts[2]
        if signed:
            self.prefixes[fp] = signed
        return fp

    def play_path(self, fp: str) -> str:
        """``/play/<fp>``, after the mosaic's ``/s/<token>`` when its URL is signed."""
        return f"{self.prefixes.get(fp, '')}/play/{fp}"

    async def playlist(self, fp: str) -> str:
        """The live playlist of ``fp`` (a viewer request)."""
        assert self.http is not None
        got = await self.http.get(f"{self.play_path(fp)}/index.m3u8")
        return got.text if got.status_code == 200 else ""

    async def segment(self, fp: str, uri: str) -> bytes | None:
        """A segment of ``fp`` (None when missing)."""
        assert self.http is not None
        got = await self.http.get(f"{self.play_path(fp)}/{uri}")
        return got.content if got.status_code == 200 else None


class Watchers:
    """Keeps mosaics watched: a playlist request per mosaic every ``every`` seconds (what a
    player does; on its signed URL when it has one), so the controller keeps their work
    running. ``async with``."""

    def __init__(self, host: StackHost, every: float = 0.5) -> None:
        self.host = host
        self.every = every
        self.fps: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watchers:
        self._task = asyncio.create_task(self._run(), name="bench watchers")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            for fp in list(self.fps):
                with contextlib.suppress(httpx.HTTPError):
                    await self.host.playlist(fp)
            await asyncio.sleep(self.every)
