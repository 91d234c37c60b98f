"""The session API over real HTTP against a real nats-server: validation, admission at
capacity, relaying signalling and control to the session's worker over NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from gateway.app import create_app
from gateway.context import GatewayContext
from pipeline.config.settings import load
from pipeline.control import admission
from pipeline.control.projector import Projector
from pipeline.messages import control
from pipeline.messages.codec import decode_session_command, encode
from pipeline.nats.eventlog import matching_count
from pipeline.runtime.httpserver import HttpServer

VIDEO = {"inputs": [{"url": "https://media.example/clip.mov"}]}
ANSWER = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / "media").mkdir()
    config = load(
        env={
            "TESSERA_DATA_DIR": str(tmp_path),
            "JIT_CAPACITY": "64",
            "TESSERA_SESSION_RATE": "1000",
            "JIT_MEDIA_ROOTS": str(tmp_path / "media"),
        }
    )
    projector = Projector(nc, js, fetch_timeout=0.2)
    await projector.start()
    server = HttpServer(
        create_app(GatewayContext(nc=nc, js=js, config=config)), host="127.0.0.1", port=0
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            yield client
    finally:
        await server.stop()
        await projector.stop()


async def wait_state(http: httpx.AsyncClient, sid: str, state: str) -> dict[str, object]:
    async with asyncio.timeout(10):
        while True:
            got = await http.get(f"/session/{sid}")
            if got.status_code == 200 and got.json()["state"] == state:
                return dict(got.json())
            await asyncio.sleep(0.05)


async def test_create_get_list_delete(http: httpx.AsyncClient, js: JetStreamContext) -> None:
    got = await http.post("/session", json={**VIDEO, "lowres": 1, "cho": 2})
    assert got.status_code == 201, got.text
    body = got.json()
    sid = body["id"]
    assert body["state"] == "requested"
    assert body["whep_url"].endswith(f"/session/{sid}/whep")
    assert body["whep_url"].startswith("http://127.0.0.1:")
    assert got.headers["location"] == f"/session/{sid}"
    state = await wait_state(http, sid, "requested")
    assert state["options"]["lowres"] == 1 and state["options"]["cho"] == 2  # type: ignore[index]
    listed = (await http.get("/session")).json()["sessions"]
    assert [s["id"] for s in listed] == [sid]
    deleted = await http.delete(f"/session/{sid}")
    assert deleted.status_code == 200
    ended = await wait_state(http, sid, "ended")
    assert ended["reason"] == "deleted"
    assert await matching_count(js, f"events.session.{sid}") == 2
    assert (await http.get("/session/" + "0" * 32)).status_code == 404
    assert (await http.get("/session/../../etc")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"", 400, "the body is empty"),
        (b"{nope", 400, "not JSON"),
        (b'{"inputs": []}', 400, "inputs: give at least one input"),
        (b'{"inputs": [{"url": "https://x/a.mov"}], "lowres": "2"}', 400, "lowres: expected"),
        (b'{"inputs": [{"url": "https://x/a.mov"}], "lowress": 2}', 400, "unknown field 'lowress'"),
        (b'{"inputs": [{"url": "https://x/a.mov"}], "width": 641}', 400, "width: must be even"),
        (b'{"inputs": [{"url": "file:///etc/passwd"}]}', 400, "outside the allowed media"),
        (b'{"inputs": [{"url": "/etc/passwd"}]}', 400, "outside the allowed media"),
        (b'{"inputs": [{"url": "concat:a|b"}]}', 400, "scheme 'concat' is not allowed"),
        (b'{"inputs": [{"url": "https://x/a.mov", "channel_count": 0}]}', 400, "channel_count"),
        (b'{"inputs": [{"url": "https://x/a.mov"}], "thread_type": "x"}', 400, "thread_type"),
        (b'{"inputs": [{"url": "https://x/a.mov"}], "compare": "wipe"}', 400, "give two videos"),
        (
            b'{"inputs": [{"url": "https://x/a.mov"}, {"url": "https://x/b.mov"}], '
            b'"compare": "blend"}',
            400,
            "compare:",
        ),
        (b'{"inputs": [{"url": "https://x/a.mov"}], "compare_offset": 2}', 400, "with compare"),
        (b'{"inputs": [{"url": "https://x/' + b"a" * 70000 + b'"}]}', 413, "over 64 KiB"),
    ],
)
async def test_bad_requests_name_the_field_and_record_nothing(
    http: httpx.AsyncClient, js: JetStreamContext, body: bytes, status: int, reason: str
) -> None:
    got = await http.post("/session", content=body, headers={"content-type": "application/json"})
    assert got.status_code == status
    assert reason in got.json()["error"]
    assert "\n" not in got.json()["error"]
    assert await matching_count(js, "events.>") == 0
    assert await admission.holders(js) == {}


async def test_the_65th_session_gets_503_and_starts_nothing(
    http: httpx.AsyncClient, js: JetStreamContext
) -> None:
    # 500 concurrent requests at capacity 64: exactly 64 admitted, whatever the interleaving.
    # No pool timeout: 500 requests share the client's 100 connections, and on a busy machine
    # the last ones may wait longer than one request's timeout for a connection.
    patient = httpx.Timeout(20, pool=None)
    replies = await asyncio.gather(
        *(http.post("/session", json=VIDEO, timeout=patient) for _ in range(500))
    )
    codes = sorted(r.status_code for r in replies)
    assert codes.count(201) == 64 and codes.count(503) == 436
    refused = next(r for r in replies if r.status_code == 503)
    assert refused.headers["retry-after"] == "5"
    assert "at capacity (64 sessions)" in refused.json()["error"]
    assert await matching_count(js, "events.session.*") == 64
    assert len(await admission.holders(js)) == 64


async def test_signalling_and_control_are_relayed_to_the_worker(
    http: httpx.AsyncClient, nc: Client
) -> None:
    sid = (await http.post("/session", json=VIDEO)).json()["id"]
    seen: list[object] = []

    async def worker_signal(msg: Msg) -> None:
        offer = msgspec.json.decode(msg.data, type=control.SignalOffer)
        seen.append(offer.sdp)
        await msg.respond(encode(control.SignalAnswer(sdp=ANSWER)))

    async def worker_control(msg: Msg) -> None:
        command = decode_session_command(msg.data)
        seen.append(command)
        ok = not isinstance(command, control.Seek) or command.frame < 100
        reply = control.CommandReply(ok=ok, error="" if ok else "beyond the end", position=7)
        await msg.respond(encode(reply))

    subs = [
        await nc.subscribe(f"ctl.signal.{sid}", cb=worker_signal),
        await nc.subscribe(f"ctl.session.{sid}", cb=worker_control),
    ]
    try:
        got = await http.post(
            f"/session/{sid}/whep", content=b"v=0 offer",
            headers={"content-type": "application/sdp"},
        )  # fmt: skip
        assert got.status_code == 201
        assert got.text == ANSWER
        assert got.headers["content-type"].startswith("application/sdp")
        assert got.headers["location"] == f"/session/{sid}/whep/{'ab' * 16}"
        ok = await http.post(f"/session/{sid}/control", json={"type": "seek", "frame": 42})
        assert ok.status_code == 200 and ok.json()["position"] == 7
        bad = await http.post(f"/session/{sid}/control", json={"type": "seek", "frame": 1000})
        assert bad.status_code == 409 and bad.json()["error"] == "beyond the end"
        nonsense = await http.post(f"/session/{sid}/control", json={"type": "fly"})
        assert nonsense.status_code == 400
        assert seen == ["v=0 offer", control.Seek(42), control.Seek(1000)]
        wrong_type = await http.post(f"/session/{sid}/whep", content=b"v=0")
        assert wrong_type.status_code == 415
    finally:
        for sub in subs:
            await sub.unsubscribe()
