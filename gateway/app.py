"""The Starlette application: routes of the HTTP gateway.

Unknown paths get a one-line JSON 404; errors never show a traceback to a user.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import openapi, pages
from gateway.alarms import AlarmBook, Alarms
from gateway.audit import AuditTrail
from gateway.capacity import Capacity
from gateway.context import GatewayContext
from gateway.guard import Guard
from gateway.health import healthz, readyz
from gateway.httpmetrics import HttpMetrics
from gateway.livestate import LiveState
from gateway.metrics import Metrics
from gateway.mosaic_audio import MosaicAudio
from gateway.mosaic_whep import MosaicWhepRoutes
from gateway.mosaics import Mosaics
from gateway.projection import NotProjectedYet, Projection
from gateway.sessions import Sessions
from gateway.signed import SignedPrefix, SignedUrls
from gateway.signed import openapi_paths as signed_openapi_paths
from pipeline.nats.beats import HeartbeatCache


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # One body for every 404, so no path tells more than another.
    detail = "not found" if exc.status_code == 404 else exc.detail
    return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)


async def _not_projected(request: Request, exc: Exception) -> Response:
    # The entity exists (this gateway recorded it) but cannot be shown as it is yet: neither a
    # 404 nor an answer from before the client's own request.
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "internal error; see the gateway log"}, status_code=500)


def create_app(ctx: GatewayContext, *, beats: HeartbeatCache | None = None) -> Starlette:
    """The gateway app over shared clients ``ctx``. ``beats``: the heartbeat cache it follows
    (made here when None; given, when the caller reads it too); the app starts and stops it."""
    beats = HeartbeatCache(ctx.js, nc=ctx.nc) if beats is None else beats
    live = LiveState(ctx.js)
    book = AlarmBook(ctx.js)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await beats.start()
        await live.start()
        await guard.start()
        await signed.start()
        await book.start()
        alarms.reopen()
        try:
            yield
        finally:
            # Uvicorn runs this once the requests in flight have ended (or were cancelled at
            # its graceful-shutdown deadline): whoever stops the server calls app.state.drain()
            # first, so that the alarm streams end at once rather than at that deadline.
            alarms.close()
            await book.stop()
            await signed.stop()
            await guard.stop()
            await live.stop()
            await beats.stop()

    document = openapi.build()
    document["paths"].update(signed_openapi_paths())

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    guard = Guard(ctx.config, ctx.js)
    audit = AuditTrail(ctx)
    signed = SignedUrls(ctx.config, ctx.js, guard, audit)
    projection = Projection(ctx.js)
    alarms = Alarms(book, guard, projection)
    metrics = Metrics(ctx, beats, live, guard, alarms)
    capacity = Capacity(beats, ctx.config)
    mosaics = Mosaics(ctx, guard, live, projection, audit, capacity=capacity)
    mosaic_whep = MosaicWhepRoutes(ctx, guard, mosaics, audit)
    mosaic_audio = MosaicAudio(guard, mosaics, projection, signed)
    sessions = Sessions(ctx, guard, projection, signed, audit, capacity)
    routes = [
        # First: the hot route (every viewer polls its playlist once a segment).
        Route("/play/{fp}/{name}", mosaics.play, methods=["GET", "HEAD"]),
        # A POST to /play/<fp>/whep matches the route above by path only (a partial match),
        # and Starlette then takes the full match below.
        Route("/play/{fp}/whep", mosaic_whep.offer, methods=["POST"]),
        Route("/play/{fp}/whep", mosaic_whep.options, methods=["OPTIONS"]),
        Route("/play/{fp}/whep/{peer}", mosaic_whep.hangup, methods=["DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/create", signed.redirects(mosaics.create), methods=["GET"]),
        Route("/mosaics/{fp}/audio", mosaic_audio.switch, methods=["POST"]),
        Route("/session", sessions.create, methods=["POST"]),
        Route("/session", sessions.list, methods=["GET"]),
        Route("/session/{sid}", sessions.get, methods=["GET"]),
        Route("/session/{sid}", sessions.delete, methods=["DELETE"]),
        Route("/session/{sid}/whep", sessions.whep, methods=["POST"]),
        Route("/session/{sid}/whep/{peer}", sessions.hangup, methods=["DELETE"]),
        Route("/session/{sid}/control", sessions.control, methods=["POST"]),
        *alarms.routes(),
        *signed.routes(),
        *pages.routes(ctx, projection, guard, signed, alarms),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _http_error,
            NotProjectedYet: _not_projected,
            500: _server_error,
        },
        middleware=[
            Middleware(HttpMetrics, registry=metrics.registry),
            Middleware(SignedPrefix, urls=signed),
        ],
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.audit = audit
    app.state.alarms = alarms
    # Ends the long-lived responses (the alarm streams) at once: for whoever stops the server,
    # before it waits for the requests in flight, which uvicorn does before the lifespan's end.
    app.state.drain = alarms.close
    return app
