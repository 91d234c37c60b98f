"""What the gateway keeps in memory to answer without a NATS round trip: the playlist of every
mosaic (KV ``manifests``) and the set of known mosaics (KV ``mosaics``), both fed by KV watchers
that start with every key and then follow changes.

A playlist request is then a dictionary lookup; a cache miss (a mosaic created a moment ago on
another gateway) falls back to NATS in the route. Mosaics that differ only in their titles
share one stream (:func:`~pipeline.state.mosaic.outputs`): :meth:`LiveState.output_of` names
the fingerprint whose playlist and media a mosaic's requests are answered from.

CMAF mosaics (:mod:`pipeline.segments.manifest`) also keep their Low-Latency HLS state
(:attr:`LiveState.manifests`), from which the route decides blocking reloads and which parts
exist. A held request waits in :meth:`LiveState.wait_for`: requests held for the same thing
share one future per mosaic, and each KV update checks every distinct wait once, so a thousand
players held for the next part cost one check per update and one wake-up each when it comes,
and nothing at all in between (no polling, no timer per update).

A bucket can be replaced under a watcher: a restarted nats-server loses its memory buckets
(``manifests``, with the segments in the memory object store) and they are provisioned again,
empty, and what the old watch holds names segments that are gone. Each bucket is followed by a
:class:`~pipeline.nats.follow.KvFollower`, which notices (every ``check_every`` seconds) and loads
the bucket again from scratch: gone or replaced, its playlists become
:func:`~pipeline.segments.playlist.continuation` playlists.

A playlist that goes away (the bucket was lost, or the key expired) is replaced by its
continuation, not dropped: it names nothing, and a player reloading it never sees the media
sequence go back (RFC 8216 §6.2.2) before the stitcher's next playlist continues it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field

from nats.js import JetStreamContext

from pipeline.errors import TesseraError
from pipeline.nats.follow import CHECK_EVERY, KvFollower
from pipeline.nats.topology import MANIFESTS, MOSAICS
from pipeline.segments import manifest
from pipeline.segments.manifest import LiveManifest
from pipeline.segments.playlist import continuation
from pipeline.segments.serving import Wait
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import outputs
from pipeline.state.stored import decode_entry

log = logging.getLogger("tessera.gateway")


@dataclass
class _Held:
    """Requests held for one :class:`Wait` of one mosaic."""

    future: asyncio.Future[LiveManifest]
    requests: int = field(default=0)


class LiveState:
    """``playlists``: fp → playlist bytes; ``manifests``: fp → LL-HLS manifest (CMAF mosaics);
    ``mosaics``: known fingerprints."""

    def __init__(self, js: JetStreamContext, check_every: float = CHECK_EVERY) -> None:
        self.playlists: dict[str, bytes] = {}
        self.manifests: dict[str, LiveManifest] = {}
        self.mosaics: set[str] = set()
        self._states: dict[str, MosaicState] = {}
        self._outputs: dict[str, str] = {}
        self._held: dict[str, dict[Wait, _Held]] = {}
        self._followers = tuple(
            KvFollower(
                js,
                spec,
                load=functools.partial(self._replace, spec.name),
                apply=functools.partial(self._apply, spec.name),
                check_every=check_every,
            )
            for spec in (MANIFESTS, MOSAICS)
        )

    @property
    def rewatched(self) -> int:
        """How many times a replaced or lost bucket was watched again."""
        return sum(f.rewatched for f in self._followers)

    async def start(self) -> None:
        """Load every key, then follow changes (and replaced buckets) in the background."""
        try:
            for follower in self._followers:
                await follower.start()
        except BaseException:
            await self.stop()  # leave nothing following
            raise

    def _replace(self, bucket: str, snapshot: dict[str, bytes]) -> None:
        """Make ``bucket``'s part of the state what ``snapshot`` holds."""
        if bucket == MANIFESTS.name:
            for fp in [fp for fp in self.playlists if fp not in snapshot]:
                self._gone(fp)
            for fp, value in snapshot.items():
                self._set_playlist(fp, value)
        else:
            self.mosaics = set(snapshot)
            self._states = {}
            for fp, value in snapshot.items():
                self._set_mosaic(fp, value)
            self._outputs = outputs(self._states)

    def _apply(self, bucket: str, key: str, value: bytes | None) -> None:
        if bucket == MANIFESTS.name:
            if value:
                self._set_playlist(key, value)
            else:
                self._gone(key)
        elif value:
            self.mosaics.add(key)
            self._set_mosaic(key, value)
            self._outputs = outputs(self._states)
        else:
            self.mosaics.discard(key)
            self._states.pop(key, None)
            self._outputs = outputs(self._states)

    def _set_mosaic(self, fp: str, value: bytes) -> None:
        try:
            state = decode_entry(MOSAICS.name, value).state
        except (TesseraError, ValueError) as exc:
            log.warning("unreadable mosaic ignored", extra={"fp": fp, "error": str(exc)})
            return
        if isinstance(state, MosaicState):
            self._states[fp] = state

    def output_of(self, fp: str) -> str:
        """The fingerprint whose stream mosaic ``fp`` plays: its own, or that of the earliest
        mosaic with the same picture (another title)."""
        return self._outputs.get(fp, fp)

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

    async def stop(self) -> None:
        """Stop following. Safe twice."""
        for follower in reversed(self._followers):
            await follower.stop()
