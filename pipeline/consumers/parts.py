"""A CMAF stitcher's media out: each part onto stream ``PARTS`` as it completes, then the
Low-Latency HLS manifest naming it into KV ``manifests``, then, when a segment is complete, a
notice on ``segments.<fp>``.

Ordering of writes (a playlist never names a part that is not stored): the part first (its
publish is acknowledged by JetStream), then the manifest. A held playlist request at the
gateway wakes on that KV write, so a part reaches a waiting player one KV hop after it exists.

Parts travel as JetStream messages, one subject each (``parts.<fp>.<name>``, the last kept per
subject), not as object-store objects: a part is one message of tens of kilobytes, five a
second per mosaic, and an object put costs several round trips. The stream's age limit (60 s,
four times the longest a playlist keeps a segment) removes them; there is nothing to delete.

A whole segment is not stored: it is its parts, joined by the gateway.

What goes wrong:

- A part that cannot be stored (after one retry) is not listed. The segment being built ends
  short of it (:meth:`~pipeline.segments.llhls.LowLatencyPlaylist.restart`), the rest of its
  parts are dropped, and the next segment follows a discontinuity. A segment's *first* part
  lost leaves nothing to end: the playlist starts over past it
  (:meth:`~pipeline.segments.llhls.LowLatencyPlaylist.forget`).
- A ``PARTS`` stream that was replaced (a restarted nats-server's memory store, provisioned
  again) no longer holds what is listed: found at the next segment's start by its creation
  time, the playlist starts over (``forget``).
- NATS trouble is logged and counted (:attr:`PartPublisher.errors`), never fatal.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from pipeline.consumers.render import RenderedPart
from pipeline.errors import TesseraError
from pipeline.messages.codec import encode
from pipeline.messages.segments import SegmentNotice
from pipeline.nats import subjects
from pipeline.nats.connect import NATS_ERRORS
from pipeline.nats.topology import PARTS
from pipeline.segments import manifest
from pipeline.segments.llhls import LowLatencyPlaylist
from pipeline.segments.uris import init_uri, part_uri, segment_uri

log = logging.getLogger("tessera.stitcher")

PUBLISH_TIMEOUT = 1.0
"""Seconds to wait for JetStream's acknowledgement of one part (then once more)."""


class PartPublisherError(TesseraError):
    """The stitcher's numbering is behind what its mosaic's playlist already used."""


class PartPublisher:
    """Publishes the CMAF parts of mosaic ``fp``.

    ``start`` is the empty playlist of this run (its first segment is the stitcher's first);
    ``previous`` the manifest an earlier stitcher of this mosaic left, which this run
    continues after a discontinuity. ``on_listed()`` is called each time a manifest naming a
    new part has been written; ``wall`` (Unix time) stamps the notices. :meth:`open` gives it
    its bucket.
    """

    def __init__(
        self,
        *,
        js: JetStreamContext,
        fp: str,
        start: LowLatencyPlaylist,
        previous: manifest.LiveManifest | None,
        wall: Callable[[], float],
        on_listed: Callable[[], None],
    ) -> None:
        self._js = js
        self.fp = fp
        self.state = start
        """The playlist as last written (or about to be, at the start)."""
        self._previous = previous
        self._begun = False
        self._inits: dict[str, bytes] = dict(previous.inits) if previous else {}
        self._wall = wall
        self._on_listed = on_listed
        self._kv: KeyValue | None = None
        self._created: datetime.datetime | None = None
        self._dropping: int | None = None
        """Segment whose remaining parts are dropped (one of its parts was not stored)."""
        self._segment_size = 0
        self._segment_first_wall = 0.0
        self.segments = 0
        """Segments listed complete."""
        self.segment_bytes = 0
        """Size of the newest complete segment."""
        self.parts = 0
        """Parts stored and listed."""
        self.errors = 0
        """Parts, manifests and notices that could not be written."""

    async def open(self, kv: KeyValue) -> None:
        """Write manifests into ``kv``; note which ``PARTS`` stream holds the parts."""
        self._kv = kv
        self._created = await self._parts_created()

    @property
    def media_sequence(self) -> int:
        return self.state.media_sequence

    async def publish(self, rendered: RenderedPart) -> None:
        """Store one part, list it, and announce its segment when it completes it."""
        part = rendered.part
        if part.msn == self._dropping:
            return
        self._dropping = None
        if part.index == 0:
            if not self._begun:
                self._begin(rendered)
            elif await self._store_replaced():
                log.warning("the parts stream was replaced; the playlist starts over",
                            extra={"fp": self.fp})  # fmt: skip
                self.state = self.state.forget(next_msn=part.msn)
            self._segment_size = 0
            self._segment_first_wall = 0.0
        uri = part_uri(part.msn, part.index)
        if not await self._store(uri, part.data):
            self._dropping = part.msn
            self.state = (
                self.state.forget(next_msn=part.msn + 1)
                if part.index == 0
                else self.state.restart(self.state.init)
            )
            await self._write()
            return
        self.state = self.state.add_part(
            part.msn,
            part.index,
            part.duration,
            independent=part.independent,
            start=rendered.start_wall,
        )
        self._segment_size += len(part.data)
        if rendered.first_wall and (
            not self._segment_first_wall or rendered.first_wall < self._segment_first_wall
        ):
            self._segment_first_wall = rendered.first_wall
        if part.last:
            self.state = self.state.complete(part.msn)
        if not await self._write():
            return
        self.parts += 1
        self._on_listed()
        if part.last:
            self.segments += 1
            self.segment_bytes = self._segment_size
            await self._notice(part.msn)

    def _begin(self, rendered: RenderedPart) -> None:
        """The run's first part: name its init section and go on from the previous run."""
        self._begun = True
        msn = rendered.part.msn
        previous, self._previous = self._previous, None
        if previous is None:
            self._inits[self.state.init] = rendered.init
            return
        old = previous.state
        # The same bytes keep the same name: a player already holding them need not reload.
        same = previous.inits.get(old.init) == rendered.init
        name = old.init if same else init_uri(run=msn)
        self._inits[name] = rendered.init
        state = old.restart(name)
        if msn < state.next_msn:
            raise PartPublisherError(
                f"mosaic {self.fp}: this stitcher starts at segment {msn}, but the playlist "
                f"already used numbers up to {state.next_msn - 1}: another stitcher is running "
                "it, or the clocks disagree (it is restarted and reads the playlist again)"
            )
        if msn > state.next_msn:
            state = state.forget(next_msn=msn)
        self.state = state

    async def _store(self, uri: str, data: bytes) -> bool:
        subject = subjects.part(self.fp, uri)
        for attempt in (1, 2):
            try:
                await self._js.publish(subject, data, timeout=PUBLISH_TIMEOUT)
                return True
            except NATS_ERRORS as exc:
                if attempt == 2:
                    self.errors += 1
                    log.warning("part not stored",
                                extra={"fp": self.fp, "part": uri, "error": repr(exc)})  # fmt: skip
        return False

    async def _write(self) -> bool:
        assert self._kv is not None
        try:
            value = manifest.encode(manifest.make(self.state, self._inits))
        except KeyError as exc:  # an init section whose bytes this stitcher never had
            raise PartPublisherError(f"mosaic {self.fp}: no bytes for init {exc}") from exc
        try:
            await self._kv.put(self.fp, value)
        except NATS_ERRORS as exc:
            self.errors += 1
            log.warning("playlist not written", extra={"fp": self.fp, "error": repr(exc)})
            return False
        return True

    async def _notice(self, msn: int) -> None:
        segment = self.state.segment(msn)
        notice = SegmentNotice(
            fp=self.fp,
            seq=msn,
            key=f"{self.fp}/{segment_uri(msn)}",
            duration=segment.duration if segment else 0.0,
            size=self._segment_size,
            at=self._wall(),
            first_wall=self._segment_first_wall,
        )
        try:
            await self._js.publish(subjects.segments(self.fp), encode(notice))
        except NATS_ERRORS as exc:
            self.errors += 1
            log.warning("segment notice not sent",
                        extra={"fp": self.fp, "seq": msn, "error": repr(exc)})  # fmt: skip

    async def _parts_created(self) -> datetime.datetime | None:
        try:
            return (await self._js.stream_info(PARTS.name)).created
        except NotFoundError:
            return None

    async def _store_replaced(self) -> bool:
        """True if ``PARTS`` is not the stream the listed parts went into (checked once a
        segment: it can only change if a nats-server lost its memory store)."""
        try:
            created = await self._parts_created()
        except NATS_ERRORS:
            return False  # cannot tell now: keep the run; the next segment checks again
        if created == self._created:
            return False
        self._created = created
        return True
