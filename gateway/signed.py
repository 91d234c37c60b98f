"""Signed play and review URLs at the gateway (:mod:`pipeline.access.signing` has the token).

Off unless ``--play-secret`` / ``TESSERA_PLAY_SECRET`` is set: then ``/s/...`` is a 404 like any
unknown path, and mosaics play for whoever has their URL, as they always did. On:

- **Unsigned** requests for a mosaic (anything under ``/play/``, ``/view/...``) are ``403``
  with one line, before anything is looked up: the answer is the same for a mosaic that exists
  and one that does not.
- ``/s/<token><path>`` is ``<path>`` once the token opens the scope ``<path>`` names
  (``mosaic:<fp>`` or ``session:<sid>``), so the playlist's relative URIs carry the token by
  themselves, and a ``Location`` the route answers within that scope (a WHEP viewer's) gets the
  prefix back. A token that does not open it (missing, malformed, bad signature, expired,
  revoked): ``403`` with its reason, the same for every mosaic. A session's token (a review
  link) lets its viewer read the session, open its page, watch it (WHEP) and control it; not
  delete it. Anything else under ``/s/``: ``403``.
- A request a token opened names its viewer for the audit trail (``request.state.viewer``;
  :func:`gateway.who.who`) and its prefix (:func:`prefix`), so a session read through a review
  link answers with URLs that carry it.
- ``/create`` answers with a URL signed for its creator (the API token's name, if one was
  given) for ``--play-ttl`` seconds; so does ``POST /mosaics/<fp>/audio`` (the sibling's page
  and playlist).
- ``POST /api/sign`` and ``POST /api/revocations`` (the admin's) sign a URL and revoke a
  viewer name; both are audited. Revoked names live in KV ``revoked`` (``sha256(name)[:32]``
  → ``{"viewer", "at"}``), which the gateway follows with a watch and keeps in memory: a check
  is a dictionary lookup and an HMAC, no NATS round trip.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats.errors
from nats.js import JetStreamContext
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.audit import AuditTrail
from gateway.guard import Guard
from gateway.session_request import RequestError
from pipeline.access import signing
from pipeline.access.signing import Granted, Refused, SigningError
from pipeline.config.settings import Config
from pipeline.nats.follow import KvFollower
from pipeline.nats.topology import REVOKED

GRANTS_KEPT = 10_000
"""Verified tokens remembered (a few hundred bytes each)."""

log = logging.getLogger("tessera.gateway")

OFF = "signed URLs are off: start the gateway with --play-secret (TESSERA_PLAY_SECRET)"
NOT_SIGNABLE = "a signed URL opens only its mosaic (/play, /view) or its session"
WATCH_ONLY = "a signed URL lets its viewer watch (a session: and control it), nothing more"
MAX_BODY = 4096
_MOSAIC_ONLY = ("/play/", "/view/")
_HEX32 = r"[0-9a-f]{32}"
_REVIEW_ROUTES = (
    (frozenset({"GET", "HEAD"}), re.compile(rf"^/session/{_HEX32}(/view)?$")),
    (frozenset({"POST"}), re.compile(rf"^/session/{_HEX32}/(whep|control)$")),
    (frozenset({"DELETE"}), re.compile(rf"^/session/{_HEX32}/whep/[A-Za-z0-9_-]{{1,64}}$")),
)


def opens(scope: str, method: str, path: str) -> bool:
    """Whether a token for ``scope`` (already checked to be ``path``'s) lets ``method`` on
    ``path`` through: everything a viewer of a mosaic does; for a session, what reviewing is."""
    if scope.startswith("mosaic:"):
        return path.startswith("/play/") or method in ("GET", "HEAD")
    return any(method in methods and rule.match(path) for methods, rule in _REVIEW_ROUTES)


def prefix(request: Request) -> str:
    """``/s/<token>`` when a signed URL opened the request, else ``""``."""
    return str(getattr(request.state, "signed_prefix", ""))


def via_signed_url(request: Request) -> bool:
    """True when a signed URL opened the request (for the scope its path names)."""
    return bool(prefix(request))


def _forbidden(reason: str) -> JSONResponse:
    # No-store: a refusal must not be cached in place of the answer a new URL gets.
    return JSONResponse({"error": reason}, status_code=403, headers={"Cache-Control": "no-store"})


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


class RevokedViewers:
    """Viewer name → when it was revoked: KV ``revoked``, loaded at start and then followed
    (:class:`~pipeline.nats.follow.KvFollower`; a replaced bucket is watched again). What was seen
    revoked stays revoked here, even if the bucket is lost: deleting a revocation never lets
    a URL through again."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._at: dict[str, float] = {}
        self._follower = KvFollower(
            js, REVOKED, load=self._load, apply=lambda _, value: self._apply(value),
            missing="revocations seen before stay in force; new ones wait for it",
        )  # fmt: skip

    def revoked_at(self, viewer: str) -> float | None:
        """When ``viewer`` was last revoked (Unix seconds), or None."""
        return self._at.get(viewer)

    async def start(self) -> None:
        """Load every revocation, then follow new ones in the background."""
        await self._follower.start()

    def _load(self, snapshot: dict[str, bytes]) -> None:
        for value in snapshot.values():
            self._apply(value)

    def _apply(self, value: bytes | None) -> None:
        if not value:
            return  # a deleted key: revocations are never taken back by deleting them here
        try:
            revocation = signing.read_revocation(value)
        except SigningError as exc:
            log.warning("unreadable revocation ignored", extra={"error": str(exc)})
            return
        self.note(revocation.viewer, revocation.at)

    def note(self, viewer: str, at: float) -> None:
        """Take ``viewer`` as revoked at ``at`` (the newest revocation wins)."""
        self._at[viewer] = max(at, self._at.get(viewer, at))

    async def revoke(self, viewer: str, at: float) -> None:
        """Store a revocation (and hold it here at once, before the watch brings it back)."""
        kv = await self._js.key_value(REVOKED.name)
        key, value = signing.revocation_entry(viewer, at)
        await kv.put(key, value)
        self.note(viewer, at)

    async def stop(self) -> None:
        """Stop following. Safe twice."""
        await self._follower.stop()


class SignedUrls:
    """Checking, making and revoking signed URLs: the gateway's side of
    :mod:`pipeline.access.signing`."""

    def __init__(
        self, config: Config, js: JetStreamContext, guard: Guard, audit: AuditTrail
    ) -> None:
        self.secrets = signing.parse_secrets(config.play_secret)
        self.ttl = config.play_ttl
        self.guard = guard
        self.audit = audit
        self.revoked = RevokedViewers(js)
        self._granted: OrderedDict[tuple[str, str], Granted] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """True when URLs are signed (``--play-secret`` set)."""
        return bool(self.secrets)

    async def start(self) -> None:
        if self.enabled:
            await self.revoked.start()

    async def stop(self) -> None:
        await self.revoked.stop()

    def check(self, scope: str, token: str) -> signing.Verdict:
        """What ``token`` opens of ``scope`` now.

        A token whose signature checked out is remembered (bounded, least recently used out
        first): a player asks five times a second with the same one, and the HMACs were most
        of what signing cost per request. Expiry and revocation are checked on every request
        all the same, from the remembered grant; refusals are never remembered."""
        now = time.time()
        key = (scope, token)
        granted = self._granted.get(key)
        if granted is None:
            verdict = signing.verify(self.secrets, scope, token, now, self.revoked.revoked_at)
            if isinstance(verdict, Granted):
                self._granted[key] = verdict
                if len(self._granted) > GRANTS_KEPT:
                    self._granted.popitem(last=False)
            return verdict
        self._granted.move_to_end(key)
        if now >= granted.expires_at:
            del self._granted[key]
            return Refused(signing.EXPIRED)
        at = self.revoked.revoked_at(granted.viewer)
        if at is not None and granted.issued_at <= at:
            del self._granted[key]
            return Refused(signing.REVOKED)
        return granted

    def sign(self, path: str, viewer: str = "", ttl: float | None = None) -> tuple[str, int]:
        """``(/s/<token><path>, expires_at)``; SigningError for a path that opens nothing."""
        ttl = self.ttl if ttl is None else ttl
        return signing.signed_path(self.secrets[0], path, ttl, viewer, time.time())

    # -- what the gateway signs itself -------------------------------------------------------

    def redirects(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[
        [Request], Awaitable[Response]
    ]:  # fmt: skip
        """``handler`` (``/create``) with its redirect to a mosaic signed for the creator."""

        async def signing_handler(request: Request) -> Response:
            response = await handler(request)
            location = response.headers.get("location", "")
            if self.enabled and response.status_code in (302, 303, 307) and location:
                response.headers["location"] = self.for_caller(request, location)
            return response

        return signing_handler

    def for_caller(self, request: Request, path: str) -> str:
        """``/s/<token><path>`` for ``--play-ttl``, naming as its viewer the API token the
        request came with (the creator of a mosaic: ``/create``, ``POST /mosaics/<fp>/audio``)."""
        name = str(getattr(request.state, "token_name", None) or "")
        try:
            viewer = signing.check_viewer(name)
        except SigningError:
            viewer = ""  # a token name no URL can carry: the URL names nobody
        return self.sign(path, viewer)[0]

    async def review_link(self, request: Request, sid: str, link: ReviewLink) -> str:
        """The prefix of a review link to session ``sid`` (audited)."""
        path, expires = self.sign(f"/session/{sid}/view", link.viewer, link.ttl)
        await self.audit.record(request, "url-sign", f"session:{sid}",
                                _detail(link.viewer, expires))  # fmt: skip
        return path.removesuffix(f"/session/{sid}/view")

    # -- the API -----------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/sign", self.sign_api, methods=["POST"]),
            Route("/api/revocations", self.revoke_api, methods=["POST"]),
        ]

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        if refused := self.guard.authorize(request, "admin"):
            return refused
        if not self.enabled:
            return _error(400, OFF)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"the body is over {MAX_BODY} bytes")
        try:
            doc = json.loads(body)
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(doc, dict):
            return _error(400, "the body must be a JSON object")
        return doc

    async def sign_api(self, request: Request) -> Response:
        """``POST /api/sign`` ``{"path", "ttl"?, "viewer"?}`` → ``{"url", "path",
        "expires_at"}``."""
        doc = await self._body(request)
        if isinstance(doc, Response):
            return doc
        unknown = set(doc) - {"path", "ttl", "viewer"}
        if unknown:
            return _error(400, f"unknown field {sorted(unknown)[0]!r}: use path, ttl, viewer")
        given = doc.get("path")
        if not isinstance(given, str) or not given:
            return _error(400, "path: give the URL or path to sign, e.g. /view/<fp>")
        try:
            ttl = signing.parse_ttl(doc["ttl"]) if doc.get("ttl") is not None else None
            viewer = signing.check_viewer(doc.get("viewer", ""))
            url, expires = sign_url(self, given, viewer, ttl, str(request.base_url))
        except SigningError as exc:
            return _error(400, str(exc))
        path = urlsplit(url).path
        scope = signing.scope_of(signing.unsigned(path)) or ""
        await self.audit.record(request, "url-sign", scope, _detail(viewer, expires))
        return JSONResponse({"url": url, "path": path, "expires_at": expires})

    async def revoke_api(self, request: Request) -> Response:
        """``POST /api/revocations`` ``{"viewer"}`` → ``201``: every URL made for that viewer
        until now is refused."""
        doc = await self._body(request)
        if isinstance(doc, Response):
            return doc
        unknown = set(doc) - {"viewer"}
        if unknown:
            return _error(400, f"unknown field {sorted(unknown)[0]!r}: use viewer")
        try:
            viewer = signing.check_viewer(doc.get("viewer"))
        except SigningError as exc:
            return _error(400, str(exc))
        if not viewer:
            return _error(400, "viewer: give the name whose URLs to revoke")
        at = time.time()
        try:
            await self.revoked.revoke(viewer, at)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            log.error("revocation not stored", extra={"viewer": viewer, "error": repr(exc)})
            return JSONResponse(
                {"error": "cannot store the revocation now: retry"},
                status_code=503, headers={"Retry-After": "2"},
            )  # fmt: skip
        await self.audit.record(request, "viewer-revoke", viewer)
        return JSONResponse({"viewer": viewer, "revoked_at": at}, status_code=201)


def _detail(viewer: str, expires: int) -> str:
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    return f"for {viewer!r} until {until}" if viewer else f"until {until}"


def sign_url(
    urls: SignedUrls, given: str, viewer: str, ttl: float | None, base: str
) -> tuple[str, int]:
    """A full URL signed: ``given`` (a URL, whose scheme, host and query are kept, or a path
    on ``base``)."""
    parts = urlsplit(given)
    path, expires = urls.sign(parts.path, viewer, ttl)
    if parts.scheme and parts.netloc:
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")), expires
    query = f"?{parts.query}" if parts.query else ""
    return base.rstrip("/") + path + query, expires


# -- review links ------------------------------------------------------------------------------


class ReviewLink:
    """``"link": {"viewer": "client", "ttl": "8h"}`` of a ``POST /session``."""

    __slots__ = ("ttl", "viewer")

    def __init__(self, viewer: str, ttl: float | None) -> None:
        self.viewer = viewer
        self.ttl = ttl


def split_link(body: bytes) -> tuple[bytes, ReviewLink | None]:
    """A ``POST /session`` body without its ``link``, and the link it asked for (None: none);
    RequestError naming a bad one. A body that is no JSON object is left to the session
    request's own checks."""
    if b'"link"' not in body:
        return body, None
    try:
        doc = json.loads(body)
    except ValueError:
        return body, None
    if not isinstance(doc, dict) or "link" not in doc:
        return body, None
    link = doc.pop("link")
    if not isinstance(link, dict):
        raise RequestError('link: an object, e.g. {"viewer": "client", "ttl": "8h"}')
    unknown = set(link) - {"viewer", "ttl"}
    if unknown:
        raise RequestError(f"unknown field 'link.{sorted(unknown)[0]}': use viewer, ttl")
    try:
        viewer = signing.check_viewer(link.get("viewer", ""))
        ttl = signing.parse_ttl(link["ttl"]) if link.get("ttl") is not None else None
    except SigningError as exc:
        raise RequestError(f"link.{exc}") from exc
    return json.dumps(doc).encode(), ReviewLink(viewer, ttl)


# -- the middleware ----------------------------------------------------------------------------


class SignedPrefix:
    """ASGI middleware: refuses unsigned mosaic requests and opens ``/s/<token>/...`` (see the
    module docstring). Pure ASGI (no request object) on the hot path: a playlist request costs
    a prefix test, a regex, an HMAC and a dictionary lookup."""

    def __init__(self, app: ASGIApp, urls: SignedUrls) -> None:
        self.app = app
        self.urls = urls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.urls.enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(signing.PREFIX):
            await self._signed(scope, receive, send, path)
        elif path.startswith(_MOSAIC_ONLY):
            await _forbidden(signing.MISSING)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _signed(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        split = signing.split_signed(path)
        opened = signing.scope_of(split[1]) if split is not None else None
        if split is None or opened is None:
            await _forbidden(NOT_SIGNABLE)(scope, receive, send)
            return
        token, rest = split
        verdict = self.urls.check(opened, token)
        if isinstance(verdict, Refused):
            await _forbidden(verdict.reason)(scope, receive, send)
            return
        if not opens(opened, scope["method"], rest):
            await _forbidden(WATCH_ONLY)(scope, receive, send)
            return
        assert isinstance(verdict, Granted)
        head = signing.PREFIX + token
        # In place, not a copy: the metrics middleware outside reads the route matched here.
        scope["path"] = rest
        raw = scope.get("raw_path")
        if isinstance(raw, bytes) and raw.startswith(head.encode()):
            scope["raw_path"] = raw[len(head) :]
        state = scope.setdefault("state", {})
        state["viewer"] = verdict.viewer
        state["signed_prefix"] = head
        state["signed_scope"] = opened
        if scope["method"] in ("GET", "HEAD"):
            # Only a WHEP offer (a POST) answers with a Location to put the prefix on.
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, _prefixed(v, head, opened) if k.lower() == b"location" else v)
                    for k, v in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, sending)


def _prefixed(location: bytes, head: str, opened: str) -> bytes:
    """A ``Location`` within the opened scope with the signed prefix; others as they are."""
    text = location.decode("latin-1")
    if text.startswith("/") and signing.scope_of(text) == opened:
        return (head + text).encode("latin-1")
    return location


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of :meth:`SignedUrls.routes`."""
    error = {
        "description": "One line: what is wrong",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
            }
        },
    }
    ttl = {
        "oneOf": [
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?[smhd]?$"},
        ],
        "description": "seconds, or e.g. 30m, 8h, 7d (default: --play-ttl)",
    }
    viewer = {
        "type": "string",
        "maxLength": signing.MAX_VIEWER,
        "description": "who the URL is for (the audit trail names them; revocable)",
    }

    def body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": required,
                        "additionalProperties": False,
                    }
                }
            },
        }

    return {
        "/api/sign": {"post": {
            "summary": "Sign a mosaic or review URL (/play/<fp>/index.m3u8, /view/<fp>, "
                       "/session/<sid>/view) for a viewer and a time: /s/<token>/<path>",
            "requestBody": body({"path": {"type": "string"}, "ttl": ttl, "viewer": viewer},
                                ["path"]),
            "responses": {
                "200": {"description": "url, path, expires_at (Unix seconds)"},
                "400": error, "401": error}}},
        "/api/revocations": {"post": {
            "summary": "Revoke a viewer name: every URL signed for it until now is refused",
            "requestBody": body({"viewer": viewer}, ["viewer"]),
            "responses": {"201": {"description": "viewer, revoked_at"},
                          "400": error, "401": error, "503": error}}},
    }  # fmt: skip
