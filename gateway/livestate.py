"""What the gateway keeps in memory to answer without a NATS round trip: the playlist of every
mosaic (KV ``manifests``) and the set of known mosaics (KV ``mosaics``), both fed by KV watchers
that start with every key and then follow changes.

A playlist request is then a dictionary lookup; a cache miss (a mosaic created a moment ago on
another gateway) falls back to NATS in the route.

A bucket can be replaced under a watcher: a restarted nats-server loses its memory buckets
(``manifests``, with the segments in the memory object store) and they are provisioned again,
empty. The old watcher never hears of it (its consumer would resume at a stream sequence the
new bucket has not reached), and what it holds names segments that are gone. So every
``check_every`` seconds the gateway compares each bucket's creation time with the one it
watches: gone or replaced, its playlists become :func:`~pipeline.segments.playlist.continuation`
playlists and it is watched again from scratch.

A playlist that goes away (the bucket was lost, or the key expired) is replaced by its
continuation, not dropped: it names nothing, and a player reloading it never sees the media
sequence go back (RFC 8216 §6.2.2) before the stitcher's next playlist continues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.nats.topology import MANIFESTS, MOSAICS, BucketSpec
from pipeline.runtime.tasks import Tasks, cancel_and_wait
from pipeline.segments.playlist import continuation

log = logging.getLogger("tessera.gateway")

CHECK_EVERY = 1.0
"""Seconds between checks that each watched bucket is still the one being watched."""

_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


@dataclass
class _Watch:
    """One bucket being followed."""

    watcher: Any
    task: asyncio.Task[None]
    """Its follower (one of :attr:`LiveState._tasks`): cancelled alone when the bucket is
    watched again."""
    created: datetime.datetime | None
    """Creation time of the bucket's stream when the watch began: a new one is a new bucket."""
    lost: bool = False
    """The bucket was found missing (and what it held was let go)."""


class LiveState:
    """``playlists``: fp → playlist bytes; ``mosaics``: known fingerprints."""

    def __init__(self, js: JetStreamContext, check_every: float = CHECK_EVERY) -> None:
        self._js = js
        self._check_every = check_every
        self.playlists: dict[str, bytes] = {}
        self.mosaics: set[str] = set()
        self._watches: dict[str, _Watch] = {}
        self._tasks = Tasks("gateway live state")
        self.rewatched = 0
        """How many times a replaced or lost bucket was watched again."""

    async def start(self) -> None:
        """Load every key, then follow changes (and replaced buckets) in the background."""
        if self._tasks:
            return
        try:
            for spec in (MANIFESTS, MOSAICS):
                await self._watch(spec)
        except BaseException:
            # Leave nothing following: a started group is what marks this as started.
            await self.stop()
            raise
        self._tasks.spawn(self._check_loop(), name="check")

    async def _watch(self, spec: BucketSpec) -> None:
        """(Re)start following ``spec``: stop the old watcher, load every key, follow."""
        old = self._watches.pop(spec.name, None)
        if old is not None:
            await self._stop_watch(old)
        info = await self._js.stream_info(spec.stream_name)
        kv = await self._js.key_value(spec.name)
        watcher: Any = await kv.watchall()
        snapshot: dict[str, bytes] = {}
        try:
            while (entry := await watcher.updates(timeout=10)) is not None:
                if entry.value:
                    snapshot[entry.key] = entry.value
                else:
                    snapshot.pop(entry.key, None)
        except BaseException:
            with contextlib.suppress(Exception):
                await watcher.stop()
            raise
        self._replace(spec.name, snapshot)
        task = self._tasks.spawn(self._follow(spec.name, watcher), name=f"watch {spec.name}")
        self._watches[spec.name] = _Watch(watcher, task, info.created)

    def _replace(self, bucket: str, snapshot: dict[str, bytes]) -> None:
        """Make ``bucket``'s part of the state what ``snapshot`` holds."""
        if bucket == MANIFESTS.name:
            for fp in [fp for fp in self.playlists if fp not in snapshot]:
                self._gone(fp)
            self.playlists.update(snapshot)
        else:
            self.mosaics = set(snapshot)

    def _apply(self, bucket: str, key: str, value: bytes | None) -> None:
        if bucket == MANIFESTS.name:
            if value:
                self.playlists[key] = value
            else:
                self._gone(key)
        elif value:
            self.mosaics.add(key)
        else:
            self.mosaics.discard(key)

    def _gone(self, fp: str) -> None:
        """Playlist ``fp`` is no longer stored: serve its continuation instead."""
        old = self.playlists.get(fp)
        if old is not None:
            self.playlists[fp] = continuation(old.decode("utf-8", errors="replace")).encode()

    async def _follow(self, bucket: str, watcher: Any) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(bucket, entry.key, entry.value)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            for spec in (MANIFESTS, MOSAICS):
                try:
                    await self._check(spec)
                except _NATS_ERRORS as exc:
                    # Cannot tell now (NATS is away): keep serving what we have.
                    log.debug("live state check failed", extra={"bucket": spec.name,
                                                                "error": repr(exc)})  # fmt: skip

    async def _check(self, spec: BucketSpec) -> None:
        """Watch ``spec`` again if its bucket was replaced; let go of what a lost one held."""
        watch = self._watches.get(spec.name)
        try:
            info = await self._js.stream_info(spec.stream_name)
        except NotFoundError:
            if watch is not None and not watch.lost:
                log.warning("bucket is gone; waiting for it", extra={"bucket": spec.name})
                watch.lost = True
                self._replace(spec.name, {})
            return
        if watch is not None and not watch.lost and info.created == watch.created:
            return
        log.warning("bucket was replaced; watching it again", extra={"bucket": spec.name})
        await self._watch(spec)
        self.rewatched += 1

    async def _stop_watch(self, watch: _Watch) -> None:
        await cancel_and_wait(watch.task)
        with contextlib.suppress(Exception):
            await watch.watcher.stop()

    async def stop(self) -> None:
        """Stop following. Safe twice."""
        await self._tasks.close()  # the checker and every follower
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            with contextlib.suppress(Exception):
                await watch.watcher.stop()
