"""``/healthz`` (alive and connected) and ``/readyz`` (and projections caught up).

Both answer JSON with what they checked; 200 when all is well, 503 naming what is not.
"""

from __future__ import annotations

import time
from typing import Any

from nats.js.errors import NotFoundError
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.context import GatewayContext
from pipeline.nats.topology import BUCKETS, STREAMS


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
