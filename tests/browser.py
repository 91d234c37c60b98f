"""Headless Chromium for the page tests: the system's Chromium (Debian's ``chromium``) driven
with Playwright's Python package. Playwright's own browser downloads are never used
(``executable_path`` points at the system binary), so ``playwright install`` is not needed.

:func:`chromium_path` says where the browser is (``TESSERA_CHROMIUM`` overrides), and
:func:`launch` starts it with flags that work in containers and CI: no sandbox (root in a
container), no GPU, no QUIC, and none of Chromium's background traffic (first-run, component
updates, sync), each launch in a new empty profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # /dev/shm is 64 MB in a default Docker container
)


def chromium_path() -> str | None:
    """The Chromium binary to use, or None when there is none."""
    override = os.environ.get("TESSERA_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.asynccontextmanager
async def launch(executable: str) -> AsyncIterator[Browser]:
    """A headless Chromium (closed, with Playwright's driver, on exit)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(FLAGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


async def element_box(page: Page, selector: str) -> dict[str, float]:
    """The on-screen rectangle of the picture in a ``<video>`` (``object-fit: contain``
    letterboxes it), in CSS pixels: ``{x, y, width, height}``."""
    box: dict[str, float] = await page.eval_on_selector(
        selector,
        """(video) => {
            const r = video.getBoundingClientRect();
            const vw = video.videoWidth, vh = video.videoHeight;
            const scale = Math.min(r.width / vw, r.height / vh);
            const w = vw * scale, h = vh * scale;
            return {x: r.left + (r.width - w) / 2, y: r.top + (r.height - h) / 2,
                    width: w, height: h};
        }""",
    )
    return box


async def picture(page: Page, selector: str = "video") -> npt.NDArray[np.uint8]:
    """A screenshot of the picture a ``<video>`` shows (letterbox bars cut off), as RGB."""
    box = await element_box(page, selector)
    # Whole pixels inside the picture: a fractional edge would blend in the black bars.
    clip: Any = {
        "x": int(box["x"] + 0.999),
        "y": int(box["y"] + 0.999),
        "width": int(box["width"]) - 1,
        "height": int(box["height"]) - 1,
    }
    png = await page.screenshot(clip=clip)
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


async def until_true(page: Page, expression: str, within: float) -> None:
    """Wait until the JavaScript ``expression`` is true in ``page``, polling from here.

    Not ``page.wait_for_function``: past its first check it polls with ``eval`` inside the
    page, which the pages' Content-Security-Policy (``script-src 'self'``) refuses, so it fails
    whenever the condition is not true at once (a slow machine). ``page.evaluate`` runs over
    the DevTools protocol, which the policy does not restrict."""
    deadline = asyncio.get_running_loop().time() + within
    while not await page.evaluate(expression):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within:g} s: {expression}")
        await asyncio.sleep(0.05)
