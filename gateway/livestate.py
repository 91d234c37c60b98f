"""What the gateway keeps in memory to answer without a NATS round trip: the playlist of every
mosaic (KV ``manifests``) and the set of known mosaics (KV ``mosaics``), both fed by KV watchers
that start with every key and then follow changes.

A playlist request is then a dictionary lookup; a cache miss (a mosaic created a moment ago on
another gateway) falls back to NATS in the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.js import JetStreamContext

from pipeline.tasks import cancel_and_wait
from pipeline.topology import MANIFESTS, MOSAICS

log = logging.getLogger("tessera.gateway")


class LiveState:
    """``playlists``: fp → playlist bytes; ``mosaics``: known fingerprints."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.playlists: dict[str, bytes] = {}
        self.mosaics: set[str] = set()
        self._watchers: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Load every key, then follow changes in the background."""
        if self._tasks:
            return
        for bucket in (MANIFESTS.name, MOSAICS.name):
            kv = await self._js.key_value(bucket)
            watcher = await kv.watchall()
            self._watchers.append(watcher)
            while (entry := await watcher.updates(timeout=10)) is not None:  # type: ignore[no-untyped-call]
                self._apply(bucket, entry.key, entry.value)
            self._tasks.append(asyncio.create_task(self._follow(bucket, watcher)))

    def _apply(self, bucket: str, key: str, value: bytes | None) -> None:
        if bucket == MANIFESTS.name:
            if value:
                self.playlists[key] = value
            else:
                self.playlists.pop(key, None)
        elif value:
            self.mosaics.add(key)
        else:
            self.mosaics.discard(key)

    async def _follow(self, bucket: str, watcher: Any) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(bucket, entry.key, entry.value)

    async def stop(self) -> None:
        """Stop following. Safe twice."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            with contextlib.suppress(Exception):
                await watcher.stop()
