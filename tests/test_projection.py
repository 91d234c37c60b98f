"""Projections against a real nats-server: a killed projector resumes without double-applying,
and a replay from scratch gives the same state as the pure fold."""

from __future__ import annotations

import asyncio
import random

from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.control.projector import Projector
from pipeline.control.read import read_all
from pipeline.control.replay import replay
from pipeline.messages.events import (
    Event,
    InstanceLaunched,
    InstanceReady,
    InstanceTerminated,
    MosaicCreated,
    SessionEnded,
    SessionInput,
    SessionRequested,
    SessionStarted,
    Tile,
    WorkerStarted,
    WorkerStopped,
)
from pipeline.nats.eventlog import AlreadyExists, append
from pipeline.state.evolve import fold


def make_events(n: int, seed: int = 7) -> list[Event]:
    """A deterministic, varied history over a few entities of every kind."""
    rnd = random.Random(seed)
    makers = [
        lambda i: MosaicCreated(
            at=float(i),
            fp=f"fp{i % 5}",
            tiles=(Tile(url=f"http://cam{i % 3}/live.m3u8", name=f"cam{i % 3}"),),
            width=1280,
            height=720,
            fps=25,
        ),
        lambda i: SessionRequested(
            at=float(i), session_id=f"s{i % 7}", inputs=(SessionInput(url=f"/m/{i}.mov"),)
        ),
        lambda i: SessionStarted(at=float(i), session_id=f"s{i % 7}", worker_id=f"w{i}"),
        lambda i: SessionEnded(at=float(i), session_id=f"s{i % 7}", reason="idle"),
        lambda i: InstanceLaunched(at=float(i), instance_id=f"i{i % 4}", provider="local"),
        lambda i: InstanceReady(at=float(i), instance_id=f"i{i % 4}", address=f"10.0.0.{i}"),
        lambda i: InstanceTerminated(at=float(i), instance_id=f"i{i % 4}", reason="idle"),
        lambda i: WorkerStarted(
            at=float(i), worker_id=f"w{i % 9}", kind="grabber", target=f"src{i}"
        ),
        lambda i: WorkerStopped(at=float(i), worker_id=f"w{i % 9}", reason="not-needed"),
    ]
    return [rnd.choice(makers)(i) for i in range(n)]


async def test_killed_projector_resumes_and_applies_each_event_once(
    nc: Client, js: JetStreamContext
) -> None:
    events = make_events(400)
    for event in events:
        await append(js, event)

    first = Projector(nc, js, batch=16, fetch_timeout=0.2)
    await first.start()
    async with asyncio.timeout(10):
        await first.wait_for(205)
    await first.stop()  # cancels the task mid-batch: 193..205 applied but not acked
    assert 205 <= first.position < 400

    second = Projector(nc, js, batch=16, fetch_timeout=0.2)
    await second.start()
    try:
        async with asyncio.timeout(10):
            await second.wait_for(400)
    finally:
        await second.stop()
    assert second.skipped > 0, "the redelivered, already-applied events were seen and skipped"
    assert first.applied + second.applied == 400

    expected = fold(events)
    assert await read_all(js) == expected
    # `version` counts folded events: a double-applied event would show here too.
    assert sum(s.version for s in expected.values()) == 400

    progress: list[tuple[int, int]] = []
    rebuilt = await replay(nc, js, progress=lambda done, total: progress.append((done, total)))
    assert rebuilt == 400
    assert progress[-1] == (400, 400)
    assert await read_all(js) == expected


async def test_replay_refuses_while_a_projector_runs(nc: Client, js: JetStreamContext) -> None:
    projector = Projector(nc, js, fetch_timeout=0.2)
    await projector.start()
    try:
        await nc.flush()
        try:
            await replay(nc, js)
        except Exception as exc:  # noqa: BLE001 - asserting on the type and message below
            assert type(exc).__name__ == "ProjectionError"
            assert "stop `tessera up`" in str(exc)
        else:
            raise AssertionError("replay ran beside a live projector")
    finally:
        await projector.stop()


async def test_create_once_per_fingerprint(js: JetStreamContext) -> None:
    created = MosaicCreated(at=1.0, fp="abc", tiles=(), width=640, height=360, fps=25)
    await append(js, created, expect_first=True)
    # A retry with the same message id is deduplicated, not an error...
    ack1 = await append(js, created, msg_id="m1", expect_first=False)
    ack2 = await append(js, created, msg_id="m1", expect_first=False)
    assert ack2.duplicate and ack1.seq == ack2.seq
    # ...and a second "first" event for the same entity is refused by JetStream.
    try:
        await append(js, created, expect_first=True)
    except AlreadyExists as exc:
        assert "events.mosaic.abc" in str(exc)
    else:
        raise AssertionError("a second create was accepted")
