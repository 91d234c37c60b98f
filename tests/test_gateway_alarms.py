"""A mosaic's alarms at the gateway: ``GET /mosaics/<fp>/alarms``, its Server-Sent Events
stream, the Prometheus series, the count on ``/api/mosaics``, and the viewer page's list and
tile outline, against a real nats-server, a real projector and the gateway over HTTP (as the
``gateway`` NATS user).

Alarm events are appended as a grabber would (``events.source.<key>``); the projector folds
them into KV ``alarms``; the gateway follows that bucket and applies each mosaic's holds
(``alarms=`` of ``/create``). The tests check content and order, never how fast: a raise
arrives at or after its ``shown_at``, never before; every wait has a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from starlette.applications import Starlette

from gateway.alarms import AlarmDiff, Alarms
from gateway.app import create_app
from gateway.context import GatewayContext
from pipeline.access import signing
from pipeline.config.settings import load
from pipeline.control.projector import Projector
from pipeline.messages.events import AlarmCleared, AlarmRaised
from pipeline.monitoring.alarms import AlarmKind
from pipeline.nats.eventlog import append
from pipeline.nats.follow import KvFollower
from pipeline.nats.topology import ALARMS, TOKENS, provision
from pipeline.runtime.httpserver import HttpServer
from pipeline.state.alarms import MosaicAlarms, TileAlarm
from pipeline.state.mosaic import source_key
from tests.browser import until_true
from tests.waiting import until

if TYPE_CHECKING:
    from playwright.async_api import Page

CAM_A = "http://cams.example/a/index.m3u8"
CAM_B = "http://cams.example/b/index.m3u8"
PATTERN = "http://cams.example/{a,b}[n]/index.m3u8"
KEY_A = source_key(CAM_A)
KEY_B = source_key(CAM_B)
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
WITHIN = 20.0
"""Seconds any one thing may take (two shared cores, a browser beside)."""


@dataclass
class Gateway:
    url: str
    http: httpx.AsyncClient
    app: Starlette
    projector: Projector
    js: JetStreamContext

    @property
    def alarms(self) -> Alarms:
        routes: Alarms = self.app.state.alarms
        return routes

    async def create(self, alarms: str | None = None, **params: str) -> str:
        """A mosaic of the two cameras (``a``, ``b``): its fingerprint."""
        query = {"urls": PATTERN, **params, **({"alarms": alarms} if alarms is not None else {})}
        got = await self.http.get("/create", params=query)
        assert got.status_code == 302, got.text
        fp = got.headers["location"].split("/")[2]
        return fp

    async def raised(
        self, url: str, kind: str, onset_wall: float, value: float = 0.01, *, wait: bool = True
    ) -> None:
        """A grabber of ``url`` raised ``kind`` begun at ``onset_wall``: folded once ``wait``."""
        event = AlarmRaised(at=time.time(), source=source_key(url), kind=kind,
                            onset=onset_wall - 1000.0, onset_wall=onset_wall, value=value,
                            url=url)  # fmt: skip
        ack = await append(self.js, event, msg_id=f"raise-{kind}-{url}-{onset_wall}")
        if wait:
            await self._folded(ack.seq)

    async def cleared(self, url: str, kind: str, onset_wall: float, end_wall: float) -> None:
        """The condition of ``kind`` begun at ``onset_wall`` ended at ``end_wall``."""
        event = AlarmCleared(at=time.time(), source=source_key(url), kind=kind,
                             onset=onset_wall - 1000.0, end=end_wall - 1000.0,
                             end_wall=end_wall, worst=0.002)  # fmt: skip
        ack = await append(self.js, event, msg_id=f"clear-{kind}-{url}-{onset_wall}")
        await self._folded(ack.seq)

    async def _folded(self, seq: int) -> None:
        async with asyncio.timeout(WITHIN):
            await self.projector.wait_for(seq)

    async def alarms_of(self, fp: str) -> dict[str, Any]:
        got = await self.http.get(f"/mosaics/{fp}/alarms")
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def shows(
        self, fp: str, what: Callable[[dict[str, Any]], Any], why: str
    ) -> dict[str, Any]:
        """The JSON of ``fp`` once it satisfies ``what`` (the gateway's watch follows the
        projection a moment later)."""

        async def check() -> dict[str, Any] | None:
            body = await self.alarms_of(fp)
            return body if what(body) else None

        found: dict[str, Any] = await until(check, WITHIN, why)
        return found


@contextlib.asynccontextmanager
async def serving(
    nc: Client, js: JetStreamContext, gateway_nc: Client, tmp_path: Path, **env: str
) -> AsyncIterator[Gateway]:
    config = load(env={"TESSERA_DATA_DIR": str(tmp_path), "TESSERA_CREATE_RATE": "1000", **env})
    projector = Projector(nc, js, fetch_timeout=0.2)
    await projector.start()
    app = create_app(GatewayContext(nc=gateway_nc, js=gateway_nc.jetstream(), config=config))
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=WITHIN) as http:
            yield Gateway(server.url, http, app, projector, js)
    finally:
        app.state.alarms.close()
        await server.stop()
        await projector.stop()


@pytest_asyncio.fixture
async def gw(
    nc: Client, js: JetStreamContext, gateway_nc: Client, tmp_path: Path
) -> AsyncIterator[Gateway]:
    async with serving(nc, js, gateway_nc, tmp_path) as gateway:
        yield gateway


# -- reading a stream ------------------------------------------------------------------------


@dataclass
class Event:
    name: str
    """snapshot, raised, cleared; ``comment`` for a keep-alive."""
    data: dict[str, Any]
    at: float
    """Wall time it was read."""


class Stream:
    """The events of one open ``/alarms/events`` response, read one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, within: float = WITHIN) -> Event:
        name, data = "message", []
        async with asyncio.timeout(within):
            async for line in self._lines:
                if line.startswith(":"):
                    return Event("comment", {}, time.time())
                if line:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)
                    continue
                if data:
                    return Event(name, json.loads("\n".join(data)), time.time())
        raise EOFError("the stream ended")

    async def next_event(self, within: float = WITHIN) -> Event:
        """The next event that is not a keep-alive."""
        while (event := await self.next(within)).name == "comment":
            pass
        return event


@contextlib.asynccontextmanager
async def stream(gw: Gateway, fp: str) -> AsyncIterator[Stream]:
    async with gw.http.stream("GET", f"/mosaics/{fp}/alarms/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


# -- the JSON --------------------------------------------------------------------------------


async def test_the_json_lists_active_pending_and_recent_alarms_with_the_mosaics_holds(
    gw: Gateway,
) -> None:
    fp = await gw.create("black:0.5,freeze:60", title="Studio")
    empty = await gw.alarms_of(fp)
    assert (empty["fp"], empty["active"], empty["pending"], empty["recent"]) == (fp, [], [], [])
    assert empty["layout"] == {
        "width": 1280, "height": 720,
        "tiles": [{"tile": 0, "name": "a", "x": 0, "y": 0, "w": 640, "h": 720},
                  {"tile": 1, "name": "b", "x": 640, "y": 0, "w": 640, "h": 720}],
    }  # fmt: skip

    began = time.time() - 30
    await gw.raised(CAM_A, "black", began, value=0.01)
    fresh = time.time()
    await gw.raised(CAM_B, "freeze", fresh, value=0.0)
    body = await gw.shows(fp, lambda b: b["active"] and b["pending"], "black shown, freeze not")
    assert body["active"] == [
        {"tile": 0, "name": "a", "source": KEY_A, "kind": "black", "onset": began - 1000.0,
         "onset_wall": began, "shown_at": began + 0.5, "value": 0.01},
    ]  # fmt: skip
    assert body["pending"] == [
        {"tile": 1, "name": "b", "source": KEY_B, "kind": "freeze", "onset": fresh - 1000.0,
         "onset_wall": fresh, "shown_at": fresh + 60.0, "value": 0.0},
    ]  # fmt: skip
    assert body["recent"] == [] and body["now"] < fresh + 60.0

    ended = time.time() - 1
    await gw.cleared(CAM_A, "black", began, ended)
    [done] = (await gw.shows(fp, lambda b: b["recent"], "the cleared black in recent"))["recent"]
    got = (done["kind"], done["tile"], done["end_wall"], done["worst"], done["reason"])
    assert got == ("black", 0, ended, 0.002, "ended")
    assert done["shown_at"] == began + 0.5


async def test_a_condition_shorter_than_the_hold_never_shows(gw: Gateway) -> None:
    fp = await gw.create("black:0.5,freeze:30")
    # Over before it lasted its hold, long ago: not shown then, nor listed now.
    long_ago = time.time() - 60
    await gw.raised(CAM_A, "black", long_ago)
    await gw.cleared(CAM_A, "black", long_ago, long_ago + 0.3)
    # Raised now and over long before its 30 s: pending, then gone without ever showing.
    now = time.time()
    await gw.raised(CAM_B, "freeze", now)
    await gw.shows(fp, lambda b: b["pending"], "freeze pending")
    async with stream(gw, fp) as events:
        snapshot = await events.next_event()
        assert snapshot.name == "snapshot"
        assert [p["kind"] for p in snapshot.data["pending"]] == ["freeze"]
        assert snapshot.data["active"] == snapshot.data["recent"] == []
        await gw.cleared(CAM_B, "freeze", now, now + 0.2)
        await gw.shows(fp, lambda b: not b["pending"], "freeze no longer pending")
        # What comes next on the stream is the next alarm, not the two short ones.
        await gw.raised(CAM_A, "lost", time.time() - 60)
        after = await events.next_event()
        assert (after.name, after.data["kind"], after.data["tile"]) == ("raised", "lost", 0)
    body = await gw.alarms_of(fp)
    assert [a["kind"] for a in body["active"]] == ["lost"]
    assert body["pending"] == body["recent"] == []


async def test_unknown_mosaics_are_a_one_line_404(gw: Gateway) -> None:
    unknown = "0" * 32
    for path in (f"/mosaics/{unknown}/alarms", "/mosaics/nope/alarms",
                 f"/mosaics/{unknown}/alarms/events", "/mosaics/NOPE/alarms/events"):  # fmt: skip
        got = await gw.http.get(path)
        assert got.status_code == 404, path
        assert got.json() == {"error": "not found"}


# -- the stream ------------------------------------------------------------------------------


async def test_the_stream_sends_a_snapshot_then_raised_when_shown_then_cleared(
    gw: Gateway,
) -> None:
    fp = await gw.create("black:0.5")
    async with stream(gw, fp) as events:
        snapshot = await events.next_event()
        assert snapshot.name == "snapshot"
        assert (snapshot.data["fp"], snapshot.data["active"]) == (fp, [])
        assert len(snapshot.data["layout"]["tiles"]) == 2

        onset = time.time()
        await gw.raised(CAM_B, "black", onset, wait=False)
        raised = await events.next_event()
        assert raised.name == "raised"
        assert raised.data["tile"] == 1 and raised.data["kind"] == "black"
        assert raised.data["shown_at"] == onset + 0.5
        assert raised.at >= raised.data["shown_at"], "shown no sooner than its hold allows"
        assert "end_wall" not in raised.data

        end = time.time()
        await gw.cleared(CAM_B, "black", onset, end)
        cleared = await events.next_event()
        assert cleared.name == "cleared"
        assert (cleared.data["tile"], cleared.data["kind"]) == (1, "black")
        assert (cleared.data["end_wall"], cleared.data["reason"]) == (end, "ended")


async def test_a_condition_raised_and_cleared_between_two_looks_is_told_in_order(
    gw: Gateway,
) -> None:
    fp = await gw.create("black:0.5")
    async with stream(gw, fp) as events:
        assert (await events.next_event()).name == "snapshot"
        # Both folded before the stream looks again: it lasted its hold, so it showed.
        began = time.time() - 20
        await gw.raised(CAM_A, "black", began)
        await gw.cleared(CAM_A, "black", began, began + 5)
        told = [await events.next_event(), await events.next_event()]
    # (Or, had the stream looked between the two, the same two events one at a time.)
    assert [(e.name, e.data["kind"], e.data["onset_wall"]) for e in told] == [
        ("raised", "black", began), ("cleared", "black", began)
    ]  # fmt: skip
    assert told[1].data["end_wall"] == began + 5


async def test_two_mosaics_with_different_holds_each_show_it_at_their_own_time(
    gw: Gateway,
) -> None:
    quick = await gw.create("black:0.5")
    slow = await gw.create("black:4")
    arrivals: list[tuple[str, Event]] = []

    async def follow(fp: str, name: str, ready: asyncio.Event) -> None:
        async with stream(gw, fp) as events:
            assert (await events.next_event()).name == "snapshot"
            ready.set()
            arrivals.append((name, await events.next_event()))

    ready = [asyncio.Event(), asyncio.Event()]
    async with asyncio.TaskGroup() as group:
        group.create_task(follow(quick, "quick", ready[0]))
        group.create_task(follow(slow, "slow", ready[1]))
        for each in ready:
            await asyncio.wait_for(each.wait(), WITHIN)
        onset = time.time()
        await gw.raised(CAM_A, "black", onset)
    assert [(name, e.name) for name, e in arrivals] == [("quick", "raised"), ("slow", "raised")]
    for (_, event), hold in zip(arrivals, (0.5, 4.0), strict=True):
        assert event.data["shown_at"] == onset + hold
        assert event.at >= onset + hold


async def test_a_mosaic_with_alarms_off_shows_nothing(gw: Gateway) -> None:
    on = await gw.create()
    off = await gw.create("off")
    gw.alarms.keepalive = 0.3
    async with stream(gw, off) as quiet, stream(gw, on) as loud:
        assert (await quiet.next_event()).name == "snapshot"
        assert (await loud.next_event()).name == "snapshot"
        await gw.raised(CAM_A, "lost", time.time() - 60)
        assert (await loud.next_event()).name == "raised"
        # The same change woke the quiet stream: anything it had to say comes before the
        # keep-alives it sends after it.
        said = [await quiet.next(), await quiet.next()]
        assert [e.name for e in said] == ["comment", "comment"]
    body = await gw.alarms_of(off)
    assert body["active"] == body["pending"] == body["recent"] == []
    assert [a["kind"] for a in (await gw.alarms_of(on))["active"]] == ["lost"]


async def test_streams_are_bounded_and_end_when_the_gateway_stops(gw: Gateway) -> None:
    fp = await gw.create()
    gw.alarms.max_streams = 1
    async with stream(gw, fp) as first:
        assert (await first.next_event()).name == "snapshot"
        over = await gw.http.get(f"/mosaics/{fp}/alarms/events")
        assert over.status_code == 503 and over.headers["retry-after"]
        assert "maximum of 1 alarm streams" in over.json()["error"]
    await until(lambda: _zero(gw.alarms.streams), WITHIN, "the slot given back")
    async with stream(gw, fp) as second:
        assert (await second.next_event()).name == "snapshot"
        gw.alarms.close()  # what the gateway's shutdown does
        with pytest.raises(EOFError):
            await second.next()
    assert gw.alarms.streams == 0
    refused = await gw.http.get(f"/mosaics/{fp}/alarms/events")
    assert refused.status_code == 503 and "stopping" in refused.json()["error"]


async def _zero(n: int) -> bool:
    return n == 0


async def test_a_shown_alarm_whose_state_goes_away_is_cleared_as_gone(gw: Gateway) -> None:
    fp = await gw.create("black:0.5")
    began = time.time() - 30
    await gw.raised(CAM_A, "black", began)
    await gw.shows(fp, lambda b: b["active"], "black shown")
    async with stream(gw, fp) as events:
        snapshot = await events.next_event()
        assert [a["kind"] for a in snapshot.data["active"]] == ["black"]
        # What `tessera events replay` does first: the state buckets go (and come back empty).
        await gw.js.delete_stream(ALARMS.stream_name)
        gone = await events.next_event()
    assert (gone.name, gone.data["kind"], gone.data["onset_wall"]) == ("cleared", "black", began)
    assert (gone.data["reason"], gone.data["end_wall"]) == ("gone", None)


# -- metrics and the list --------------------------------------------------------------------


async def test_metrics_and_the_mosaic_list_count_alarms(gw: Gateway) -> None:
    fp = await gw.create("black:0.5")
    began = time.time() - 30
    await gw.raised(CAM_A, "black", began)
    await gw.raised(CAM_A, "silence", began)
    await gw.cleared(CAM_A, "silence", began, began + 10)

    async def scraped() -> str | None:
        text = (await gw.http.get("/metrics")).text
        done = f'tessera_alarms_raised_total{{kind="silence",source="{KEY_A}"}} 1.0'
        return text if done in text else None

    text = await until(scraped, WITHIN, "the raises counted")
    lines = {line for line in text.splitlines() if line.startswith("tessera_alarm_active{")}
    assert lines == {
        f'tessera_alarm_active{{kind="{kind.value}",source="{KEY_A}"}} '
        f"{'1.0' if kind is AlarmKind.BLACK else '0.0'}"
        for kind in AlarmKind
    }, "one series per kind of each source with a state; none for a source without"
    assert f'tessera_alarms_raised_total{{kind="black",source="{KEY_A}"}} 1.0' in text
    assert "tessera_gateway_alarm_streams 0.0" in text
    listed = {m["fp"]: m for m in (await gw.http.get("/api/mosaics")).json()["mosaics"]}
    assert listed[fp]["alarms"] == 1


async def test_where_play_urls_are_signed_a_signed_url_or_the_admin_opens_the_alarms(
    nc: Client, js: JetStreamContext, gateway_nc: Client, tmp_path: Path
) -> None:
    admin = "tessera-admin-token-0123456789"
    env = {"TESSERA_PLAY_SECRET": "k" * 32, "TESSERA_API_TOKEN": admin}
    async with serving(nc, js, gateway_nc, tmp_path, **env) as gw:
        auth = {"Authorization": f"Bearer {admin}"}
        got = await gw.http.get("/create", params={"urls": PATTERN}, headers=auth)
        fp = got.headers["location"].split("/play/")[1].split("/")[0]
        refused = await gw.http.get(f"/mosaics/{fp}/alarms")
        assert refused.status_code == 401 and "admin" in refused.json()["error"]
        assert (await gw.http.get(f"/mosaics/{fp}/alarms", headers=auth)).status_code == 200
        # The viewer page of a signed link calls them with its prefix: that opens them too,
        # for this mosaic only.
        token = signing.sign("k" * 32, f"mosaic:{fp}", 600, "ops-wall", time.time())
        opened = await gw.http.get(f"/s/{token}/mosaics/{fp}/alarms")
        assert opened.status_code == 200 and opened.json()["fp"] == fp
        other = "0" * 32
        assert (await gw.http.get(f"/s/{token}/mosaics/{other}/alarms")).status_code == 403


# -- following a bucket -----------------------------------------------------------------------


class Held:
    """What an owner of a :class:`KvFollower` keeps: the bucket as it saw it."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.loads = 0

    def load(self, snapshot: dict[str, bytes]) -> None:
        self.loads += 1
        self.values = dict(snapshot)

    def apply(self, key: str, value: bytes | None) -> None:
        if key == "bad":
            raise ValueError("an entry the owner cannot take")
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value

    async def holds(self, expected: dict[str, bytes]) -> None:
        async def same() -> bool:
            return self.values == expected

        await until(same, WITHIN, f"the follower holding {expected}")


async def test_a_follower_loads_follows_and_watches_a_lost_bucket_again(
    js: JetStreamContext,
) -> None:
    kv = await js.key_value(TOKENS.name)
    await kv.put("a", b"1")
    await kv.put("b", b"2")
    held = Held()
    follower = KvFollower(js, TOKENS, load=held.load, apply=held.apply, check_every=0.1)
    await follower.start()
    try:
        assert held.values == {"a": b"1", "b": b"2"} and not follower.lost
        await kv.put("bad", b"?")  # logged; the following goes on
        await kv.put("c", b"3")
        await kv.delete("a")
        await held.holds({"b": b"2", "c": b"3"})
        await js.delete_stream(TOKENS.stream_name)
        await held.holds({})
        assert follower.lost and follower.rewatched == 0
        await provision(js)
        kv = await js.key_value(TOKENS.name)
        await kv.put("d", b"4")
        await held.holds({"d": b"4"})
        assert follower.rewatched == 1 and not follower.lost
    finally:
        await follower.stop()
        await follower.stop()


async def test_a_follower_of_a_missing_bucket_waits_for_it_or_refuses_to_start(
    js: JetStreamContext,
) -> None:
    await js.delete_stream(TOKENS.stream_name)
    required = KvFollower(js, TOKENS, load=Held().load, apply=Held().apply)
    with pytest.raises(NotFoundError):
        await required.start()
    held = Held()
    follower = KvFollower(
        js, TOKENS, load=held.load, apply=held.apply, check_every=0.1, required=False
    )
    await follower.start()
    try:
        assert follower.lost and held.loads == 0
        await provision(js)
        await (await js.key_value(TOKENS.name)).put("a", b"1")
        await held.holds({"a": b"1"})
    finally:
        await follower.stop()


# -- what a stream tells, pure ---------------------------------------------------------------


def _alarm(tile: int, kind: AlarmKind, onset: float, end: float | None = None) -> TileAlarm:
    return TileAlarm(tile, "", "k", kind, onset, onset, onset + 1, 0.0, end_wall=end,
                     worst=0.0 if end else None, reason="ended" if end else "")  # fmt: skip


def test_what_a_stream_tells_between_two_looks() -> None:
    black = _alarm(0, AlarmKind.BLACK, 100.0)
    freeze = _alarm(1, AlarmKind.FREEZE, 103.0)
    told = AlarmDiff(MosaicAlarms((black,), (), ()))
    assert told.update(MosaicAlarms((black,), (), ())) == []
    # The black ended; a freeze came and went (it showed); a silence is gone with its state.
    silence = _alarm(1, AlarmKind.SILENCE, 90.0)
    told = AlarmDiff(MosaicAlarms((black, silence), (), ()))
    events = told.update(MosaicAlarms((), (), (
        _alarm(1, AlarmKind.FREEZE, 103.0, end=108.0), _alarm(0, AlarmKind.BLACK, 100.0, 105.0)
    )))  # fmt: skip
    assert [(e, d["kind"], d.get("reason")) for e, d in events] == [
        ("cleared", "silence", "gone"),
        ("raised", "freeze", None),
        ("cleared", "black", "ended"),
        ("cleared", "freeze", "ended"),
    ]
    assert events[1][1]["onset_wall"] == freeze.onset_wall
    # Told once: the same look again tells nothing.
    assert told.update(MosaicAlarms((), (), (
        _alarm(1, AlarmKind.FREEZE, 103.0, end=108.0), _alarm(0, AlarmKind.BLACK, 100.0, 105.0)
    ))) == []  # fmt: skip


# -- the pages -------------------------------------------------------------------------------


async def test_the_viewer_page_lists_the_alarm_and_outlines_its_tile(
    page: Page, gw: Gateway
) -> None:
    fp = await gw.create("black:0.5")
    await page.goto(f"{gw.url}/view/{fp}?via=hls")
    await until_true(page, "document.body.dataset.alarms === '0'", WITHIN)
    assert await page.is_hidden("#alarms")

    began = time.time() - 42
    await gw.raised(CAM_B, "black", began)
    item = '#alarm-list li[data-tile="1"][data-kind="black"]'
    await page.wait_for_selector(item, timeout=WITHIN * 1000)
    text = await page.inner_text(item)
    assert "Black picture" in text and "Tile 2 · b" in text and "since" in text
    assert await page.inner_text("#alarm-count") == "1"
    outline = page.locator('#tile-alarms .tile-alarm[data-tile="1"]')
    assert await outline.count() == 1
    style = await outline.get_attribute("style") or ""
    assert "left: 50%" in style and "top: 0%" in style and "width: 50%" in style
    # Over the right half of the picture (1280x720 in a 1280x720 window: all of it).
    box = await outline.bounding_box()
    assert box is not None
    assert abs(box["x"] - 640) <= 2 and abs(box["width"] - 640) <= 2
    assert abs(box["y"]) <= 2 and abs(box["height"] - 720) <= 2
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "view-alarms.png")

    await page.goto(f"{gw.url}/")
    badge = f'#mosaics tr[data-fp="{fp}"] [data-alarms="1"]'
    await page.wait_for_selector(badge, timeout=WITHIN * 1000)
    assert await page.inner_text(badge) == "1 alarm"
    await page.screenshot(path=SCREENSHOTS / "home-alarms.png")

    await page.goto(f"{gw.url}/view/{fp}?via=hls")
    await page.wait_for_selector(item, timeout=WITHIN * 1000)
    await gw.cleared(CAM_B, "black", began, time.time())
    await until_true(page, "document.body.dataset.alarms === '0'", WITHIN)
    assert await page.locator("#tile-alarms .tile-alarm").count() == 0
    assert await page.is_hidden("#alarms")
