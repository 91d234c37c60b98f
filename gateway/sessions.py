"""The Orchestrator API for JIT sessions.

- ``POST /session`` (JSON, see :mod:`gateway.session_request`) → ``201`` with the session id,
  its state, the WHEP endpoint and the ICE servers; ``400`` naming a bad field; ``413`` for a
  body over 64 KiB; ``503`` with ``Retry-After`` at capacity (nothing is started): the
  gateway's cap (``JIT_CAPACITY``), or no agent with room for a session where none can be
  launched (:mod:`gateway.capacity`, the reason naming every agent's room).
- ``GET /session``, ``GET /session/<id>``, ``DELETE /session/<id>``.
- ``POST /session/<id>/whep`` (``application/sdp`` offer) → ``201`` with the answer and a
  ``Location``; ``DELETE`` on that location hangs up. Signalling is relayed to the session's
  worker over NATS request/reply (``ctl.signal.<id>``), so workers need no public HTTP port:
  only their UDP media goes direct (see docs/architecture.md).
- ``POST /session/<id>/control`` (a JSON command: ``{"type": "seek", "frame": 120}``, or by
  source time code ``{"type": "seek-timecode", "timecode": "01:00:05:12"}``) → relayed to
  ``ctl.session.<id>``; the same commands travel over the WebRTC data channel.

Where the install is closed (:mod:`gateway.guard`) every route but the list needs a token with
the ``sessions`` scope (or the session's review link, for what reviewing does), and the list
(which names every session) the ``admin`` scope when play URLs are signed. The audit trail
records ``session-create``, ``session-stop`` (a ``DELETE`` that ended a live session) and
``session-watch`` (an answered WHEP offer, once per viewer per 10 minutes).

Sessions are read from the projection, never folded here. A read of one session right after
this gateway recorded something of it waits for the projector (:mod:`gateway.projection`;
``503`` with ``Retry-After`` if it does not catch up in time).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.audit import AuditTrail
from gateway.capacity import Capacity
from gateway.context import GatewayContext
from gateway.guard import Guard
from gateway.projection import Projection
from gateway.schemas import SessionList, SessionView
from gateway.session_request import RequestError, parse
from gateway.signed import SignedUrls, prefix, split_link, via_signed_url
from pipeline.control import admission
from pipeline.control.read import read_bucket
from pipeline.errors import MessageError
from pipeline.messages import control
from pipeline.messages.codec import (
    decode_heartbeat,
    decode_reply,
    decode_session_command,
    encode,
)
from pipeline.messages.events import SessionEnded, SessionRequested
from pipeline.messages.heartbeats import JitStats, WorkerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.eventlog import AppendError, append
from pipeline.nats.topology import HEARTBEATS, SESSIONS
from pipeline.state.model import SessionState
from pipeline.webrtc.sdp import peer_id_of

MAX_BODY = 64 * 1024
SESSION_ID_RE = re.compile(r"^[0-9a-f]{32}$")
NOT_FOUND = JSONResponse({"error": "not found"}, status_code=404)
SIGNAL_TIMEOUT = 10.0


class BodyTooLarge(Exception):
    """The request body is over the limit."""


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, read no further than ``limit`` bytes (else BodyTooLarge)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _json(
    body: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        msgspec.json.encode(body), status_code=status, headers=headers,
        media_type="application/json",
    )  # fmt: skip


def _too_large() -> JSONResponse:
    return _error(413, f"the body is over {MAX_BODY // 1024} KiB")


class Sessions:
    """The session routes."""

    def __init__(
        self, ctx: GatewayContext, guard: Guard, projection: Projection,
        signed: SignedUrls | None = None, audit: AuditTrail | None = None,
        capacity: Capacity | None = None,
    ) -> None:  # fmt: skip
        self.ctx = ctx
        self.guard = guard
        self.projection = projection
        self.signed = signed
        self.audit = audit
        self.capacity = capacity

    def _base(self, request: Request) -> str:
        public = self.ctx.config.public_ip
        if public:
            host = f"[{public}]" if ":" in public else public
            return f"{request.url.scheme}://{host}:{request.url.port or self.ctx.config.port}"
        return str(request.base_url).rstrip("/")

    def _ice_servers(self, sid: str) -> tuple[dict[str, Any], ...]:
        turn = self.ctx.turn
        return self.ctx.ice_servers + ((turn.ice_server(sid),) if turn is not None else ())

    def _describe(
        self, request: Request, state: SessionState, stats: dict[str, Any] | None = None,
        link: str | None = None,
    ) -> SessionView:  # fmt: skip
        # Read through a review link: its URLs carry that link's token (else `link`'s).
        base = self._base(request) + (prefix(request) if link is None else link)
        sid = state.session_id
        return SessionView(
            id=sid,
            state=state.phase,
            inputs=state.inputs,
            options=state.options,
            requested_at=state.requested_at,
            started_at=state.started_at,
            ended_at=state.ended_at,
            reason=state.reason,
            whep_url=f"{base}/session/{sid}/whep",
            control_url=f"{base}/session/{sid}/control",
            view_url=f"{base}/session/{sid}/view",
            ice_servers=self._ice_servers(sid),
            stats=stats,
        )

    async def create(self, request: Request) -> Response:
        """``POST /session``."""
        if refused := self.guard.authorize(request) or self.guard.limit(
            self.guard.session_limit, request
        ):
            return refused
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return _too_large()
        try:
            body, link = split_link(body)
            inputs, options = parse(body, roots=self.ctx.config.media_root_paths)
        except RequestError as exc:
            return _error(400, str(exc))
        if link is not None and (self.signed is None or not self.signed.enabled):
            return _error(400, "link needs --play-secret (TESSERA_PLAY_SECRET) on the gateway")
        rooms = self.guard.may_see_rooms(request)
        if self.capacity is not None and (full := self.capacity.refuse_session(name_rooms=rooms)):
            # No agent has room and none can be launched: say so now, not at running_timeout.
            return _error(503, full, {"Retry-After": "10"})
        sid = uuid.uuid4().hex
        slot = await admission.claim(self.ctx.js, sid, self.ctx.config.capacity)
        if slot is None:
            return _error(
                503,
                f"at capacity ({self.ctx.config.capacity} sessions): retry later",
                {"Retry-After": "5"},
            )
        event = SessionRequested(
            at=time.time(),
            session_id=sid,
            inputs=inputs,
            options=options,
            client=request.client.host if request.client else "",
        )
        try:
            ack = await append(self.ctx.js, event, msg_id=f"session-{sid}", expect_first=True)
        except AppendError:
            await admission.release(self.ctx.js, slot)
            return _error(503, "cannot record the session now: retry later", {"Retry-After": "2"})
        # The client's next call (GET, the WHEP offer) may come before the projector has
        # folded the request: reads of this session wait for it.
        self.projection.appended(SESSIONS.name, sid, ack.seq)
        if self.audit is not None:
            await self.audit.record(request, "session-create", sid)
        # Answered from what was just recorded, not from the projection: creating a session
        # never waits for the projector (reads of it do).
        state = SessionState(
            session_id=sid, phase="requested", inputs=inputs, options=options,
            requested_at=event.at,
        )  # fmt: skip
        signed = None
        if link is not None and self.signed is not None:
            signed = await self.signed.review_link(request, sid, link)
        view = self._describe(request, state, link=signed)
        return _json(view, 201, {"Location": f"/session/{sid}"})

    async def _state(self, sid: str) -> SessionState | None:
        if not SESSION_ID_RE.match(sid):
            return None
        state = await self.projection.read(SESSIONS.name, sid)
        return state if isinstance(state, SessionState) else None

    async def _stats(self, state: SessionState) -> dict[str, Any] | None:
        if not state.worker_id:
            return None
        try:
            msg = await self.ctx.js.get_last_msg(
                HEARTBEATS.name, subjects.worker_heartbeat(state.worker_id)
            )
        except Exception:  # noqa: BLE001 - no heartbeat yet is normal
            return None
        try:
            beat = decode_heartbeat(msg.data or b"")
        except Exception:  # noqa: BLE001
            return None
        if isinstance(beat, WorkerHeartbeat) and isinstance(beat.stats, JitStats):
            stats: dict[str, Any] = msgspec.to_builtins(beat.stats)
            stats["at"] = beat.at
            return stats
        return None

    async def get(self, request: Request) -> Response:
        """``GET /session/<id>``."""
        if not via_signed_url(request) and (refused := self.guard.authorize(request, "sessions")):
            return refused
        sid = request.path_params["sid"]
        state = await self._state(sid)
        if state is None:
            return NOT_FOUND
        stats = await self._stats(state) if state.phase == "running" else None
        return _json(self._describe(request, state, stats))

    async def list(self, request: Request) -> Response:
        """``GET /session``: every session, newest first (the admin's when play URLs are
        signed: the list names every session)."""
        if self.guard.signed and (refused := self.guard.authorize(request, "admin")):
            return refused
        states = [
            s for s in (await read_bucket(self.ctx.js, SESSIONS.name)).values()
            if isinstance(s, SessionState)
        ]  # fmt: skip
        states.sort(key=lambda s: s.requested_at, reverse=True)
        return _json(SessionList(tuple(self._describe(request, s) for s in states)))

    async def delete(self, request: Request) -> Response:
        """``DELETE /session/<id>``: end it (idempotent)."""
        if refused := self.guard.authorize(request):
            return refused
        sid = request.path_params["sid"]
        state = await self._state(sid)
        if state is None:
            return NOT_FOUND
        if state.phase in ("requested", "running"):
            ack = await append(
                self.ctx.js,
                SessionEnded(at=time.time(), session_id=sid, reason="deleted"),
                msg_id=f"session-{sid}-deleted",
            )
            self.projection.appended(SESSIONS.name, sid, ack.seq)
            if self.audit is not None:
                await self.audit.record(request, "session-stop", sid)
        return JSONResponse({"id": sid, "state": "ended" if state.phase != "failed" else "failed"})

    async def _relay(self, subject: str, payload: bytes, sid: str) -> bytes | Response:
        """Request/reply to the session's worker, waiting for it while the session starts."""
        deadline = time.monotonic() + SIGNAL_TIMEOUT
        while True:
            try:
                msg = await self.ctx.nc.request(subject, payload, timeout=SIGNAL_TIMEOUT)
                return bytes(msg.data)
            except NoRespondersError:
                state = await self._state(sid)
                if state is None or state.phase not in ("requested", "running"):
                    why = state.reason if state else "unknown session"
                    return _error(409, f"session is {state.phase if state else 'gone'}: {why}")
                if time.monotonic() > deadline:
                    return _error(503, "the session is still starting: retry", {"Retry-After": "2"})
                await asyncio.sleep(0.1)
            except NatsTimeoutError:
                return _error(504, "the session's worker did not answer in time")

    async def whep(self, request: Request) -> Response:
        """``POST /session/<id>/whep``: an SDP offer in, the answer out."""
        if not via_signed_url(request) and (refused := self.guard.authorize(request)):
            return refused
        sid = request.path_params["sid"]
        if await self._state(sid) is None:
            return NOT_FOUND
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return _too_large()
        if "application/sdp" not in request.headers.get("content-type", ""):
            return _error(415, "send the offer as Content-Type: application/sdp")
        offer = control.SignalOffer(sdp=body.decode(errors="replace"))
        got = await self._relay(subjects.session_signal(sid), encode(offer), sid)
        if isinstance(got, Response):
            return got
        try:
            answer = msgspec.json.decode(got, type=control.SignalAnswer)
        except msgspec.DecodeError:
            return _error(502, "the session's worker sent a bad answer")
        if answer.error:
            return _error(400, answer.error)
        try:
            peer = peer_id_of(answer.sdp)
        except ValueError:
            return _error(502, "the session's worker sent an answer without a DTLS fingerprint")
        if self.audit is not None:
            await self.audit.watched(request, "session-watch", sid)
        return Response(
            answer.sdp,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"/session/{sid}/whep/{peer}"},
        )

    async def hangup(self, request: Request) -> Response:
        """``DELETE /session/<id>/whep/<peer>``."""
        if not via_signed_url(request) and (refused := self.guard.authorize(request)):
            return refused
        sid, peer = request.path_params["sid"], request.path_params["peer"]
        if await self._state(sid) is None or not re.match(r"^[A-Za-z0-9_-]{1,64}$", peer):
            return NOT_FOUND
        hangup = control.SignalHangup(peer_id=peer)
        got = await self._relay(subjects.session_signal(sid), encode(hangup), sid)
        if isinstance(got, Response):
            return got
        reply = decode_reply(got)
        return Response(status_code=204) if reply.ok else NOT_FOUND

    async def control(self, request: Request) -> Response:
        """``POST /session/<id>/control``: play, pause, seek, step, rate, channels,
        route-channels, compare."""
        if not via_signed_url(request) and (refused := self.guard.authorize(request)):
            return refused
        sid = request.path_params["sid"]
        if await self._state(sid) is None:
            return NOT_FOUND
        try:
            body = await read_body(request, 4096)
        except BodyTooLarge:
            return _too_large()
        try:
            doc = json.loads(body)
            if (
                isinstance(doc, dict)
                and isinstance(doc.get("type"), str)
                and "/" not in doc["type"]
            ):
                doc["type"] += "/1"  # the tag's version is optional over HTTP
            command = decode_session_command(json.dumps(doc).encode())
        except (ValueError, MessageError) as exc:
            example = '{"type": "seek", "frame": 120}'
            return _error(400, f"not a session command ({exc}); e.g. {example}")
        got = await self._relay(subjects.session_control(sid), encode(command), sid)
        if isinstance(got, Response):
            return got
        reply = decode_reply(got)
        return _json(reply, 200 if reply.ok else 409)
