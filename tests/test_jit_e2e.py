"""JIT sessions through the whole stack: POST /session → controller → `tessera worker jit`
process → WHEP over the gateway's HTTP → an aiortc viewer reading frame numbers; and a
session whose input is missing fails with a one-line cause and leaves no process behind."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiortc import RTCSessionDescription
from nats.js import JetStreamContext

from pipeline.cli.up import Stack
from pipeline.config.settings import load
from pipeline.messages.control import Seek, Step
from pipeline.nats.server import EmbeddedNats
from tests.jitmedia import make_video
from tests.natsenv import server_env
from tests.test_jit_worker import RATE_25, Viewer, browser_like_jitter_buffer  # noqa: F401


@dataclass
class Rig:
    stack: Stack
    http: httpx.AsyncClient
    media: Path


@pytest_asyncio.fixture
async def rig(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[Rig]:
    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "clip.mp4", frames=250, rate=RATE_25)
    env = {
        **server_env(nats_server),
        "TESSERA_DATA_DIR": str(tmp_path / "data"),
        "JIT_ORCHESTRATOR_PORT": "0",
        "JIT_MEDIA_ROOTS": str(media),
        "TESSERA_HEARTBEAT_INTERVAL": "0.3",
        "TESSERA_POLL_INTERVAL": "0.3",
    }
    stack = Stack(load(env=env))
    await stack.start()
    try:
        assert stack.gateway is not None
        async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=20) as http:
            yield Rig(stack, http, media)
    finally:
        await stack.stop()


async def poll(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait (bounded) until ``check()`` holds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)


async def wait_state(http: httpx.AsyncClient, sid: str, *states: str) -> dict[str, object]:
    async with asyncio.timeout(20):
        while True:
            body = (await http.get(f"/session/{sid}")).json()
            if body["state"] in states:
                return dict(body)
            await asyncio.sleep(0.1)


async def test_a_session_over_whep_plays_seeks_and_steps_exactly(rig: Rig) -> None:
    created = await rig.http.post(
        "/session", json={"inputs": [{"url": str(rig.media / "clip.mp4")}]}
    )
    assert created.status_code == 201, created.text
    session = created.json()
    viewer = Viewer()
    try:
        await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
        answer = await rig.http.post(
            session["whep_url"],
            content=viewer.pc.localDescription.sdp,
            headers={"content-type": "application/sdp"},
        )
        assert answer.status_code == 201, answer.text
        location = answer.headers["location"]
        await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
        await viewer.ready()
        assert (await wait_state(rig.http, session["id"], "running"))["state"] == "running"

        rnd = random.Random(5)
        for target in rnd.sample(range(0, 250), 10):
            before = len(viewer.frames)
            reply = await viewer.send(Seek(target))
            assert reply.ok, reply.error
            await viewer.until(lambda n=before: len(viewer.frames) > n, 5, f"frame {target}")
            assert viewer.frames[before][1] == target
        # The same commands over HTTP, relayed to the worker over NATS.
        got = await rig.http.post(session["control_url"], json={"type": "pause"})
        assert got.status_code == 200 and got.json()["ok"]
        got = await rig.http.post(session["control_url"], json={"type": "seek", "frame": 100})
        assert got.status_code == 200
        await viewer.until(lambda: viewer.numbers()[-1] == 100, 5, "frame 100")
        before = len(viewer.frames)
        assert (await viewer.send(Step(1))).ok
        await viewer.until(lambda: len(viewer.frames) > before, 5, "a stepped frame")
        assert viewer.numbers()[-1] == 101
        assert (await viewer.send(Step(-1))).ok
        await viewer.until(lambda: viewer.numbers()[-1] == 100, 5, "back to frame 100")

        hung_up = await rig.http.delete(location)
        assert hung_up.status_code == 204
    finally:
        await viewer.close()
    assert (await rig.http.delete(f"/session/{session['id']}")).status_code == 200
    ended = await wait_state(rig.http, session["id"], "ended")
    assert ended["reason"] == "deleted"

    provider = rig.stack.provider
    assert provider is not None

    await poll(lambda: not provider.running(), 15, "the session's worker to stop")


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("{media}/missing.mp4", "input 1: cannot open"),
        ("http://127.0.0.1:9/clip.mp4", "input 1: cannot open"),
    ],
)
async def test_a_bad_input_fails_the_session_with_one_line_and_no_process_left(
    rig: Rig, url: str, cause: str
) -> None:
    created = await rig.http.post(
        "/session", json={"inputs": [{"url": url.format(media=rig.media)}]}
    )
    assert created.status_code == 201
    sid = created.json()["id"]
    failed = await wait_state(rig.http, sid, "failed")
    reason = str(failed["reason"])
    assert reason.startswith(cause) and "\n" not in reason
    provider = rig.stack.provider
    assert provider is not None

    await poll(
        lambda: all(r.spec.target != sid for r in provider.running().values()),
        15,
        "the failed session's worker to be gone",
    )
