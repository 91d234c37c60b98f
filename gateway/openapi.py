"""``/openapi.json``: the OpenAPI 3.1 description of the HTTP API.

Request and response schemas come from the msgspec Structs the handlers use
(:mod:`gateway.schemas`, :mod:`gateway.session_request`, :mod:`pipeline.messages.control`), so
the document cannot drift from the code; a test also checks that it names exactly the live
routes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway import alarms, mosaic_audio, pages
from gateway.schemas import ErrorBody, SessionList, SessionView
from gateway.session_request import SessionRequest
from pipeline.messages.control import CommandReply, SessionCommand

_REF = "#/components/schemas/{name}"


def _json_body(ref: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": ref}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **_json_body({"$ref": _REF.format(name="ErrorBody")})}


def _refused(scope: str, when: str) -> dict[str, Any]:
    """The answers of a route that needs ``scope`` (:mod:`gateway.guard`)."""
    return {
        "401": _error(f"No token, or an unknown or revoked one ({when})"),
        "403": _error(f"The token lacks the {scope} scope (code: scope)"),
    }


_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_CLOSED = "where the install is closed: not loopback-only, a token set, or play URLs signed"


def build(version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI document."""
    types: list[Any] = [ErrorBody, SessionView, SessionList, SessionRequest, CommandReply,
                        SessionCommand]  # fmt: skip
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    error_ref, view_ref, list_ref, request_ref, reply_ref, command_ref = refs
    fp = {"name": "fp", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}  # fmt: skip
    sid = {"name": "sid", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}  # fmt: skip
    text = {"type": "string"}
    paths: dict[str, Any] = {
        "/create": {
            "get": {
                "summary": "Create (or find) a mosaic from UrlDsl patterns",
                "parameters": [
                    {"name": "urls", "in": "query", "required": True,
                     "schema": {"type": "array", "items": text}, "style": "form",
                     "explode": True, "description": "UrlDsl pattern; may repeat"},
                    {"name": "size", "in": "query", "schema": {"type": "string",
                     "pattern": "^[0-9]+x[0-9]+$"}, "description": "default 1280x720"},
                    {"name": "fps", "in": "query", "schema": {"type": "integer", "minimum": 1,
                     "maximum": 60}},
                    {"name": "cols", "in": "query", "schema": {"type": "integer", "minimum": 1},
                     "description": "columns of the grid; not with layout=focus"},
                    {"name": "layout", "in": "query", "schema": {"type": "string",
                     "enum": ["grid", "focus"]}, "description": "grid (default): equal tiles; "
                     "focus: the first tile large at the top left, the others small around it"},
                    {"name": "title", "in": "query", "schema": {"type": "string",
                     "maxLength": 200}},
                    {"name": "alarms", "in": "query", "schema": text,
                     "description": "alarm holds in seconds, e.g. black:2,freeze:5,-silence "
                                    "or off; default: every kind at its default hold"},
                    {"name": "audio", "in": "query", "schema": text,
                     "description": "whose audio the mosaic carries: a 0-based tile index, "
                                    "a tile name, auto (default: the first tile with audio) "
                                    "or off"},
                    {"name": "clock", "in": "query", "schema": {"type": "string",
                     "enum": ["utc", "off"]}, "description": "utc: a time-code clock "
                     "(HH:MM:SS:FF, UTC) in the picture's bottom-right corner"},
                ],  # fmt: skip
                "security": [{}, *_BEARER],
                "responses": {
                    "302": {"description": "Redirect to /play/<fp>/index.m3u8"},
                    "400": _error("A bad pattern or option, in one line"),
                    **_refused("mosaics", "where play URLs are signed"),
                    "429": _error("Too many from this token or address; see Retry-After"),
                },
            }
        },
        "/play/{fp}/{name}": {
            "get": {
                "summary": "The live HLS playlist (index.m3u8; with _HLS_msn/_HLS_part a blocking "
                           "reload of the LL-HLS playlist), the init section (init.mp4), a part "
                           "(<msn>.<part>.m4s), a segment (<msn>.m4s) or, with "
                           "TESSERA_HLS_FORMAT=ts, an MPEG-TS segment (<seq>.ts)",
                "parameters": [
                    fp,
                    {"name": "name", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern":
                                r"^(index\.m3u8|init(-[0-9]+)?\.mp4|[0-9]+(\.[0-9]+)?\.m4s"
                                r"|[0-9]+\.ts)$"}},
                    {"name": "_HLS_msn", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0}},
                    {"name": "_HLS_part", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": {"description": "Playlist, init section, part or segment", "content": {
                        "application/vnd.apple.mpegurl": {"schema": text},
                        "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                        "video/mp2t": {"schema": {"type": "string", "format": "binary"}}}},
                    "400": _error("A bad or too-far _HLS_msn/_HLS_part"),
                    "404": _error("Unknown mosaic or file (always the same answer)"),
                    "503": _error("A held request whose part did not come within 3 target "
                                  "durations; see Retry-After"),
                },
            }  # fmt: skip
        },
        "/play/{fp}/whep": {
            "options": {
                "summary": "WHEP: the ICE servers (STUN, TURN with credentials) to offer with, "
                           "as Link: <url>; rel=\"ice-server\" headers (RFC 9725)",
                "parameters": [fp],
                "responses": {"204": {"description": "Link headers, one per ICE server URL"},
                              "404": _error("Unknown mosaic (the same answer as /play)")},
            },
            "post": {
                "summary": "WHEP: the mosaic over WebRTC; an SDP offer in, the SDP answer out",
                "parameters": [fp],
                "requestBody": {"required": True, "content": {"application/sdp": {"schema": text}}},
                "responses": {
                    "201": {"description": "Answer; Location names the peer",
                            "content": {"application/sdp": {"schema": text}}},
                    "400": _error("The offer cannot be answered (no video, no H.264 High)"),
                    "404": _error("Unknown mosaic (the same answer as /play)"),
                    "413": _error("Body over 64 KiB"),
                    "415": _error("Not application/sdp"),
                    "503": _error("Stitcher starting, or its viewer maximum; see Retry-After"),
                    "504": _error("The stitcher did not answer in time"),
                },
            }
        },
        "/play/{fp}/whep/{peer}": {
            "delete": {
                "summary": "WHEP: hang up one viewer of the mosaic",
                "parameters": [fp, {"name": "peer", "in": "path", "required": True,
                                    "schema": text}],
                "responses": {"204": {"description": "Gone"}, "404": _error("No such peer")},
            }
        },
        "/session": {
            "post": {
                "summary": "Start a JIT session",
                "requestBody": {"required": True, **_json_body(request_ref)},
                "security": [{}, *_BEARER],
                "responses": {
                    "201": {"description": "Requested", **_json_body(view_ref)},
                    "400": _error("A bad field, named"),
                    **_refused("sessions", _CLOSED),
                    "413": _error("Body over 64 KiB"),
                    "429": _error("Too many from this token or address; see Retry-After"),
                    "503": _error("At capacity; see Retry-After"),
                },
            },
            "get": {
                "summary": "Every session, newest first (admin scope when play URLs are signed)",
                "security": [{}, *_BEARER],
                "responses": {"200": {"description": "Sessions", **_json_body(list_ref)},
                              **_refused("admin", "where play URLs are signed")},  # fmt: skip
            },
        },
        "/session/{sid}": {
            "get": {
                "summary": "One session",
                "parameters": [sid],
                "security": [{}, *_BEARER],
                "responses": {"200": {"description": "The session", **_json_body(view_ref)},
                              **_refused("sessions", _CLOSED),
                              "404": _error("No such session")},  # fmt: skip
            },
            "delete": {
                "summary": "End a session",
                "parameters": [sid],
                "security": [{}, *_BEARER],
                "responses": {"200": {"description": "Ended"}, **_refused("sessions", _CLOSED),
                              "404": _error("No such session")},  # fmt: skip
            },
        },
        "/session/{sid}/whep": {
            "post": {
                "summary": "WHEP: an SDP offer in, the SDP answer out",
                "parameters": [sid],
                "requestBody": {"required": True, "content": {"application/sdp": {"schema": text}}},
                "responses": {
                    "201": {"description": "Answer; Location names the peer",
                            "content": {"application/sdp": {"schema": text}}},
                    **_refused("sessions", _CLOSED),
                    "404": _error("No such session"),
                    "409": _error("The session ended or failed"),
                    "415": _error("Not application/sdp"),
                    "503": _error("Still starting; see Retry-After"),
                },  # fmt: skip
            }
        },
        "/session/{sid}/whep/{peer}": {
            "delete": {
                "summary": "WHEP: hang up one viewer",
                "parameters": [sid, {"name": "peer", "in": "path", "required": True,
                                     "schema": text}],  # fmt: skip
                "responses": {"204": {"description": "Gone"}, "404": _error("No such peer"),
                              **_refused("sessions", _CLOSED)},  # fmt: skip
            }
        },
        "/session/{sid}/control": {
            "post": {
                "summary": "Play, pause, seek, step, rate, audio channels",
                "parameters": [sid],
                "requestBody": {"required": True, **_json_body(command_ref)},
                "responses": {
                    "200": {"description": "Done", **_json_body(reply_ref)},
                    "400": _error("Not a command"),
                    **_refused("sessions", _CLOSED),
                    "409": _error("Refused, with the reason"),
                },
            }
        },
        "/healthz": {"get": {"summary": "Alive, NATS connected, streams present",
                             "responses": {"200": {"description": "Healthy"},
                                           "503": {"description": "Not healthy"}}}},
        "/readyz": {"get": {"summary": "Healthy and projections caught up",
                            "responses": {"200": {"description": "Ready"},
                                          "503": {"description": "Not ready"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "Text format",
                                                   "content": {"text/plain": {"schema": text}}}}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }  # fmt: skip
    paths.update(pages.openapi_paths())
    paths.update(alarms.openapi_paths())
    paths.update(mosaic_audio.openapi_paths())
    del error_ref
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Tessera",
            "version": version,
            "description": "Live HLS mosaics and just-in-time WebRTC review sessions.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (`tessera tokens create`: tsr_<name>_<secret>, "
                    "with scopes mosaics, sessions, admin) or the gateway's own "
                    "(TESSERA_API_TOKEN or <data dir>/api-token: every scope)",
                }
            },
        },
    }
    # Through JSON and back: tuples (msgspec's defaults) become lists, as a client sees them.
    result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(document))
    return result
