"""The gateway over real HTTP for tests: the Starlette app on uvicorn on a free loopback port,
with an httpx client pointed at it. One place, so that every gateway test starts it the same
way and stops it whatever happens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway.app import create_app
from gateway.context import GatewayContext
from pipeline.config.settings import load
from pipeline.runtime.httpserver import HttpServer


@contextlib.asynccontextmanager
async def gateway_http(
    nc: Client,
    js: JetStreamContext,
    data_dir: Path,
    *,
    request_timeout: float = 10.0,
    context: dict[str, Any] | None = None,
    **env: str,
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with settings ``env`` (its data dir ``data_dir``) and the extra
    :class:`GatewayContext` fields ``context`` (TURN, ICE servers), and a client for it."""
    config = load(env={"TESSERA_DATA_DIR": str(data_dir), **env})
    ctx = GatewayContext(nc=nc, js=js, config=config, **(context or {}))
    server = HttpServer(create_app(ctx), host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=request_timeout) as client:
            yield client
    finally:
        await server.stop()
