"""A periodic heartbeat publisher, shared by every service and worker.

Heartbeats go to stream ``HEARTBEATS`` (last message per subject), published with core NATS:
a lost beat is replaced by the next one, so waiting for a JetStream ack would only add latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec
from nats.aio.client import Client

from pipeline.messages.codec import encode
from pipeline.runtime.tasks import Tasks, wait_set

log = logging.getLogger("tessera.heartbeat")


class Heartbeater:
    """Publishes ``make()`` to ``subject`` every ``interval`` seconds until stopped."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        make: Callable[[], msgspec.Struct],
        *,
        interval: float,
    ) -> None:
        self._nc = nc
        self.subject = subject
        self._make = make
        self.interval = interval
        self._tasks = Tasks(f"heartbeat {subject}")
        self._wake = asyncio.Event()

    async def start(self) -> None:
        """Send one beat now and keep beating in the background."""
        if not self._tasks:
            await self.beat()
            self._tasks.spawn(self._run(), name="beat")

    async def beat(self) -> None:
        """Send one heartbeat now (a state change worth telling at once)."""
        if self._nc.is_connected:
            await self._nc.publish(self.subject, encode(self._make()))

    def poke(self) -> None:
        """Make the background loop beat now rather than at the next interval."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await wait_set(self._wake, self.interval)
            self._wake.clear()
            try:
                await self.beat()
            except Exception as exc:  # noqa: BLE001 - a missed beat is not fatal; say so
                log.warning("heartbeat failed", extra={"subject": self.subject, "error": str(exc)})

    async def stop(self, last: msgspec.Struct | None = None) -> None:
        """Stop beating; send ``last`` (a "stopped" beat) if given. Safe to call twice."""
        if not self._tasks:
            return
        await self._tasks.close()
        if last is not None and self._nc.is_connected:
            await self._nc.publish(self.subject, encode(last))
            await self._nc.flush()
