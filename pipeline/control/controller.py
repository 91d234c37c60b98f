"""The controller: keeps the running workers equal to the desired ones.

It watches KV ``mosaics`` (projected state) and the ``HEARTBEATS`` stream (viewer and worker
beats, starting with the last one of every subject), and on every tick — or at once when a
mosaic gains its first viewer — asks :func:`pipeline.state.reconcile.plan` what to change, then
tells the instance provider and appends ``worker started`` / ``worker stopped`` facts.

Heartbeat times are taken from the controller's own clock when a beat arrives (so clocks of
other machines do not matter), and from the beat's ``at`` for the ones already stored at start.

While NATS is away the controller decides nothing: it cannot see heartbeats then, and a gap in
what it saw is not a gap in what the workers sent. After a reconnection it follows the buckets
and the heartbeats again from the last value of each (a restarted nats-server may have lost
the consumers behind them, which nats-py would only notice after two missed idle heartbeats,
10 s, as long as the heartbeat timeout), and gives every worker a full heartbeat timeout from
then to be heard again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from pipeline.control import admission
from pipeline.errors import InstanceError, MessageError, TesseraError, WorkerPending
from pipeline.messages.codec import decode_heartbeat, decode_reply, encode
from pipeline.messages.control import Retile
from pipeline.messages.events import (
    Event,
    SessionEnded,
    SessionFailed,
    SessionStarted,
    WorkerRetiled,
    WorkerStarted,
    WorkerStopped,
)
from pipeline.messages.heartbeats import ViewerHeartbeat, WorkerHeartbeat
from pipeline.messages.workers import GrabberSpec, StitcherSpec, WorkerSpec
from pipeline.nats import subjects
from pipeline.nats.connect import NATS_ERRORS
from pipeline.nats.eventlog import append
from pipeline.nats.topology import HEARTBEATS, MOSAICS, SESSIONS
from pipeline.runtime.tasks import Tasks, wait_set
from pipeline.state.costs import Demand, cost_of
from pipeline.state.model import MosaicState, SessionState
from pipeline.state.reconcile import (
    Running,
    SessionFact,
    SessionTiming,
    Timing,
    affinity,
    jit_spec,
    plan,
    session_plan,
)
from pipeline.state.stored import decode_entry

log = logging.getLogger("tessera.controller")


RETILE_TIMEOUT = 2.0
"""Seconds a grabber has to answer a retile before it is restarted with its new spec instead
(it answers once its new tiles are set up: a few ms)."""
SLOT_GRACE = 30.0
"""Seconds a claimed admission slot may wait for its session to appear in the state."""


class Provider(Protocol):
    """What the controller needs of whoever runs workers (:class:`LocalProvider`,
    :class:`~pipeline.instances.pool.InstancePool`).

    ``start_worker`` returns the worker's pid, or 0 when it runs on another machine; it raises
    :class:`WorkerPending` when the worker must wait for an instance (tried again next pass),
    and ``OSError`` or :class:`InstanceError` when it could not start (a failure, backed off).
    """

    def running(self) -> dict[str, Running]: ...

    def retiled(self, spec: WorkerSpec) -> None:
        """The running worker ``spec.worker_id`` now runs ``spec`` (told in place)."""

    def can_retile(self, spec: WorkerSpec) -> bool:
        """Whether the running worker ``spec.worker_id`` may grow to ``spec`` where it runs
        (its agent has room for what the new spec costs more); else it is placed anew."""

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
        session_timing: SessionTiming | None = None,
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
        self.sessions: dict[str, SessionState] = {}
        self.session_timing = session_timing or SessionTiming()
        self.session_viewers: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.viewers: dict[str, float] = {}
        self.beats: dict[str, float] = {}
        self.failures: dict[str, tuple[int, float]] = {}
        self.watched: frozenset[str] = frozenset()
        self.near: dict[str, frozenset[str]] = {}
        """Worker id → the workers it should run beside (as of the last pass): see
        :meth:`demand`."""
        self._wake = asyncio.Event()
        self._tasks = Tasks("controller")
        self._watches = Tasks("controller")
        """The tasks following the buckets: made again, with their watchers, after a
        reconnection (while the reconcile task, one of ``_tasks``, goes on)."""
        self._watchers: list[Any] = []
        self._hb_sub: JetStreamContext.PushSubscription | None = None
        self._live_sub: Subscription | None = None
        self._lock = asyncio.Lock()
        self._reconnects = 0
        """The connection's reconnect count when the inputs were last followed."""
        self.passes = 0
        self.refollowed = 0
        """How many times the inputs were followed again after a reconnection."""

    async def start(self) -> None:
        """Load state and heartbeats, then reconcile in the background."""
        if self._tasks:
            return
        self._reconnects = self._nc.stats["reconnects"]
        try:
            await self._follow()
        except BaseException:
            await self._unfollow()
            raise
        self._tasks.spawn(self._run(), name="reconcile")
        log.info("controller started", extra={"mosaics": len(self.mosaics)})

    async def _follow(self) -> None:
        """Load every mosaic and session, then follow them and the heartbeats."""
        for bucket in (MOSAICS.name, SESSIONS.name):
            kv = await self._js.key_value(bucket)
            watcher = await kv.watchall()
            self._watchers.append(watcher)
            # The watcher first replays every key, then sends None: wait for that to start
            # with a complete picture.
            table: dict[str, Any] = self.mosaics if bucket == MOSAICS.name else self.sessions
            table.clear()  # what was deleted while we did not follow is not replayed
            while (entry := await watcher.updates(timeout=10)) is not None:  # type: ignore[no-untyped-call]
                self._on_entry(bucket, entry.key, entry.value)
            self._watches.spawn(self._watch(bucket, watcher), name=f"watch {bucket}")
        self._live_sub = await self._nc.subscribe("hb.>", cb=self._on_live_heartbeat)
        self._hb_sub = await self._js.subscribe(
            "hb.>",
            stream=HEARTBEATS.name,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            cb=self._on_heartbeat,
        )

    async def _unfollow(self) -> None:
        await self._watches.close()
        for sub in (self._hb_sub, self._live_sub):
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._hb_sub = self._live_sub = None
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def _refollow(self) -> None:
        """After a reconnection: follow every input again, and give the workers time."""
        reconnects = self._nc.stats["reconnects"]
        async with self._lock:
            await self._unfollow()
            await self._follow()
            now = self._clock()
            for wid in self.beats:
                self.beats[wid] = max(self.beats[wid], now)
        self._reconnects = reconnects
        self.refollowed += 1
        log.info("following state and heartbeats again after reconnecting")

    async def stop(self) -> None:
        """Stop reconciling; the provider keeps its workers until it is closed."""
        running = bool(self._tasks)
        await self._tasks.close()
        await self._unfollow()
        if running:
            log.info("controller stopped")

    def demand(self, spec: WorkerSpec) -> Demand:
        """What placing ``spec`` needs beyond its kind (the instance pool's hook): its cost (a
        stitcher's from its mosaic's size and tiles) and the workers it should run beside (a
        grabber the stitchers that read its source, a stitcher its grabbers)."""
        mosaic = self.mosaics.get(spec.fp) if isinstance(spec, StitcherSpec) else None
        return Demand(cost_of(spec, mosaic), self.near.get(spec.worker_id, frozenset()))

    def poke(self) -> None:
        """Reconcile now rather than at the next tick."""
        self._wake.set()

    # --- inputs ----------------------------------------------------------------------------

    def _on_entry(self, bucket: str, key: str, value: bytes | None) -> None:
        table: dict[str, Any] = self.mosaics if bucket == MOSAICS.name else self.sessions
        if not value:
            table.pop(key, None)
            return
        try:
            state = decode_entry(bucket, value).state
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the controller
            log.error("bad state entry", extra={"bucket": bucket, "key": key, "error": str(exc)})
            return
        table[key] = state

    async def _watch(self, bucket: str, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            self._on_entry(bucket, entry.key, entry.value)
            self.poke()

    async def _on_heartbeat(self, msg: Msg) -> None:
        """A beat from ``HEARTBEATS``: the stored ones at (re)start, then live ones."""
        pending = msg.metadata.num_pending if msg.metadata else 0
        self._fold_heartbeat(msg, stored=pending > 0)

    async def _on_live_heartbeat(self, msg: Msg) -> None:
        """A beat as it was sent (core NATS): it arrives while a NATS cluster elects a new
        leader for ``HEARTBEATS`` (seconds without deliveries from the stream)."""
        self._fold_heartbeat(msg, stored=False)

    def _fold_heartbeat(self, msg: Msg, *, stored: bool) -> None:
        try:
            beat = decode_heartbeat(msg.data, msg.subject)
        except MessageError:
            return
        # Beats already stored when we subscribed carry their own time; live ones ours. A beat
        # that comes twice (stream and core) or late only ever moves a time forward (max).
        now = self._clock()
        stored = stored or now - beat.at > 2 * self.poll_interval
        when = min(beat.at, now) if stored else now
        match beat:
            case ViewerHeartbeat(scope="mosaic", id=fp):
                first = fp not in self.watched
                self.viewers[fp] = max(self.viewers.get(fp, when), when)
                if first:
                    self.poke()
            case ViewerHeartbeat(scope="session", id=sid):
                self.session_viewers[sid] = max(self.session_viewers.get(sid, when), when)
            case WorkerHeartbeat(worker_id=wid, ready=ready):
                self.beats[wid] = max(self.beats.get(wid, when), when)
                if ready:
                    self.failures.pop(wid, None)
                    if wid not in self.ready:
                        self.ready[wid] = when
                        self.poke()

    # --- deciding --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await wait_set(self._wake, self.poll_interval)
            self._wake.clear()
            if not self._nc.is_connected:
                continue  # blind: no decision (see the module's doc)
            if self._nc.stats["reconnects"] != self._reconnects:
                try:
                    await self._refollow()
                except (TesseraError, *NATS_ERRORS) as exc:
                    log.warning("cannot follow again yet; retrying", extra={"error": repr(exc)})
                    continue
            try:
                await self.reconcile()
            except TesseraError as exc:
                log.error("reconcile failed; retrying", extra={"error": str(exc)})
            except NATS_ERRORS as exc:
                # NATS went away mid-pass, or is not ready yet after a restart: the next pass
                # decides again from what is running. (Letting it out would end the loop, and
                # with it every restart of a crashed worker.)
                log.warning("reconcile interrupted by NATS; retrying", extra={"error": repr(exc)})
            except Exception:  # noqa: BLE001 - a bug must not end every future restart
                log.exception("reconcile failed unexpectedly; retrying at the next pass")

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
            self.near = affinity(self.mosaics, decision.watched)
            self.passes += 1
            sessions = session_plan(
                sessions=self.sessions,
                viewers=self.session_viewers,
                ready=self.ready,
                running=self.provider.running(),
                failures=self.failures,
                now=now,
                timing=self.session_timing,
                restart=self.timing,
            )
            for fact in sessions.facts:
                await self._session_fact(fact)
            # Told at once, not one after another: a grabber that does not answer costs the
            # pass its timeout once, not once per grabber.
            fits = [grabber for grabber in decision.retile if self.provider.can_retile(grabber)]
            took = await asyncio.gather(*(self._retile(grabber) for grabber in fits))
            retiled = {grabber.worker_id for grabber, ok in zip(fits, took, strict=True) if ok}
            for grabber in decision.retile:
                if grabber not in fits:
                    log.info(
                        "worker's agent has no room for its new spec: placing it anew",
                        extra={"worker": grabber.worker_id},
                    )
            # Not retiled: stopped, and started with the new spec on a later pass.
            changed = [
                (s.worker_id, "changed") for s in decision.retile if s.worker_id not in retiled
            ]
            for wid, reason in (*changed, *decision.stop, *sessions.stop):
                code = await self.provider.stop_worker(wid, reason)
                await append(
                    self._js,
                    WorkerStopped(at=self._clock(), worker_id=wid, reason=reason, exit_code=code),
                )
            for spec in decision.start + sessions.start:
                try:
                    pid = await self.provider.start_worker(spec)
                except WorkerPending as exc:
                    # Waits for an instance that is starting: not a failure, no start yet.
                    log.debug("worker waits", extra={"worker": spec.worker_id, "why": str(exc)})
                    continue
                except (OSError, InstanceError) as exc:
                    self._failed(spec.worker_id)
                    log.error(
                        "cannot start worker", extra={"worker": spec.worker_id, "error": str(exc)}
                    )
                    continue
                self.beats.pop(spec.worker_id, None)
                self.ready.pop(spec.worker_id, None)
                await append(
                    self._js,
                    WorkerStarted(
                        at=self._clock(),
                        worker_id=spec.worker_id,
                        kind=spec.kind,
                        target=spec.target,
                        pid=pid or None,  # 0: started on another machine, pid unknown here
                    ),
                )

            if self.passes % 5 == 1:
                await self._free_slots(now)

    async def _retile(self, spec: GrabberSpec) -> bool:
        """Tell a running grabber its new spec (:class:`~pipeline.messages.control.Retile`);
        whether it took it. It may refuse (a tile it cannot make), or not answer (an older
        version, a hung process): then it is restarted with the spec instead."""
        wid = spec.worker_id
        try:
            msg = await self._nc.request(
                subjects.worker_control(wid), encode(Retile(spec=spec)), timeout=RETILE_TIMEOUT
            )
            reply = decode_reply(msg.data, msg.subject)
        except (*NATS_ERRORS, MessageError) as exc:
            log.warning(
                "worker not retiled: restarting it", extra={"worker": wid, "error": str(exc)}
            )
            return False
        if not reply.ok:
            log.warning(
                "worker refused to retile: restarting it",
                extra={"worker": wid, "error": reply.error},
            )
            return False
        self.provider.retiled(spec)
        await append(
            self._js,
            WorkerRetiled(
                at=self._clock(),
                worker_id=wid,
                sizes=tuple(f"{w}x{h}" for w, h in spec.sizes),
                fps=spec.fps,
            ),
        )
        log.info("worker retiled", extra={"worker": wid, "sizes": spec.sizes, "fps": spec.fps})
        return True

    async def _session_fact(self, fact: SessionFact) -> None:
        at = self._clock()
        sid = fact.session_id
        event: Event
        if fact.kind == "started":
            wid = jit_spec(sid).worker_id
            event = SessionStarted(
                at=at, session_id=sid, worker_id=wid, endpoint=f"/session/{sid}/whep"
            )
        elif fact.kind == "ended":
            event = SessionEnded(at=at, session_id=sid, reason=fact.reason)
        else:
            event = SessionFailed(at=at, session_id=sid, cause=fact.reason)
        # One id per (session, fact): a repeated decision before the projection catches up
        # is deduplicated by JetStream rather than recorded twice.
        await append(self._js, event, msg_id=f"session-{sid}-{fact.kind}")
        log.info("session " + fact.kind, extra={"session": sid, "reason": fact.reason})

    async def _free_slots(self, now: float) -> None:
        """Release admission slots of sessions that ended, failed, or never appeared."""
        for key, (sid, claimed) in (await admission.holders(self._js)).items():
            state = self.sessions.get(sid)
            gone = state is not None and state.phase in ("ended", "failed")
            orphan = state is None and now - claimed > SLOT_GRACE
            if gone or orphan:
                await admission.release(self._js, key)

    def _failed(self, worker_id: str) -> None:
        count, _ = self.failures.get(worker_id, (0, 0.0))
        self.failures[worker_id] = (count + 1, self._clock())

    async def on_worker_exit(self, worker_id: str, code: int, expected: bool) -> None:
        """Provider callback: a worker process ended."""
        if expected:
            return
        self._failed(worker_id)
        # Poked first: the next pass restarts the worker even if recording its end fails.
        self.poke()
        await append(
            self._js,
            WorkerStopped(at=self._clock(), worker_id=worker_id, reason="crashed", exit_code=code),
        )
