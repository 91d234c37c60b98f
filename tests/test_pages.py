"""The gateway's pages in a real browser: headless Chromium (the system's, see
:mod:`tests.browser`) against a real gateway and nats-server.

- the home page's mosaic form expands a pattern as you type and shows a caret under an error;
- the mosaic page plays over hls.js (``?via=hls``): the video's ``currentTime`` advances, and
  a screenshot shows each test source's colour in its tile (WebRTC, the fallback and recovery:
  ``tests/test_view_browser.py``);
- the review page connects to a JIT session over WebRTC, shows frame N after a seek to N (read
  off the frame-number pattern in a screenshot), steps with the arrow keys, and shows the
  timecode the worker reports.

Screenshots of the pages are written to ``test-artifacts/screenshots/`` for a person to look
at. Every wait polls a condition with a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

import urldsl
from gateway import pages
from gateway.app import create_app
from gateway.context import GatewayContext
from pipeline.cli.up import Stack
from pipeline.config.settings import Config, load
from pipeline.control.projector import Projector
from pipeline.nats.server import EmbeddedNats
from pipeline.producers.jit.timecode import timecode
from pipeline.runtime.httpserver import HttpServer
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from pipeline.state.layouts import layout
from tests.browser import chromium_path, picture
from tests.jitmedia import TONES, make_tones, make_video, read_frame_number
from tests.natsenv import server_env

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = chromium_path()

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
VIEWPORT: Any = {"width": 1280, "height": 720}
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
}
TOLERANCE = 45
"""Per RGB channel: the mosaic's H.264, then the browser's decode, scale and YUV->RGB."""
RATE = fractions.Fraction(25)
FRAMES = 300
PLAY = "document.getElementById('play')"
RATE_SHOWN = "document.getElementById('rate').textContent"


def _env(nats_server: EmbeddedNats, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **server_env(nats_server),
        "TESSERA_DATA_DIR": str(data_dir),
        "JIT_ORCHESTRATOR_PORT": "0",
        "TESSERA_HEARTBEAT_INTERVAL": "0.5",
        "TESSERA_POLL_INTERVAL": "0.5",
        "TESSERA_X264_PRESET": "ultrafast",
        "TESSERA_SOURCE_OPEN_TIMEOUT": "3",
        "TESSERA_SOURCE_READ_TIMEOUT": "3",
    }
    env.update(extra)
    return env


async def until(
    check: Callable[[], Awaitable[Any]], within: float, what: str, every: float = 0.2
) -> Any:
    """Poll ``check()`` until it returns something truthy (returned), for at most ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(every)


def shot(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name


# -- the browser -------------------------------------------------------------------------------


# -- gateways ------------------------------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    http: httpx.AsyncClient
    config: Config


@pytest_asyncio.fixture
async def gateway(
    nc: Client, js: JetStreamContext, nats_server: EmbeddedNats, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """The gateway and the projector, no controller: nothing starts workers."""
    media = tmp_path / "media"
    media.mkdir()
    config = load(env=_env(nats_server, tmp_path, JIT_MEDIA_ROOTS=str(media)))
    projector = Projector(nc, js, heartbeat_interval=0.5)
    await projector.start()
    server = HttpServer(create_app(GatewayContext(nc=nc, js=js, config=config)),
                           host="127.0.0.1", port=0)  # fmt: skip
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            yield Gateway(server.url, http, config)
    finally:
        await server.stop()
        await projector.stop()


@pytest_asyncio.fixture
async def stack(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """Everything, workers included (the controller starts them as child processes)."""
    media = tmp_path / "media"
    media.mkdir()
    config = load(env=_env(nats_server, tmp_path, JIT_MEDIA_ROOTS=str(media)))
    running = Stack(config)
    await running.start()
    try:
        assert running.gateway is not None
        async with httpx.AsyncClient(base_url=running.gateway.url, timeout=10) as http:
            yield Gateway(running.gateway.url, http, config)
    finally:
        await running.stop()


# -- the home page ------------------------------------------------------------------------------


async def test_home_expands_a_pattern_and_shows_a_caret_under_an_error(
    page: Page, gateway: Gateway
) -> None:
    # Something in each list, so the screenshot shows them.
    listed = "http://127.0.0.1:9/{lobby,dock}[n]/index.m3u8"
    made = await gateway.http.get("/create", params={"urls": listed, "title": "Loading bays"})
    assert made.status_code == 302
    fp = made.headers["location"].split("/")[2]
    video = make_video(gateway.config.media_root_paths[0] / "interview.mp4", frames=10, rate=RATE)
    started = await gateway.http.post("/session", json={"inputs": [{"url": str(video)}]})
    assert started.status_code == 201, started.text
    assert started.json()["view_url"].endswith(f"/session/{started.json()['id']}/view")

    await page.goto(gateway.url + "/")
    await page.wait_for_selector(f'#mosaics tr[data-fp="{fp}"]', timeout=10_000)
    row = await page.inner_text(f'#mosaics tr[data-fp="{fp}"]')
    assert "Loading bays" in row and "watched" in row and "lobby, dock" in row
    await page.wait_for_selector("#sessions tbody tr", timeout=10_000)
    assert "interview.mp4" in await page.inner_text("#sessions tbody tr")

    pattern = "http://cams.example/{north,south,east}[n]/{hd,sd}[n,npre=-].m3u8"
    await page.fill("#pattern", pattern)
    await page.wait_for_function(
        "() => document.querySelectorAll('#streams li').length === 6", timeout=5_000
    )
    names = await page.locator("#streams .stream-name").all_inner_texts()
    expected = urldsl.expand(pattern)
    assert names == [s.name for s in expected]
    urls = await page.locator("#streams .stream-url").all_inner_texts()
    assert urls == [s.url for s in expected]
    assert "6 streams" in await page.inner_text("#expansion .summary")
    assert await page.is_enabled("#create")
    await page.screenshot(path=shot("home.png"), full_page=True)
    # The focus layout: its preview spans the first tile over the big block; no columns.
    await page.select_option("#layout", "focus")
    await page.wait_for_function(
        "() => document.querySelector('#expansion .summary').innerText.includes('3×3 focus')",
        timeout=5_000,
    )
    assert await page.is_disabled("#cols")
    spans = await page.locator(".grid-preview i").evaluate_all(
        "cells => cells.map((c) => c.style.gridColumn + ' ' + c.style.gridRow)"
    )
    assert spans[0] == "1 / span 2 1 / span 2" and len(spans) == 6
    await page.locator("#expansion .summary").screenshot(path=shot("home-focus.png"))
    await page.select_option("#layout", "grid")
    await page.wait_for_function(
        "() => document.querySelector('#expansion .summary').innerText.includes('3×2 grid')",
        timeout=5_000,
    )

    bad = "http://cams.example/{a,b"
    await page.fill("#pattern", bad)
    await page.wait_for_selector("#pattern-error", timeout=5_000)
    with pytest.raises(urldsl.UrlDslError) as error:
        urldsl.expand(bad)
    assert error.value.message in await page.inner_text("#pattern-error")
    assert await page.inner_text("#pattern-error pre.caret") == error.value.caret()
    assert not await page.is_enabled("#create")
    await page.locator("section:has(#create-form)").screenshot(path=shot("home-error.png"))

    # Back to a good pattern, and "Create and watch" opens the new mosaic's page.
    await page.fill("#pattern", "http://127.0.0.1:9/{one,two,three}[n].m3u8")
    await page.wait_for_function("() => document.querySelectorAll('#streams li').length === 3")
    await page.fill("#title", "Three")
    await page.select_option("#layout", "focus")
    await page.click("#create")
    await page.wait_for_url("**/view/*", timeout=5_000)
    assert "Starting the mosaic" in await page.inner_text("#message")
    made = page.url.rsplit("/", 1)[1]
    places = (await gateway.http.get(f"/mosaics/{made}/alarms")).json()["layout"]["tiles"]
    assert places[0]["w"] == 2 * places[1]["w"], "the form made a focus mosaic"


async def test_the_api_helpers(gateway: Gateway) -> None:
    got = await gateway.http.get("/api/urldsl", params={"urls": "http://x/{a,b}[n]"})
    assert got.status_code == 200
    assert got.json()["streams"] == [
        {"url": "http://x/a", "name": "a"},
        {"url": "http://x/b", "name": "b"},
    ]
    assert got.json()["grid"] == {"cols": 2, "rows": 1, "layout": "grid",
                                  "tiles": [{"x": 0, "y": 0, "w": 1, "h": 1},
                                            {"x": 1, "y": 0, "w": 1, "h": 1}]}  # fmt: skip
    # The form's preview of the focus layout: the first tile spans the big block.
    focus = await gateway.http.get(
        "/api/urldsl", params={"urls": "http://x/{a,b,c}[n]", "layout": "focus"}
    )
    assert focus.json()["grid"] == {"cols": 3, "rows": 3, "layout": "focus",
                                    "tiles": [{"x": 0, "y": 0, "w": 2, "h": 2},
                                              {"x": 2, "y": 0, "w": 1, "h": 1},
                                              {"x": 2, "y": 1, "w": 1, "h": 1}]}  # fmt: skip
    nolayout = await gateway.http.get("/api/urldsl", params={"urls": "http://x/a", "layout": "x"})
    assert nolayout.status_code == 400 and "'x' is not a layout" in nolayout.json()["error"]
    bad = await gateway.http.get("/api/urldsl", params={"urls": ["http://x/{a}", "http://{a,b"]})
    assert bad.status_code == 400
    body = bad.json()
    assert body["error"].startswith("pattern 2:") and body["pattern"] == 1
    assert body["caret"].endswith("^") and body["column"] >= 1
    scheme = await gateway.http.get("/api/urldsl", params={"urls": "ftp://x/{a,b}"})
    assert scheme.status_code == 400 and "scheme 'ftp'" in scheme.json()["error"]
    assert (await gateway.http.get("/view/" + "0" * 32)).status_code == 404
    assert (await gateway.http.get(f"/session/{'0' * 32}/view")).status_code == 404
    assert (await gateway.http.get("/view/nope")).status_code == 404
    home = await gateway.http.get("/")
    assert home.status_code == 200
    assert "default-src 'self'" in home.headers["content-security-policy"]
    assert (await gateway.http.get("/api/mosaics")).json()["mosaics"] == []


async def test_the_pages_timecodes_match_the_workers(page: Page, gateway: Gateway) -> None:
    """gateway/web/timecode.js against pipeline/producers/jit/timecode.py."""
    await page.goto(gateway.url + "/static/missing.html")
    rates = [
        (fractions.Fraction(25), {"fps": 25, "drop": False}),
        (fractions.Fraction(24000, 1001), {"fps": 24, "drop": False}),
        (fractions.Fraction(30000, 1001), {"fps": 30, "drop": True}),
        (fractions.Fraction(60000, 1001), {"fps": 60, "drop": True}),
    ]
    frames = [0, 1, 29, 30, 59, 1799, 1800, 1801, 3597, 17982, 17983, 107_892, 2_000_000]
    for rate, js_rate in rates:
        got = await page.evaluate(
            """async ([frames, rate]) => {
                const t = await import('/static/timecode.js');
                return frames.map((f) => {
                    const tc = t.fromFrame(f, rate);
                    return [tc, t.toFrame(tc, rate), t.learnRate(f, tc)];
                });
            }""",
            [frames, js_rate],
        )
        for frame, (tc, back, learnt) in zip(frames, got, strict=True):
            assert tc == timecode(frame, rate), f"frame {frame} at {rate}"
            assert back == frame, f"{tc} at {rate}"
            assert learnt in (None, js_rate), f"{tc} at {rate}: learnt {learnt}"
        assert got[-1][2] == js_rate, "a timecode past the first second tells the rate"


# -- the mosaic page ----------------------------------------------------------------------------


async def test_the_mosaic_page_plays_every_tile(page: Page, stack: Gateway) -> None:
    # Chromium's own HLS (new in 2025) takes a young live playlist for a finished video: the
    # page is meant to play with hls.js here, the copy the package ships (no npm). HLS is
    # asked for: the page would pick WebRTC (tests/test_view_browser.py plays both).
    assert pages.HLS_JS is not None, pages.MISSING_HLS_JS
    sources = SourceServer(
        {name: LiveHlsSource(rgb, width=320, height=180, fps=25) for name, rgb in COLOURS.items()}
    )
    await asyncio.to_thread(sources.start)
    try:
        names = list(COLOURS)
        pattern = f"http://127.0.0.1:{sources.port}/{{{','.join(names)}}}[n]/index.m3u8"
        made = await stack.http.get(
            "/create", params={"urls": pattern, "size": "640x360", "title": "Test cameras"}
        )
        assert made.status_code == 302
        fp = made.headers["location"].split("/")[2]

        await page.goto(f"{stack.url}/view/{fp}?via=hls")
        assert "Starting the mosaic" in await page.inner_text("#message")
        await page.screenshot(path=shot("mosaic-starting.png"))
        await page.wait_for_function(
            "() => document.getElementById('video').currentTime > 0", timeout=45_000, polling=200
        )
        first = await page.evaluate("document.getElementById('video').currentTime")
        await page.wait_for_function(
            f"() => document.getElementById('video').currentTime > {first} + 1", timeout=10_000
        )
        assert await page.is_hidden("#message")
        assert await page.get_attribute("body", "data-engine") == "hls.js"
        assert await page.evaluate("window.Hls.version") == pages.HLS_JS.version

        grid = layout(len(names), 640, 360)
        colours: list[tuple[int, int, int]] = []

        async def tiles_show_their_sources() -> bool:
            nonlocal colours
            pixels = await picture(page)
            colours = [tile_colour(pixels, grid, i) for i in range(len(names))]
            return all(near(c, COLOURS[n]) for c, n in zip(colours, names, strict=True))

        try:
            await until(tiles_show_their_sources, 20, "each tile in its source's colour")
        finally:
            await page.screenshot(path=shot("mosaic.png"))
        latency = await page.inner_text("#latency-text")
        assert latency.endswith("s behind live"), latency
        assert 0 <= float(latency.split()[0]) < 30
        assert "Test cameras" in await page.title()
    finally:
        await asyncio.to_thread(sources.stop)


def tile_colour(pixels: np.ndarray[Any, Any], grid: Any, index: int) -> tuple[int, int, int]:
    """Median RGB of the middle of a tile's upper part (the screenshot is scaled from the
    mosaic's size; the name strip is at the bottom, the moving marker is a minority)."""
    scale = pixels.shape[1] / grid.width
    x, y = grid.rects[index].x, grid.rects[index].y
    w, h = grid.rects[index].w * scale, grid.rects[index].h * scale
    x0, y0 = int(x * scale + w * 0.2), int(y * scale + h * 0.15)
    region = pixels[y0 : y0 + int(h * 0.4), x0 : x0 + int(w * 0.6)]
    r, g, b = np.median(region.reshape(-1, 3), axis=0)
    return int(r), int(g), int(b)


def near(actual: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - e) <= TOLERANCE for a, e in zip(actual, expected, strict=True))


# -- the review page ----------------------------------------------------------------------------


@dataclass
class Review:
    url: str
    session_id: str


@pytest_asyncio.fixture
async def review(stack: Gateway) -> AsyncIterator[Review]:
    """A session of a numbered-frame video and a stereo WAV, served by a JIT worker that the
    controller starts, as in production."""
    media = stack.config.media_root_paths[0]
    video = make_video(media / "numbers.mp4", frames=FRAMES, rate=RATE)
    tones = make_tones(media / "tones.wav", tones=TONES[:2], seconds=FRAMES / 25 + 0.5)
    body = {"inputs": [{"url": str(video)}, {"url": str(tones), "channel_count": 2}]}
    started = await stack.http.post("/session", json=body)
    assert started.status_code == 201, started.text
    sid = started.json()["id"]
    yield Review(f"{stack.url}/session/{sid}/view", sid)


async def frame_shown(page: Page) -> int | None:
    """The frame number the video shows, read off its pattern in a screenshot."""
    pixels = await picture(page)
    luma = (pixels @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    return read_frame_number(luma)


async def shows(page: Page, frame: int, within: float = 10) -> None:
    """Wait until the page says frame ``frame`` and the picture is that frame."""

    async def both() -> bool:
        said = await page.inner_text("#frame")
        return said == str(frame) and await frame_shown(page) == frame

    await until(both, within, f"frame {frame} on screen and in the readout")


async def test_the_review_page_seeks_steps_and_shows_the_timecode(
    page: Page, review: Review
) -> None:
    await page.goto(review.url)
    # Connected: the worker sends the current frame to a new viewer, with its report.
    await page.wait_for_function(
        "() => /^\\d+$/.test(document.getElementById('frame').textContent)", timeout=30_000
    )
    await until(
        lambda: page.evaluate("document.getElementById('frame-count').textContent === '300'"),
        10, "the frame count from the session's stats",
    )  # fmt: skip

    target = 137
    await page.fill("#seek", str(target))
    await page.press("#seek", "Enter")
    await shows(page, target)
    assert await page.inner_text("#timecode") == timecode(target, RATE)

    await page.keyboard.press("ArrowRight")
    await shows(page, target + 1)
    assert await page.inner_text("#timecode") == timecode(target + 1, RATE) == "00:00:05:13"
    await page.keyboard.press("Shift+ArrowRight")
    await shows(page, target + 11)
    await page.keyboard.press("ArrowLeft")
    await shows(page, target + 10)

    # Nonsense in the seek box is refused where the user looks.
    await page.fill("#seek", "soon")
    await page.press("#seek", "Enter")
    assert "neither a frame number nor a timecode" in await page.inner_text("#status-line")
    # A timecode in the seek box (the rate is known from the reports by now).
    await page.fill("#seek", "00:00:08:03")
    await page.press("#seek", "Enter")
    await shows(page, 8 * 25 + 3)
    assert await page.input_value("#scrub") == str(8 * 25 + 3)
    assert await page.get_attribute("#scrub", "max") == str(FRAMES - 1)

    # Audio: the right channel of the WAV alone.
    await page.select_option("#audio", "1")
    said = "document.getElementById('status-line').textContent.startsWith('Listening')"
    await until(lambda: page.evaluate(said), 5, "the channel choice acknowledged")
    assert "channel 2" in await page.inner_text("#status-line")
    # The routing matrix (R): it shows that choice (channel 1 in both ears); a toggle adds
    # channel 0 to the left, and the worker's reply is what the toggles then show.
    await page.keyboard.press("r")
    to_left = "#matrix input[aria-label='channel 0 to L']"
    await until(lambda: page.is_visible(to_left), 10, "the matrix with the worker's channels")
    assert await page.is_checked("#matrix input[aria-label='channel 1 to L']")
    assert not await page.is_checked(to_left)
    await page.click(to_left)
    said = "document.getElementById('status-line').textContent === 'Routing L: 1+0, R: 1'"
    await until(lambda: page.evaluate(said), 5, "the new routing acknowledged")
    assert await page.is_checked(to_left)
    await page.keyboard.press("r")

    # Space plays (frames advance), K pauses.
    await page.keyboard.press("Space")
    await until(
        lambda: page.evaluate("Number(document.getElementById('frame').textContent) > 210"),
        10, "playback to advance",
    )  # fmt: skip
    await page.keyboard.press("k")
    await until(lambda: page.evaluate(f"{PLAY}.ariaLabel === 'Play'"), 5, "the pause to show")
    # L plays, L again doubles the rate, J halves it back.
    await page.keyboard.press("l")
    await until(lambda: page.evaluate(f"{PLAY}.ariaLabel === 'Pause'"), 5, "L to play")
    await page.keyboard.press("l")
    await until(lambda: page.evaluate(f"{RATE_SHOWN} === '2×'"), 5, "L again to double the rate")
    await page.keyboard.press("j")
    await until(lambda: page.evaluate(f"{RATE_SHOWN} === '1×'"), 5, "J to halve the rate")
    await page.keyboard.press("k")
    await until(lambda: page.evaluate(f"{PLAY}.ariaLabel === 'Play'"), 5, "K to pause")
    paused_at = int(await page.inner_text("#frame"))
    await page.keyboard.press("ArrowLeft")
    await shows(page, paused_at - 1)
    await page.screenshot(path=shot("review.png"))
