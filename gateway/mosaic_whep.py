"""``POST /play/<fp>/whep`` and ``DELETE /play/<fp>/whep/<peer>``: a mosaic over WebRTC (WHEP).

The offer (``application/sdp``, at most 64 KiB) is relayed to the mosaic's stitcher over NATS
request/reply (``ctl.mosaic.<fp>``, :mod:`pipeline.consumers.whep`), whose answer comes back
as ``201`` with ``Content-Type: application/sdp`` and ``Location: /play/<fp>/whep/<peer>``;
``DELETE`` on that location hangs up (``204``). Like ``/play``, mosaics need no token; offers
are rate-limited per client (per token, when one comes along) at ``/create``'s rate (their own
bucket). An answered offer is a watch in the audit trail (``mosaic-watch``, once per viewer per
10 minutes).

Answers other than ``201``, each with a one-line ``{"error": ...}``:

- ``404``: an unknown or malformed fingerprint, the same answer ``/play`` gives; on
  ``DELETE``, also a viewer the stitcher does not know (or a stitcher that is gone);
- ``415``: not ``application/sdp``; ``413``: a body over 64 KiB; ``429``: too many offers;
- ``503`` with ``Retry-After: 1``: the mosaic is known but its stitcher is not running. The
  offer counts as a viewer (a heartbeat on ``hb.viewer.mosaic.<fp>``), so the controller
  starts the stitcher and a retry a moment later is answered;
- ``503`` with ``Retry-After: 1``: the stitcher is stopping (a restart): offer again;
- ``503`` with ``Retry-After: 5`` and ``"code": "full"``: the mosaic has its maximum of WebRTC
  viewers (``--mosaic-viewers``); HLS still plays;
- ``400``: the stitcher refused the offer (no video to receive, no H.264 High profile);
- ``504``: the stitcher did not answer within :data:`SIGNAL_TIMEOUT`; ``502``: its answer
  was unreadable.

``OPTIONS /play/<fp>/whep`` (and every ``201``) carries the ICE servers a viewer should use as
``Link: <url>; rel="ice-server"`` headers (RFC 9725 §4.6): the configured STUN servers and,
with the TURN server on, credentials for it named after the mosaic (the stitcher's own are
too), so a browser behind NAT reaches the stitcher through the relay. A viewer asks before it
makes its offer, since the offer carries its candidates.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.audit import AuditTrail
from gateway.context import GatewayContext
from gateway.guard import Guard, RateLimiter
from gateway.mosaics import NOT_FOUND, Mosaics
from gateway.sessions import MAX_BODY, BodyTooLarge, read_body
from pipeline.errors import MessageError
from pipeline.messages import control
from pipeline.messages.codec import decode_reply, encode
from pipeline.messages.heartbeats import ViewerHeartbeat
from pipeline.nats import subjects
from pipeline.state.mosaic import FP_RE
from pipeline.webrtc.sdp import peer_id_of

SIGNAL_TIMEOUT = 10.0
"""Seconds the stitcher has to answer: it gathers its ICE candidates first (with TURN, a round
trip to the TURN server)."""
PEER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_answers = msgspec.json.Decoder(control.SignalAnswer)


def _error(
    status: int, reason: str, headers: dict[str, str] | None = None, code: str = ""
) -> JSONResponse:
    body = {"error": reason, "code": code} if code else {"error": reason}
    return JSONResponse(body, status_code=status, headers=headers)


def _quoted(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_links(servers: Sequence[Mapping[str, Any]]) -> str:
    """RTCIceServer dicts as one ``Link`` header value (RFC 9725 §4.6): one link per URL."""
    links = []
    for server in servers:
        urls = server.get("urls", ())
        for url in [urls] if isinstance(urls, str) else list(urls):
            link = f'<{url}>; rel="ice-server"'
            if server.get("username") is not None:
                link += f"; username={_quoted(server['username'])}"
                link += f"; credential={_quoted(server.get('credential', ''))}"
                link += '; credential-type="password"'
            links.append(link)
    return ", ".join(links)


class MosaicWhepRoutes:
    """The mosaic WHEP routes."""

    def __init__(
        self, ctx: GatewayContext, guard: Guard, mosaics: Mosaics, audit: AuditTrail
    ) -> None:
        self.ctx = ctx
        self.guard = guard
        self.mosaics = mosaics
        self.audit = audit
        rate = ctx.config.create_rate
        self.limiter = RateLimiter(rate, max(1, math.ceil(rate * 5)))

    def _ice_headers(self, fp: str) -> dict[str, str]:
        turn = self.ctx.turn
        servers = self.ctx.ice_servers + ((turn.ice_server(fp),) if turn is not None else ())
        return {"Link": ice_links(servers)} if servers else {}

    async def options(self, request: Request) -> Response:
        """``OPTIONS /play/<fp>/whep``: the ICE servers to offer with, as ``Link`` headers."""
        fp = await self._fp(request)
        if fp is None:
            return NOT_FOUND
        headers = {"Allow": "OPTIONS, POST", "Accept-Post": "application/sdp"}
        return Response(status_code=204, headers=headers | self._ice_headers(fp))

    async def _fp(self, request: Request) -> str | None:
        """The request's fingerprint if it names a known mosaic, else None (a 404)."""
        fp: str = request.path_params["fp"]
        return fp if FP_RE.match(fp) and await self.mosaics.known(fp) else None

    async def _relay(self, fp: str, request: msgspec.Struct) -> bytes | Response:
        # To the stitcher of the stream ``fp`` plays (another title's, when they share it).
        out = self.mosaics.live.output_of(fp)
        try:
            msg = await self.ctx.nc.request(
                subjects.mosaic_signal(out), encode(request), timeout=SIGNAL_TIMEOUT
            )
        except NoRespondersError:
            return _error(503, "the mosaic is starting: retry in a second", {"Retry-After": "1"})
        except NatsTimeoutError:
            return _error(504, f"the mosaic's stitcher did not answer in {SIGNAL_TIMEOUT:g} s")
        return bytes(msg.data)

    async def _watched(self, fp: str) -> None:
        """A viewer heartbeat: what makes the controller start the mosaic's stitcher."""
        beat = ViewerHeartbeat(at=time.time(), scope="mosaic", id=fp)
        await self.ctx.nc.publish(subjects.viewer_heartbeat("mosaic", fp), encode(beat))

    async def offer(self, request: Request) -> Response:
        """``POST /play/<fp>/whep``: an SDP offer in, the stitcher's answer out."""
        if refused := self.guard.limit(self.limiter, request):
            return refused
        fp = await self._fp(request)
        if fp is None:
            return NOT_FOUND
        if "application/sdp" not in request.headers.get("content-type", ""):
            return _error(415, "send the offer as Content-Type: application/sdp")
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return _error(413, f"the offer is over {MAX_BODY // 1024} KiB")
        offer = control.SignalOffer(sdp=body.decode(errors="replace"))
        got = await self._relay(fp, offer)
        if isinstance(got, Response):
            if got.status_code == 503:
                await self._watched(fp)
            return got
        try:
            answer = _answers.decode(got)
        except msgspec.DecodeError:
            return _error(502, "the mosaic's stitcher sent a bad answer")
        if answer.code == "full":
            return _error(503, answer.error, {"Retry-After": "5"}, code="full")
        if answer.code == "unavailable":
            return _error(503, f"{answer.error}: retry in a second", {"Retry-After": "1"})
        if answer.error:
            return _error(400, answer.error)
        try:
            peer = peer_id_of(answer.sdp)
        except ValueError:
            return _error(502, "the mosaic's stitcher sent an answer without a DTLS fingerprint")
        await self.audit.watched(request, "mosaic-watch", fp)
        return Response(
            answer.sdp,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"/play/{fp}/whep/{peer}"} | self._ice_headers(fp),
        )

    async def hangup(self, request: Request) -> Response:
        """``DELETE /play/<fp>/whep/<peer>``."""
        fp = await self._fp(request)
        if fp is None or not PEER_RE.match(request.path_params["peer"]):
            return NOT_FOUND
        hangup = control.SignalHangup(peer_id=request.path_params["peer"])
        got = await self._relay(fp, hangup)
        if isinstance(got, Response):
            # No stitcher: no viewer of it either.
            return NOT_FOUND if got.status_code == 503 else got
        try:
            reply = decode_reply(got)
        except MessageError:
            return _error(502, "the mosaic's stitcher sent a bad reply")
        return Response(status_code=204) if reply.ok else NOT_FOUND
