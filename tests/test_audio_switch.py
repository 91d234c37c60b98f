"""Switching a mosaic's sound: ``POST /mosaics/<fp>/audio`` makes the *sibling* mosaic (the
same tiles, another ``audio=``, so another fingerprint) and the viewer page's mute button and
Sound selector, against a real nats-server, a real projector and the gateway over HTTP (as the
``gateway`` NATS user).

The page tests drive headless Chromium with no stitcher running: the page waits for a picture
that never comes, and its controls work all the same (they read the mosaic from the gateway,
not from the media).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.access import signing, tokens
from pipeline.control.projector import Projector
from pipeline.messages.audit import AuditEntry
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import ViewerHeartbeat
from pipeline.nats.eventlog import matching_count
from pipeline.nats.topology import AUDIT, HEARTBEATS, TOKENS
from tests.browser import until_true
from tests.gatewayhttp import gateway_http

if TYPE_CHECKING:
    from playwright.async_api import Page

PATTERN = "http://cams.example/{a,b,c}[n]/index.m3u8"
SECRET = "k" * 32
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
WITHIN = 20.0
"""Seconds any one wait may take (two shared cores, a browser beside)."""


@dataclass
class Gateway:
    url: str
    http: httpx.AsyncClient
    js: JetStreamContext

    async def create(self, headers: dict[str, str] | None = None, **params: str) -> str:
        """A mosaic of the three cameras (``a``, ``b``, ``c``): its fingerprint."""
        got = await self.http.get("/create", params={"urls": PATTERN, **params}, headers=headers)
        assert got.status_code == 302, got.text
        return got.headers["location"].split("/play/")[1].split("/")[0]

    async def switch(
        self, fp: str, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.http.post(f"/mosaics/{fp}/audio", json=body, headers=headers)

    async def described(self, fp: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        got = await self.http.get(f"/mosaics/{fp}/alarms", headers=headers)
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def events(self, fp: str) -> int:
        return await matching_count(self.js, f"events.mosaic.{fp}")


@contextlib.asynccontextmanager
async def serving(
    nc: Client, js: JetStreamContext, gateway_nc: Client, tmp_path: Path, **env: str
) -> AsyncIterator[Gateway]:
    projector = Projector(nc, js, fetch_timeout=0.2)
    await projector.start()
    try:
        async with gateway_http(
            gateway_nc, gateway_nc.jetstream(), tmp_path, request_timeout=WITHIN,
            TESSERA_CREATE_RATE="1000", **env,
        ) as http:  # fmt: skip
            yield Gateway(str(http.base_url).rstrip("/"), http, js)
    finally:
        await projector.stop()


@pytest_asyncio.fixture
async def gw(
    nc: Client, js: JetStreamContext, gateway_nc: Client, tmp_path: Path
) -> AsyncIterator[Gateway]:
    async with serving(nc, js, gateway_nc, tmp_path) as gateway:
        yield gateway


async def audit_entries(js: JetStreamContext) -> list[AuditEntry]:
    """Every entry of stream ``AUDIT``, oldest first."""
    info = await js.stream_info(AUDIT.name)
    if not info.state.messages:
        return []
    return [
        msgspec.json.decode((await js.get_msg(AUDIT.name, seq)).data, type=AuditEntry)
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def store_token(js: JetStreamContext, name: str, *scopes: tokens.Scope) -> str:
    token, record = tokens.issue(name, scopes, at=time.time())
    await (await js.key_value(TOKENS.name)).create(name, tokens.encode_record(record))
    return token


# -- the route -------------------------------------------------------------------------------


async def test_the_sibling_has_the_chosen_sound_and_the_same_tiles(gw: Gateway) -> None:
    fp = await gw.create(title="Studio", alarms="black:4", clock="utc")
    first = await gw.described(fp)
    assert first["audio"] == ""

    got = await gw.switch(fp, {"tile": 1})
    assert got.status_code == 200, got.text
    body = got.json()
    new = body["fp"]
    assert new != fp
    assert body == {"fp": new, "view": f"/view/{new}",
                    "playlist": f"/play/{new}/index.m3u8", "audio": "1"}  # fmt: skip
    # The mosaic /create makes from the same query with audio=1: one mosaic, recorded once.
    assert await gw.create(title="Studio", alarms="black:4", clock="utc", audio="1") == new
    assert await gw.events(new) == 1

    sibling = await gw.described(new)
    assert sibling["audio"] == "1"
    assert sibling["layout"] == first["layout"]
    assert [t["name"] for t in sibling["layout"]["tiles"]] == ["a", "b", "c"]
    # Its work starts now (a viewer heartbeat), before the page that asked comes to watch.
    beat = decode_heartbeat(
        (await gw.js.get_last_msg(HEARTBEATS.name, f"hb.viewer.mosaic.{new}")).data or b""
    )
    assert isinstance(beat, ViewerHeartbeat) and beat.id == new
    made = [e for e in await audit_entries(gw.js) if e.action == "mosaic-create"]
    assert [e.target for e in made] == [fp, new]
    assert made[1].detail == f"3 tiles; audio=1, a sibling of {fp}"

    page = await gw.http.get(body["view"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert (await gw.http.get(body["playlist"])).status_code == 200

    # A name, "off" and "auto" as /create's audio= takes them; auto is the first mosaic again.
    by_name = await gw.switch(fp, {"tile": "C"})
    assert (by_name.status_code, by_name.json()["audio"]) == (200, "2")
    off = (await gw.switch(new, {"tile": "off"})).json()
    assert off["audio"] == "off" and off["fp"] not in (fp, new)
    assert (await gw.described(off["fp"]))["audio"] == "off"
    back = (await gw.switch(off["fp"], {"tile": "auto"})).json()
    assert (back["fp"], back["audio"]) == (fp, "")
    assert await gw.events(fp) == 1


async def test_switching_is_idempotent(gw: Gateway) -> None:
    fp = await gw.create()
    one = await gw.switch(fp, {"tile": 2})
    two = await gw.switch(fp, {"tile": "2"})
    assert one.status_code == two.status_code == 200
    new = one.json()["fp"]
    assert two.json()["fp"] == new
    assert await gw.events(new) == 1
    # Asking for the sound it has answers the mosaic itself, recording nothing.
    same = await gw.switch(new, {"tile": 2})
    assert (same.status_code, same.json()["fp"], same.json()["audio"]) == (200, new, "2")
    assert await gw.events(new) == 1
    made = [e.target for e in await audit_entries(gw.js) if e.action == "mosaic-create"]
    assert made == [fp, new]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"tile": 3}, "tile 3 does not exist: give a tile index from 0 to 2"),
        ({"tile": -1}, "tile -1 does not exist: give a tile index from 0 to 2"),
        ({"tile": "7"}, "tile 7 does not exist"),
        ({"tile": "d"}, "no tile is named 'd'"),
        ({"tile": True}, "tile: true is not a tile"),
        ({"tile": 1.5}, "tile: 1.5 is not a tile"),
        ({"tile": None}, "tile: null is not a tile"),
        ({"tile": [1]}, "tile: [1] is not a tile"),
        ({}, "tile is missing"),
        ({"tile": 1, "sound": "on"}, "unknown field 'sound': use tile"),
        ([1], "the body must be a JSON object"),
        ("off", "the body must be a JSON object"),
        (b"{tile: 1}", "the body is not JSON"),
        (b"", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
    ],
)
async def test_a_bad_body_is_a_400_with_one_line(gw: Gateway, body: Any, reason: str) -> None:
    fp = await gw.create()
    before = await matching_count(gw.js, "events.mosaic.>")
    if isinstance(body, bytes):
        got = await gw.http.post(f"/mosaics/{fp}/audio", content=body,
                                 headers={"content-type": "application/json"})  # fmt: skip
    else:
        got = await gw.switch(fp, body)
    assert got.status_code == 400, got.text
    error = got.json()["error"]
    assert reason in error and "\n" not in error
    assert await matching_count(gw.js, "events.mosaic.>") == before, "nothing was recorded"


async def test_a_body_over_the_limit_is_a_413(gw: Gateway) -> None:
    fp = await gw.create()
    got = await gw.switch(fp, {"tile": "x" * 2000})
    assert got.status_code == 413 and "1024 bytes" in got.json()["error"]


async def test_an_unknown_mosaic_is_the_same_404(gw: Gateway) -> None:
    for fp in ("0" * 32, "NOPE", "0" * 31):
        got = await gw.switch(fp, {"tile": 0})
        assert got.status_code == 404, fp
        assert got.json() == {"error": "not found"}
    assert await matching_count(gw.js, "events.>") == 0


async def test_where_play_urls_are_signed_switching_needs_the_mosaics_scope(
    nc: Client, js: JetStreamContext, gateway_nc: Client, tmp_path: Path
) -> None:
    maker = await store_token(js, "maker", "mosaics")
    watcher = await store_token(js, "watcher", "sessions")
    async with serving(nc, js, gateway_nc, tmp_path, TESSERA_PLAY_SECRET=SECRET) as gw:
        auth = {"Authorization": f"Bearer {maker}"}
        fp = await gw.create(headers=auth)

        nobody = await gw.switch(fp, {"tile": 1})
        assert nobody.status_code == 401 and "mosaics scope" in nobody.json()["error"]
        lacking = await gw.switch(fp, {"tile": 1}, {"Authorization": f"Bearer {watcher}"})
        assert lacking.status_code == 403 and lacking.json()["code"] == "scope"
        # A viewer's signed link of the mosaic opens its page and alarms, never this.
        link = signing.sign(SECRET, f"mosaic:{fp}", 600, "ops-wall", time.time())
        assert (await gw.http.get(f"/s/{link}/mosaics/{fp}/alarms")).status_code == 200
        through_link = await gw.http.post(f"/s/{link}/mosaics/{fp}/audio", json={"tile": 1})
        assert through_link.status_code == 403
        assert await matching_count(js, "events.mosaic.>") == 1, "only the first mosaic"

        got = await gw.switch(fp, {"tile": 1}, auth)
        assert got.status_code == 200, got.text
        body = got.json()
        new = body["fp"]
        # Signed for the token that asked, as /create's redirect is: one token opens both.
        head = body["view"].removesuffix(f"/view/{new}")
        assert head.startswith("/s/") and body["playlist"] == f"{head}/play/{new}/index.m3u8"
        granted = signing.verify(signing.parse_secrets(SECRET), f"mosaic:{new}",
                                 head.removeprefix("/s/"), time.time(), lambda _: None)  # fmt: skip
        assert isinstance(granted, signing.Granted) and granted.viewer == "maker"
        assert (await gw.http.get(body["view"])).status_code == 200
        assert (await gw.http.get(body["playlist"])).status_code == 200
        assert (await gw.http.get(f"/view/{new}")).status_code == 403, "unsigned: refused"


# -- the viewer page -------------------------------------------------------------------------


async def test_the_page_lists_the_tiles_shows_the_sound_and_switches_to_the_sibling(
    page: Page, gw: Gateway
) -> None:
    fp = await gw.create(audio="b")
    await page.goto(f"{gw.url}/view/{fp}?via=hls")
    await until_true(page, "document.body.dataset.sound === '1'", WITHIN)
    assert await page.is_visible("#sound") and await page.is_visible("#mute")
    options = await page.eval_on_selector_all(
        "#sound-choice option", "(all) => all.map((o) => [o.value, o.textContent])"
    )
    assert options == [["auto", "Auto"], ["0", "Tile 1 · a"], ["1", "Tile 2 · b"],
                       ["2", "Tile 3 · c"], ["off", "Off"]]  # fmt: skip
    assert await page.input_value("#sound-choice") == "1"
    chosen = await page.eval_on_selector("#sound-choice", "(s) => s.selectedOptions[0].text")
    assert chosen == "Tile 2 · b"
    assert "Sound:" in await page.inner_text("#sound")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "view-sound.png")

    # Muted on load (autoplay rules); the button turns the sound on and off.
    assert await page.evaluate("document.getElementById('video').muted") is True
    assert await page.inner_text("#mute") == "Unmute"
    await page.click("#mute")
    assert await page.evaluate("document.getElementById('video').muted") is False
    assert await page.inner_text("#mute") == "Mute"
    assert await page.get_attribute("#mute", "aria-pressed") == "true"
    await page.click("#mute")
    assert await page.evaluate("document.getElementById('video').muted") is True
    await page.keyboard.press("m")
    assert await page.evaluate("document.getElementById('video').muted") is False

    # Another tile: the sibling's page, ?via= kept, and the sound on as it was here.
    async with page.expect_navigation(timeout=WITHIN * 1000):
        await page.select_option("#sound-choice", "0")
    new = page.url.split("/view/")[1].split("?")[0]
    assert new != fp and await gw.events(new) == 1
    assert await gw.create(audio="0") == new, "the mosaic /create makes with audio=0"
    assert page.url == f"{gw.url}/view/{new}?via=hls&sound=on"
    await until_true(page, "document.body.dataset.sound === '0'", WITHIN)
    assert await page.input_value("#sound-choice") == "0"

    # Off: a mosaic without sound, whose mute button has nothing to do.
    async with page.expect_navigation(timeout=WITHIN * 1000):
        await page.select_option("#sound-choice", "off")
    off = page.url.split("/view/")[1].split("?")[0]
    assert (await gw.described(off))["audio"] == "off"
    await until_true(page, "document.body.dataset.sound === 'off'", WITHIN)
    assert await page.is_disabled("#mute")
    assert "no sound" in (await page.get_attribute("#mute", "title") or "")


async def test_a_signed_link_hides_the_switch_unless_the_browser_keeps_a_token(
    page: Page, nc: Client, js: JetStreamContext, gateway_nc: Client, tmp_path: Path
) -> None:
    maker = await store_token(js, "maker", "mosaics")
    async with serving(nc, js, gateway_nc, tmp_path, TESSERA_PLAY_SECRET=SECRET) as gw:
        fp = await gw.create(headers={"Authorization": f"Bearer {maker}"})
        link = signing.sign(SECRET, f"mosaic:{fp}", 600, "ops-wall", time.time())
        await page.goto(f"{gw.url}/s/{link}/view/{fp}?via=hls")
        # The page read its mosaic through the link (the sound is known) but offers no switch.
        await until_true(page, "document.body.dataset.sound === 'auto'", WITHIN)  # fmt: skip
        assert await page.is_hidden("#sound")
        assert await page.is_visible("#mute")
        await page.click("#mute")
        assert await page.evaluate("document.getElementById('video').muted") is False

        # An operator's browser keeps a token with the mosaics scope (the home page's).
        await page.evaluate(f"localStorage.setItem('tessera.api-token', '{maker}')")
        await page.reload()
        await page.wait_for_selector("#sound", state="visible", timeout=WITHIN * 1000)
        async with page.expect_navigation(timeout=WITHIN * 1000):
            await page.select_option("#sound-choice", "2")
        new = await gw.create(headers={"Authorization": f"Bearer {maker}"}, audio="2")
        assert page.url.startswith(f"{gw.url}/s/") and page.url.endswith(f"/view/{new}?via=hls")
        # The signed page of the sibling opens.
        await until_true(page, "document.body.dataset.sound === '2'", WITHIN)  # fmt: skip
