"""The audit trail against a running gateway (as its own NATS role) and a real nats-server:
each audited action is one entry naming who did what to which (watches throttled), ``tessera
events tail --audit`` and its filters, and ``GET /api/audit`` (the admin's)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from gateway import pages
from gateway.app import create_app
from gateway.context import GatewayContext
from pipeline.access import tokens
from pipeline.cli.events import tail
from pipeline.config.settings import load
from pipeline.control.projector import Projector
from pipeline.messages import control
from pipeline.messages.audit import AuditEntry
from pipeline.messages.codec import encode
from pipeline.nats import subjects
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import AUDIT, TOKENS
from pipeline.runtime.httpserver import HttpServer
from tests.natsenv import server_env

if TYPE_CHECKING:
    from playwright.async_api import Page

LEGACY = "the-gateway-s-own-token"
VIDEO = {"inputs": [{"url": "https://media.example/clip.mov"}]}
ANSWER = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
SDP = {"content-type": "application/sdp"}
PATTERN = "http://cams.example/{a,b}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def store(js: JetStreamContext, name: str, *scopes: tokens.Scope) -> str:
    token, record = tokens.issue(name, scopes, at=time.time())
    await (await js.key_value(TOKENS.name)).create(name, tokens.encode_record(record))
    return token


async def entries(js: JetStreamContext) -> list[AuditEntry]:
    """Every entry of stream ``AUDIT``, oldest first."""
    info = await js.stream_info(AUDIT.name)
    if not info.state.messages:
        return []
    first, last = info.state.first_seq, info.state.last_seq
    return [
        msgspec.json.decode((await js.get_msg(AUDIT.name, seq)).data, type=AuditEntry)
        for seq in range(first, last + 1)
    ]


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, gateway_nc: Client, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A closed gateway (its own token: ``LEGACY``) and the projector."""
    config = load(env={
        "TESSERA_DATA_DIR": str(tmp_path), "TESSERA_API_TOKEN": LEGACY,
        "TESSERA_CREATE_RATE": "1000", "TESSERA_SESSION_RATE": "1000", "JIT_CAPACITY": "8",
    })  # fmt: skip
    projector = Projector(nc, js, fetch_timeout=0.2)
    await projector.start()
    ctx = GatewayContext(nc=gateway_nc, js=gateway_nc.jetstream(), config=config)
    server = HttpServer(create_app(ctx), host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            yield client
    finally:
        await server.stop()
        await projector.stop()


async def known(http: httpx.AsyncClient, *names: str) -> None:
    """Wait (bounded) until the gateway's watch of KV tokens has ``names``."""
    async with asyncio.timeout(10):
        while True:
            got = await http.get("/api/tokens", headers=bearer(LEGACY))
            if set(names) <= {t["name"] for t in got.json()["tokens"]}:
                return
            await asyncio.sleep(0.02)


async def answering(nc: Client, subject: str) -> Any:
    """A stand-in worker or stitcher that answers every WHEP offer on ``subject``."""

    async def on_offer(msg: Msg) -> None:
        await msg.respond(encode(control.SignalAnswer(sdp=ANSWER)))

    return await nc.subscribe(subject, cb=on_offer)


async def test_each_action_is_one_entry_naming_who_and_what(
    http: httpx.AsyncClient, nc: Client, js: JetStreamContext
) -> None:
    ann = await store(js, "ann", "mosaics", "sessions")
    bob = await store(js, "bob", "sessions")
    await known(http, "ann", "bob")

    made = await http.get("/create", params={"urls": PATTERN}, headers=bearer(ann))
    assert made.status_code == 302
    fp = made.headers["location"].split("/")[2]
    again = await http.get("/create", params={"urls": PATTERN}, headers=bearer(bob))
    assert again.status_code == 302  # not a new mosaic: not audited again
    for _ in range(3):  # a player polls: one watch per viewer and mosaic
        assert (await http.get(f"/play/{fp}/index.m3u8", headers=bearer(ann))).status_code == 200
        assert (await http.get(f"/play/{fp}/index.m3u8")).status_code == 200
    stitcher = await answering(nc, subjects.mosaic_signal(fp))
    for _ in range(2):
        got = await http.post(f"/play/{fp}/whep", content="v=0", headers=SDP | bearer(bob))
        assert got.status_code == 201, got.text
    await stitcher.unsubscribe()

    started = await http.post("/session", json=VIDEO, headers=bearer(ann))
    assert started.status_code == 201
    sid = started.json()["id"]
    worker = await answering(nc, subjects.session_signal(sid))
    for _ in range(2):
        got = await http.post(f"/session/{sid}/whep", content="v=0", headers=SDP | bearer(bob))
        assert got.status_code == 201, got.text
    await worker.unsubscribe()
    assert (await http.delete(f"/session/{sid}", headers=bearer(bob))).status_code == 200
    assert (await http.delete(f"/session/{sid}", headers=bearer(ann))).status_code == 200

    # Each answer came after its entry was stored: no waiting.
    got = Counter((e.action, e.who, e.target) for e in await entries(js))
    assert got == Counter({
        ("mosaic-create", "token:ann", fp): 1,
        ("mosaic-watch", "token:ann", fp): 1,
        ("mosaic-watch", "anonymous", fp): 1,
        ("mosaic-watch", "token:bob", fp): 1,  # the WHEP offers
        ("session-create", "token:ann", sid): 1,
        ("session-watch", "token:bob", sid): 1,
        ("session-stop", "token:bob", sid): 1,  # the second DELETE ended nothing
    })  # fmt: skip
    created = next(e for e in await entries(js) if e.action == "mosaic-create")
    assert created.client == "127.0.0.1" and created.detail == "2 tiles"
    assert time.time() - 60 < created.at <= time.time()


async def test_api_audit_is_the_admins_newest_first_and_filtered(
    http: httpx.AsyncClient, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = await store(js, "ops", "admin")
    viewer = await store(js, "viewer", "mosaics", "sessions")
    await known(http, "ops", "viewer")
    for n in range(7):
        entry = AuditEntry(
            at=1000.0 + n, action="mosaic-watch" if n % 2 else "session-watch",
            who=f"viewer:v{n % 3}", target=f"t{n}",
        )  # fmt: skip
        await js.publish(subjects.audit(entry.action), encode(entry))

    assert (await http.get("/api/audit")).status_code == 401
    refused = await http.get("/api/audit", headers=bearer(viewer))
    assert refused.status_code == 403 and refused.json()["code"] == "scope"
    assert "lacks the admin scope" in refused.json()["error"]

    # Read back a window of 3 at a time, so the answer spans windows.
    monkeypatch.setattr(pages, "AUDIT_WINDOW", 3)

    async def targets(**params: Any) -> list[str]:
        got = await http.get("/api/audit", params=params, headers=bearer(ops))
        assert got.status_code == 200, got.text
        return [e["target"] for e in got.json()["entries"]]

    assert await targets() == [f"t{n}" for n in reversed(range(7))]
    assert await targets(limit=2) == ["t6", "t5"]
    assert await targets(action="mosaic-watch") == ["t5", "t3", "t1"]
    assert await targets(who="viewer:v0") == ["t6", "t3", "t0"]
    assert await targets(who="v1", action="mosaic-watch", limit=1) == ["t1"]
    assert await targets(who="nobody") == []
    whole = (await http.get("/api/audit", headers=bearer(ops))).json()
    assert whole["complete"] is True and whole["scanned"] == 7
    assert set(whole["entries"][0]) == {"type", "at", "action", "who", "target", "client",
                                        "detail"}  # fmt: skip
    for params, message in [
        ({"limit": "0"}, "limit='0'"),
        ({"limit": "x"}, "limit='x'"),
        ({"action": "mosaic-delete"}, "action='mosaic-delete': one of mosaic-create"),
        ({"since": "1"}, "unknown parameter 'since'"),
    ]:
        bad = await http.get("/api/audit", params=params, headers=bearer(ops))
        assert bad.status_code == 400 and message in bad.json()["error"]


async def test_events_tail_reads_the_audit_trail_with_filters(
    js: JetStreamContext, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    whos = ["token:ann", "viewer:ann", "token:bob", "token:ann", "cli:root"]
    actions = ["mosaic-create", "mosaic-watch", "session-create", "session-stop", "token-create"]
    for n, (who, action) in enumerate(zip(whos, actions, strict=True)):
        entry = AuditEntry(at=1000.0 + n, action=action, who=who, target=f"t{n}")  # type: ignore[arg-type]
        await js.publish(subjects.audit(action), encode(entry))

    async def lines(**kwargs: Any) -> list[dict[str, Any]]:
        out: list[str] = []
        await tail(js, out.append, follow=False, **kwargs)
        return [json.loads(line) for line in out]

    every = await lines(audit=True, last=None)
    assert [line["entry"]["target"] for line in every] == ["t0", "t1", "t2", "t3", "t4"]
    assert every[0]["subject"] == "audit.mosaic-create" and every[0]["seq"] == 1
    targets = lambda found: [line["entry"]["target"] for line in found]  # noqa: E731
    assert targets(await lines(audit=True, last=2)) == ["t3", "t4"]
    assert targets(await lines(who="token:ann")) == ["t0", "t3"]
    assert targets(await lines(who="ann")) == ["t0", "t1", "t3"]  # any kind named ann
    assert targets(await lines(who="ann", last=1)) == ["t3"]  # the last one that matches
    assert targets(await lines(action="session-create")) == ["t2"]
    assert targets(await lines(who="bob", action="mosaic-create")) == []
    assert await lines() == []  # the events tail is as it was: no events here

    # The command, as a user runs it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "TESSERA_", "JIT_"))}
    env |= {"TESSERA_DATA_DIR": str(tmp_path)} | server_env(nats_server)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "events", "tail", "--audit", "--who", "ann",
        "--action", "mosaic-watch", "--no-follow", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert [json.loads(line)["entry"]["who"] for line in out.decode().splitlines()] == [
        "viewer:ann"
    ]


# -- the home page ------------------------------------------------------------------------------

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


async def test_the_home_page_shows_recent_activity_to_an_admin_token(
    http: httpx.AsyncClient, page: Page
) -> None:
    made = await http.get("/create", params={"urls": PATTERN}, headers=bearer(LEGACY))
    fp = made.headers["location"].split("/")[2]
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(str(http.base_url) + "/")
    # The gateway refuses the activity to a page without a token: the page asks for one.
    await page.wait_for_selector("dialog[open]", timeout=10_000)
    assert "admin scope" in await page.inner_text("dialog p.why")
    await page.click("dialog button:not(.primary)")  # cancelled: not asked again by itself
    await page.wait_for_selector("#activity-empty.refused", timeout=10_000)
    assert await page.is_visible("#token-button")
    await page.click("#token-button")
    await page.fill("dialog input", LEGACY)
    await page.click("dialog button.primary")
    row = page.locator("#activity tbody tr").first
    await row.wait_for(timeout=10_000)
    text = await row.inner_text()
    assert "token:api-token" in text and "created a mosaic" in text and fp[:12] in text
    assert await row.locator("a").get_attribute("href") == f"/view/{fp}"
    assert not await page.is_visible("#token-button")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "home-activity.png", full_page=True)
