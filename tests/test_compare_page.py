"""The review page of an A/B compare session in headless Chromium (:mod:`tests.browser`),
against the whole stack (the controller starts the JIT worker): its controls send
``compare/1``, the keys toggle A and B, and the picture the browser shows (read off the
frame-number patterns in a screenshot) is the pair asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tests import test_pages
from tests.browser import picture
from tests.jitmedia import make_video, read_frame_number
from tests.test_pages import RATE, Gateway, shot, until

if TYPE_CHECKING:
    from playwright.async_api import Page

stack = test_pages.stack  # the whole stack, as a fixture

FRAMES = 100
OFFSET = 2


def luma_of(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return (pixels @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


async def numbers(page: Page) -> tuple[int | None, int | None, int | None]:
    """The frame numbers on screen: the left half's, the right half's (side by side: A's and
    B's, each fitted in its half, so in its middle half of the height), the whole picture's."""
    luma = luma_of(await picture(page))
    height, width = luma.shape
    band = slice(height // 4, height - height // 4)
    return (
        read_frame_number(luma[band, : width // 2]),
        read_frame_number(luma[band, width // 2 :]),
        read_frame_number(luma),
    )


async def test_the_review_page_compares_a_and_b(page: Page, stack: Gateway) -> None:
    media = stack.config.media_root_paths[0]
    a = make_video(media / "a.mp4", frames=FRAMES, rate=RATE, width=640, height=360)
    b = make_video(media / "b.mp4", frames=FRAMES, rate=RATE, width=640, height=360, gop=25)
    body = {"inputs": [{"url": str(a)}, {"url": str(b)}], "compare": "side-by-side",
            "compare_offset": OFFSET}  # fmt: skip
    started = await stack.http.post("/session", json=body)
    assert started.status_code == 201, started.text
    await page.goto(f"{stack.url}/session/{started.json()['id']}/view")

    async def said(selector: str, text: str, what: str) -> None:
        async def check() -> bool:
            return bool(await page.inner_text(selector) == text)

        await until(check, 15, what)

    async def shown(expected: tuple[int | None, int | None, int | None], what: str) -> None:
        async def check() -> bool:
            if not await page.evaluate("document.getElementById('video').videoWidth > 0"):
                return False  # no picture yet
            got = await numbers(page)
            return all(e is None or g == e for g, e in zip(got, expected, strict=True))

        await until(check, 15, what)

    await said("#frame", "0", "the first frame")
    assert await page.is_visible("#compare") and "a.mp4 vs b.mp4" in await page.title()
    assert await page.input_value("#compare-mode") == "side-by-side"
    await said("#frame-b", str(OFFSET), "B's frame beside A's 0")

    await page.fill("#seek", "30")
    await page.press("#seek", "Enter")
    await shown((30, 30 + OFFSET, None), "A 30 beside B 32 on screen")
    await said("#frame-b", str(30 + OFFSET), "B's frame 32 in the readout")
    await page.keyboard.press("ArrowRight")
    await shown((31, 31 + OFFSET, None), "a step acting on both")
    await page.screenshot(path=shot("review-compare.png"))

    # The toggle: B alone, A alone, both again.
    await page.keyboard.press("b")
    await shown((None, None, 31 + OFFSET), "B alone")
    assert await page.get_attribute("[data-show='B']", "aria-pressed") == "true"
    await page.keyboard.press("a")
    await shown((None, None, 31), "A alone")
    await said("#frame-b", "–", "no frame of B shown")
    await page.keyboard.press("c")
    await shown((31, 31 + OFFSET, None), "both again")

    # The offset box; then a wipe whose slider moves the split to the right edge: all A.
    await page.fill("#compare-offset", "5")
    await page.press("#compare-offset", "Enter")
    await shown((31, 36, None), "B five frames ahead")
    await page.select_option("#compare-mode", "wipe")
    await until(lambda: page.is_visible("#compare-split"), 10, "the wipe's slider")
    await page.eval_on_selector(
        "#compare-split", "(s) => { s.value = '1000'; s.dispatchEvent(new Event('input')); }"
    )
    await shown((None, None, 31), "the wipe's split at the right edge: A")
    state: Any = await page.evaluate("document.getElementById('compare-split').value")
    assert state == "1000"
    await page.screenshot(path=shot("review-compare-wipe.png"))
