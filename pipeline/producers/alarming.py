"""A grabber's alarms: its source's conditions (:class:`~pipeline.monitoring.watch.SourceWatch`)
appended to ``EVENTS`` as ``alarm raised`` / ``alarm cleared`` on ``events.source.<key>``.

The grabber's decode thread has the :class:`AlarmReporter` measure every picture it keeps
(:meth:`AlarmReporter.measure`, right after scaling, with the wall time the frame will be handed
on at) and hands it every audio reading, into two queues that any thread may append to; the
reporter's **tick task** takes them every :data:`TICK` s on the event loop (a picture once its
time has come: a paced source is decoded up to a second ahead), feeds the watch and checks for
absence (``lost``, ``no-audio``). Batching by the tick rather than waking the loop for every
picture (25 a second a source) costs at most one tick of latency and saves most of the loop's
work. The **append task** appends the changes in order, one at a time, each acknowledged by
JetStream before the next (a cleared never overtakes its raised). A failed append is retried
with backoff for as long as the grabber runs: alarms are facts, not samples.

Ids: events go to the source key (``sha256(url)[:20]``: every tile size of a URL shares its
alarms); each change gets a ``Nats-Msg-Id`` of ``alarm-<key>-<reporter id>-<n>`` (the reporter
id is random, made at its start), so a retried append is stored once. The id is per occurrence,
not per onset: a source's times repeat (a looped file, an encoder restarted) and an onset-based
id would make JetStream drop a new alarm as a duplicate of an old one. A second grabber of the
URL (another tile size) appends its own copies; the projector keeps one active alarm per kind,
so they change nothing there.

A grabber that starts where an earlier one died (``kill -9``, a lost machine) inherits the
source's active alarms from KV ``alarms``; after :data:`CONFIRM_AFTER` s of watching, each one
its own watch has not raised is cleared with reason ``not-seen``. ``stop()`` clears what is
raised, with reason ``stopped`` (no grabber, no measurement), and waits up to ``drain`` s for
the appends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import nats.errors
import numpy as np
import numpy.typing as npt
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.errors import TesseraError
from pipeline.messages.events import AlarmCleared, AlarmRaised
from pipeline.monitoring.alarms import AlarmKind
from pipeline.monitoring.watch import (
    Change,
    Cleared,
    PictureProbe,
    Raised,
    SourceWatch,
    absence_gap,
)
from pipeline.nats import eventlog
from pipeline.nats.topology import ALARMS
from pipeline.producers.release import Pixels
from pipeline.runtime.tasks import Tasks
from pipeline.state.stored import decode_entry

log = logging.getLogger("tessera.alarms")

TICK = 0.2
"""Seconds between the watch's looks at what was handed on and checks for absence: the latency
it adds to every alarm (at most a tick; the 0.6 s target leaves room) and what the grabber's
loop wakes for, with the levels messages it sends then. At 0.1 s the loop woke, and a message
went to NATS and each stitcher, twice as often for the same meters (bench case 10)."""
CONFIRM_AFTER = 2.0
"""Seconds a grabber watches before it clears inherited alarms it has not seen (more than the
0.5 s debounce plus a reconnect's first pictures)."""
MAX_OBSERVATIONS = 250
"""Pictures or readings waiting for the tick (10 s of a 25 fps source: the loop stalled)."""
SETTLE_AFTER = 12
"""Pictures whose measure may wait for :meth:`AlarmReporter.settle` (half a second at 25 fps:
a paced grabber's decode thread settles them before it waits, every ~0.5 s, when it is ahead).
Measured in runs they cost a third of what they do one at a time between video frames (in a
grabber: 1.45 against ~0.5 ms of thread CPU a second at 25 fps)."""
MAX_PENDING = 10_000
"""Changes waiting for NATS before the oldest are dropped (and counted): hours of flapping."""


class AlarmReporter:
    """Raises and clears one source's alarms; ``await start()``, ``await stop()``."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        key: str,
        url: str,
        fps: float,
        worker_id: str,
        wall: Callable[[], float] = time.time,
        tick: float = TICK,
        has_audio: Callable[[], bool] = lambda: False,
        on_tick: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``has_audio``: whether the source's connection has an audio stream (then no
        readings is ``no-audio``, even before the first)."""
        self._js = js
        self.key = key
        self.url = url
        """The URL without credentials (it goes into events)."""
        self.worker_id = worker_id
        self._wall = wall
        self._tick = tick
        self._has_audio = has_audio
        self._on_tick = on_tick
        """Called at every tick on the loop (the grabber sends its audio readings then: one
        wake-up of the loop for both, not one each)."""
        self.watch = SourceWatch(gap=absence_gap(fps))
        self._probe = PictureProbe()
        self._pending: deque[tuple[Change, str, str]] = deque()
        """Changes waiting to be appended: (change, reason, msg id)."""
        self._pictures: deque[tuple[float, float, float, float, float | None]] = deque(
            maxlen=MAX_OBSERVATIONS
        )
        self._readings: deque[tuple[float, float, Sequence[float], float | None]] = deque(
            maxlen=MAX_OBSERVATIONS
        )
        self._unmeasured: list[tuple[float, float, npt.NDArray[np.int16]]] = []
        """Pictures whose probe samples wait to be measured: (t, wall, samples); decode
        thread only."""
        self._id_base = f"alarm-{key}-{uuid.uuid4().hex[:12]}"
        self._numbered = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        """Set while nothing waits to be appended."""
        self._idle.set()
        self._tasks = Tasks(f"alarms {key}")
        self._inherited: dict[AlarmKind, float] = {}
        """Kinds raised by an earlier grabber, with their onset, not confirmed yet."""
        self._confirm_at = 0.0
        self._running = False
        self.raised = 0
        self.cleared = 0
        self.appended = 0
        self.append_errors = 0
        self.dropped = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the source's inherited alarms and start watching. Safe to call twice."""
        if self._running:
            return
        now = self._wall()
        self._inherited = await self._read_inherited()
        self._confirm_at = now + CONFIRM_AFTER
        self.watch.start(now)
        self._running = True
        self._tasks.spawn(self._tick_loop(), name="tick")
        self._tasks.spawn(self._append_loop(), name="append")

    async def stop(self, drain: float = 2.0) -> None:
        """Clear what is raised (reason ``stopped``) and append what waits, for at most
        ``drain`` s; then stop the tasks. Safe to call twice."""
        if not self._running:
            return
        self._running = False
        now = self._wall()
        self._take(now)  # not the pictures measured ahead of their time: never shown
        self._queue(self.watch.close(now), reason="stopped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain)
        if self._pending:
            log.warning(
                "alarm events not appended at stop",
                extra={"source": self.key, "pending": len(self._pending)},
            )
        await self._tasks.close()

    # --- observations (event loop) --------------------------------------------------------

    def picture(
        self, t: float, wall: float, dark: float, difference: float, still_since: float | None
    ) -> None:
        """A picture handed on at ``wall`` (see :meth:`SourceWatch.picture`); any thread. A
        picture whose ``wall`` is still to come waits for it: the watch takes it at the first
        tick after (pictures come in order of ``wall``)."""
        self._pictures.append((t, wall, dark, difference, still_since))

    def measure(self, t: float, wall: float, pixels: Pixels, width: int, height: int) -> None:
        """Measure a tile (packed yuv420p, ``width`` x ``height``) for black and freeze, and
        note it as a picture shown at ``wall`` (decode thread, one thread only). Called where
        the tile was just scaled, which may be up to a second before its time: the samples the
        probe reads are taken there, while the tile is in the CPU's caches, and measured at
        :meth:`settle` (or once :data:`SETTLE_AFTER` wait), several in one run while numpy's
        code is in them too."""
        y = np.frombuffer(pixels, dtype=np.uint8, count=width * height).reshape(height, width)
        unmeasured = self._unmeasured
        unmeasured.append((t, wall, self._probe.samples(y)))
        if len(unmeasured) >= SETTLE_AFTER:
            self.settle()

    def settle(self) -> None:
        """Measure the pictures whose samples wait (decode thread), in order."""
        unmeasured, probe, pictures = self._unmeasured, self._probe, self._pictures
        for t, wall, samples in unmeasured:
            dark, difference, since = probe.measure_samples(t, samples)
            pictures.append((t, wall, dark, difference, since))
        unmeasured.clear()

    def unshown(self, wall: float) -> None:
        """The pictures measured for after ``wall`` will not be shown (their connection was
        lost before their time): forget them (decode thread)."""
        self.settle()  # those shown by now count; the rest are dropped below
        pictures = self._pictures
        with contextlib.suppress(IndexError):  # the loop may take the last one meanwhile
            while pictures and pictures[-1][1] > wall:
                pictures.pop()

    def audio(
        self, t: float, wall: float, peaks_db: Sequence[float], short_term_lufs: float | None
    ) -> None:
        """An audio reading handed on (see :meth:`SourceWatch.audio`); any thread."""
        self._readings.append((t, wall, peaks_db, short_term_lufs))

    # --- the tasks ------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            if self._on_tick is not None:
                await self._on_tick()
            if not self._running:
                continue  # stopping: closed, nothing is measured any more
            now = self._wall()
            self._take(now)
            if self._has_audio():
                self.watch.expect_audio = True
            self._queue(self.watch.tick(now))
            if self._inherited and now >= self._confirm_at:
                self._confirm(now)

    def _take(self, wall: float | None = None) -> None:
        """Feed the watch what the threads handed on since the last tick, in order: the
        pictures whose time has come by ``wall`` (all of them when None)."""
        pictures, readings = self._pictures, self._readings
        while pictures and (wall is None or pictures[0][1] <= wall):
            self._queue(self.watch.picture(*pictures.popleft()))
        while readings:
            t, wall, peaks, short_term = readings.popleft()
            self.watch.expect_audio = True
            self._queue(self.watch.audio(t, wall, peaks, short_term))

    def _confirm(self, now: float) -> None:
        """Clear the inherited alarms this grabber's own watch has not raised."""
        active = self.watch.active
        for kind, onset in self._inherited.items():
            if kind in active:
                continue  # still there: the projection kept it, our clear will end it
            gone = Cleared(kind, onset, onset, now, 0.0)
            self._queue([gone], reason="not-seen")
            log.info("inherited alarm not seen; cleared", extra={"source": self.key, "kind": kind})
        self._inherited = {}

    def _queue(self, changes: Sequence[Change], reason: str = "ended") -> None:
        for change in changes:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.dropped += 1
            self._numbered += 1
            self._pending.append((change, reason, f"{self._id_base}-{self._numbered}"))
            if isinstance(change, Raised):
                self.raised += 1
                log.info(
                    "alarm raised",
                    extra={"source": self.key, "kind": change.kind, "onset": change.onset},
                )
            else:
                self.cleared += 1
                log.info(
                    "alarm cleared",
                    extra={"source": self.key, "kind": change.kind, "end": change.end},
                )
        if changes:
            self._idle.clear()
            self._wake.set()

    async def _append_loop(self) -> None:
        delay = 0.1
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            change, reason, msg_id = self._pending[0]
            event = self._event(change, reason)
            try:
                await eventlog.append(self._js, event, msg_id=msg_id, attempts=1)
            except (TesseraError, nats.errors.Error, TimeoutError, OSError) as exc:
                # NATS away or busy: the event waits, in order, and is tried again.
                self.append_errors += 1
                log.warning(
                    "alarm event not appended; retrying",
                    extra={"source": self.key, "error": str(exc)},
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self._pending.popleft()
            self.appended += 1

    def _event(self, change: Change, reason: str) -> AlarmRaised | AlarmCleared:
        if isinstance(change, Raised):
            raised = AlarmRaised(
                at=self._wall(),
                source=self.key,
                kind=change.kind.value,
                onset=change.onset,
                onset_wall=change.onset_wall,
                value=change.value,
                url=self.url,
                worker_id=self.worker_id,
            )
            return raised
        cleared = AlarmCleared(
            at=self._wall(),
            source=self.key,
            kind=change.kind.value,
            onset=change.onset,
            end=change.end,
            end_wall=change.end_wall,
            worst=change.worst,
            reason=reason,
            worker_id=self.worker_id,
        )
        return cleared

    async def _read_inherited(self) -> dict[AlarmKind, float]:
        """The kinds KV ``alarms`` says are raised on this source now (an earlier grabber's)."""
        try:
            kv = await self._js.key_value(ALARMS.name)
            entry = await kv.get(self.key)
        except NotFoundError:
            return {}
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            log.warning("cannot read inherited alarms", extra={"source": self.key, "error": exc})
            return {}
        if not entry.value:
            return {}
        with contextlib.suppress(TesseraError, ValueError):
            state = decode_entry(ALARMS.name, entry.value).state
            inherited: dict[AlarmKind, float] = {}
            for alarm in state.active:
                with contextlib.suppress(ValueError):
                    inherited[AlarmKind(alarm.kind)] = alarm.onset
            return inherited
        return {}
