"""Glass-to-glass in a real browser: headless Chromium (:mod:`tests.browser`: the system's
Chromium driven by Playwright, no downloads) plays a page with a ``<video>``, and a probe reads,
for every frame the page presents, when it is shown and the capture time stamped into each tile.

The probe is installed into the page after it loads (the page is the product's, unchanged). In
each ``requestVideoFrameCallback`` it draws only the stamp bars of the tiles from the video to
a canvas and averages each stamp block's luma there (the same rows and columns
:func:`~pipeline.sources.synthetic.read_stamp` reads); the display time is the callback's
``metadata.expectedDisplayTime`` (the compositor's estimate of when the frame is visible), a
``performance`` time that ``performance.timeOrigin`` turns into Unix time. The runner decodes
the block levels with ``read_stamp`` itself, so the browser and the other cases read stamps one
way. Cameras stamp pictures upside down (:mod:`bench.camera`): the bar is at each tile's top.

What a page played with is read off the element, whatever the page says: a ``MediaStream``
(WebRTC), a ``blob:`` source (Media Source Extensions: hls.js) or a URL (the browser's HLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.sources.synthetic import STAMP_BLOCKS, read_stamp, stamp_height
from pipeline.state.layouts import Layout

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Request

EXTRA_FLAGS = ("--autoplay-policy=no-user-gesture-required",)
"""Beside :data:`tests.browser.FLAGS`: a muted video plays anyway, but say so."""

PROBE_JS = """(spec) => {
  if (window.__g2g) return;
  const video = document.querySelector(spec.selector);
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const probe = { frames: [], dropped: 0, errors: 0, last: -1 };
  window.__g2g = probe;
  const engine = () => video.srcObject ? "webrtc"
    : (video.currentSrc || "").startsWith("blob:") ? "mse" : video.currentSrc ? "native" : "";
  const onFrame = (now, meta) => {
    try {
      const sx = video.videoWidth / spec.width, sy = video.videoHeight / spec.height;
      if (sx > 0) {
        const rows = spec.tiles.reduce((n, t) => n + t.rows[1] - t.rows[0], 0);
        const wide = Math.max(...spec.tiles.map((t) => t.w));
        if (canvas.width !== wide) canvas.width = wide;
        if (canvas.height !== rows) canvas.height = rows;
        let y = 0;
        for (const t of spec.tiles) {
          const h = t.rows[1] - t.rows[0];
          ctx.drawImage(video, t.x * sx, (t.y + t.rows[0]) * sy, t.w * sx, h * sy, 0, y, t.w, h);
          y += h;
        }
        const rgba = ctx.getImageData(0, 0, wide, rows).data;
        const levels = [];
        y = 0;
        for (const t of spec.tiles) {
          const h = t.rows[1] - t.rows[0];
          const row = [];
          for (const [a, b] of t.blocks) {
            let sum = 0;
            for (let r = y; r < y + h; r++) {
              for (let c = a; c < b; c++) {
                const i = 4 * (r * wide + c);
                sum += 0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2];
              }
            }
            // Full range (what the canvas holds) back to the limited range the source wrote.
            row.push(Math.round(16 + (sum / (h * (b - a))) * 219 / 255));
          }
          levels.push(row);
          y += h;
        }
        if (probe.last >= 0 && meta.presentedFrames > probe.last + 1) {
          probe.dropped += meta.presentedFrames - probe.last - 1;
        }
        probe.last = meta.presentedFrames;
        probe.frames.push({
          shown: performance.timeOrigin + meta.expectedDisplayTime,
          presented: performance.timeOrigin + meta.presentationTime,
          callback: performance.timeOrigin + now,
          clock: Date.now(),
          engine: engine(),
          levels,
        });
        if (probe.frames.length > 5000) probe.frames.splice(0, probe.frames.length - 5000);
      }
    } catch (e) {
      probe.errors += 1;
      probe.error = String(e);
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}"""


def probe_spec(grid: Layout, selector: str = "video") -> dict[str, Any]:
    """What the probe reads of a mosaic laid out as ``grid`` (in the mosaic's pixels): for each
    tile its origin, width, the rows of its (upside-down) stamp bar that ``read_stamp`` reads,
    and the inner half of each stamp block's columns."""
    tiles = []
    for r in grid.rects:
        bar = stamp_height(r.h)
        # read_stamp reads rows [h - bar + bar//4, h - bar//4) of the upright picture: flipped,
        # [bar//4, bar - bar//4). Its blocks: STAMP_BLOCKS equal spans of the width, inner halves.
        w = r.w
        spans = [(i * w // STAMP_BLOCKS, (i + 1) * w // STAMP_BLOCKS) for i in range(STAMP_BLOCKS)]
        blocks = [(a + (b - a) // 4, b - (b - a) // 4) for a, b in spans]
        tiles.append(
            {"x": r.x, "y": r.y, "w": w, "rows": [bar // 4, bar - bar // 4], "blocks": blocks}
        )
    return {"selector": selector, "width": grid.width, "height": grid.height, "tiles": tiles}


def stamp_of(levels: list[int]) -> int | None:
    """The stamp a tile's block levels (limited-range luma, one per block) carry, read by
    ``read_stamp`` itself: a picture 24 rows tall and two columns per block, every row the
    levels."""
    row = np.repeat(np.asarray(levels, dtype=np.float32), 2)
    return read_stamp(np.tile(row, (24, 1)))


def unwrap(stamp_ms: int, wall: float) -> float:
    """The capture time (Unix seconds) of a stamp (ms modulo 2**32) seen at ``wall``."""
    now_ms = int(wall * 1000)
    return (now_ms - ((now_ms - stamp_ms) % (1 << 32))) / 1000


@dataclass
class Shown:
    """What the probe saw over a measurement."""

    latencies: list[float] = field(default_factory=list)
    """Display time minus capture time, seconds, for every readable (frame, tile)."""
    frames: int = 0
    unreadable: int = 0
    """Tiles whose stamp could not be read."""
    dropped: int = 0
    """Frames the page skipped (``presentedFrames`` gaps)."""
    engines: dict[str, int] = field(default_factory=dict)
    """Frames per playing engine: webrtc, mse, native."""
    clock_skew_ms: float = 0.0
    """Median of ``Date.now()`` minus ``timeOrigin + now`` in the callbacks (how far the
    browser's two clocks disagree)."""
    callback_after_shown_ms: float = 0.0
    """Median of the callback's time minus the expected display time."""

    def add(self, frames: list[dict[str, Any]]) -> None:
        skews, lags = [], []
        for frame in frames:
            self.frames += 1
            engine = str(frame["engine"])
            self.engines[engine] = self.engines.get(engine, 0) + 1
            shown = float(frame["shown"]) / 1000
            skews.append(float(frame["clock"]) - float(frame["callback"]))
            lags.append(float(frame["callback"]) - float(frame["shown"]))
            for levels in frame["levels"]:
                stamp = stamp_of(levels)
                if stamp is None:
                    self.unreadable += 1
                    continue
                self.latencies.append(shown - unwrap(stamp, shown))
        if skews:
            self.clock_skew_ms = float(np.median(skews))
            self.callback_after_shown_ms = float(np.median(lags))


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium (closed on exit, on errors and on cancellation too)."""
    from tests.browser import FLAGS, chromium_path

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("no Chromium: apt-get install chromium (or set TESSERA_CHROMIUM)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=[*FLAGS, *EXTRA_FLAGS]
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watch:
    """One page playing, with the probe in it: see :func:`watch`."""

    page: Page
    requests: dict[str, int] = field(default_factory=dict)
    """Requests the page made, by kind: blocking reloads, parts, segments, playlists, whep."""

    async def take(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The frames seen since the last call, and the probe's counters."""
        got: dict[str, Any] = await self.page.evaluate(
            "() => { const p = window.__g2g; if (!p) return {frames: []};"
            " return {frames: p.frames.splice(0), dropped: p.dropped, errors: p.errors,"
            " error: p.error || '', via: document.body.dataset.via || '',"
            " engine: document.body.dataset.engine || ''}; }"
        )
        frames: list[dict[str, Any]] = got.pop("frames")
        return frames, got

    async def wait_for_stamps(self, within: float) -> float:
        """Seconds until the probe sees a frame with a readable stamp (TimeoutError after
        ``within``)."""
        began = time.monotonic()
        deadline = began + within
        while time.monotonic() < deadline:
            frames, _ = await self.take()
            for frame in frames:
                if any(stamp_of(levels) is not None for levels in frame["levels"]):
                    return time.monotonic() - began
            await asyncio.sleep(0.2)
        raise TimeoutError(f"no frame with a readable stamp within {within:g} s")

    async def measure(self, seconds: float) -> tuple[Shown, dict[str, Any]]:
        """Every frame shown over the next ``seconds``; the probe's last counters."""
        await self.take()  # what came before is warm-up
        shown = Shown()
        counters: dict[str, Any] = {}
        frames: list[dict[str, Any]] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            got, counters = await self.take()
            frames += got
        shown.add(frames)
        shown.dropped = int(counters.get("dropped", 0))
        return shown, counters

    def _on_request(self, request: Request) -> None:
        url = request.url
        kind = (
            "whep" if request.method == "POST" and url.endswith("/whep")
            else "blocking reload" if "_HLS_msn=" in url
            else "playlist" if "index.m3u8" in url
            else "part" if url.endswith(".m4s") and url.rsplit("/", 1)[-1].count(".") == 2
            else "segment" if url.endswith((".m4s", ".ts"))
            else ""
        )  # fmt: skip
        if kind:
            self.requests[kind] = self.requests.get(kind, 0) + 1


@contextlib.asynccontextmanager
async def watch(browser: Browser, url: str, spec: dict[str, Any]) -> AsyncIterator[Watch]:
    """Open ``url`` in a new browser context (1280x720) and probe its video (closed on exit)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        page = await context.new_page()
        watching = Watch(page)
        page.on("request", watching._on_request)
        await page.goto(url)
        await page.wait_for_selector(spec["selector"], state="attached")
        await page.evaluate(PROBE_JS, spec)
        yield watching
    finally:
        await context.close()
