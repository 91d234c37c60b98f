"""The newest heartbeat of every subject, kept in memory from stream ``HEARTBEATS``.

An ordered consumer starts with the last message of every subject and then follows new ones,
so the cache is complete at once and stays current. Used by ``/metrics`` and ``tessera status``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from pipeline.errors import MessageError
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import Heartbeat
from pipeline.topology import HEARTBEATS


class HeartbeatCache:
    """``latest``: subject → (heartbeat, when this process received it)."""

    def __init__(self, js: JetStreamContext, clock: Callable[[], float] = time.time) -> None:
        self._js = js
        self._clock = clock
        self.latest: dict[str, tuple[Heartbeat, float]] = {}
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self) -> None:
        """Subscribe (last per subject, then live)."""
        if self._sub is None:
            self._sub = await self._js.subscribe(
                "hb.>",
                stream=HEARTBEATS.name,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                cb=self._on_message,
            )

    async def _on_message(self, msg: Msg) -> None:
        try:
            beat = decode_heartbeat(msg.data, msg.subject)
        except MessageError:
            return
        self.latest[msg.subject] = (beat, self._clock())

    def age(self, subject: str) -> float | None:
        """Seconds since the beat on ``subject`` was sent (by its own clock), or None."""
        got = self.latest.get(subject)
        return None if got is None else max(0.0, self._clock() - got[0].at)

    async def stop(self) -> None:
        """Unsubscribe. Safe twice."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
