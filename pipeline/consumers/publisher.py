"""A stitcher's segments out: each one into the object store, then the live playlist naming it
into KV, then a notice on ``segments.<fp>``; segments the playlist let go are deleted.

Ordering of writes (a playlist never names a segment that is not stored): object first, then
the playlist, then the notice. A segment that cannot be stored is dropped; the next one starts
a new playlist run (see :mod:`pipeline.segments.playlist`). Segments that left the playlist
are deleted once no player can still need them (RFC 8216 §6.2.2); the bucket's TTL catches any
that a crash leaves behind. NATS trouble is logged and counted (:attr:`SegmentPublisher.errors`),
never fatal: the next segment tries again.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from pipeline.consumers.render import RenderedSegment
from pipeline.messages.codec import encode
from pipeline.messages.segments import SegmentNotice
from pipeline.nats import subjects
from pipeline.nats.connect import NATS_ERRORS
from pipeline.segments.playlist import PlaylistWindow, SegmentEntry, segment_uri

log = logging.getLogger("tessera.stitcher")


class SegmentPublisher:
    """Publishes the segments of mosaic ``fp``, starting from the playlist ``window``.

    ``on_listed()`` is called each time a playlist naming a new segment has been written;
    ``wall`` (Unix time) stamps the notices. :meth:`open` gives it its buckets."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        fp: str,
        window: PlaylistWindow,
        wall: Callable[[], float],
        on_listed: Callable[[], None],
    ) -> None:
        self._js = js
        self.fp = fp
        self.window = window
        """The playlist window as last written."""
        self._wall = wall
        self._on_listed = on_listed
        self._obj: ObjectStore | None = None
        self._kv: KeyValue | None = None
        self._stored: collections.deque[int] = collections.deque()
        """Sequence numbers of the segments stored and not yet deleted, oldest first."""
        self.segments = 0
        """Segments stored and listed."""
        self.segment_bytes = 0
        """Size of the newest segment listed."""
        self.errors = 0
        """Objects, playlists and notices that could not be written."""

    @property
    def media_sequence(self) -> int:
        return self.window.media_sequence

    def open(self, obj: ObjectStore, kv: KeyValue) -> None:
        """Store segments in ``obj`` and playlists in ``kv`` (the stitcher found them)."""
        self._obj, self._kv = obj, kv

    async def publish(self, rendered: RenderedSegment) -> None:
        """Store one segment, list it, announce it, and delete what the playlist let go."""
        assert self._obj is not None and self._kv is not None
        segment = rendered.segment
        key = f"{self.fp}/{segment_uri(segment.index)}"
        try:
            await self._obj.put(key, segment.data)
        except NATS_ERRORS as exc:
            self.errors += 1
            log.warning("segment not stored", extra={"key": key, "error": repr(exc)})
            return
        self._stored.append(segment.index)
        if not await self._listed_still_stored():
            # The store lost what the playlist lists (a restarted nats-server's memory store):
            # listing it would send players to missing segments, so start a new run.
            log.warning("listed segments are gone from the store; starting a new run",
                        extra={"fp": self.fp})  # fmt: skip
            self.window = self.window.restart()
        self.window, _ = self.window.push(
            SegmentEntry(segment.index, segment.duration, rendered.start_wall)
        )
        try:
            await self._kv.put(self.fp, self.window.render().encode())
        except NATS_ERRORS as exc:
            self.errors += 1
            log.warning("playlist not written", extra={"fp": self.fp, "error": repr(exc)})
            return
        self.segments += 1
        self.segment_bytes = len(segment.data)
        self._on_listed()
        notice = SegmentNotice(
            fp=self.fp,
            seq=segment.index,
            key=key,
            duration=segment.duration,
            size=len(segment.data),
            at=self._wall(),
            first_wall=rendered.first_wall,
        )
        try:
            await self._js.publish(subjects.segments(self.fp), encode(notice))
        except NATS_ERRORS as exc:
            self.errors += 1
            log.warning("segment notice not sent", extra={"key": key, "error": repr(exc)})
        await self._expire()

    async def _listed_still_stored(self) -> bool:
        """True if the oldest listed segment is still in the object store (one cheap look-up
        per segment: it can only be gone if the store lost data)."""
        assert self._obj is not None
        if not self.window.entries:
            return True
        key = f"{self.fp}/{segment_uri(self.window.entries[0].seq)}"
        try:
            await self._obj.get_info(key)
        except NotFoundError:
            return False
        except NATS_ERRORS:
            return True  # cannot tell now: keep the run; the next segment checks again
        return True

    async def _expire(self) -> None:
        """Delete stored segments no player can still need."""
        assert self._obj is not None
        keep_from = self.window.keep_from
        while self._stored and self._stored[0] < keep_from:
            key = f"{self.fp}/{segment_uri(self._stored.popleft())}"
            try:
                await self._obj.delete(key)
            except NotFoundError:
                pass  # expired by the bucket's TTL already
            except NATS_ERRORS as exc:
                log.debug("segment not deleted", extra={"key": key, "error": repr(exc)})
