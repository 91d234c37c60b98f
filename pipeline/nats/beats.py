"""The newest heartbeat of every subject, kept in memory from stream ``HEARTBEATS``.

An ordered consumer starts with the last message of every subject and then follows new ones,
so the cache is complete at once and stays current. Used by ``/metrics``, ``tessera status``
and the gateway (placement's room, the projector's progress, workers' health).

Given a NATS client, the cache also takes every beat as it is published, by core NATS: on a
cluster, a leader election of ``HEARTBEATS`` (seconds: nats-server's election timeouts) stops
the ordered consumer, and every worker, agent and service would look silent to the gateway for
that long (a ``/create`` answered 503 "no agent"). Whichever way a beat comes, the newest (by
its ``at``) is kept: the stream's replay of older ones never overwrites a live one.

``HEARTBEATS`` is a memory stream: a restarted nats-server has a new, empty one, and an ordered
consumer would resume at a sequence the new stream reaches only much later. So every
``check_interval`` the stream's creation time is compared, and a new stream is followed afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from pipeline.errors import MessageError
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import Heartbeat
from pipeline.nats.topology import HEARTBEATS
from pipeline.runtime.tasks import Tasks

log = logging.getLogger("tessera.beats")


class HeartbeatCache:
    """``latest``: subject → (heartbeat, when this process received it)."""

    def __init__(
        self,
        js: JetStreamContext,
        clock: Callable[[], float] = time.time,
        *,
        check_interval: float = 2.0,
        nc: Client | None = None,
    ) -> None:
        self._js = js
        self._nc = nc
        self._live: Any = None
        """The core subscription to ``hb.>`` (with ``nc``)."""
        self._clock = clock
        self.check_interval = check_interval
        self.latest: dict[str, tuple[Heartbeat, float]] = {}
        self._sub: JetStreamContext.PushSubscription | None = None
        self._created: datetime.datetime | None = None
        self._tasks = Tasks("heartbeat cache")
        self.resubscribed = 0
        """Times a replaced stream (a restarted server) was followed afresh."""

    async def start(self) -> None:
        """Subscribe (last per subject, then live), and watch for a replaced stream."""
        if self._nc is not None and self._live is None:
            self._live = await self._nc.subscribe("hb.>", cb=self._on_message)
        if self._sub is None:
            await self._subscribe()
        if not self._tasks:
            self._tasks.spawn(self._check_loop(), name="check")

    async def _subscribe(self) -> None:
        self._created = (await self._js.stream_info(HEARTBEATS.name)).created
        self._sub = await self._js.subscribe(
            "hb.>",
            stream=HEARTBEATS.name,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            cb=self._on_message,
        )

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                info = await self._js.stream_info(HEARTBEATS.name)
            except Exception:  # noqa: BLE001 - NATS away or the stream not there yet: next time
                continue
            if info.created == self._created:
                continue
            log.info("HEARTBEATS was replaced (a restarted server): following it afresh")
            sub, self._sub = self._sub, None
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            try:
                await self._subscribe()
                self.resubscribed += 1
            except Exception as exc:  # noqa: BLE001 - tried again at the next check
                log.warning("cannot follow HEARTBEATS again: %s", exc)

    async def _on_message(self, msg: Msg) -> None:
        try:
            beat = decode_heartbeat(msg.data, msg.subject)
        except MessageError:
            return
        known = self.latest.get(msg.subject)
        if known is not None and known[0].at > beat.at:
            return  # the stream's copy of a beat older than one that came live
        self.latest[msg.subject] = (beat, self._clock())

    def age(self, subject: str) -> float | None:
        """Seconds since the beat on ``subject`` was sent (by its own clock), or None."""
        got = self.latest.get(subject)
        return None if got is None else max(0.0, self._clock() - got[0].at)

    async def stop(self) -> None:
        """Unsubscribe. Safe twice."""
        await self._tasks.close()
        live, self._live = self._live, None
        if live is not None:
            with contextlib.suppress(Exception):
                await live.unsubscribe()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
