"""The projector: folds ``EVENTS`` into the KV state buckets, exactly once per event.

How "exactly once" holds without locks:

- Each KV entry stores the stream sequence of the last event folded into it
  (:class:`~pipeline.state.stored.Projected`); an event at or below it is a redelivery and is
  skipped. Entry and position are one KV write, so they cannot disagree.
- Writes are optimistic: ``create`` for a new key, ``update(last=revision)`` for an existing one.
- Order is kept: a durable pull consumer (``AckPolicy.ALL``) is read in order, and on every start
  the consumer is recreated from its ack floor + 1, so events fetched but not acked by a killed
  projector come back at once and in order instead of after the ack wait.

An event that fails to fold is bounded, not retried forever (:mod:`pipeline.control.parking`):

- A passing trouble (a KV write that lost a race, a timeout: NATS is busy or away) is retried in
  place with backoff, without limit: it is not the event's fault.
- Any other error (a payload of a known type that does not decode, a fold or a KV write that
  raises) fails that delivery: the events before it are acknowledged, it is NAKed and fetched
  again alone (nothing after it is folded first: that could make it look like a redelivery).
  On its ``max_deliveries``-th failed delivery (JetStream's count) it is copied to ``PARKED``
  with the error, acknowledged, logged and counted (:attr:`Projector.parked`), and the consumer
  is recreated after it so the events fetched behind it come back in order. The consumer itself
  has no ``max_deliver``: JetStream never drops an event; only a park, which is stored first,
  lets the projection pass one.
- An event of a type this Tessera does not know (a newer Tessera's) is skipped and counted
  (:attr:`Projector.unknown`); it stays in ``EVENTS`` for a newer Tessera's replay.

The delivery count lives in the consumer, which a (re)start recreates: an event that kills the
whole process is redelivered at every start but its count starts again at each one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import (
    APIError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from pipeline.control.parking import ParkedEvent, is_unknown_type, one_line, park
from pipeline.errors import MessageError
from pipeline.messages.codec import decode_event
from pipeline.messages.events import Event
from pipeline.messages.heartbeats import ServiceHeartbeat
from pipeline.nats import subjects
from pipeline.nats.heartbeat import Heartbeater
from pipeline.nats.topology import EVENTS, STATE_BUCKETS
from pipeline.runtime.tasks import Tasks
from pipeline.state.evolve import evolve, key_of
from pipeline.state.model import State
from pipeline.state.stored import Projected, decode_entry, encode_entry

log = logging.getLogger("tessera.projector")

DURABLE = "projector"
SERVICE = "projector"
SERVICE_ID = "main"

MAX_DELIVERIES = 5
"""Failed deliveries of one event before it is parked (the first delivery counts)."""

# Trouble that is not the event's: retried in place, without limit and without counting.
_PASSING = (
    KeyWrongLastSequenceError,
    NatsTimeoutError,
    TimeoutError,
    NoRespondersError,
    ServiceUnavailableError,
)


# A fetch that found no consumer leader (JetStream answers 503, or nobody answers at all).
_LEADERLESS = (NoRespondersError, NoStreamResponseError, ServiceUnavailableError)


async def consumer_start_seq(js: JetStreamContext) -> int:
    """The first stream sequence the projector has not acknowledged (1 on a fresh start)."""
    try:
        info = await js.consumer_info(EVENTS.name, DURABLE)
    except NotFoundError:
        return 1
    return int(info.ack_floor.stream_seq if info.ack_floor else 0) + 1


def redelivery_delay(deliveries: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before an event that failed ``deliveries`` times is delivered again."""
    return float(min(cap, base * 2 ** max(0, deliveries - 1)))


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
        max_deliveries: int = MAX_DELIVERIES,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries={max_deliveries}: must be at least 1")
        self._nc = nc
        self._js = js
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.max_deliveries = max_deliveries
        self._on_progress = on_progress
        self._kv: dict[str, KeyValue] = {}
        self._tasks = Tasks("projector")
        self._sub: JetStreamContext.PullSubscription | None = None
        self._redelivering: int | None = None
        """Sequence of the NAKed event awaited alone, before anything after it."""
        self.position = 0
        """Stream sequence of the last event applied (or skipped as already applied)."""
        self.applied = 0
        self.skipped = 0
        self.unknown = 0
        """Events of a type this Tessera does not know, skipped."""
        self.failed = 0
        """Deliveries that failed to fold (each NAKed, or parked on the last)."""
        self.parked = 0
        """Events this projector parked."""
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
        if self._tasks:
            return
        for spec in STATE_BUCKETS:
            self._kv[spec.name] = await self._js.key_value(spec.name)
        start = await consumer_start_seq(self._js)
        await self._bind(start)
        await self._heartbeat.start()
        self._tasks.spawn(self._run(), name="fold")
        log.info("projector started", extra={"from_seq": start})

    async def _bind(self, start: int) -> None:
        """(Re)create the durable consumer so that it delivers from ``start``, and pull from it.

        Recreating drops whatever the old one had delivered and not acknowledged, so that it
        comes back now and in order.
        """
        old, self._sub = self._sub, None
        if old is not None:
            await _unsubscribe(old)
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
                # No max_deliver: past it JetStream would stop redelivering an event that an
                # ack of a later one (AckPolicy.ALL) then drops unseen. The bound is ours.
            ),
        )
        self.position = start - 1
        self._redelivering = None
        self._sub = await self._js.pull_subscribe_bind(DURABLE, stream=EVENTS.name)

    async def stop(self) -> None:
        """Stop folding; what was applied stays applied. Safe to call twice."""
        running = bool(self._tasks)
        await self._tasks.close()
        await self._heartbeat.stop(last=self._status(running=False))
        sub, self._sub = self._sub, None
        if sub is not None:
            await _unsubscribe(sub)
        if running:
            log.info("projector stopped", extra={"position": self.position})

    async def wait_for(self, seq: int) -> None:
        """Wait until the projector has reached stream sequence ``seq`` (bound it with
        ``asyncio.timeout``)."""
        async with self._advanced:
            await self._advanced.wait_for(lambda: self.position >= seq)

    async def _run(self) -> None:
        unavailable = 0.1
        while True:
            assert self._sub is not None
            awaited = self._redelivering
            try:
                msgs = await self._sub.fetch(
                    1 if awaited is not None else self.batch, timeout=self.fetch_timeout
                )
            except _LEADERLESS as exc:
                # The consumer has no leader for now (the cluster server holding it died, an
                # election is under way): ask again shortly; nothing was fetched.
                log.warning("events not available; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(unavailable * (0.5 + random.random()))
                unavailable = min(unavailable * 2, 2.0)
                continue
            except (NatsTimeoutError, TimeoutError):
                if awaited is not None:
                    # The NAKed event did not come back: start again at it (its count too).
                    log.warning("redelivery did not come; rebinding", extra={"seq": awaited})
                    await self._bind(awaited)
                elif not self.caught_up.is_set():
                    self.caught_up.set()
                    self._heartbeat.poke()
                continue
            unavailable = 0.1
            if awaited is not None:
                await self._redelivered(msgs[0], awaited)
            else:
                await self._fold_batch(msgs)
            if self._on_progress is not None:
                self._on_progress(self.position)

    async def _fold_batch(self, msgs: list[Msg]) -> None:
        for i, msg in enumerate(msgs):
            error = await self._handle(msg)
            if error is not None and not await self._give_up(msg, error):
                # Acknowledge what came before it (AckPolicy.ALL: everything up to there);
                # the rest of the batch stays unacknowledged until it has been settled.
                if i > 0:
                    await msgs[i - 1].ack()
                await self._nak(msg)
                return
            await self._advance(msg.metadata.sequence.stream)
        if msgs:
            await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
        if len(msgs) < self.batch:
            self.caught_up.set()

    async def _redelivered(self, msg: Msg, awaited: int) -> None:
        seq = msg.metadata.sequence.stream
        if seq != awaited:
            # Something else came first (an ack wait ran out): start again at the awaited one.
            log.warning("redelivery out of order; rebinding", extra={"seq": awaited, "got": seq})
            await self._bind(awaited)
            return
        error = await self._handle(msg)
        if error is not None and not await self._give_up(msg, error):
            await self._nak(msg)
            return
        await self._advance(seq)
        await msg.ack()
        # The events fetched behind it are still out, unacknowledged: have them again, in order.
        await self._bind(seq + 1)

    async def _give_up(self, msg: Msg, error: str) -> bool:
        """After a failed delivery: park the event if it has had its deliveries (True), else
        wait before it is delivered again (False)."""
        seq = msg.metadata.sequence.stream
        deliveries = msg.metadata.num_delivered
        self.failed += 1
        if deliveries < self.max_deliveries:
            log.warning(
                "cannot fold event; it will be delivered again",
                extra={"seq": seq, "subject": msg.subject, "delivery": deliveries, "error": error},
            )
            await asyncio.sleep(redelivery_delay(deliveries))
            return False
        await self._park(ParkedEvent(seq, msg.subject, deliveries, one_line(error), msg.data))
        return True

    async def _nak(self, msg: Msg) -> None:
        """NAK ``msg`` and wait for JetStream to take it, so that the next fetch sees it back
        (a NAK is handled apart from fetches; without the wait a fetch could overtake it)."""
        seq = msg.metadata.sequence.stream
        try:
            await self._nc.request(msg.reply, b"-NAK", timeout=2.0)
        except (NatsTimeoutError, TimeoutError) as exc:
            # It was sent; only the confirmation is missing. Should another event come back
            # first, the projector rebinds at this one (see _redelivered).
            log.warning("NAK not confirmed", extra={"seq": seq, "error": repr(exc)})
        self._redelivering = seq

    async def _park(self, event: ParkedEvent) -> None:
        """Store ``event`` in ``PARKED``, retrying until it is stored: only then may it be
        acknowledged (else it would be lost)."""
        delay = 0.05
        while True:
            try:
                fresh = await park(self._js, event)
                break
            except (APIError, NatsTimeoutError, TimeoutError, NoRespondersError) as exc:
                log.error(
                    "cannot park event; retrying (is stream PARKED provisioned? `tessera up` "
                    "provisions it)",
                    extra={"seq": event.seq, "error": repr(exc)},
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
        if not fresh:
            log.info("event was parked before; moving on", extra={"seq": event.seq})
            return
        self.parked += 1
        log.warning(
            "event parked: it failed every delivery and the projection goes on without it "
            "(`tessera status` lists it; after a fix, `tessera events replay` folds it)",
            extra={
                "seq": event.seq,
                "subject": event.subject,
                "deliveries": event.deliveries,
                "error": event.error,
            },
        )

    async def _handle(self, msg: Msg) -> str | None:
        """Fold one delivered event; the error (one line) when this delivery failed."""
        seq = msg.metadata.sequence.stream
        try:
            event = decode_event(msg.data, msg.subject)
        except MessageError as exc:
            if not is_unknown_type(msg.data):
                return one_line(str(exc))
            self.unknown += 1
            log.warning(
                "event of an unknown type (a newer Tessera's?); skipping it",
                extra={"seq": seq, "subject": msg.subject},
            )
            return None
        delay = 0.05
        while True:
            try:
                await self._apply(seq, event)
                return None
            except _PASSING as exc:
                # Retried in place: moving on would break the per-entity order.
                log.warning("projection write failed; retrying", extra={"seq": seq, "error": exc})
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
            except Exception as exc:  # noqa: BLE001 - any other error fails this delivery
                return one_line(f"{type(exc).__name__}: {exc}")

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
        value = encode_entry(seq, state)
        if entry is None:
            await kv.create(key, value)
        else:
            await kv.update(key, value, last=entry.revision)
        self.applied += 1


async def _unsubscribe(sub: JetStreamContext.PullSubscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:  # noqa: BLE001 - closing; the connection may be gone
        log.debug("projector unsubscribe failed: %s", exc)
