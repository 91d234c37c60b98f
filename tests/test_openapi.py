"""/openapi.json validates as OpenAPI 3 and names exactly the live routes."""

from __future__ import annotations

from pathlib import Path

import httpx
from nats.aio.client import Client
from nats.js import JetStreamContext
from openapi_spec_validator import validate
from starlette.routing import Route

from gateway.app import create_app
from gateway.context import GatewayContext
from pipeline.config.settings import load
from pipeline.runtime.httpserver import HttpServer


async def test_openapi_is_valid_and_matches_the_routes(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    app = create_app(
        GatewayContext(nc=nc, js=js, config=load(env={"TESSERA_DATA_DIR": str(tmp_path)}))
    )
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            doc = (await http.get("/openapi.json")).json()
    finally:
        await server.stop()
    validate(doc)
    live = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert documented == live
    # The request schema is the one the handler decodes with: unknown fields are refused.
    request = doc["components"]["schemas"]["SessionRequest"]
    assert request["additionalProperties"] is False
    assert {"inputs", "lowres", "width", "cho"} <= set(request["properties"])
