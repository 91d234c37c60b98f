"""``POST /mosaics/<fp>/audio``: the same mosaic with another tile's sound.

Whose sound a mosaic carries is part of what the mosaic is (``audio=`` of ``/create``, in the
fingerprint), so switching it does not change a running mosaic: it makes a *sibling*, the
mosaic ``/create`` would make from the same query with another ``audio=``. The sibling shares
the first one's grabbers (a source's pull depends on its URL and tile size, not on the sound),
so it costs one more stitcher while both are watched; the first one parks like any mosaic
nobody watches. Every viewer of a mosaic hears the same thing, and a URL always plays what it
played before.

- The body is ``{"tile": T}``: a 0-based tile index (a JSON number), or a string as ``audio=``
  takes it (an index, a tile name, ``auto`` for the first tile with audio, ``off``). At most
  :data:`MAX_BODY` bytes.
- The sibling is recorded as ``/create`` records a mosaic (:meth:`gateway.mosaics.Mosaics.record`:
  ``mosaic created`` once per fingerprint, audited as ``mosaic-create``, and a viewer heartbeat,
  so that its stitcher starts before the page that asked comes to watch). Asking for the sound
  the mosaic has already answers the mosaic itself.
- ``200`` ``{"fp", "view", "playlist", "audio"}``: the sibling's fingerprint, its page and
  playlist (signed for the caller's token when play URLs are signed, as ``/create``'s redirect
  is) and its canonical ``audio=`` (``""``: auto). ``400`` with one line for a bad body or a
  tile that does not exist; ``404`` ``{"error": "not found"}`` for an unknown or malformed
  fingerprint; ``413`` for a body over the limit.
- Who may: whoever may ``/create`` (:mod:`gateway.guard`: anyone, or a token with the
  ``mosaics`` scope where play URLs are signed), at ``/create``'s rate. A signed play URL never
  opens this route (it lets its viewer watch, nothing more), so the viewer page of a shared link
  offers no switch unless its browser keeps an API token.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.guard import Guard
from gateway.mosaics import NOT_FOUND, BadRequest, Mosaics
from gateway.projection import Projection
from gateway.sessions import BodyTooLarge, read_body
from gateway.signed import SignedUrls
from pipeline.messages.events import Tile
from pipeline.nats.topology import MOSAICS
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import (
    FP_RE,
    AudioChoiceError,
    MosaicConfig,
    canonical_audio,
    config_of,
)

MAX_BODY = 1024
"""Bytes of body the route reads (``{"tile": "a tile name"}`` is far shorter)."""

_ASK = 'send {"tile": 2}, {"tile": "auto"} or {"tile": "off"}'


def parse_choice(body: bytes) -> int | str:
    """The ``tile`` a body asks for: an index (int) or ``audio=`` text; else BadRequest."""
    try:
        doc = json.loads(body)
    except ValueError as exc:  # a JSONDecodeError, or bytes that are not UTF-8
        raise BadRequest(f"the body is not JSON: {_ASK}") from exc
    if not isinstance(doc, dict):
        raise BadRequest(f"the body must be a JSON object: {_ASK}")
    unknown = set(doc) - {"tile"}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}: use tile")
    if "tile" not in doc:
        raise BadRequest("tile is missing: give a 0-based tile index, a tile name, auto or off")
    tile = doc["tile"]
    if isinstance(tile, bool) or not isinstance(tile, int | str):
        raise BadRequest(
            f"tile: {json.dumps(tile)[:80]} is not a tile: give a 0-based tile index, "
            "a tile name, auto or off"
        )
    return tile


def choose(asked: int | str, tiles: tuple[Tile, ...]) -> str:
    """The canonical ``audio=`` of ``asked`` among ``tiles``; BadRequest naming what would do."""
    if isinstance(asked, int) and asked < 0:
        raise BadRequest(
            f"tile {asked} does not exist: give a tile index from 0 to {len(tiles) - 1}, "
            "a tile name, auto or off"
        )
    try:
        return canonical_audio(str(asked), tiles)
    except AudioChoiceError as exc:
        raise BadRequest(str(exc)) from exc


def sibling(mosaic: MosaicState, audio: str) -> MosaicConfig:
    """The config of ``mosaic`` with the canonical ``audio``: what ``/create`` with the same
    query and that ``audio=`` would make."""
    return msgspec.structs.replace(config_of(mosaic), audio=audio)


def _bad(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


class MosaicAudio:
    """The route, over the mosaic routes that record mosaics."""

    def __init__(
        self,
        guard: Guard,
        mosaics: Mosaics,
        projection: Projection,
        signed: SignedUrls | None = None,
    ) -> None:
        self.guard = guard
        self.mosaics = mosaics
        self.projection = projection
        self.signed = signed

    async def switch(self, request: Request) -> Response:
        """``POST /mosaics/<fp>/audio``."""
        if refused := self.guard.authorize(request, "mosaics") or self.guard.limit(
            self.guard.create_limit, request
        ):
            return refused
        fp = request.path_params["fp"]
        if not FP_RE.match(fp):
            return NOT_FOUND
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge:
            return JSONResponse({"error": f"the body is over {MAX_BODY} bytes"}, status_code=413)
        mosaic = await self.projection.read(MOSAICS.name, fp)
        if not isinstance(mosaic, MosaicState):
            return NOT_FOUND
        try:
            audio = choose(parse_choice(body), mosaic.tiles)
        except BadRequest as exc:
            return _bad(str(exc))
        # The sound it has: the mosaic itself (recorded already; the heartbeat still counts).
        detail = "" if audio == mosaic.audio else f"audio={audio or 'auto'}, a sibling of {fp}"
        new = await self.mosaics.record(request, sibling(mosaic, audio), detail)
        view, playlist = self._links(request, new)
        return JSONResponse({"fp": new, "view": view, "playlist": playlist, "audio": audio})

    def _links(self, request: Request, fp: str) -> tuple[str, str]:
        """The page and playlist of ``fp``; signed for the caller where play URLs are signed
        (one token opens both: it is the mosaic's)."""
        view, playlist = f"/view/{fp}", f"/play/{fp}/index.m3u8"
        if self.signed is None or not self.signed.enabled:
            return view, playlist
        signed_view = self.signed.for_caller(request, view)
        return signed_view, signed_view.removesuffix(view) + playlist


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of :meth:`MosaicAudio.switch`."""
    error = {"description": "One line: what is wrong",
             "content": {"application/json": {"schema": {
                 "type": "object", "properties": {"error": {"type": "string"}}}}}}  # fmt: skip
    tile = {
        "oneOf": [
            {"type": "integer", "minimum": 0, "description": "0-based tile index"},
            {"type": "string", "description": "as audio= of /create: a tile index, a tile "
                                              "name, auto (the first tile with audio) or off"},
        ]
    }  # fmt: skip
    body = {"type": "object", "properties": {"tile": tile}, "required": ["tile"],
            "additionalProperties": False}  # fmt: skip
    answer = {
        "type": "object",
        "properties": {
            "fp": {"type": "string", "description": "the sibling's fingerprint"},
            "view": {"type": "string", "description": "its viewer page (signed for the "
                                                      "caller where play URLs are signed)"},
            "playlist": {"type": "string", "description": "its playlist (signed likewise)"},
            "audio": {"type": "string", "description": "its canonical audio=: \"\" the first "
                                                       "tile with audio, off, or a tile index"},
        },
        "required": ["fp", "view", "playlist", "audio"],
    }  # fmt: skip
    return {
        "/mosaics/{fp}/audio": {"post": {
            "summary": "The same mosaic with another tile's sound: a sibling mosaic (another "
                       "fingerprint, the same tiles and grabbers), recorded as /create records "
                       "one (mosaics scope where play URLs are signed)",
            "parameters": [{"name": "fp", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": body}}},
            "security": [{}, {"bearer": []}],
            "responses": {
                "200": {"description": "The sibling (the mosaic itself for the sound it has)",
                        "content": {"application/json": {"schema": answer}}},
                "400": {**error, "description": "A bad body, or no such tile, in one line"},
                "401": {**error, "description": "Play URLs are signed: no token, or an "
                                                "unknown or revoked one"},
                "403": {**error, "description": "The token lacks the mosaics scope "
                                                "(code: scope)"},
                "404": {**error, "description": "Unknown mosaic"},
                "413": {**error, "description": "Body over 1 KiB"},
                "429": {**error, "description": "Too many from this token or address; see "
                                                "Retry-After"}}}},
    }  # fmt: skip
