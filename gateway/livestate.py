"""What the gateway keeps in memory to answer without a NATS round trip: the playlist of every
mosaic (KV ``manifests``) and the set of known mosaics (KV ``mosaics``), both fed by KV watchers
that start with every key and then follow changes.

A playlist request is then a dictionary lookup; a cache miss (a mosaic created a moment ago on
another gateway) falls back to NATS in the route.

CMAF mosaics (:mod:`pipeline.segments.manifest`) also keep their Low-Latency HLS state
(:attr:`LiveState.manifests`), from which the route decides blocking reloads and which parts
exist. A held request waits in :meth:`LiveState.wait_for`: requests held for the same thing
share one future per mosaic, and each KV update checks every distinct wait once, so a thousand
players held for the next part cost one check per update and one wake-up each when it comes,
and nothing at all in between (no polling, no timer per update).

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
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.nats.topology import MANIFESTS, MOSAICS, BucketSpec
from pipeline.runtime.tasks import Tasks, cancel_and_wait
from pipeline.segments import manifest
from pipeline.segments.manifest import LiveManifest
from pipeline.segments.playlist import continuation
from pipeline.segments.serving import Wait

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


@dataclass
class _Held:
    """Requests held for one :class:`Wait` of one mosaic."""

    future: asyncio.Future[LiveManifest]
    requests: int = field(default=0)


class LiveState:
    """``playlists``: fp → playlist bytes; ``manifests``: fp → LL-HLS manifest (CMAF mosaics);
    ``mosaics``: known fingerprints."""

    def __init__(self, js: JetStreamContext, check_every: float = CHECK_EVERY) -> None:
        self._js = js
        self._check_every = check_every
        self.playlists: dict[str, bytes] = {}
        self.manifests: dict[str, LiveManifest] = {}
        self.mosaics: set[str] = set()
        self._held: dict[str, dict[Wait, _Held]] = {}
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
            for fp, value in snapshot.items():
                self._set_playlist(fp, value)
        else:
            self.mosaics = set(snapshot)

    def _apply(self, bucket: str, key: str, value: bytes | None) -> None:
        if bucket == MANIFESTS.name:
            if value:
                self._set_playlist(key, value)
            else:
                self._gone(key)
        elif value:
            self.mosaics.add(key)
        else:
            self.mosaics.discard(key)

    def _set_playlist(self, fp: str, value: bytes) -> None:
        if not manifest.is_cmaf(value):
            self.manifests.pop(fp, None)
            self.playlists[fp] = value
            return
        try:
            live = manifest.decode(value)
        except ValueError as exc:
            log.warning("unreadable manifest ignored", extra={"fp": fp, "error": str(exc)})
            return
        self._set_manifest(fp, live)

    def _set_manifest(self, fp: str, live: LiveManifest) -> None:
        self.manifests[fp] = live
        self.playlists[fp] = live.playlist.encode()
        held = self._held.get(fp)
        if not held:
            return
        for wait, entry in list(held.items()):
            if wait.over(live.state):
                del held[wait]
                if not entry.future.done():
                    entry.future.set_result(live)
        if not held:
            del self._held[fp]

    def _gone(self, fp: str) -> None:
        """Playlist ``fp`` is no longer stored: serve its continuation instead (one that
        lists nothing and goes on with the numbers, so no player sees them go back)."""
        live = self.manifests.get(fp)
        if live is not None:
            self._set_manifest(fp, manifest.make(live.state.forget(), live.inits))
            return
        old = self.playlists.get(fp)
        if old is not None:
            self.playlists[fp] = continuation(old.decode("utf-8", errors="replace")).encode()

    async def wait_for(self, fp: str, wait: Wait) -> LiveManifest | None:
        """The manifest of ``fp`` once ``wait`` is over (at once if it is already); None after
        ``wait.timeout`` seconds."""
        live = self.manifests.get(fp)
        if live is not None and wait.over(live.state):
            return live
        held = self._held.setdefault(fp, {})
        entry = held.get(wait)
        if entry is None:
            entry = held[wait] = _Held(asyncio.get_running_loop().create_future())
        entry.requests += 1
        try:
            async with asyncio.timeout(wait.timeout):
                # Shielded: one request giving up must not cancel the others' future.
                return await asyncio.shield(entry.future)
        except TimeoutError:
            return None
        finally:
            entry.requests -= 1
            if entry.requests == 0 and held.get(wait) is entry:
                del held[wait]
                entry.future.cancel()
                if not held and self._held.get(fp) is held:
                    del self._held[fp]

    @property
    def held(self) -> int:
        """Requests held now (all mosaics)."""
        return sum(e.requests for waits in self._held.values() for e in waits.values())

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
