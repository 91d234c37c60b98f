"""The bearer token and per-client rate limits, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.guard import RateLimiter
from pipeline.config.settings import load
from pipeline.nats.eventlog import matching_count
from pipeline.runtime.httpserver import HttpServer

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve(nc: Client, js: JetStreamContext, tmp_path: Path) -> Serve:
    @asynccontextmanager
    async def run(**env: str) -> AsyncIterator[httpx.AsyncClient]:
        config = load(env={"TESSERA_DATA_DIR": str(tmp_path), **env})
        server = HttpServer(
            create_app(GatewayContext(nc=nc, js=js, config=config)), host="127.0.0.1", port=0
        )
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                yield client
        finally:
            await server.stop()

    return run


VIDEO = {"inputs": [{"url": "https://media.example/clip.mov"}]}


async def test_loopback_install_is_open(serve: Serve) -> None:
    async with serve() as http:
        assert (await http.post("/session", json=VIDEO)).status_code == 201


async def test_public_install_needs_the_token_it_made(
    serve: Serve, js: JetStreamContext, tmp_path: Path
) -> None:
    async with serve(TESSERA_PUBLIC="1") as http:
        token_file = tmp_path / "api-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        refused = await http.post("/session", json=VIDEO)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.post("/session", json=VIDEO, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        assert await matching_count(js, "events.>") == 0
        ok = await http.post("/session", json=VIDEO, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 201
        sid = ok.json()["id"]
        assert (await http.delete(f"/session/{sid}")).status_code == 401
        # Mosaics stay one URL away for operators: /create needs no token.
        got = await http.get("/create", params={"urls": "http://cams.example/{a,b}"})
        assert got.status_code == 302


async def test_a_configured_token_is_used(serve: Serve) -> None:
    async with serve(TESSERA_API_TOKEN="s3cret") as http:
        assert (await http.post("/session", json=VIDEO)).status_code == 401
        headers = {"Authorization": "Bearer s3cret"}
        assert (await http.post("/session", json=VIDEO, headers=headers)).status_code == 201


async def test_create_is_rate_limited_per_client(serve: Serve) -> None:
    async with serve(TESSERA_CREATE_RATE="1") as http:
        codes = [
            (await http.get("/create", params={"urls": "http://c.example/{a,b}"})).status_code
            for _ in range(8)
        ]
        assert codes[:5] == [302] * 5  # a burst of 5 s worth
        assert 429 in codes[5:]
        last = await http.get("/create", params={"urls": "http://c.example/{a,b}"})
        assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1


@given(st.lists(st.floats(min_value=0, max_value=0.5), max_size=200))
def test_rate_limiter_never_admits_more_than_rate_plus_burst(gaps: list[float]) -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 4, clock=lambda: now[0])
    admitted = 0
    for gap in gaps:
        now[0] += gap
        if limiter.take("1.2.3.4") == 0.0:
            admitted += 1
    assert admitted <= 4 + 2.0 * now[0] + 1e-9
