"""A mosaic's alarms over HTTP: ``GET /mosaics/<fp>/alarms`` and its live stream.

The gateway follows KV ``alarms`` (one :class:`~pipeline.state.model.SourceState` per source
URL, written by the projector from the grabbers' ``alarm raised`` / ``alarm cleared``) in
memory (:class:`AlarmBook`), and answers what a mosaic shows with the pure rule of
:func:`pipeline.state.alarms.mosaic_alarms`: a condition is an alarm on a tile once it has
lasted the mosaic's hold for its kind.

- ``GET /mosaics/<fp>/alarms``: ``{"fp", "now", "active", "pending", "recent", "layout"}``.
  ``active``: shown now, by tile then kind; ``pending``: raised conditions not yet held long
  enough (``shown_at`` says when they will be); ``recent``: cleared alarms that were shown,
  newest end first. Each item is ``{tile, name, source, kind, onset, onset_wall, shown_at,
  value}``, and a cleared one also ``{end_wall, worst, reason}``. ``layout`` places the tiles
  in the mosaic's picture (``{width, height, tiles: [{tile, name, x, y, w, h}]}``), so a page
  can draw on them; ``audio`` is the mosaic's canonical ``audio=`` (``""``: the first tile with
  audio, ``off``, or a tile index), so the viewer page shows whose sound it carries.
- ``GET /mosaics/<fp>/alarms/events``: Server-Sent Events. First ``event: snapshot`` with the
  JSON above, then ``event: raised`` when an alarm becomes shown (at its ``shown_at``: the
  stream sleeps until the earliest pending one is due, or until KV ``alarms`` changes for one
  of the mosaic's sources, never polling) and ``event: cleared`` when a shown one ends, each
  with its item. A condition that was raised and cleared between two wake-ups but lasted the
  hold gets both, in order; a shown alarm whose source state went away (a replaced bucket)
  is cleared with ``reason: "gone"`` and no end. A comment line every
  :data:`KEEPALIVE` seconds of silence keeps proxies from closing the connection. At most
  ``max_streams`` streams are open at once (``503`` over it), and :meth:`Alarms.close` ends
  every one (the gateway's shutdown).

Both answer ``404`` ``{"error": "not found"}`` for an unknown or malformed fingerprint, like
``/play``. They are open like ``/play`` and ``/view``; where play URLs are signed, a signed URL
of the mosaic opens them (``/s/<token>/mosaics/<fp>/alarms``: what the viewer page of a signed
link calls), or the ``admin`` scope, like ``/api/mosaics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from nats.js import JetStreamContext
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway.guard import Guard
from gateway.projection import Projection
from pipeline.errors import MessageError
from pipeline.nats.follow import CHECK_EVERY, KvFollower
from pipeline.nats.topology import ALARMS, MOSAICS
from pipeline.state.alarms import MosaicAlarms, TileAlarm, mosaic_alarms, tile_sources
from pipeline.state.model import MosaicState, SourceState
from pipeline.state.mosaic import FP_RE, layout_of
from pipeline.state.stored import decode_entry

log = logging.getLogger("tessera.gateway")

KEEPALIVE = 15.0
"""Seconds of silence on a stream before a comment line keeps it open."""

MAX_STREAMS = 200
"""Alarm streams one gateway keeps open at once (each is a connection and a small wait)."""

DUE_SLACK = 0.005
"""Seconds past an alarm's ``shown_at`` to wake: a timer may fire a hair early."""

NOT_FOUND = JSONResponse({"error": "not found"}, status_code=404)

Changed = Callable[[frozenset[str] | None], None]
"""Told which source keys changed (None: any may have)."""


class AlarmBook:
    """KV ``alarms`` in memory: :attr:`sources` (source key → state), loaded and followed
    (:class:`~pipeline.nats.follow.KvFollower`). Listeners hear which sources changed."""

    def __init__(self, js: JetStreamContext, check_every: float = CHECK_EVERY) -> None:
        self.sources: dict[str, SourceState] = {}
        self._listeners: set[Changed] = set()
        self.follower = KvFollower(
            js, ALARMS, load=self._load, apply=self._apply, check_every=check_every
        )

    async def start(self) -> None:
        """Load every source's state, then follow."""
        await self.follower.start()

    async def stop(self) -> None:
        """Stop following. Safe twice."""
        await self.follower.stop()

    def listen(self, listener: Changed) -> None:
        self._listeners.add(listener)

    def unlisten(self, listener: Changed) -> None:
        self._listeners.discard(listener)

    def of(self, mosaic: MosaicState, now: float) -> MosaicAlarms:
        """What ``mosaic`` shows at wall time ``now``."""
        return mosaic_alarms(mosaic, self.sources, now)

    def _load(self, snapshot: dict[str, bytes]) -> None:
        sources: dict[str, SourceState] = {}
        for key, value in snapshot.items():
            if (state := _decode(key, value)) is not None:
                sources[key] = state
        self.sources = sources
        self._tell(None)

    def _apply(self, key: str, value: bytes | None) -> None:
        state = _decode(key, value) if value else None
        if state is None:
            self.sources.pop(key, None)
        else:
            self.sources[key] = state
        self._tell(frozenset((key,)))

    def _tell(self, keys: frozenset[str] | None) -> None:
        for listener in list(self._listeners):
            listener(keys)


def _decode(key: str, value: bytes) -> SourceState | None:
    try:
        state = decode_entry(ALARMS.name, value).state
    except MessageError as exc:
        log.warning("unreadable alarm state ignored", extra={"source": key, "error": str(exc)})
        return None
    return state if isinstance(state, SourceState) else None


# -- JSON ----------------------------------------------------------------------------------------


def item(alarm: TileAlarm, *, cleared: bool = False) -> dict[str, Any]:
    """One alarm as the API shows it; ``cleared``: with its end, worst value and reason."""
    out: dict[str, Any] = {
        "tile": alarm.tile,
        "name": alarm.name,
        "source": alarm.source,
        "kind": alarm.kind.value,
        "onset": alarm.onset,
        "onset_wall": alarm.onset_wall,
        "shown_at": alarm.shown_at,
        "value": alarm.value,
    }
    if cleared:
        out.update(end_wall=alarm.end_wall, worst=alarm.worst, reason=alarm.reason)
    return out


def tiles_layout(mosaic: MosaicState) -> dict[str, Any]:
    """Where each tile is in the mosaic's picture: its own rectangle (tiles may differ in size,
    as in the focus layout)."""
    grid = layout_of(mosaic)
    tiles = [
        {"tile": i, "name": tile.name, "x": r.x, "y": r.y, "w": r.w, "h": r.h}
        for i, (tile, r) in enumerate(zip(mosaic.tiles, grid.rects, strict=True))
    ]
    return {"width": grid.width, "height": grid.height, "tiles": tiles}


def describe(mosaic: MosaicState, alarms: MosaicAlarms, now: float) -> dict[str, Any]:
    """The body of ``GET /mosaics/<fp>/alarms`` (and of the stream's snapshot)."""
    return {
        "fp": mosaic.fp,
        "now": now,
        "active": [item(a) for a in alarms.active],
        "pending": [item(a) for a in alarms.pending],
        "recent": [item(a, cleared=True) for a in alarms.recent],
        "layout": tiles_layout(mosaic),
        "audio": mosaic.audio,
    }


def frame(event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event (the JSON on one ``data:`` line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# -- what changed between two looks --------------------------------------------------------------

_Key = tuple[int, str, float]


def _key(alarm: TileAlarm) -> _Key:
    """One condition on one tile: its kind and onset do not change while it lasts."""
    return (alarm.tile, alarm.kind.value, alarm.onset)


class AlarmDiff:
    """What a stream has told its client: the alarms shown, and the cleared ones known. Pure:
    :meth:`update` takes the next look and says what to send."""

    def __init__(self, first: MosaicAlarms) -> None:
        self.shown: dict[_Key, TileAlarm] = {_key(a): a for a in first.active}
        self.ended: set[_Key] = {_key(a) for a in first.recent}

    def update(self, now: MosaicAlarms) -> list[tuple[str, dict[str, Any]]]:
        """The events (``raised`` / ``cleared`` with their items) from the last look to
        ``now``, in the order they happened."""
        told: list[tuple[float, str, dict[str, Any]]] = []
        shown = {_key(a): a for a in now.active}
        recent = {_key(a): a for a in now.recent}
        for key, done in recent.items():
            if key in self.ended:
                continue
            if key not in self.shown:
                # Raised and cleared between two looks, but it lasted the hold: it showed.
                raised = dataclasses.replace(done, end_wall=None, worst=None, reason="")
                told.append((done.shown_at, "raised", item(raised)))
            told.append((done.end_wall or done.shown_at, "cleared", item(done, cleared=True)))
        for key, alarm in self.shown.items():
            if key not in shown and key not in recent:
                gone = dataclasses.replace(alarm, reason="gone")
                told.append((alarm.shown_at, "cleared", item(gone, cleared=True)))
        for key, alarm in shown.items():
            if key not in self.shown:
                told.append((alarm.shown_at, "raised", item(alarm)))
        self.shown = shown
        self.ended = set(recent)
        told.sort(key=lambda t: t[0])  # stable: a raise comes before its own clear
        return [(event, data) for _, event, data in told]


# -- the routes ----------------------------------------------------------------------------------


class _EventStream(StreamingResponse):
    """A stream that gives its slot back however it ends (even before it began)."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(body, headers=headers)
        self._body = body
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()


class Alarms:
    """The alarm routes over the gateway's :class:`AlarmBook`."""

    def __init__(
        self,
        book: AlarmBook,
        guard: Guard,
        projection: Projection,
        *,
        max_streams: int = MAX_STREAMS,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.book = book
        self.guard = guard
        self.projection = projection
        self.max_streams = max_streams
        self.keepalive = keepalive
        self.streams = 0
        """Streams open now."""
        self._wakes: set[asyncio.Event] = set()
        self._closing = False

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/mosaics/{fp}/alarms", self.get, methods=["GET"]),
            Route("/mosaics/{fp}/alarms/events", self.events, methods=["GET"]),
        ]

    async def _mosaic(self, request: Request) -> MosaicState | Response:
        fp = request.path_params["fp"]
        opened = request.scope.get("state", {}).get("signed_scope")
        if (
            self.guard.signed
            and opened != f"mosaic:{fp}"  # a signed URL of this mosaic opens its alarms
            and (refused := self.guard.authorize(request, "admin"))
        ):
            return refused
        if not FP_RE.match(fp):
            return NOT_FOUND
        state = await self.projection.read(MOSAICS.name, fp)
        return state if isinstance(state, MosaicState) else NOT_FOUND

    async def get(self, request: Request) -> Response:
        """``GET /mosaics/<fp>/alarms``."""
        mosaic = await self._mosaic(request)
        if isinstance(mosaic, Response):
            return mosaic
        now = time.time()
        return JSONResponse(describe(mosaic, self.book.of(mosaic, now), now))

    async def events(self, request: Request) -> Response:
        """``GET /mosaics/<fp>/alarms/events``: Server-Sent Events."""
        mosaic = await self._mosaic(request)
        if isinstance(mosaic, Response):
            return mosaic
        if self._closing:
            return _unavailable("the gateway is stopping: connect to another, or retry")
        if self.streams >= self.max_streams:
            return _unavailable(
                f"this gateway has its maximum of {self.max_streams} alarm streams open: "
                "retry later, or read GET /mosaics/<fp>/alarms"
            )
        # Taken here, given back when the response ends: nothing can come between the two.
        self.streams += 1
        return _EventStream(self._stream(mosaic), self._release)

    def _release(self) -> None:
        self.streams -= 1

    async def _stream(self, mosaic: MosaicState) -> AsyncIterator[bytes]:
        keys = frozenset(tile_sources(mosaic))
        wake = asyncio.Event()

        def changed(sources: frozenset[str] | None) -> None:
            if sources is None or not keys.isdisjoint(sources):
                wake.set()

        loop = asyncio.get_running_loop()
        self._wakes.add(wake)
        self.book.listen(changed)
        try:
            now = time.time()
            current = self.book.of(mosaic, now)
            yield frame("snapshot", describe(mosaic, current, now))
            told = AlarmDiff(current)
            quiet_since = loop.time()
            while not self._closing:
                delay = self.keepalive - (loop.time() - quiet_since)
                if (due := current.next_due) is not None:
                    delay = min(delay, due - time.time() + DUE_SLACK)
                await _wait(wake, delay)
                wake.clear()
                if self._closing:
                    break
                current = self.book.of(mosaic, time.time())
                events = told.update(current)
                if events:
                    yield b"".join(frame(event, data) for event, data in events)
                    quiet_since = loop.time()
                elif loop.time() - quiet_since >= self.keepalive:
                    yield b": keep-alive\n\n"
                    quiet_since = loop.time()
        finally:
            self.book.unlisten(changed)
            self._wakes.discard(wake)

    def close(self) -> None:
        """End every stream now and refuse new ones (the gateway is stopping). Safe twice."""
        self._closing = True
        for wake in self._wakes:
            wake.set()

    def reopen(self) -> None:
        """Accept streams again (a gateway app started after a stop)."""
        self._closing = False

    def shown(self, mosaics: Iterable[MosaicState], now: float) -> dict[str, int]:
        """How many alarms each of ``mosaics`` shows at ``now``, by fingerprint."""
        return {m.fp: len(self.book.of(m, now).active) for m in mosaics}


async def _wait(wake: asyncio.Event, delay: float) -> None:
    """Until ``wake`` is set or ``delay`` seconds have passed."""
    if delay <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await wake.wait()


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=503, headers={"Retry-After": "5"})


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of :meth:`Alarms.routes`."""
    fp = {"name": "fp", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}  # fmt: skip
    number = {"type": "number"}
    alarm = {
        "type": "object",
        "properties": {
            "tile": {"type": "integer", "description": "0-based tile index"},
            "name": {"type": "string", "description": "the tile's name, or empty"},
            "source": {"type": "string", "description": "source key, sha256(url)[:20]"},
            "kind": {"type": "string",
                     "enum": ["black", "freeze", "silence", "loudness", "no-audio", "lost"]},
            "onset": {**number, "description": "source time the condition began, s"},
            "onset_wall": {**number, "description": "wall time it began, Unix s"},
            "shown_at": {**number, "description": "wall time the mosaic shows it from: "
                                                  "onset_wall + the mosaic's hold"},
            "value": {**number, "description": "the measurement at onset"},
            "end_wall": {"type": ["number", "null"],
                         "description": "cleared only: wall time it ended (null: gone)"},
            "worst": {"type": ["number", "null"], "description": "cleared only"},
            "reason": {"type": "string",
                       "description": "cleared only: ended, stopped, not-seen or gone"},
        },
        "required": ["tile", "name", "source", "kind", "onset", "onset_wall", "shown_at",
                     "value"],
    }  # fmt: skip
    listed = {"type": "array", "items": alarm}
    body = {
        "type": "object",
        "properties": {
            "fp": {"type": "string"},
            "now": {**number, "description": "the wall time the answer is for"},
            "active": {**listed, "description": "shown now, by tile then kind"},
            "pending": {**listed, "description": "raised, not held long enough yet"},
            "recent": {**listed, "description": "cleared after showing, newest first"},
            "layout": {"type": "object", "description": "width, height, tiles [{tile, name, "
                                                        "x, y, w, h}] in the picture"},
            "audio": {"type": "string", "description": "whose sound the mosaic carries "
                      "(canonical audio=): \"\" the first tile with audio, off, or a 0-based "
                      "tile index"},
        },
        "required": ["fp", "now", "active", "pending", "recent", "layout", "audio"],
    }  # fmt: skip
    error = {"description": "One line: what is wrong",
             "content": {"application/json": {"schema": {
                 "type": "object", "properties": {"error": {"type": "string"}}}}}}  # fmt: skip
    refused = {"401": {**error, "description": "Play URLs are signed: no admin token"},
               "403": {**error, "description": "The token lacks the admin scope"}}  # fmt: skip
    return {
        "/mosaics/{fp}/alarms": {"get": {
            "summary": "A mosaic's alarms: active, pending (with when they show), recently "
                       "cleared, and its tiles' places (admin scope when play URLs are signed)",
            "parameters": [fp],
            "responses": {
                "200": {"description": "The alarms",
                        "content": {"application/json": {"schema": body}}},
                **refused,
                "404": {**error, "description": "Unknown mosaic"}}}},
        "/mosaics/{fp}/alarms/events": {"get": {
            "summary": "A mosaic's alarms live (Server-Sent Events): snapshot (the JSON of "
                       "/mosaics/<fp>/alarms), then raised when one shows and cleared when it "
                       "ends, each with the alarm; a comment every 15 s of silence",
            "parameters": [fp],
            "responses": {
                "200": {"description": "The event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **refused,
                "404": {**error, "description": "Unknown mosaic"},
                "503": {**error, "description": "Too many streams open, or the gateway is "
                                                "stopping; see Retry-After"}}}},
    }  # fmt: skip
