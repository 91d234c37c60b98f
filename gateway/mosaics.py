"""``GET /create`` and ``GET /play/<fp>/...``: making and serving mosaics.

- ``/create?urls=<UrlDsl>[&urls=...][&size=WxH][&fps=N][&cols=N][&title=T]`` expands the
  patterns, canonicalises and fingerprints the config, records ``mosaic created`` once per
  fingerprint, counts as a viewer, and answers ``302`` to the playlist. Bad input: ``400`` with
  one line naming the parameter.
- ``/play/<fp>/index.m3u8`` serves the live playlist from KV ``manifests`` — or, for a known
  mosaic whose work is still starting, a valid empty live playlist — and each request is a
  viewer heartbeat (throttled). ``/play/<fp>/<seq>.ts`` serves a segment from the object store.
  Anything else under ``/play`` (unknown or malformed fingerprint, bad file name, missing
  segment) is the same ``404``, so the route reveals nothing and opens nothing.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

import urldsl
from gateway.context import GatewayContext
from gateway.guard import Guard
from gateway.livestate import LiveState
from gateway.projection import Projection
from pipeline.messages.codec import encode
from pipeline.messages.events import MosaicCreated, Tile
from pipeline.messages.heartbeats import ViewerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.eventlog import AlreadyExists, append
from pipeline.nats.topology import MOSAICS, SEGMENTS
from pipeline.segments.playlist import empty_playlist
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import FP_RE, MAX_SIDE, MIN_SIDE, MosaicConfig, fingerprint, layout

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
SEGMENT_RE = re.compile(r"^(0|[1-9][0-9]{0,11})\.ts$")
SIZE_RE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")
ALLOWED_SCHEMES = ("http", "https", "rtmp", "rtmps", "rtsp")
VIEWER_BEAT_EVERY = 1.0
NOT_FOUND = JSONResponse({"error": "not found"}, status_code=404)
PLAYLIST_HEADERS = {"Cache-Control": "no-cache"}


class BadRequest(Exception):
    """A one-line reason for a 400."""


def _bad(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


def _int_param(request: Request, name: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name}={raw!r}: must be a whole number from {low} to {high}")
    return int(raw)


def parse_create(request: Request, max_tiles: int) -> MosaicConfig:
    """The mosaic config a /create request asks for, or BadRequest."""
    unknown = set(request.query_params) - {"urls", "size", "fps", "cols", "title"}
    if unknown:
        raise BadRequest(
            f"unknown parameter {sorted(unknown)[0]!r}: use urls, size, fps, cols, title"
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
    title = request.query_params.get("title", "")
    if len(title) > 200:
        raise BadRequest("title: at most 200 characters")
    tiles = tuple(Tile(url=s.url, name=s.name) for s in streams)
    try:
        layout(len(tiles), width, height, cols)
    except ValueError as exc:
        raise BadRequest(f"size={width}x{height}: {exc}") from exc
    return MosaicConfig(tiles=tiles, width=width, height=height, fps=fps, cols=cols, title=title)


class Mosaics:
    """The mosaic routes with their small caches (known fingerprints, segments)."""

    def __init__(
        self,
        ctx: GatewayContext,
        guard: Guard,
        live: LiveState,
        projection: Projection,
        segment_cache: int = 256,
    ) -> None:
        self.ctx = ctx
        self.guard = guard
        self.live = live
        self.projection = projection
        self._store: ObjectStore | None = None
        self._known: set[str] = set()
        self._beats: dict[str, float] = {}
        self._segments: OrderedDict[str, bytes] = OrderedDict()
        self._segment_cache = segment_cache

    async def create(self, request: Request) -> Response:
        """``GET /create``."""
        if refused := self.guard.limit(self.guard.create_limit, request):
            return refused
        try:
            config = parse_create(request, self.ctx.config.max_tiles)
        except BadRequest as exc:
            return _bad(str(exc))
        fp = fingerprint(config)
        if not await self.known(fp):
            event = MosaicCreated(
                at=time.time(),
                fp=fp,
                tiles=config.tiles,
                width=config.width,
                height=config.height,
                fps=config.fps,
                cols=config.cols,
                title=config.title,
            )
            try:
                ack = await append(self.ctx.js, event, msg_id=f"mosaic-{fp}", expect_first=True)
                self.projection.appended(MOSAICS.name, fp, ack.seq)
            except AlreadyExists:
                # Recorded before (maybe a moment ago, by another gateway): its first event is
                # in any entry of it, whatever that event's sequence.
                self.projection.appended(MOSAICS.name, fp, 1)
            # What this gateway recorded it knows: /play answers at once, projected or not.
            self._known.add(fp)
        await self._viewer(fp, force=True)
        return RedirectResponse(f"/play/{fp}/index.m3u8", status_code=302)

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
        if name == "index.m3u8":
            return await self._playlist(fp)
        if SEGMENT_RE.match(name):
            return await self._segment(fp, name)
        return NOT_FOUND

    async def _playlist(self, fp: str) -> Response:
        body = self.live.playlists.get(fp)
        if body is None:
            if not await self.known(fp):
                return NOT_FOUND
            body = empty_playlist(self.ctx.config.segment_duration).encode()
        await self._viewer(fp)
        return Response(body, media_type=PLAYLIST_TYPE, headers=PLAYLIST_HEADERS)

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
