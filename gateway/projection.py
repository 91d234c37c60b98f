"""The gateway's reads of projected state, read-your-writes.

The gateway answers from the projection (the KV state buckets, through
:mod:`pipeline.control.read`); it does not read ``EVENTS`` or fold events itself: folding is the
projector's, and a second fold here would be a second truth to keep equal to the first.

But an answer right after an append must show it. The projector folds an event some
milliseconds after its append, and the gateway's next read of that entity can come sooner:
``GET /session/<id>`` or the WHEP offer right after ``POST /session``, the review page after
it, the mosaic page after ``/create``. So the gateway remembers, for :data:`REMEMBER` seconds,
the stream sequence each of its own appends got (what the append's ack returned), per entity,
and a read of that entity waits until the stored entry has folded it: the projector stores
that sequence with each entity's state (:class:`~pipeline.state.stored.Projected`). Only those
reads wait, and only until the projection has caught up; every other read is one KV get.

Appends made through another gateway are not known here: a read of those sees the projection
as it is, which may not have them for a few milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext

from pipeline.control.read import read_projected
from pipeline.errors import ProjectionError
from pipeline.state.model import State
from pipeline.state.stored import Projected

WAIT = 5.0
"""Seconds a read waits for the projection to fold this gateway's own append. The projector
takes ~10 ms; 5 s covers a busy one (a burst of appends, KV writes retried after lost races,
an event failing its deliveries before it is parked) and stays well inside an HTTP client's
patience."""

REMEMBER = 60.0
"""Seconds an append is remembered. A projection that has not folded it by then will not soon:
the reads stop waiting and answer from the projection as it is."""

POLL = 0.01
"""Seconds between reads of an entry while waiting: about the projector's own lag."""


class NotProjectedYet(ProjectionError):
    """This gateway appended an event that the projection has not folded in time."""


class Projection:
    """Projected state as the gateway reads it: including its own appends."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        wait: float = WAIT,
        remember: float = REMEMBER,
        poll: float = POLL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._js = js
        self.wait = wait
        self.remember = remember
        self.poll = poll
        self._clock = clock
        self._appended: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        """(bucket, key) → (stream sequence to wait for, when it was appended), oldest first."""

    def appended(self, bucket: str, key: str, seq: int) -> None:
        """This gateway appended an event of entity ``key`` (projected into ``bucket``) at
        stream sequence ``seq``: reads of it wait until the projection includes it.

        An append refused because the entity already has events (``expect_first``) gives no
        sequence; pass 1: any stored entry of the entity has folded its first event.
        """
        now = self._clock()
        while self._appended:
            # Forget what is past remembering (the oldest are first): the map stays as small
            # as this gateway's appends of the last REMEMBER seconds.
            oldest, (_, at) = next(iter(self._appended.items()))
            if now - at < self.remember:
                break
            del self._appended[oldest]
        entity = (bucket, key)
        earlier = self._appended.pop(entity, None)
        self._appended[entity] = (max(seq, earlier[0]) if earlier else seq, now)

    def awaited(self, bucket: str, key: str) -> int | None:
        """The stream sequence a read of ``key`` waits for, or None."""
        got = self._appended.get((bucket, key))
        if got is None or self._clock() - got[1] >= self.remember:
            return None
        return got[0]

    async def read(self, bucket: str, key: str) -> State | None:
        """The projected state of ``key`` in ``bucket`` (None: there is none), including every
        event this gateway appended to it lately. Raises :class:`NotProjectedYet` when the
        projection has not folded such an event within :attr:`wait` seconds."""
        seq = self.awaited(bucket, key)
        entry = await read_projected(self._js, bucket, key)
        if seq is None:
            return _state(entry)
        deadline = self._clock() + self.wait
        while entry is None or entry.seq < seq:
            if self._clock() >= deadline:
                raise NotProjectedYet(
                    f"{bucket} {key}: recorded (stream sequence {seq}) but not projected after "
                    f"{self.wait:g} s; is the projector running? (`tessera status`): retry"
                )
            await asyncio.sleep(self.poll)
            entry = await read_projected(self._js, bucket, key)
        if self._appended.get((bucket, key), (0, 0.0))[0] <= entry.seq:
            # Seen: reads of it need not wait any more (unless a later append came meanwhile).
            self._appended.pop((bucket, key), None)
        return _state(entry)


def _state(entry: Projected[Any] | None) -> State | None:
    if entry is None:
        return None
    state: State = entry.state
    return state
