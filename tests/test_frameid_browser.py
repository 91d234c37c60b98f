"""Frame identity in a real browser (issue 19): the review page knows which source frame it
shows from the RTP timestamp of each picture (``gateway/web/frameid.js``:
``requestVideoFrameCallback`` gives it, the worker's frame reports say each picture's stamp on
its 90 kHz clock, ``pipeline/producers/jit/rtpclock.py``), and shows it ("On screen").

- against a JIT session in headless Chromium (the system's, see :mod:`tests.browser`), with the
  whole stack as in production: 100 random seeks and steps (±1, both ways, mixed with seeks,
  through the page's own seek box and arrow keys), each until the readout settles, checking
  that the picture (its frame-number pattern, :mod:`tests.jitmedia`, read off a screenshot)
  and the RTP-derived readout are both the frame asked for; then playing and pausing;
- ``FrameIdentity`` alone, in the page: how it learns the random origin aiortc adds to the
  stamps, and when it must not (a playing run, where a picture one frame off explains as well).

Every wait polls a condition with a deadline, generous for two busy cores; nothing sleeps a
fixed time.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from tests import test_pages
from tests.test_pages import FRAMES, Gateway, Review, frame_shown, until

if TYPE_CHECKING:
    from playwright.async_api import Page

# The whole stack with a session of a numbered-frame video (300 frames at 25 fps, GOP 50).
stack = test_pages.stack
review = test_pages.review
gateway = test_pages.gateway

OPERATIONS = 100
SETTLE = 20.0
"""Seconds one seek or step may take to show: generous (a loaded machine), never waited out
when all is well (each wait ends as soon as the page shows the frame)."""
SHOWN = "document.getElementById('shown').textContent"


async def settles_on(page: Page, frame: int, what: str) -> None:
    """Wait until the readout and the picture both say ``frame`` (the readout first: cheap)."""
    seen: list[Any] = []

    async def readout() -> bool:
        said: str = await page.evaluate(SHOWN)
        seen[:] = [said]
        return said == str(frame)

    async def picture() -> bool:
        seen[:] = [await page.evaluate(SHOWN), await frame_shown(page)]
        return seen == [str(frame), frame]

    try:
        await until(readout, SETTLE, what, every=0.02)
        await until(picture, SETTLE, what, every=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: readout, picture {seen}") from None


async def test_the_frame_on_screen_is_the_frame_asked_for(page: Page, review: Review) -> None:
    began = time.monotonic()
    await page.goto(review.url)
    # Connected and the origin learnt (the picture a viewer gets, and the one more it asks).
    known = f"/^\\d+$/.test({SHOWN})"
    await until(lambda: page.evaluate(known), 30, "the page to know the frame on screen")
    position = int(await page.evaluate(SHOWN))
    await settles_on(page, position, f"the first frame {position}")
    await until(
        lambda: page.evaluate("document.getElementById('frame-count').textContent === '300'"),
        10, "the frame count from the session's stats",
    )  # fmt: skip

    rng = random.Random(19)
    kinds = {"seek": 0, "step +1": 0, "step -1": 0}
    for number in range(OPERATIONS):
        kind = rng.choice(["seek", "step +1", "step -1"])
        if (kind, position) in (("step +1", FRAMES - 1), ("step -1", 0)):
            kind = "seek"  # a step past the end would not change the frame
        if kind == "seek":
            target = rng.choice([f for f in range(FRAMES) if f != position])
            await page.fill("#seek", str(target))
            await page.press("#seek", "Enter")
        else:
            target = position + (1 if kind == "step +1" else -1)
            await page.keyboard.press("ArrowRight" if kind == "step +1" else "ArrowLeft")
        kinds[kind] += 1
        await settles_on(page, target, f"operation {number}: {kind} from {position} to {target}")
        position = target
    checked = time.monotonic()
    print(f"\n{OPERATIONS} operations {kinds} in {checked - began:.1f} s (with start-up)")
    assert min(kinds.values()) >= 20, kinds

    # Playing: the readout follows the pictures; paused, it rests on the last one sent.
    await page.keyboard.press("Space")
    moved = f"Number({SHOWN}) >= {position + 25}"
    await until(lambda: page.evaluate(moved), SETTLE, "the readout to follow playback")
    await page.keyboard.press("k")
    paused = "document.getElementById('play').ariaLabel === 'Play'"
    await until(lambda: page.evaluate(paused), 5, "the pause to show")
    last = int(await page.inner_text("#frame"))  # the last frame the worker reported
    await settles_on(page, last, f"the frame paused on, {last}")


# -- FrameIdentity alone -------------------------------------------------------------------------

ORIGIN = (1 << 32) - 50_000
"""aiortc's random origin in these scenarios: close to 2**32, so the RTP timestamps wrap."""


def picture(stamp: int) -> list[Any]:
    return ["shown", (ORIGIN + stamp) % (1 << 32)]


def report(stamp: int, frame: int, *, playing: bool = False) -> list[Any]:
    return ["report", {"rtp": stamp, "frame": frame, "playing": playing}]


async def identify(page: Page, events: list[list[Any]]) -> list[int | None]:
    """The frame ``FrameIdentity`` says is on screen after each event."""
    frames: list[int | None] = await page.evaluate(
        """async (events) => {
            const { FrameIdentity } = await import('/static/frameid.js');
            const identity = new FrameIdentity();
            return events.map(([kind, value]) =>
                kind === 'report' ? identity.report(value) : identity.shown(value));
        }""",
        events,
    )
    return frames


async def test_frame_identity_learns_the_origin_only_when_proven(
    page: Page, gateway: Gateway
) -> None:
    await page.goto(gateway.url + "/static/missing.html")
    # Joining a paused session: its picture (before the control channel opens, so before its
    # report), the report, then the one more the page asks for (a step of 0), and steps.
    joined = [
        picture(0), report(0, 120), report(45_009, 120), picture(45_009),
        report(71_991, 121), picture(71_991), report(99_000, 119), picture(99_000),
    ]  # fmt: skip
    assert await identify(page, joined) == [None, None, None, 120, 120, 121, 121, 119]

    # A playing run, reports ahead of the pictures: a picture one frame off explains them as
    # well, so nothing is said; a step (a picture stamped at the wall time) proves the origin.
    run = [report(9_000 + 3600 * k, 10 + k, playing=True) for k in range(30)]
    events: list[list[Any]] = []
    for k in range(30):
        events.append(run[k])
        if k >= 3:
            events.append(picture(9_000 + 3600 * (k - 3)))
    stepped = 9_000 + 3600 * 29 + 123_453
    events += [report(stepped, 38), picture(stepped)]
    frames = await identify(page, events)
    assert frames[:-1] == [None] * (len(frames) - 1) and frames[-1] == 38
    # Then the run's pictures are named too.
    after = [*events, report(stepped + 90_000, 39, playing=True), picture(stepped + 90_000)]
    assert (await identify(page, after))[-1] == 39

    # Two pictures and one report, the second picture's: one picture matched proves nothing
    # (it would say the same if the report were the first picture's, which never came).
    lone = [picture(0), picture(45_009), report(45_009, 7)]
    assert await identify(page, lone) == [None, None, None]

    # A picture on a stamp no report has, between two that have: the origin is learnt again.
    refuted = [*joined, picture(45_018), report(120_006, 3), picture(120_006)]
    refuted += [report(150_003, 4), picture(150_003)]
    assert (await identify(page, refuted))[-6:] == [119, None, None, None, None, 4]

    # Reports from a worker that does not stamp say nothing.
    silent = [["report", {"frame": 3, "playing": False}], picture(0), picture(9)]
    assert await identify(page, silent) == [None, None, None]
