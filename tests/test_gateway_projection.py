"""The gateway reads projected state, read-your-writes (:mod:`gateway.projection`): a read right
after its own append waits for the projector, and only such a read waits. Against a real
nats-server, with the projector started late or not at all."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway import app as gateway_app
from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.projection import NotProjectedYet, Projection
from pipeline.config.settings import load
from pipeline.control.projector import Projector
from pipeline.messages.events import SessionEnded, SessionInput, SessionRequested
from pipeline.nats.eventlog import append
from pipeline.nats.topology import SESSIONS
from pipeline.runtime.httpserver import HttpServer
from pipeline.state.model import SessionState

SID = "ab" * 16
VIDEO = {"inputs": [{"url": "https://media.example/clip.mov"}]}


def requested(sid: str = SID) -> SessionRequested:
    return SessionRequested(
        at=time.time(), session_id=sid, inputs=(SessionInput(url="https://media.example/a.mov"),)
    )


@pytest_asyncio.fixture
async def projector(nc: Client, js: JetStreamContext) -> AsyncIterator[Projector]:
    """A projector, not started: each test starts it when it wants the projection to move."""
    made = Projector(nc, js, fetch_timeout=0.2)
    try:
        yield made
    finally:
        await made.stop()


async def started_later(projector: Projector, after: float) -> None:
    await asyncio.sleep(after)
    await projector.start()


async def test_a_read_after_its_own_append_waits_for_the_projection(
    js: JetStreamContext, projector: Projector
) -> None:
    projection = Projection(js)
    ack = await append(js, requested())
    projection.appended(SESSIONS.name, SID, ack.seq)
    late = asyncio.create_task(started_later(projector, 0.3))
    began = time.monotonic()
    state = await projection.read(SESSIONS.name, SID)
    waited = time.monotonic() - began
    await late
    assert isinstance(state, SessionState) and state.phase == "requested"
    assert 0.25 < waited < projection.wait
    assert projection.awaited(SESSIONS.name, SID) is None, "seen: later reads do not wait"


async def test_a_read_waits_for_the_append_not_for_any_entry(
    js: JetStreamContext, projector: Projector
) -> None:
    """An entry projected before this gateway's append is not an answer to a read after it."""
    await projector.start()
    first = await append(js, requested())
    async with asyncio.timeout(5):
        await projector.wait_for(first.seq)
    projection = Projection(js)
    assert isinstance(await projection.read(SESSIONS.name, SID), SessionState)
    await projector.stop()
    ack = await append(js, SessionEnded(at=time.time(), session_id=SID, reason="deleted"))
    projection.appended(SESSIONS.name, SID, ack.seq)
    late = asyncio.create_task(started_later(projector, 0.2))
    state = await projection.read(SESSIONS.name, SID)
    await late
    assert isinstance(state, SessionState) and state.phase == "ended"


async def test_other_reads_do_not_wait(js: JetStreamContext) -> None:
    """Nothing projects here: a read of what this gateway did not append is one KV get."""
    projection = Projection(js)
    await append(js, requested())  # appended, but not by this reader
    began = time.monotonic()
    assert await projection.read(SESSIONS.name, SID) is None
    assert await projection.read(SESSIONS.name, "cd" * 16) is None
    assert time.monotonic() - began < 0.5


async def test_a_projection_that_does_not_come_is_said_not_hidden(js: JetStreamContext) -> None:
    projection = Projection(js, wait=0.2)
    ack = await append(js, requested())
    projection.appended(SESSIONS.name, SID, ack.seq)
    with pytest.raises(NotProjectedYet, match=rf"sessions {SID}: .* is the projector running"):
        await projection.read(SESSIONS.name, SID)


async def test_appends_are_remembered_for_a_while_only(js: JetStreamContext) -> None:
    now = [100.0]
    projection = Projection(js, remember=60.0, clock=lambda: now[0])
    projection.appended(SESSIONS.name, "a", 5)
    projection.appended(SESSIONS.name, "a", 3)  # an older ack (a deduplicated retry): keeps 5
    assert projection.awaited(SESSIONS.name, "a") == 5
    now[0] += 59.0
    projection.appended(SESSIONS.name, "b", 9)
    assert projection.awaited(SESSIONS.name, "a") == 5
    now[0] += 1.0
    assert projection.awaited(SESSIONS.name, "a") is None, "past remembering: reads do not wait"
    assert projection.awaited(SESSIONS.name, "b") == 9
    projection.appended(SESSIONS.name, "c", 10)  # and the forgotten one leaves the map
    assert list(projection._appended) == [(SESSIONS.name, "b"), (SESSIONS.name, "c")]


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway whose reads wait 0.5 s for its own appends, and no projector (yet)."""
    monkeypatch.setattr(gateway_app, "Projection", functools.partial(Projection, wait=0.5))
    config = load(env={"TESSERA_DATA_DIR": str(tmp_path), "TESSERA_SESSION_RATE": "1000"})
    server = HttpServer(
        create_app(GatewayContext(nc=nc, js=js, config=config)), host="127.0.0.1", port=0
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            yield client
    finally:
        await server.stop()


async def test_the_gateway_answers_its_own_session_once_projected(
    http: httpx.AsyncClient, projector: Projector
) -> None:
    sid = (await http.post("/session", json=VIDEO)).json()["id"]
    late = asyncio.create_task(started_later(projector, 0.2))
    got = await http.get(f"/session/{sid}")
    page = await http.get(f"/session/{sid}/view")
    await late
    assert got.status_code == 200 and got.json()["state"] == "requested"
    assert page.status_code == 200


async def test_the_gateway_says_503_while_its_own_session_is_not_projected(
    http: httpx.AsyncClient,
) -> None:
    sid = (await http.post("/session", json=VIDEO)).json()["id"]
    got = await http.get(f"/session/{sid}")
    assert got.status_code == 503 and got.headers["retry-after"] == "1"
    assert "not projected" in got.json()["error"] and "\n" not in got.json()["error"]
    # A session it did not record is still a plain 404, at once.
    assert (await http.get("/session/" + "0" * 32)).status_code == 404


async def test_a_mosaic_just_created_plays_and_has_its_page_once_projected(
    http: httpx.AsyncClient, projector: Projector
) -> None:
    made = await http.get("/create", params={"urls": "http://cams.example/{a,b}"})
    fp = made.headers["location"].split("/")[2]
    # /play needs no projection: this gateway knows what it recorded.
    assert (await http.get(f"/play/{fp}/index.m3u8")).status_code == 200
    late = asyncio.create_task(started_later(projector, 0.2))
    page = await http.get(f"/view/{fp}")
    await late
    assert page.status_code == 200
