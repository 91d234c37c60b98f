"""Events the projector cannot fold: delivered again a bounded number of times, then parked in
``PARKED`` and reported, while the events after them are folded in order. The projector runs as
the ``controller`` role, as in production. (A projector killed before it acks gets the events
back: tests/test_projection.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.cli.status import gather
from pipeline.control import projector as projector_mod
from pipeline.control.parking import ParkedEvent, is_unknown_type, one_line, read_parked
from pipeline.control.projector import MAX_DELIVERIES, Projector
from pipeline.control.read import read_all
from pipeline.control.replay import projector_alive, replay
from pipeline.messages.codec import encode
from pipeline.messages.events import (
    Event,
    MosaicCreated,
    SessionEnded,
    SessionInput,
    SessionRequested,
    SessionStarted,
    Tile,
)
from pipeline.nats.connect import connect
from pipeline.nats.eventlog import append
from pipeline.nats.server import EmbeddedNats
from pipeline.state.evolve import fold
from pipeline.state.model import SessionState, State
from tests.test_projection import make_events

# A known type whose fields do not decode: broken, not a newer Tessera's.
BROKEN = b'{"type":"mosaic.created/1","at":1.0,"fp":"broken","tiles":"none","width":1}'
# A type this Tessera does not know: a newer Tessera's, skipped.
FUTURE = b'{"type":"mosaic.renamed/1","at":1.0,"fp":"fp1","title":"new"}'


@pytest_asyncio.fixture
async def controller(nats_server: EmbeddedNats, js: JetStreamContext) -> AsyncIterator[Client]:
    """A connection as the projector has one in production (``js`` provisions first)."""
    client = await connect(nats_server.url_for("controller"), name="test", role="controller")
    try:
        yield client
    finally:
        await client.close()


async def _run_to(projector: Projector, seq: int) -> None:
    await projector.start()
    async with asyncio.timeout(10):
        await projector.wait_for(seq)


def test_unknown_is_a_well_formed_event_of_a_type_not_in_the_catalogue() -> None:
    assert is_unknown_type(FUTURE)
    assert not is_unknown_type(BROKEN)
    assert not is_unknown_type(b"not json")
    assert not is_unknown_type(b'{"at": 1.0}')
    good = MosaicCreated(at=1.0, fp="a", tiles=(), width=1, height=1, fps=1)
    assert not is_unknown_type(encode(good))


def test_parked_headers_round_trip_on_one_line() -> None:
    event = ParkedEvent(7, "events.mosaic.x", 5, "bad\nfield\r\n at $.tiles", b"{}", at=12.5)
    headers = event.headers()
    assert headers["Tessera-Parked-Error"] == "bad field at $.tiles"
    assert headers["Nats-Expected-Last-Subject-Sequence"] == "0"
    back = ParkedEvent.from_headers(headers, b"{}")
    assert back == ParkedEvent(7, "events.mosaic.x", 5, "bad field at $.tiles", b"{}", at=12.5)
    assert len(one_line("x" * 2000)) == 500


async def test_broken_event_is_parked_once_and_the_projection_goes_on(
    js: JetStreamContext, controller: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tessera.projector")
    before, after = make_events(20, seed=1), make_events(20, seed=2)
    for event in before:
        await append(js, event)
    broken = await js.publish("events.mosaic.broken", BROKEN)  # straight in, as admin
    await js.publish("events.mosaic.fp1", FUTURE)
    # The broken event's entity goes on too: its next event folds onto what came before.
    repaired = MosaicCreated(at=2.0, fp="broken", tiles=(Tile(url="u"),), width=2, height=2, fps=1)
    good = [*before, repaired, *after]
    await append(js, repaired)
    for event in after:
        last = await append(js, event)

    cjs = controller.jetstream()
    # Batches of 16: the broken event (21) is mid-batch, with events fetched behind it.
    first = Projector(controller, cjs, batch=16, fetch_timeout=0.2)
    try:
        await _run_to(first, last.seq)
    finally:
        await first.stop()
    assert await read_all(js) == fold(good)
    assert (first.parked, first.unknown, first.failed) == (1, 1, MAX_DELIVERIES)

    total, parked = await read_parked(js)
    assert total == 1
    (record,) = parked
    assert (record.seq, record.subject) == (broken.seq, "events.mosaic.broken")
    assert record.deliveries == MAX_DELIVERIES
    assert record.error.startswith("cannot decode event on events.mosaic.broken:")
    assert "$.tiles" in record.error and "\n" not in record.error
    assert record.data == BROKEN and record.at > 0
    snap = await gather(js)  # what `tessera status` shows
    assert (snap.parked_total, snap.parked) == (1, [record])

    warnings = [r for r in caplog.records if r.name == "tessera.projector"]
    again = [r for r in warnings if r.getMessage().startswith("cannot fold event")]
    assert [vars(r)["delivery"] for r in again] == [1, 2, 3, 4]
    (report,) = [r for r in warnings if r.getMessage().startswith("event parked")]
    assert report.levelno == logging.WARNING
    assert (vars(report)["seq"], vars(report)["error"]) == (broken.seq, record.error)

    # A restart starts after it; a replay meets it again but finds it parked already.
    second = Projector(controller, cjs, batch=16, fetch_timeout=0.2)
    try:
        await _run_to(second, last.seq)
    finally:
        await second.stop()
    assert (second.parked, second.failed) == (0, 0)
    # Its "stopped" beat is stored apart from the API's reads: wait until a read sees it.
    for _ in range(100):
        if not await projector_alive(cjs, 5.0):
            break
        await asyncio.sleep(0.05)
    await replay(controller, cjs)
    assert (await read_parked(js))[0] == 1
    assert await read_all(js) == fold(good)


async def test_failing_fold_is_delivered_again_in_order_then_parked(
    js: JetStreamContext, controller: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = SessionStarted(at=2.0, session_id="flaky", worker_id="w1")
    poison = SessionStarted(at=2.0, session_id="poison", worker_id="w2")
    events: list[Event] = [
        *make_events(10, seed=3),
        SessionRequested(at=1.0, session_id="flaky", inputs=(SessionInput(url="/m.mov"),)),
        flaky,  # fails twice, then folds
        SessionEnded(at=3.0, session_id="flaky", reason="idle"),  # fetched behind it
        poison,  # always fails
        SessionEnded(at=3.0, session_id="poison", reason="idle"),
        *make_events(10, seed=4),
    ]
    failures = {flaky: 2, poison: 10**6}
    real_evolve = projector_mod.evolve

    def evolve(state: State | None, event: Event) -> State:
        if isinstance(event, SessionStarted) and failures.get(event, 0) > 0:
            failures[event] -= 1
            raise RuntimeError(f"fold of {type(event).__name__} broke")
        return real_evolve(state, event)

    monkeypatch.setattr(projector_mod, "evolve", evolve)
    for event in events:
        last = await append(js, event)

    projector = Projector(controller, controller.jetstream(), batch=16, fetch_timeout=0.2)
    try:
        await _run_to(projector, last.seq)
    finally:
        await projector.stop()
    assert failures[flaky] == 0
    assert (projector.parked, projector.failed) == (1, 2 + MAX_DELIVERIES)
    assert projector.applied == len(events) - 1  # each once, but the parked one
    assert await read_all(js) == fold(e for e in events if e is not poison)
    state = (await read_all(js))[("sessions", "flaky")]
    assert isinstance(state, SessionState) and (state.phase, state.version) == ("ended", 3)

    total, (record,) = await read_parked(js)
    assert total == 1
    assert (record.subject, record.deliveries) == ("events.session.poison", MAX_DELIVERIES)
    assert record.error == "RuntimeError: fold of SessionStarted broke"
