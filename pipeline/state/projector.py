"""The projector: folds ``EVENTS`` into the KV state buckets, exactly once per event.

How "exactly once" holds without locks:

- Each KV entry stores the stream sequence of the last event folded into it
  (:class:`~pipeline.state.model.Projected`); an event at or below it is a redelivery and is
  skipped. Entry and position are one KV write, so they cannot disagree.
- Writes are optimistic: ``create`` for a new key, ``update(last=revision)`` for an existing one.
- Order is kept: a durable pull consumer (``AckPolicy.ALL``) is read in order, an event that
  fails to apply is retried in place with backoff (moving on could fold a later event first and
  then skip the earlier one as a redelivery), and on every start the consumer is recreated from
  its ack floor + 1, so events fetched but not acked by a killed projector come back at once and
  in order instead of after the ack wait.

An event that cannot be decoded can never be applied: it is logged, counted and terminated
(it stays in ``EVENTS``; a newer Tessera that knows it will fold it on ``tessera events replay``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from pipeline import subjects
from pipeline.errors import MessageError
from pipeline.heartbeat import Heartbeater
from pipeline.messages.codec import decode_event
from pipeline.messages.events import Event
from pipeline.messages.heartbeats import ServiceHeartbeat
from pipeline.state.evolve import evolve, key_of
from pipeline.state.model import (
    InstanceState,
    MosaicState,
    Projected,
    SessionState,
    State,
    WorkerState,
)
from pipeline.tasks import cancel_and_wait
from pipeline.topology import EVENTS, STATE_BUCKETS

log = logging.getLogger("tessera.projector")

DURABLE = "projector"
SERVICE = "projector"
SERVICE_ID = "main"

DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "mosaics": msgspec.json.Decoder(Projected[MosaicState]),
    "sessions": msgspec.json.Decoder(Projected[SessionState]),
    "instances": msgspec.json.Decoder(Projected[InstanceState]),
    "workers": msgspec.json.Decoder(Projected[WorkerState]),
}
_encoder = msgspec.json.Encoder()


def decode_entry(bucket: str, value: bytes) -> Projected[Any]:
    """Decode a KV entry of a state bucket."""
    entry: Projected[Any] = DECODERS[bucket].decode(value)
    return entry


async def consumer_start_seq(js: JetStreamContext) -> int:
    """The first stream sequence the projector has not acknowledged (1 on a fresh start)."""
    try:
        info = await js.consumer_info(EVENTS.name, DURABLE)
    except NotFoundError:
        return 1
    return int(info.ack_floor.stream_seq if info.ack_floor else 0) + 1


class Projector:
    """Runs the fold as a service: ``start()``, then ``stop()`` (safe twice)."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        batch: int = 256,
        fetch_timeout: float = 1.0,
        heartbeat_interval: float = 1.0,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self._on_progress = on_progress
        self._kv: dict[str, KeyValue] = {}
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self.position = 0
        """Stream sequence of the last event applied (or skipped as already applied)."""
        self.applied = 0
        self.skipped = 0
        self.poisoned = 0
        self.caught_up = asyncio.Event()
        self._advanced = asyncio.Condition()
        self._heartbeat = Heartbeater(
            nc,
            subjects.service_heartbeat(SERVICE, SERVICE_ID),
            self._status,
            interval=heartbeat_interval,
        )

    def _status(self, running: bool = True) -> ServiceHeartbeat:
        return ServiceHeartbeat(
            at=time.time(),
            service=SERVICE,
            id=SERVICE_ID,
            position=self.position,
            caught_up=self.caught_up.is_set(),
            running=running,
        )

    async def start(self) -> None:
        """Bind the durable consumer at its ack floor and start folding."""
        if self._task is not None:
            return
        for spec in STATE_BUCKETS:
            self._kv[spec.name] = await self._js.key_value(spec.name)
        start = await consumer_start_seq(self._js)
        try:
            await self._js.delete_consumer(EVENTS.name, DURABLE)
        except NotFoundError:
            pass
        await self._js.add_consumer(
            EVENTS.name,
            ConsumerConfig(
                durable_name=DURABLE,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=AckPolicy.ALL,
                filter_subject=subjects.EVENTS_ALL,
                max_ack_pending=self.batch * 4,
                ack_wait=60,
            ),
        )
        self.position = start - 1
        self._sub = await self._js.pull_subscribe_bind(DURABLE, stream=EVENTS.name)
        await self._heartbeat.start()
        self._task = asyncio.create_task(self._run(), name="projector")
        log.info("projector started", extra={"from_seq": start})

    async def stop(self) -> None:
        """Stop folding; what was applied stays applied. Safe to call twice."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._heartbeat.stop(last=self._status(running=False))
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - closing; the connection may be gone
                log.debug("projector unsubscribe failed: %s", exc)
        if task is not None:
            log.info("projector stopped", extra={"position": self.position})

    async def wait_for(self, seq: int) -> None:
        """Wait until the projector has reached stream sequence ``seq`` (bound it with
        ``asyncio.timeout``)."""
        async with self._advanced:
            await self._advanced.wait_for(lambda: self.position >= seq)

    async def _run(self) -> None:
        assert self._sub is not None
        while True:
            try:
                msgs = await self._sub.fetch(self.batch, timeout=self.fetch_timeout)
            except (NatsTimeoutError, TimeoutError):
                if not self.caught_up.is_set():
                    self.caught_up.set()
                    self._heartbeat.poke()
                continue
            for msg in msgs:
                await self._handle(msg)
            if msgs:
                await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
            if len(msgs) < self.batch:
                self.caught_up.set()
            if self._on_progress is not None:
                self._on_progress(self.position)

    async def _handle(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            event = decode_event(msg.data, msg.subject)
        except MessageError as exc:
            self.poisoned += 1
            log.error("cannot project event; skipping it", extra={"seq": seq, "error": str(exc)})
            await self._advance(seq)
            return
        delay = 0.05
        while True:
            try:
                await self._apply(seq, event)
                break
            except (KeyWrongLastSequenceError, NatsTimeoutError, TimeoutError) as exc:
                # Retried in place: moving on would break the per-entity order.
                log.warning("projection write failed; retrying", extra={"seq": seq, "error": exc})
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
        await self._advance(seq)

    async def _advance(self, seq: int) -> None:
        async with self._advanced:
            self.position = seq
            self._advanced.notify_all()

    async def _apply(self, seq: int, event: Event) -> None:
        bucket, key = key_of(event)
        kv = self._kv[bucket]
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            entry = None
        current: Projected[Any] | None = None
        if entry is not None and entry.value:
            current = decode_entry(bucket, entry.value)
            if current.seq >= seq:
                self.skipped += 1
                return
        state: State = evolve(current.state if current else None, event)
        value = _encoder.encode(Projected(seq=seq, state=state))
        if entry is None:
            await kv.create(key, value)
        else:
            await kv.update(key, value, last=entry.revision)
        self.applied += 1
