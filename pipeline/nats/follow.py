"""Following one KV bucket in memory: every key loaded, then each change, for as long as its
owner runs, so that what the owner answers from it costs no NATS round trip (the gateway's live
playlists, tokens, revocations and alarms; a stitcher's alarms).

:class:`KvFollower` owns the watch and hands what it sees to its owner through two callbacks:
``load(snapshot)`` with every key's value when a watch begins (and ``{}`` when the bucket is
lost), then ``apply(key, value)`` for each change (``None``: the key was deleted or purged).
The owner keeps whatever it makes of the bytes (playlists, token records, alarm states).

A bucket can be replaced under a watcher: a restarted nats-server loses its memory buckets and
they are provisioned again, empty; ``tessera events replay`` deletes the state buckets and
makes them anew. The old watcher never hears of it (its consumer would resume at a stream
sequence the new bucket has not reached). So every ``check_every`` seconds the follower
compares the bucket's creation time with the one it watches: gone, it loads ``{}`` (what it
held is let go) and waits for it; replaced (or back), it is watched again from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.nats.topology import BucketSpec
from pipeline.runtime.tasks import Tasks, cancel_and_wait

log = logging.getLogger("tessera.follow")

CHECK_EVERY = 1.0
"""Seconds between checks that the watched bucket is still the one being watched."""

LOAD_TIMEOUT = 10.0
"""Seconds to wait for each entry of the initial load (the server sends them at once)."""

_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)

Load = Callable[[dict[str, bytes]], None]
"""Every key's value now (``{}``: the bucket is empty or lost)."""
Apply = Callable[[str, bytes | None], None]
"""One key's new value (``None``: deleted or purged)."""


class KvFollower:
    """Bucket ``spec`` in memory through ``load`` and ``apply`` (which must not block; an
    error in one is logged and the following goes on). ``required``: :meth:`start` fails when
    the bucket is missing; else it starts empty, says so, and waits for the bucket.
    ``missing``: what a missing bucket means to the owner, for the log (e.g. "scoped tokens
    are refused until it is back")."""

    def __init__(
        self,
        js: JetStreamContext,
        spec: BucketSpec,
        *,
        load: Load,
        apply: Apply,
        check_every: float = CHECK_EVERY,
        required: bool = True,
        missing: str = "waiting for it",
    ) -> None:
        self._js = js
        self.spec = spec
        self._load = load
        self._apply = apply
        self._check_every = check_every
        self._required = required
        self._missing = missing
        self._watcher: Any = None
        self._follower: asyncio.Task[None] | None = None
        self._created: datetime.datetime | None = None
        self.lost = True
        """No watch holds the bucket now (before the first, or after it was found gone)."""
        self.rewatched = 0
        """How many times a replaced, lost or late bucket was watched again."""
        self._tasks = Tasks(f"KV follower {spec.name}")

    async def start(self) -> None:
        """Load every key, then follow changes (and a replaced bucket) in the background."""
        if self._tasks:
            return
        try:
            await self._watch()
        except NotFoundError:
            if self._required:
                await self.stop()
                raise
            log.warning(f"KV {self.spec.name} is missing: {self._missing}",
                        extra={"bucket": self.spec.name})  # fmt: skip
        except BaseException:
            # Leave nothing following: a started group is what marks this as started.
            await self.stop()
            raise
        self._tasks.spawn(self._check_loop(), name="check")

    async def _watch(self) -> None:
        """(Re)start following: stop the old watcher, load every key, follow."""
        await self._stop_watch()
        info = await self._js.stream_info(self.spec.stream_name)
        kv = await self._js.key_value(self.spec.name)
        watcher: Any = await kv.watchall()
        snapshot: dict[str, bytes] = {}
        try:
            while (entry := await watcher.updates(timeout=LOAD_TIMEOUT)) is not None:
                if entry.value:
                    snapshot[entry.key] = entry.value
                else:
                    snapshot.pop(entry.key, None)
        except BaseException:
            with contextlib.suppress(Exception):
                await watcher.stop()
            raise
        self._call(self._load, snapshot)
        self._watcher, self._created, self.lost = watcher, info.created, False
        self._follower = self._tasks.spawn(self._follow(watcher), name="watch")

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            # One entry the owner cannot take must not stop the following of every other.
            log.exception("KV entry not taken", extra={"bucket": self.spec.name})

    async def _follow(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is not None:
                self._call(self._apply, entry.key, entry.value or None)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            try:
                await self._check()
            except _NATS_ERRORS as exc:
                # Cannot tell now (NATS is away): keep what we have.
                log.debug("KV check failed", extra={"bucket": self.spec.name,
                                                    "error": repr(exc)})  # fmt: skip

    async def _check(self) -> None:
        """Watch again if the bucket was replaced (or is back); let go of a lost one."""
        try:
            info = await self._js.stream_info(self.spec.stream_name)
        except NotFoundError:
            if not self.lost:
                log.warning(f"KV {self.spec.name} is gone: {self._missing}",
                            extra={"bucket": self.spec.name})  # fmt: skip
                self.lost = True
                self._call(self._load, {})
            return
        if not self.lost and info.created == self._created:
            return
        log.warning(f"KV {self.spec.name} was replaced (or is back); watching it again",
                    extra={"bucket": self.spec.name})  # fmt: skip
        await self._watch()
        self.rewatched += 1

    async def _stop_watch(self) -> None:
        follower, self._follower = self._follower, None
        await cancel_and_wait(follower)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def stop(self) -> None:
        """Stop following. Safe twice."""
        await self._tasks.close()  # the checker and the follower
        self._follower = None
        await self._stop_watch()
