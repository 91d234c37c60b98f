"""The controller: keeps the running workers equal to the desired ones.

It watches KV ``mosaics`` (projected state) and the ``HEARTBEATS`` stream (viewer and worker
beats, starting with the last one of every subject), and on every tick — or at once when a
mosaic gains its first viewer — asks :func:`pipeline.state.reconcile.plan` what to change, then
tells the instance provider and appends ``worker started`` / ``worker stopped`` facts.

Heartbeat times are taken from the controller's own clock when a beat arrives (so clocks of
other machines do not matter), and from the beat's ``at`` for the ones already stored at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from pipeline.errors import MessageError, TesseraError
from pipeline.eventlog import append
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.events import WorkerStarted, WorkerStopped
from pipeline.messages.heartbeats import ViewerHeartbeat, WorkerHeartbeat
from pipeline.state.model import MosaicState
from pipeline.state.projector import decode_entry
from pipeline.state.reconcile import Running, Timing, WorkerSpec, plan
from pipeline.tasks import cancel_and_wait
from pipeline.topology import HEARTBEATS, MOSAICS

log = logging.getLogger("tessera.controller")


class Provider(Protocol):
    """What the controller needs of an instance provider."""

    def running(self) -> dict[str, Running]: ...

    async def start_worker(self, spec: WorkerSpec) -> int: ...

    async def stop_worker(self, worker_id: str, reason: str = ...) -> int | None: ...


class Controller:
    """Reconciles desired and running workers. ``start()`` / ``stop()`` (safe twice)."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        provider: Provider,
        *,
        timing: Timing | None = None,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = js
        self.provider = provider
        self.timing = timing or Timing()
        self.poll_interval = poll_interval
        self._clock = clock
        self.mosaics: dict[str, MosaicState] = {}
        self.viewers: dict[str, float] = {}
        self.beats: dict[str, float] = {}
        self.failures: dict[str, tuple[int, float]] = {}
        self.watched: frozenset[str] = frozenset()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: object | None = None
        self._hb_sub: JetStreamContext.PushSubscription | None = None
        self._lock = asyncio.Lock()
        self.passes = 0

    async def start(self) -> None:
        """Load state and heartbeats, then reconcile in the background."""
        if self._tasks:
            return
        kv = await self._js.key_value(MOSAICS.name)
        watcher = await kv.watchall()
        self._watcher = watcher
        # The watcher first replays every key, then sends None: wait for that to start with
        # a complete picture.
        while (entry := await watcher.updates(timeout=10)) is not None:  # type: ignore[no-untyped-call]
            self._on_mosaic(entry.key, entry.value)
        self._tasks.append(asyncio.create_task(self._watch_mosaics(watcher), name="mosaics"))
        self._hb_sub = await self._js.subscribe(
            "hb.>",
            stream=HEARTBEATS.name,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            cb=self._on_heartbeat,
        )
        self._tasks.append(asyncio.create_task(self._run(), name="reconcile"))
        log.info("controller started", extra={"mosaics": len(self.mosaics)})

    async def stop(self) -> None:
        """Stop reconciling; the provider keeps its workers until it is closed."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        sub, self._hb_sub = self._hb_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[attr-defined]
        if tasks:
            log.info("controller stopped")

    def poke(self) -> None:
        """Reconcile now rather than at the next tick."""
        self._wake.set()

    # --- inputs ----------------------------------------------------------------------------

    def _on_mosaic(self, key: str, value: bytes | None) -> None:
        if not value:
            self.mosaics.pop(key, None)
            return
        try:
            state = decode_entry(MOSAICS.name, value).state
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the controller
            log.error("bad mosaic entry", extra={"key": key, "error": str(exc)})
            return
        self.mosaics[key] = state

    async def _watch_mosaics(self, watcher: object) -> None:
        async for entry in watcher:  # type: ignore[attr-defined]
            if entry is None:
                continue
            self._on_mosaic(entry.key, entry.value)
            self.poke()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode_heartbeat(msg.data, msg.subject)
        except MessageError:
            return
        pending = msg.metadata.num_pending if msg.metadata else 0
        # Beats already stored when we subscribed carry their own time; live ones ours.
        now = self._clock()
        stored = pending > 0 or now - beat.at > 2 * self.poll_interval
        when = min(beat.at, now) if stored else now
        match beat:
            case ViewerHeartbeat(scope="mosaic", id=fp):
                first = fp not in self.watched
                self.viewers[fp] = max(self.viewers.get(fp, when), when)
                if first:
                    self.poke()
            case WorkerHeartbeat(worker_id=wid, ready=ready):
                self.beats[wid] = max(self.beats.get(wid, when), when)
                if ready:
                    self.failures.pop(wid, None)

    # --- deciding --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self.reconcile()
            except TesseraError as exc:
                log.error("reconcile failed; retrying", extra={"error": str(exc)})

    async def reconcile(self) -> None:
        """One pass: decide and apply."""
        async with self._lock:
            now = self._clock()
            decision = plan(
                mosaics=self.mosaics,
                viewers=self.viewers,
                beats=self.beats,
                running=self.provider.running(),
                failures=self.failures,
                now=now,
                timing=self.timing,
            )
            self.watched = decision.watched
            self.passes += 1
            for wid, reason in decision.stop:
                code = await self.provider.stop_worker(wid, reason)
                await append(
                    self._js,
                    WorkerStopped(at=self._clock(), worker_id=wid, reason=reason, exit_code=code),
                )
            for spec in decision.start:
                try:
                    pid = await self.provider.start_worker(spec)
                except OSError as exc:
                    self._failed(spec.worker_id)
                    log.error(
                        "cannot start worker", extra={"worker": spec.worker_id, "error": str(exc)}
                    )
                    continue
                self.beats.pop(spec.worker_id, None)
                await append(
                    self._js,
                    WorkerStarted(
                        at=self._clock(),
                        worker_id=spec.worker_id,
                        kind=spec.kind,  # type: ignore[arg-type]
                        target=spec.target,
                        pid=pid,
                    ),
                )

    def _failed(self, worker_id: str) -> None:
        count, _ = self.failures.get(worker_id, (0, 0.0))
        self.failures[worker_id] = (count + 1, self._clock())

    async def on_worker_exit(self, worker_id: str, code: int, expected: bool) -> None:
        """Provider callback: a worker process ended."""
        if expected:
            return
        self._failed(worker_id)
        await append(
            self._js,
            WorkerStopped(at=self._clock(), worker_id=worker_id, reason="crashed", exit_code=code),
        )
        self.poke()
