"""The Starlette application: routes of the HTTP gateway.

Unknown paths get a one-line JSON 404; errors never show a traceback to a user.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.context import GatewayContext
from gateway.health import healthz, readyz
from gateway.mosaics import Mosaics


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # One body for every 404, so no path tells more than another.
    detail = "not found" if exc.status_code == 404 else exc.detail
    return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "internal error; see the gateway log"}, status_code=500)


def create_app(ctx: GatewayContext) -> Starlette:
    """The gateway app over shared clients ``ctx``."""
    mosaics = Mosaics(ctx)
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/create", mosaics.create, methods=["GET"]),
        Route("/play/{fp}/{name}", mosaics.play, methods=["GET", "HEAD"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, 500: _server_error},
    )
    app.state.ctx = ctx
    return app
