"""``GET /create`` and ``GET /play/<fp>/...``: making and serving mosaics.

- ``/create?urls=<UrlDsl>[&urls=...][&size=WxH][&fps=N][&cols=N][&title=T][&alarms=A][&audio=K]``
  ``[&clock=utc][&layout=grid|focus]``
  expands the patterns, reads the alarm holds (:mod:`pipeline.monitoring.alarms`; a bad value is
  a ``400`` naming its column, as a bad pattern is), canonicalises and fingerprints the config,
  records ``mosaic created`` once per fingerprint, counts as a viewer, and answers ``302`` to
  the playlist. Bad input: ``400`` with one line naming the parameter. Open to anyone unless play
  URLs are signed: then it needs a token with the ``mosaics`` scope (:mod:`gateway.guard`). A new
  mosaic is audited (``mosaic-create``). A new mosaic that no agent has room for, where no
  instance can be launched, is a ``503`` naming every agent's room (:mod:`gateway.capacity`),
  and nothing is recorded.
- ``/play/<fp>/index.m3u8`` serves the live playlist from KV ``manifests`` — or, for a known
  mosaic whose work is still starting, a valid empty live playlist — and each request is a
  viewer heartbeat (throttled) and, once per viewer per 10 minutes, an audit entry
  (``mosaic-watch``). For a CMAF mosaic (Low-Latency HLS) ``_HLS_msn`` and
  ``_HLS_part`` make it a blocking reload (:mod:`pipeline.segments.serving`): held until that
  part exists, ``400`` for a bad or too-far request, ``503`` when it did not come within three
  target durations.
- CMAF media: ``init.mp4`` (from the manifest), parts ``<msn>.<part>.m4s`` (from stream
  ``PARTS``; the part a preload hint names is held until it exists) and whole segments
  ``<msn>.m4s`` (their parts joined). MPEG-TS: ``<seq>.ts`` from the object store.
- Anything else under ``/play`` (unknown or malformed fingerprint, bad file name, missing
  media) is the same ``404``, so the route reveals nothing and opens nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from urllib.parse import urlsplit

import nats.errors
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

import urldsl
from gateway.audit import AuditTrail
from gateway.capacity import Capacity
from gateway.context import GatewayContext
from gateway.guard import Guard
from gateway.livestate import LiveState
from gateway.projection import Projection
from pipeline.messages.codec import encode
from pipeline.messages.events import Tile
from pipeline.messages.heartbeats import ViewerHeartbeat
from pipeline.monitoring.alarms import AlarmSyntaxError, canonical, parse_alarms
from pipeline.nats import subjects
from pipeline.nats.eventlog import AlreadyExists, append
from pipeline.nats.topology import MOSAICS, PARTS, SEGMENTS
from pipeline.segments import serving
from pipeline.segments.manifest import LiveManifest
from pipeline.segments.playlist import empty_playlist
from pipeline.segments.uris import InitUri, parse_uri
from pipeline.state.layouts import FOCUS, LayoutChoiceError, canonical_layout, layout
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import (
    FP_RE,
    MAX_SIDE,
    MIN_SIDE,
    AudioChoiceError,
    MosaicConfig,
    canonical_audio,
    created,
    fingerprint,
)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
CMAF_TYPE = "video/mp4"
MEDIA_HEADERS = {"Cache-Control": "public, max-age=300, immutable"}
SEGMENT_RE = re.compile(r"^(0|[1-9][0-9]{0,11})\.ts$")
SIZE_RE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")
ALLOWED_SCHEMES = ("http", "https", "rtmp", "rtmps", "rtsp")
VIEWER_BEAT_EVERY = 1.0
NOT_FOUND = JSONResponse({"error": "not found"}, status_code=404)
PLAYLIST_HEADERS = {"Cache-Control": "no-cache"}


class BadRequest(Exception):
    """A one-line reason for a 400."""


class PartUnavailable(Exception):
    """A part could not be fetched from NATS now (not: it does not exist)."""


def _bad(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=503, headers={"Retry-After": "1"})


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name}={raw!r}: must be a whole number from {low} to {high}")
    return int(raw)


CREATE_PARAMETERS = ("urls", "size", "fps", "cols", "title", "alarms", "audio", "clock", "layout")
"""The query parameters ``/create`` reads; any other is a ``400``."""


def parse_create(request: Request, max_tiles: int) -> MosaicConfig:
    """The mosaic config a /create request asks for, or BadRequest."""
    unknown = set(request.query_params) - set(CREATE_PARAMETERS)
    if unknown:
        raise BadRequest(
            f"unknown parameter {sorted(unknown)[0]!r}: use {', '.join(CREATE_PARAMETERS)}"
        )
    patterns = request.query_params.getlist("urls")
    if not patterns:
        raise BadRequest("urls is missing: give a UrlDsl pattern, e.g. urls=http://cam/{1,2}.m3u8")
    try:
        streams = urldsl.expand_all(patterns, max_streams=max_tiles)
    except urldsl.UrlDslError as exc:
        raise BadRequest(f"urls: {exc}") from exc
    for stream in streams:
        scheme = urlsplit(stream.url).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise BadRequest(
                f"urls: {stream.url!r} has scheme {scheme or 'none'!r}: "
                f"use one of {', '.join(ALLOWED_SCHEMES)}"
            )
    width, height = 1280, 720
    size = request.query_params.get("size")
    if size:
        match = SIZE_RE.match(size)
        if not match:
            raise BadRequest(f"size={size!r}: use WIDTHxHEIGHT, e.g. 1280x720")
        width, height = int(match.group(1)), int(match.group(2))
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise BadRequest(f"size={size!r}: each side from {MIN_SIDE} to {MAX_SIDE}")
        if width % 2 or height % 2:
            raise BadRequest(f"size={size!r}: width and height must be even")
    fps = _int_param(request, "fps", 1, 60) or 25
    cols = _int_param(request, "cols", 1, max_tiles)
    shapes = request.query_params.getlist("layout")
    if len(shapes) > 1:
        raise BadRequest("layout: given more than once: use grid or focus")
    try:
        shape = canonical_layout(shapes[0] if shapes else "")
    except LayoutChoiceError as exc:
        raise BadRequest(f"layout: {exc}") from exc
    if shape == FOCUS and cols is not None:
        raise BadRequest("cols= and layout=focus do not combine: leave cols out for focus")
    title = request.query_params.get("title", "")
    if len(title) > 200:
        raise BadRequest("title: at most 200 characters")
    given = request.query_params.getlist("alarms")
    if len(given) > 1:
        raise BadRequest("alarms: given more than once: join the entries with ',' in one alarms=")
    try:
        alarms = canonical(parse_alarms(given[0] if given else ""))
    except AlarmSyntaxError as exc:
        raise BadRequest(f"alarms: {exc}") from exc
    tiles = tuple(Tile(url=s.url, name=s.name) for s in streams)
    try:
        layout(len(tiles), width, height, cols, shape)
    except ValueError as exc:
        raise BadRequest(f"size={width}x{height}: {exc}") from exc
    chosen = request.query_params.getlist("audio")
    if len(chosen) > 1:
        raise BadRequest("audio: given more than once: name one tile")
    try:
        audio = canonical_audio(chosen[0] if chosen else "", tiles)
    except AudioChoiceError as exc:
        raise BadRequest(f"audio: {exc}") from exc
    clock = request.query_params.get("clock", "").strip().lower()
    if clock not in ("", "off", "utc"):
        raise BadRequest(f"clock={clock!r}: use clock=utc for a time-code clock, or leave it out")
    return MosaicConfig(
        tiles=tiles,
        width=width,
        height=height,
        fps=fps,
        cols=cols,
        title=title,
        alarms=alarms,
        audio=audio,
        clock=clock == "utc",
        layout=shape,
    )


class Mosaics:
    """The mosaic routes with their small caches (known fingerprints, segments)."""

    def __init__(
        self,
        ctx: GatewayContext,
        guard: Guard,
        live: LiveState,
        projection: Projection,
        audit: AuditTrail,
        segment_cache: int = 256,
        part_cache: int = 1024,
        capacity: Capacity | None = None,
    ) -> None:
        self.ctx = ctx
        self.capacity = capacity
        self.guard = guard
        self.live = live
        self.projection = projection
        self.audit = audit
        self._store: ObjectStore | None = None
        self._known: set[str] = set()
        self._beats: dict[str, float] = {}
        self._segments: OrderedDict[str, bytes] = OrderedDict()
        self._segment_cache = segment_cache
        self._parts: OrderedDict[str, bytes] = OrderedDict()
        self._part_cache = part_cache
        self._fetching: dict[str, asyncio.Future[bytes | None]] = {}

    async def create(self, request: Request) -> Response:
        """``GET /create``."""
        if refused := self.guard.authorize(request, "mosaics") or self.guard.limit(
            self.guard.create_limit, request
        ):
            return refused
        try:
            config = parse_create(request, self.ctx.config.max_tiles)
        except BadRequest as exc:
            return _bad(str(exc))
        if self.capacity is not None:
            fp = fingerprint(config)
            full = self.capacity.refuse_mosaic(
                config, fp, name_rooms=self.guard.may_see_rooms(request)
            )
            if full and not await self.known(fp):
                return JSONResponse({"error": full}, status_code=503, headers={"Retry-After": "10"})
        fp = await self.record(request, config)
        return RedirectResponse(f"/play/{fp}/index.m3u8", status_code=302)

    async def record(self, request: Request, config: MosaicConfig, detail: str = "") -> str:
        """Mosaic ``config``'s fingerprint, once it is recorded: ``mosaic created`` appended
        once per fingerprint, ever (audited as ``mosaic-create``, with ``detail`` after the
        tile count), and a viewer heartbeat, so that its work starts now. What ``/create`` and
        ``POST /mosaics/<fp>/audio`` (:mod:`gateway.mosaic_audio`) do."""
        fp = fingerprint(config)
        if not await self.known(fp):
            event = created(config, fp, time.time())
            try:
                ack = await append(self.ctx.js, event, msg_id=f"mosaic-{fp}", expect_first=True)
                self.projection.appended(MOSAICS.name, fp, ack.seq)
                tiles = len(config.tiles)
                said = f"{tiles} tile{'s' if tiles != 1 else ''}"
                await self.audit.record(request, "mosaic-create", fp,
                                        f"{said}; {detail}" if detail else said)  # fmt: skip
            except AlreadyExists:
                # Recorded before (maybe a moment ago, by another gateway): its first event is
                # in any entry of it, whatever that event's sequence.
                self.projection.appended(MOSAICS.name, fp, 1)
            # What this gateway recorded it knows: /play answers at once, projected or not.
            self._known.add(fp)
        await self._viewer(fp, force=True)
        return fp

    async def known(self, fp: str) -> bool:
        """True if mosaic ``fp`` was created: recorded by this gateway, or projected."""
        if fp in self._known or fp in self.live.mosaics:
            return True
        if isinstance(await self.projection.read(MOSAICS.name, fp), MosaicState):
            self._known.add(fp)
            return True
        return False

    async def _viewer(self, fp: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._beats.get(fp, float("-inf")) < VIEWER_BEAT_EVERY:
            return
        self._beats[fp] = now
        beat = ViewerHeartbeat(at=time.time(), scope="mosaic", id=fp)
        await self.ctx.nc.publish(subjects.viewer_heartbeat("mosaic", fp), encode(beat))

    async def play(self, request: Request) -> Response:
        """``GET /play/<fp>/<name>``."""
        fp = request.path_params["fp"]
        name = request.path_params["name"]
        if not FP_RE.match(fp):
            return NOT_FOUND
        # The stream it plays: its own, or that of the earliest mosaic with its picture.
        out = self.live.output_of(fp)
        if name == "index.m3u8":
            return await self._playlist(fp, out, request)
        if SEGMENT_RE.match(name):
            return await self._segment(out, name)
        if parse_uri(name) is not None:
            return await self._media(out, name)
        return NOT_FOUND

    async def _playlist(self, fp: str, out: str, request: Request) -> Response:
        """Mosaic ``fp``'s playlist, that of stream ``out``."""
        live = self.live.manifests.get(out)
        # Most requests carry no query: parsing an empty one still costs a few microseconds.
        if live is not None and request.scope.get("query_string"):
            query = request.query_params
            decision = serving.decide_reload(
                live.state, query.get("_HLS_msn"), query.get("_HLS_part")
            )
            if isinstance(decision, serving.BadRequest):
                return _bad(decision.reason)
            if isinstance(decision, serving.Wait):
                await self._viewer(fp)
                if await self.live.wait_for(out, decision) is None:
                    return _unavailable(
                        f"segment {decision.msn} part {decision.part} did not come within "
                        f"{decision.timeout:g} s: the mosaic may be restarting"
                    )
        body = self.live.playlists.get(out)
        if body is None:
            if not await self.known(fp):
                return NOT_FOUND
            body = empty_playlist(self.ctx.config.segment_duration).encode()
        await self._viewer(fp)
        self.guard.identify(request)  # a token sent along names the viewer
        await self.audit.watched(request, "mosaic-watch", fp)
        return Response(body, media_type=PLAYLIST_TYPE, headers=PLAYLIST_HEADERS)

    async def _media(self, fp: str, name: str) -> Response:
        """A CMAF init section, part or whole segment."""
        live = self.live.manifests.get(fp)
        if live is None:
            return NOT_FOUND
        decision = serving.decide_media(live.state, name)
        if isinstance(decision, serving.Wait):
            # The part a preload hint names: held until it exists (or never will).
            live = await self.live.wait_for(fp, decision) or self.live.manifests.get(fp)
            if live is None:
                return NOT_FOUND
            decision = serving.decide_media(live.state, name)
            if isinstance(decision, serving.Wait):
                return _unavailable(f"{name} did not come in time: the mosaic may be restarting")
        if isinstance(decision, serving.NotFound):
            return NOT_FOUND
        chunks = []
        for uri in decision.uris:
            try:
                data = await self._media_bytes(fp, uri, live)
            except PartUnavailable:
                return _unavailable(f"{name} cannot be fetched now: NATS is not answering")
            if data is None:
                return NOT_FOUND  # listed, but the store lost it
            chunks.append(data)
        return Response(b"".join(chunks), media_type=CMAF_TYPE, headers=MEDIA_HEADERS)

    async def _media_bytes(self, fp: str, uri: str, live: LiveManifest) -> bytes | None:
        """An init section's bytes (from the manifest) or a part's (cached; fetched once from
        stream ``PARTS`` however many requests ask at the same time)."""
        if isinstance(parse_uri(uri), InitUri):
            return live.inits.get(uri)
        key = f"{fp}/{uri}"
        data = self._parts.get(key)
        if data is not None:
            self._parts.move_to_end(key)
            return data
        pending = self._fetching.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._fetching[key] = future
        try:
            data = await self._fetch_part(fp, uri)
            future.set_result(data)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._fetching[key]
        if data is not None:
            self._parts[key] = data
            while len(self._parts) > self._part_cache:
                self._parts.popitem(last=False)
        return data

    async def _fetch_part(self, fp: str, uri: str) -> bytes | None:
        try:
            msg = await self.ctx.js.get_last_msg(PARTS.name, subjects.part(fp, uri), direct=True)
        except NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise PartUnavailable(f"{uri}: {exc!r}") from exc
        return bytes(msg.data or b"")

    async def _segment(self, fp: str, name: str) -> Response:
        key = f"{fp}/{name}"
        data = self._segments.get(key)
        if data is None:
            if self._store is None:
                self._store = await self.ctx.js.object_store(SEGMENTS.name)
            try:
                result = await self._store.get(key)
            except (ObjectNotFoundError, NotFoundError):
                return NOT_FOUND
            data = result.data or b""
            self._segments[key] = data
            while len(self._segments) > self._segment_cache:
                self._segments.popitem(last=False)
        else:
            self._segments.move_to_end(key)
        headers = {"Cache-Control": "public, max-age=300, immutable"}
        return Response(data, media_type=SEGMENT_TYPE, headers=headers)
