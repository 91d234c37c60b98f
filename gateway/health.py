"""``/healthz`` (alive and connected) and ``/readyz`` (and projections caught up).

Both answer JSON with what they checked; 200 when all is well, 503 naming what is not.

Where the projector runs in the gateway's process (``tessera up``), readiness reads its flag. A
gateway of its own (``tessera gateway``) cannot: it reads the projector's heartbeat
(``hb.service.projector.main``) instead, with :class:`ProjectorBeat`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nats.js.errors import NotFoundError
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.context import GatewayContext
from pipeline.control import projector
from pipeline.messages.heartbeats import ServiceHeartbeat
from pipeline.nats import subjects
from pipeline.nats.beats import HeartbeatCache
from pipeline.nats.topology import BUCKETS, STREAMS

PROJECTOR_BEAT = subjects.service_heartbeat(projector.SERVICE, projector.SERVICE_ID)


class ProjectorBeat:
    """The projections are caught up, as another process's projector says in its heartbeat:
    its newest beat says ``caught_up`` and ``running`` and is at most ``stale_after`` s old (by
    the projector's clock). A projector that stopped or went silent makes this gateway not
    ready: what it would serve could be as old as that."""

    def __init__(
        self, beats: HeartbeatCache, stale_after: float, subject: str = PROJECTOR_BEAT
    ) -> None:
        self.beats = beats
        self.stale_after = stale_after
        self.subject = subject

    def __call__(self) -> bool:
        got = self.beats.latest.get(self.subject)
        age = self.beats.age(self.subject)
        if got is None or age is None or age > self.stale_after:
            return False
        beat = got[0]
        return isinstance(beat, ServiceHeartbeat) and beat.running and beat.caught_up


def projector_beat(beats: HeartbeatCache, heartbeat_interval: float) -> Callable[[], bool]:
    """:class:`ProjectorBeat` that tolerates three missed beats and a second of clock skew
    (what ``tessera status`` calls stale)."""
    return ProjectorBeat(beats, stale_after=3 * heartbeat_interval + 2.0)


async def _status(ctx: GatewayContext) -> tuple[bool, dict[str, Any]]:
    connected = ctx.nc.is_connected
    body: dict[str, Any] = {
        "nats": {
            "connected": connected,
            "server": ctx.nc.connected_url.netloc if connected and ctx.nc.connected_url else None,
        },
        "uptime_s": round(time.time() - ctx.started_at, 3),
    }
    ok = connected
    streams: dict[str, Any] = {}
    missing: list[str] = []
    if connected:
        for name in [s.name for s in STREAMS] + [b.stream_name for b in BUCKETS]:
            try:
                info = await ctx.js.stream_info(name)
            except NotFoundError:
                missing.append(name)
                continue
            streams[name] = {"messages": info.state.messages, "bytes": info.state.bytes}
    body["jetstream"] = {"ok": connected and not missing, "streams": streams, "missing": missing}
    ok = ok and not missing
    return ok, body


async def healthz(request: Request) -> JSONResponse:
    """Alive, connected to NATS, and every declared stream and bucket present."""
    ctx: GatewayContext = request.app.state.ctx
    ok, body = await _status(ctx)
    body["status"] = "ok" if ok else "unavailable"
    return JSONResponse(body, status_code=200 if ok else 503)


async def readyz(request: Request) -> JSONResponse:
    """Healthy, and the projections this process serves from are caught up."""
    ctx: GatewayContext = request.app.state.ctx
    ok, body = await _status(ctx)
    if ctx.projector_caught_up is not None:
        caught_up = ctx.projector_caught_up()
        body["projections"] = {"caught_up": caught_up}
        ok = ok and caught_up
    body["status"] = "ready" if ok else "not-ready"
    return JSONResponse(body, status_code=200 if ok else 503)
