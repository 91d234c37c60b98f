"""The browser pages of the gateway, and the small JSON helpers they call.

- ``/``: home: the mosaics and sessions, a form that makes a mosaic from a UrlDsl pattern
  (expanded as you type through ``/api/urldsl``) and one that starts a session.
- ``/view/<fp>``: the mosaic player, full window: WebRTC (WHEP to ``/play/<fp>/whep``) when
  it can, else Low-Latency HLS (hls.js, or the browser's own HLS); ``?via=webrtc`` or
  ``?via=hls`` forces one. A chip says which plays, another how far behind live; a mute
  button, and a Sound selector that goes to the sibling mosaic with another tile's sound
  (:mod:`gateway.mosaic_audio`).
- ``/session/<id>/view``: the review player: WebRTC to the session (WHEP), transport,
  frame-accurate seek, timecode, audio channels, editor keyboard shortcuts.
- ``/static/...``: the pages' HTML, CSS and ES modules (``gateway/web/``), as they are: no build.
- ``/vendor/hls.js``: a redirect to ``/vendor/hls.js/<version>/hls.min.js``, hls.js as the
  package ships it (``gateway/vendor/hls.js/``: copied from npm by ``just vendor``, the version
  ``package-lock.json`` pins), cached for good since its URL names its version. Only a broken
  install lacks it: then a 404 that says so, and the player falls back to native HLS.
- ``GET /api/urldsl?urls=P[&urls=P2...][&layout=grid|focus]``: the streams the patterns expand
  to, and the grid they would make (``{cols, rows, layout, tiles: [{x, y, w, h}]}``, each tile's
  place in cells, for the form's preview), or a 400 with the error, its column and a caret line.
- ``GET /api/mosaics``: every mosaic with its tile count, whether anyone watches it and how
  many alarms it shows now (``alarms``; :mod:`gateway.alarms`) (the admin's when play URLs are
  signed: the list names every mosaic).
- ``GET /api/audit?limit=N&who=W&action=A``: the newest entries of the audit trail (stream
  ``AUDIT``), newest first; ``GET /api/tokens``: the API tokens (names, scopes, dates; never a
  secret or a hash). Both need the ``admin`` scope where the install is closed.

The pages are static files: each reads its id from its own URL, so nothing is templated and
no user text is ever put into HTML on the server. The handlers here only check that the id is
well formed and known (else a 404 page), and add a strict Content-Security-Policy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

import urldsl
from gateway.alarms import Alarms
from gateway.context import GatewayContext
from gateway.guard import Guard
from gateway.mosaics import ALLOWED_SCHEMES
from gateway.projection import Projection
from gateway.sessions import SESSION_ID_RE
from gateway.signed import SignedUrls
from pipeline.access.tokens import LEGACY, SCOPES
from pipeline.control.read import read_bucket
from pipeline.errors import MessageError
from pipeline.messages.audit import AuditAction, AuditEntry, who_matches
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import ViewerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.topology import AUDIT, HEARTBEATS, MOSAICS, SESSIONS
from pipeline.state.layouts import Layout, LayoutChoiceError, canonical_layout, layout
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import FP_RE

WEB = Path(__file__).resolve().parent / "web"
"""The pages, their CSS and ES modules."""

HLS_JS_DIR = WEB.parent / "vendor" / "hls.js"
"""hls.js inside the package, beside its LICENSE and ``vendored.json`` (its version and the
sha256 of each file; ``just vendor`` writes all three, and a test keeps them equal to
``package-lock.json``). Outside ``web/`` so that ``/static`` does not serve it a second time,
uncached."""

log = logging.getLogger("tessera.gateway")

MAX_PATTERN = 8192
"""Characters of patterns ``/api/urldsl`` accepts (a hand-typed pattern is far shorter)."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    # hls.js feeds the video element through MediaSource (a blob: URL) and may transmux in
    # a worker made from a blob.
    "media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
"""For a URL that names its content's version: a new version is a new URL."""
MISSING_HLS_JS = (
    f"hls.js is missing from this Tessera install ({HLS_JS_DIR} lacks vendored.json or "
    "hls.min.js): reinstall Tessera (in a clone, `just vendor` puts the folder back); until "
    "then the mosaic page uses the browser's own HLS where it has one"
)


@dataclass(frozen=True)
class HlsJs:
    """The hls.js the package ships."""

    version: str
    path: Path

    @property
    def url(self) -> str:
        return f"/vendor/hls.js/{self.version}/hls.min.js"


def read_hls_js(directory: Path = HLS_JS_DIR) -> HlsJs | None:
    """hls.js in ``directory`` as its ``vendored.json`` names it; None when the install lacks
    it (a wheel built without its data files)."""
    path = directory / "hls.min.js"
    try:
        manifest = json.loads((directory / "vendored.json").read_text())
    except FileNotFoundError:
        return None
    return HlsJs(str(manifest["version"]), path) if path.is_file() else None


HLS_JS = read_hls_js()


class _WebFiles(StaticFiles):
    """``gateway/web`` with ``Cache-Control: no-cache``: a browser revalidates each file (a
    cheap 304 by ETag), so an upgraded gateway never runs with last version's modules."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _page(name: str, status: int = 200) -> Response:
    return FileResponse(WEB / name, status_code=status, headers=PAGE_HEADERS)


def _missing() -> Response:
    return _page("missing.html", 404)


class Pages:
    """The page and helper handlers over the gateway's shared clients."""

    def __init__(
        self,
        ctx: GatewayContext,
        projection: Projection,
        guard: Guard,
        signed: SignedUrls | None = None,
        alarms: Alarms | None = None,
    ) -> None:
        self.ctx = ctx
        self.projection = projection
        self.guard = guard
        self.signed = signed
        self.alarms = alarms

    # -- pages ----------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        """``GET /``."""
        return _page("index.html")

    async def view(self, request: Request) -> Response:
        """``GET /view/<fp>``: the mosaic player, for a known mosaic."""
        fp = request.path_params["fp"]
        if not FP_RE.match(fp) or await self.projection.read(MOSAICS.name, fp) is None:
            return _missing()
        return _page("view.html")

    async def review(self, request: Request) -> Response:
        """``GET /session/<id>/view``: the review player, for a known session (in any state:
        the page says when it has ended)."""
        sid = request.path_params["sid"]
        if not SESSION_ID_RE.match(sid) or await self.projection.read(SESSIONS.name, sid) is None:
            return _missing()
        return _page("review.html")

    async def hls_js(self, request: Request) -> Response:
        """``GET /vendor/hls.js``: to the shipped version's URL. The page asks here, so that
        it names no version and an upgrade changes nothing but the package."""
        if HLS_JS is None:
            return _no_hls_js()
        # Not cached: after an upgrade the next page load must reach the new version's URL.
        return RedirectResponse(HLS_JS.url, status_code=302, headers={"Cache-Control": "no-cache"})

    async def hls_js_file(self, request: Request) -> Response:
        """``GET /vendor/hls.js/<version>/hls.min.js``: the shipped hls.js, if that version."""
        if HLS_JS is None:
            return _no_hls_js()
        if request.path_params["version"] != HLS_JS.version:
            # The asked version is not echoed: this body is JavaScript.
            return Response(
                f"/* this gateway serves hls.js {HLS_JS.version}, at {HLS_JS.url} */\n",
                status_code=404,
                media_type="text/javascript",
            )
        return FileResponse(
            HLS_JS.path,
            media_type="text/javascript",
            headers={**IMMUTABLE, "X-Content-Type-Options": "nosniff"},
        )

    # -- helpers --------------------------------------------------------------------------------

    async def urldsl(self, request: Request) -> Response:
        """``GET /api/urldsl?urls=...``: expand patterns as ``/create`` would."""
        patterns = request.query_params.getlist("urls")
        if not patterns:
            return _expansion_error("urls is missing: give a UrlDsl pattern", None, "")
        if sum(len(p) for p in patterns) > MAX_PATTERN:
            return _expansion_error(f"the patterns are over {MAX_PATTERN} characters", None, "")
        max_tiles = self.ctx.config.max_tiles
        try:
            streams = urldsl.expand_all(patterns, max_streams=max_tiles)
        except urldsl.UrlDslError as exc:
            return _expansion_error(str(exc), exc.column, exc.caret(), exc.index)
        for stream in streams:
            scheme = urlsplit(stream.url).scheme.lower()
            if scheme not in ALLOWED_SCHEMES:
                # The scheme is where the pattern starts, whichever pattern made the URL.
                where = next((i for i, p in enumerate(patterns) if p.strip()), 0)
                pattern = patterns[where]
                return _expansion_error(
                    f"{stream.url!r} has scheme {scheme or 'none'!r}: "
                    f"use one of {', '.join(ALLOWED_SCHEMES)}",
                    1,
                    urldsl.UrlDslError("", column=1, pattern=pattern).caret(),
                    where if len(patterns) > 1 else None,
                )
        try:
            kind = canonical_layout(request.query_params.get("layout", ""))
        except LayoutChoiceError as exc:
            return _expansion_error(f"layout: {exc}", None, "")
        grid = layout(len(streams), 1280, 720, kind=kind)
        return JSONResponse(
            {
                "streams": [{"url": s.url, "name": s.name} for s in streams],
                "count": len(streams),
                "max": max_tiles,
                "grid": {
                    "cols": grid.cols,
                    "rows": grid.rows,
                    "layout": kind or "grid",
                    "tiles": _cells(grid),
                },
            }
        )

    async def mosaics(self, request: Request) -> Response:
        """``GET /api/mosaics``: every mosaic, newest first, with its viewers."""
        if self.guard.signed and (refused := self.guard.authorize(request, "admin")):
            return refused
        now = time.time()
        idle_after = self.ctx.config.idle_timeout
        items: list[dict[str, Any]] = []
        states = await read_bucket(self.ctx.js, MOSAICS.name)
        mosaics = [state for state in states.values() if isinstance(state, MosaicState)]
        shown = self.alarms.shown(mosaics, now) if self.alarms is not None else {}
        for state in mosaics:
            seen = await self._last_viewer(state.fp)
            watched = seen is not None and now - seen < idle_after
            items.append(
                {
                    "fp": state.fp,
                    "title": state.title,
                    "tiles": len(state.tiles),
                    "names": [t.name for t in state.tiles],
                    "width": state.width,
                    "height": state.height,
                    "fps": state.fps,
                    "created_at": state.created_at,
                    "last_viewer_at": seen,
                    "watched": watched,
                    "alarms": shown.get(state.fp, 0),
                    "view_url": self._link(request, f"/view/{state.fp}"),
                    "playlist_url": self._link(request, f"/play/{state.fp}/index.m3u8"),
                }
            )
        items.sort(key=lambda m: m["created_at"], reverse=True)
        return JSONResponse({"mosaics": items, "idle_timeout": idle_after, "now": now})

    def _link(self, request: Request, path: str) -> str:
        """``path``, signed for the admin asking (for ``--play-ttl``) while URLs are signed:
        the list hands out links that open."""
        if self.signed is None or not self.signed.enabled:
            return path
        viewer = getattr(request.state, "token_name", None) or ""
        return self.signed.sign(path, viewer)[0]

    async def audit(self, request: Request) -> Response:
        """``GET /api/audit``: the newest audit entries, newest first."""
        if refused := self.guard.authorize(request, "admin"):
            return refused
        query = request.query_params
        unknown = set(query) - {"limit", "who", "action"}
        if unknown:
            return _bad(f"unknown parameter {sorted(unknown)[0]!r}: use limit, who, action")
        raw = query.get("limit") or str(AUDIT_DEFAULT)
        if not raw.isdigit() or not 1 <= int(raw) <= AUDIT_MAX:
            return _bad(f"limit={raw!r}: a whole number from 1 to {AUDIT_MAX}")
        action = query.get("action") or None
        if action is not None and action not in AUDIT_ACTIONS:
            return _bad(f"action={action!r}: one of {', '.join(AUDIT_ACTIONS)}")
        who = query.get("who", "")
        if len(who) > 200:
            return _bad("who: at most 200 characters")
        try:
            found = await read_audit(self.ctx.js, limit=int(raw), who=who, action=action)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            log.warning("audit trail not readable", extra={"error": repr(exc)})
            return JSONResponse({"error": "cannot read the audit trail now: retry"},
                                status_code=503, headers={"Retry-After": "2"})  # fmt: skip
        return JSONResponse({
            "entries": [msgspec.to_builtins(e) for e in found.entries],
            "scanned": found.scanned,
            "complete": found.complete,
            "now": time.time(),
        })  # fmt: skip

    async def tokens(self, request: Request) -> Response:
        """``GET /api/tokens``: every API token: name, scopes, dates, rate; no secrets."""
        if refused := self.guard.authorize(request, "admin"):
            return refused
        records = self.guard.tokens.records if self.guard.tokens is not None else {}
        items: list[dict[str, Any]] = [
            {"name": r.name, "scopes": list(r.scopes), "created_at": r.created_at,
             "revoked_at": r.revoked_at, "rate": r.rate}
            for r in sorted(records.values(), key=lambda r: r.created_at, reverse=True)
        ]  # fmt: skip
        if self.guard.token is not None:
            items.append({"name": LEGACY, "scopes": list(SCOPES), "created_at": None,
                          "revoked_at": None, "rate": None})  # fmt: skip
        return JSONResponse({"tokens": items})

    async def _last_viewer(self, fp: str) -> float | None:
        try:
            msg = await self.ctx.js.get_last_msg(
                HEARTBEATS.name, subjects.viewer_heartbeat("mosaic", fp)
            )
            beat = decode_heartbeat(msg.data or b"")
        except (NotFoundError, MessageError):
            return None
        return beat.at if isinstance(beat, ViewerHeartbeat) else None


AUDIT_DEFAULT = 50
AUDIT_MAX = 500
"""Entries ``/api/audit`` answers at most."""
AUDIT_WINDOW = 1000
"""Entries read per step back through ``AUDIT``."""
AUDIT_SCAN = 20_000
"""Entries one ``/api/audit`` request reads at most (a rare ``who`` in a long trail answers
with fewer than asked, and ``complete: false``)."""
AUDIT_ACTIONS: tuple[str, ...] = get_args(AuditAction)
_audit_entries = msgspec.json.Decoder(AuditEntry)


@dataclass(frozen=True)
class AuditPage:
    """What :func:`read_audit` found."""

    entries: list[AuditEntry]
    """Newest first."""
    scanned: int
    """Entries of ``AUDIT`` looked at."""
    complete: bool
    """True if the whole trail was looked at (so fewer entries than asked means no more)."""


async def read_audit(
    js: JetStreamContext, *, limit: int, who: str = "", action: str | None = None
) -> AuditPage:
    """The newest ``limit`` entries of ``AUDIT`` (of ``action``, naming ``who``): read back from
    the end a window at a time, at most :data:`AUDIT_SCAN` entries."""
    info = await js.stream_info(AUDIT.name)
    first, end = info.state.first_seq, info.state.last_seq
    subject = subjects.audit(action) if action else subjects.AUDIT_ALL
    found: list[AuditEntry] = []
    scanned = 0
    if info.state.messages == 0:
        return AuditPage(found, 0, True)
    while end >= first and len(found) < limit and scanned < AUDIT_SCAN:
        start = max(first, end - AUDIT_WINDOW + 1)
        window = await _audit_window(js, subject, start, end)
        found += [e for e in reversed(window) if who_matches(e.who, who)]
        scanned += end - start + 1
        end = start - 1
    return AuditPage(found[:limit], scanned, end < first)


async def _audit_window(
    js: JetStreamContext, subject: str, start: int, end: int
) -> list[AuditEntry]:
    """The entries on ``subject`` from sequence ``start`` to ``end``, oldest first: an
    ephemeral pull consumer, which says how many match, so no fetch waits for more."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
        ack_policy=AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True,
    )  # fmt: skip
    sub = await js.pull_subscribe(subject, stream=AUDIT.name, config=config)
    entries: list[AuditEntry] = []
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0:
            msgs = await sub.fetch(min(pending, 256), timeout=5)
            for msg in msgs:
                pending -= 1
                if msg.metadata.sequence.stream > end:
                    return entries
                try:
                    entries.append(_audit_entries.decode(msg.data))
                except msgspec.DecodeError:
                    pass  # a newer Tessera's entry: `tessera events tail --audit` shows it
    finally:
        await sub.unsubscribe()
        # pull_subscribe named the consumer in `config`; left alone it would linger 30 s.
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await js.delete_consumer(AUDIT.name, str(config.name))
    return entries


def _bad(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


def _no_hls_js() -> Response:
    return Response(f"/* {MISSING_HLS_JS}. */\n", status_code=404, media_type="text/javascript")


def _cells(grid: Layout) -> list[dict[str, int]]:
    """Each tile's place in ``grid``, in cells: ``{x, y, w, h}``."""
    cell_w, cell_h = grid.area.w // grid.cols, grid.area.h // grid.rows
    return [
        {
            "x": (r.x - grid.area.x) // cell_w,
            "y": (r.y - grid.area.y) // cell_h,
            "w": r.w // cell_w,
            "h": r.h // cell_h,
        }
        for r in grid.rects
    ]


def _expansion_error(
    message: str, column: int | None, caret: str, index: int | None = None
) -> JSONResponse:
    body = {"error": message, "column": column, "caret": caret, "pattern": index}
    return JSONResponse(body, status_code=400)


def routes(
    ctx: GatewayContext,
    projection: Projection,
    guard: Guard,
    signed: SignedUrls | None = None,
    alarms: Alarms | None = None,
) -> list[BaseRoute]:
    """The pages' routes, for :func:`gateway.app.create_app`."""
    pages = Pages(ctx, projection, guard, signed, alarms)
    if HLS_JS is None:
        log.warning(MISSING_HLS_JS)
    return [
        Route("/", pages.home, methods=["GET"]),
        Route("/view/{fp}", pages.view, methods=["GET"]),
        Route("/session/{sid}/view", pages.review, methods=["GET"]),
        Route("/api/urldsl", pages.urldsl, methods=["GET"]),
        Route("/api/mosaics", pages.mosaics, methods=["GET"]),
        Route("/api/audit", pages.audit, methods=["GET"]),
        Route("/api/tokens", pages.tokens, methods=["GET"]),
        Route("/vendor/hls.js", pages.hls_js, methods=["GET"]),
        Route("/vendor/hls.js/{version}/hls.min.js", pages.hls_js_file, methods=["GET"]),
        Mount("/static", app=_WebFiles(directory=WEB), name="static"),
    ]


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of :func:`routes` (``/static`` is a mount, not an API)."""
    html = {"200": {"description": "The page", "content": {"text/html": {"schema": {}}}}}
    missing = {"404": {"description": "No such mosaic or session (a page saying so)"}}
    text = {"type": "string"}
    hex32 = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
    refused = {"401": {"description": "No token, or an unknown or revoked one"},
               "403": {"description": "The token lacks the scope (code: scope)"}}  # fmt: skip
    return {
        "/": {"get": {"summary": "Home page: mosaics, sessions, create forms",
                      "responses": html}},
        "/view/{fp}": {"get": {
            "summary": "Mosaic player page",
            "parameters": [{"name": "fp", "in": "path", "required": True, "schema": hex32}],
            "responses": {**html, **missing}}},
        "/session/{sid}/view": {"get": {
            "summary": "Review player page of a JIT session",
            "parameters": [{"name": "sid", "in": "path", "required": True, "schema": hex32}],
            "responses": {**html, **missing}}},
        "/vendor/hls.js": {"get": {
            "summary": "hls.js as the package ships it: a redirect to its version's URL",
            "responses": {"302": {"description": "To /vendor/hls.js/<version>/hls.min.js"},
                          "404": {"description": "Missing from a broken install (JavaScript "
                                                 "comment saying so)"}}}},
        "/vendor/hls.js/{version}/hls.min.js": {"get": {
            "summary": "hls.js, minified, cached for good (the URL names the version)",
            "parameters": [{"name": "version", "in": "path", "required": True, "schema": text}],
            "responses": {"200": {"description": "JavaScript",
                                  "content": {"text/javascript": {"schema": text}}},
                          "404": {"description": "Not the version this gateway serves, or a "
                                                 "broken install"}}}},
        "/api/urldsl": {"get": {
            "summary": "Expand UrlDsl patterns as /create would",
            "parameters": [{"name": "urls", "in": "query", "required": True,
                            "schema": {"type": "array", "items": text}, "style": "form",
                            "explode": True}],
            "responses": {
                "200": {"description": "streams [{url, name}], count, max, grid {cols, rows}"},
                "400": {"description": "error, column, caret, pattern (index when several)"}}}},
        "/api/mosaics": {"get": {
            "summary": "Every mosaic, newest first, with its last viewer, watched/idle and "
                       "the alarms it shows now (admin scope when play URLs are signed)",
            "responses": {"200": {"description": "mosaics [...], idle_timeout, now"},
                          **refused}}},
        "/api/audit": {"get": {
            "summary": "The newest audit entries, newest first (admin scope)",
            "parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                 "maximum": AUDIT_MAX, "default": AUDIT_DEFAULT}},
                {"name": "who", "in": "query", "schema": text,
                 "description": "token:<name>, viewer:<name>, cli:<user>, url, anonymous, or "
                                "a bare name (any kind)"},
                {"name": "action", "in": "query",
                 "schema": {"type": "string", "enum": list(AUDIT_ACTIONS)}}],
            "responses": {
                "200": {"description": "entries [{at, action, who, target, client, detail}] "
                                       "newest first, scanned, complete, now"},
                "400": {"description": "A bad parameter, named"},
                **refused,
                "503": {"description": "NATS cannot be read now; see Retry-After"}}}},
        "/api/tokens": {"get": {
            "summary": "Every API token: name, scopes, created_at, revoked_at, rate; never a "
                       "secret or hash (admin scope)",
            "responses": {"200": {"description": "tokens [...]"}, **refused}}},
    }  # fmt: skip
