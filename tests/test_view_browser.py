"""The mosaic page ``/view/<fp>`` in headless Chromium (the system's, see :mod:`tests.browser`)
against the whole stack: gateway, controller, and grabber and stitcher workers as child
processes, on the session's nats-server, with moving synthetic sources (a colour each, with a
white square crossing it).

- ``?via=webrtc`` plays over WebRTC (WHEP to the stitcher) and ``?via=hls`` over Low-Latency
  HLS (hls.js); the page's chip names the transport, and the picture moves: two screenshots
  differ in every tile, and each tile shows its source's colour (not black);
- without ``?via`` the page picks WebRTC, and falls back to LL-HLS when the gateway says the
  mosaic has its maximum of WebRTC viewers (that answer is made by the test);
- the page recovers by itself from ``kill -9`` of the mosaic's stitcher (the controller starts
  a new one), over WebRTC and over LL-HLS.

Every wait polls a condition with a deadline; nothing sleeps a fixed time. Screenshots go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio
from nats.js import JetStreamContext

from pipeline.cli.up import Stack
from pipeline.config.settings import load
from pipeline.nats.server import EmbeddedNats
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from pipeline.state.layouts import Layout, layout
from tests.browser import chromium_path, picture
from tests.natsenv import server_env
from tests.test_pages import COLOURS, VIEWPORT, near, shot, tile_colour, until

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Request

CHROMIUM = chromium_path()
SIZE = (640, 360)
NAMES = ("red", "blue")
GRID = layout(len(NAMES), *SIZE)
MOVED = 40
"""A pixel moved when one of its channels changed by more than this (the codec's noise on a
flat colour is a few levels; the white square on a colour is over 150)."""
MOVED_SHARE = 0.002
"""Share of a tile's pixels that must have moved: the square is 1/10 of the height on a side,
about 0.6 % of a 16:9 tile, and a move uncovers as much again."""
VIA_TEXT = "document.getElementById('via').textContent"


# -- the browser and the stack -------------------------------------------------------------------


@dataclass
class Mosaic:
    """A mosaic of moving sources on a running stack, not yet watched by anyone."""

    fp: str
    url: str
    stack: Stack
    http: httpx.AsyncClient

    def view(self, via: str | None = None) -> str:
        return f"{self.url}/view/{self.fp}" + (f"?via={via}" if via else "")

    def stitcher(self) -> tuple[str, int] | None:
        """The stitcher worker's id and process id, while one runs."""
        provider = self.stack.provider
        assert provider is not None
        for wid, running in provider.running().items():
            pid = provider.pid(wid)
            if running.spec.kind == "stitcher" and pid is not None:
                return wid, pid
        return None


@pytest_asyncio.fixture
async def mosaic(
    request: pytest.FixtureRequest,
    nats_server: EmbeddedNats,
    js: JetStreamContext,
    tmp_path: Path,
) -> AsyncIterator[Mosaic]:
    """The whole stack (the controller starts workers as child processes) and a mosaic of
    two moving sources, 640x360. Parametrized indirectly, a dict of more settings."""
    sources = SourceServer(
        {name: LiveHlsSource(COLOURS[name], width=320, height=180, fps=25) for name in NAMES}
    )
    await asyncio.to_thread(sources.start)
    env = {
        **server_env(nats_server),
        "TESSERA_DATA_DIR": str(tmp_path),
        "JIT_ORCHESTRATOR_PORT": "0",
        "TESSERA_HEARTBEAT_INTERVAL": "0.5",
        "TESSERA_POLL_INTERVAL": "0.5",
        "TESSERA_X264_PRESET": "ultrafast",
        "TESSERA_SOURCE_OPEN_TIMEOUT": "3",
        "TESSERA_SOURCE_READ_TIMEOUT": "3",
        **getattr(request, "param", {}),
    }
    stack = Stack(load(env=env))
    try:
        await stack.start()
        assert stack.gateway is not None
        async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=10) as http:
            pattern = f"http://127.0.0.1:{sources.port}/{{{','.join(NAMES)}}}[n]/index.m3u8"
            made = await http.get(
                "/create", params={"urls": pattern, "size": "x".join(map(str, SIZE))}
            )
            assert made.status_code == 302, made.text
            fp = made.headers["location"].split("/")[2]
            yield Mosaic(fp, stack.gateway.url, stack, http)
    finally:
        await stack.stop()
        await asyncio.to_thread(sources.stop)


# -- reading the picture -------------------------------------------------------------------------


Pixels = npt.NDArray[np.uint8]


def tile_area(pixels: Pixels, grid: Layout, index: int) -> Pixels:
    """A tile's picture above its name strip, in a screenshot scaled from the mosaic's size."""
    scale = pixels.shape[1] / grid.width
    x, y = grid.rects[index].x, grid.rects[index].y
    x0, y0 = int(x * scale), int(y * scale)
    w, h = int(grid.rects[index].w * scale), int(grid.rects[index].h * scale * 0.75)
    return pixels[y0 : y0 + h, x0 : x0 + w]


def moved_share(before: Pixels, after: Pixels, index: int) -> float:
    """Share of tile ``index``'s pixels that differ clearly between two screenshots."""
    a = tile_area(before, GRID, index).astype(np.int16)
    b = tile_area(after, GRID, index).astype(np.int16)
    return float((np.abs(a - b).max(axis=2) > MOVED).mean())


async def moving_picture(page: Page, name: str, within: float = 30) -> None:
    """Wait until each tile shows its source's colour (so the picture is not black), then
    until a later screenshot differs from that one in every tile: the picture moves."""
    first: Pixels | None = None
    colours: list[tuple[int, int, int]] = []

    async def coloured() -> bool:
        nonlocal first, colours
        first = await picture(page)
        colours = [tile_colour(first, GRID, i) for i in range(len(NAMES))]
        return all(near(c, COLOURS[n]) for c, n in zip(colours, NAMES, strict=True))

    shares: list[float] = []

    async def moved() -> bool:
        nonlocal shares
        assert first is not None
        later = await picture(page)
        shares = [moved_share(first, later, i) for i in range(len(NAMES))]
        return all(s > MOVED_SHARE for s in shares)

    try:
        await until(coloured, within, f"each tile in its source's colour (saw {colours})")
        await until(moved, 10, f"every tile to move (moved shares {shares})")
    finally:
        await page.screenshot(path=shot(name))


async def playing(page: Page, via_text: str, within: float = 45) -> None:
    """Wait until the page plays, over the transport whose chip text is ``via_text``."""
    await until(
        lambda: page.evaluate(f"{VIA_TEXT} === {via_text!r} && !document.getElementById('via')"
                              ".hidden && document.getElementById('video').readyState >= 2"),
        within, f"the page to play over {via_text}",
    )  # fmt: skip


class Requests:
    """What the page asked of ``/play``: WHEP offers, and media an HLS player fetched."""

    def __init__(self, page: Page) -> None:
        self.offers = 0
        self.media = 0
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/whep"):
            self.offers += 1
        elif request.url.endswith((".m4s", ".ts", "/init.mp4")):
            self.media += 1


async def latency(page: Page) -> tuple[float, str]:
    """The seconds behind live the page shows, and how it says it measured them."""

    async def shown() -> str:
        text: str = await page.inner_text("#latency-text")
        return text if text.endswith("s behind live") else ""

    text = await until(shown, 10, "the latency to show")
    title = await page.get_attribute("#latency", "title")
    return float(text.split()[0]), title or ""


# -- playing -------------------------------------------------------------------------------------


async def test_the_view_page_plays_over_webrtc(page: Page, mosaic: Mosaic) -> None:
    asked = Requests(page)
    await page.goto(mosaic.view("webrtc"))
    assert "Starting the mosaic" in await page.inner_text("#message")
    await playing(page, "WebRTC")
    assert await page.get_attribute("body", "data-engine") == "webrtc"
    assert await page.get_attribute("body", "data-via") == "webrtc"
    assert "?via=webrtc" in (await page.get_attribute("#via", "title") or "")
    await moving_picture(page, "view-webrtc.png")
    assert await page.is_hidden("#message")
    seconds, how = await latency(page)
    print(f"\nWebRTC: {seconds} s behind live: {how}")
    # Sanity only (one loaded machine): the figures are the benchmark's business.
    assert 0 <= seconds < 5, (seconds, how)
    assert "stitcher" in how, how
    assert asked.offers >= 1 and asked.media == 0, vars(asked)


async def test_the_view_page_plays_over_ll_hls(page: Page, mosaic: Mosaic) -> None:
    asked = Requests(page)
    await page.goto(mosaic.view("hls"))
    await playing(page, "LL-HLS")
    assert await page.get_attribute("body", "data-engine") == "hls.js"
    assert await page.evaluate("document.getElementById('video').srcObject === null")
    await moving_picture(page, "view-ll-hls.png")
    seconds, how = await latency(page)
    print(f"\nLL-HLS: {seconds} s behind live: {how}")
    assert 0 <= seconds < 15, (seconds, how)
    assert "program date time" in how or "live edge" in how, how
    assert asked.offers == 0 and asked.media > 0, vars(asked)


@pytest.mark.parametrize("mosaic", [{"TESSERA_HLS_FORMAT": "ts"}], indirect=True, ids=["ts"])
async def test_the_view_page_plays_legacy_mpeg_ts_hls(page: Page, mosaic: Mosaic) -> None:
    await page.goto(mosaic.view("hls"))
    await playing(page, "HLS")
    assert await page.get_attribute("body", "data-via") == "hls"
    await moving_picture(page, "view-hls-ts.png")
    seconds, _ = await latency(page)
    assert 0 <= seconds < 30


async def test_without_via_the_page_picks_webrtc_and_falls_back_when_it_is_full(
    page: Page, browser: Browser, mosaic: Mosaic
) -> None:
    await page.goto(mosaic.view())
    await playing(page, "WebRTC")
    await moving_picture(page, "view-auto.png")

    # A second viewer to whom the gateway says the mosaic's WebRTC viewers are all taken.
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        second = await context.new_page()
        full = '{"error": "mosaic has 16 WebRTC viewers, its maximum"}'
        await second.route(
            "**/whep",
            lambda route: route.fulfill(
                status=503, body=full, content_type="application/json",
                headers={"Retry-After": "5"},
            ),
        )  # fmt: skip
        await second.goto(mosaic.view())
        await playing(second, "LL-HLS")
        title = await second.get_attribute("#via", "title") or ""
        assert "maximum" in title and "tried again" in title, title
        await moving_picture(second, "view-fallback.png")
    finally:
        await context.close()


# -- recovering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("via", "shown"), [("webrtc", "WebRTC"), ("hls", "LL-HLS")])
async def test_the_view_page_recovers_from_a_stitcher_restart(
    page: Page, mosaic: Mosaic, via: str, shown: str
) -> None:
    asked = Requests(page)
    await page.goto(mosaic.view(via))
    await playing(page, shown)
    await moving_picture(page, f"view-{via}-before-restart.png")

    old = mosaic.stitcher()
    assert old is not None
    offered = asked.offers
    os.kill(old[1], signal.SIGKILL)
    killed = time.monotonic()

    async def replaced() -> bool:
        now = mosaic.stitcher()
        return now is not None and now[1] != old[1]

    await until(replaced, 30, "the controller to start a new stitcher")

    # No picture from the old stitcher is left anywhere after this: WebRTC holds a few frames
    # and hls.js a second or two of parts.
    async def drained() -> bool:
        return time.monotonic() > killed + 5

    await until(drained, 10, "the old stitcher's last pictures to be played out", 0.5)
    await playing(page, shown, within=45)
    await moving_picture(page, f"view-{via}-after-restart.png", within=45)
    if via == "webrtc":
        assert asked.offers > offered, "the page did not offer WHEP again"
    else:
        assert asked.offers == 0
