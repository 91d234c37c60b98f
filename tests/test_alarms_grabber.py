"""Alarms from real grabbers against a real nats-server, on media made here with PyAV (moving
pictures with sound, black, frozen and silent at known source times, served as an HLS playlist
on loopback): each condition is appended as ``alarm raised`` with its kind and onset and
``alarm cleared`` at its end, by grabbers connected as the grabber role; a URL grabbed at two
tile sizes is one alarm per condition in KV ``alarms``; a grabber that stops clears what it had
raised, and one that starts after a crash clears what it no longer sees; a looped source raises
again on every pass (its repeated times are not taken for duplicates); decoded audio goes out
only while a stitcher asks for it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from pipeline.control.projector import Projector
from pipeline.messages.audio import unpack_audio
from pipeline.messages.codec import decode_event
from pipeline.messages.events import AlarmCleared, AlarmRaised
from pipeline.monitoring.alarms import AlarmKind
from pipeline.nats import eventlog, subjects
from pipeline.nats.topology import ALARMS, EVENTS
from pipeline.producers.alarming import AlarmReporter
from pipeline.producers.grabber import Grabber
from pipeline.sources.policy import SourcePolicy
from pipeline.sources.synthetic import SourceServer
from pipeline.state.model import SourceState
from pipeline.state.mosaic import source_id, source_key
from pipeline.state.stored import decode_entry
from tests.alarmmedia import Span, scripted_clip
from tests.test_grabber import FAST, until

SECONDS = 17.0
SPANS = [Span("black", 3.0, 6.0), Span("freeze", 8.0, 11.0), Span("silence", 12.0, 15.0)]
FRAME = 1 / 25


def playlist(segment: str, seconds: float) -> str:
    return (
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{seconds:.0f}\n"
        f"#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{seconds:.1f},\n{segment}\n#EXT-X-ENDLIST\n"
    )


def vod(server: SourceServer, name: str, data: bytes, seconds: float) -> str:
    """An ended HLS playlist of one segment (paced by its timestamps, looped)."""
    server.add_file(f"{name}.ts", data)
    return server.add_file(f"{name}.m3u8", playlist(f"{name}.ts", seconds))


@pytest.fixture(scope="module")
def server() -> Iterator[SourceServer]:
    with SourceServer({}) as running:
        yield running


def make(nc: Client, url: str, size: tuple[int, int], name: str) -> Grabber:
    return Grabber(
        nc=nc,
        source_id=source_id(url, *size),
        url=url,
        width=size[0],
        height=size[1],
        fps=25.0,
        worker_id=name,
        policy=SourcePolicy.local(),
        **FAST,  # type: ignore[arg-type]
    )


async def listen(nc: Client, key: str) -> list[AlarmRaised | AlarmCleared]:
    got: list[AlarmRaised | AlarmCleared] = []

    async def on_event(msg: Msg) -> None:
        event = decode_event(msg.data, msg.subject)
        assert isinstance(event, AlarmRaised | AlarmCleared)
        got.append(event)

    await nc.subscribe(f"events.source.{key}", cb=on_event)
    await nc.flush()
    return got


async def test_each_condition_raised_once_with_its_onset_and_cleared_at_its_end(
    server: SourceServer, nc: Client, js: JetStreamContext, grabber_nc: Client
) -> None:
    url = vod(server, "scripted", scripted_clip(SECONDS, SPANS), SECONDS)
    key = source_key(url)
    seen = await listen(nc, key)
    projector = Projector(nc, js)
    await projector.start()
    small = make(grabber_nc, url, (160, 90), "grabber-small")
    large = make(grabber_nc, url, (320, 180), "grabber-large")
    try:
        await small.start()
        await large.start()  # the same URL at another tile size: its alarms are the same
        # Both grabbers clear silence, the script's last stretch (each at its own pace: one
        # may be a tick behind the other on a busy machine).
        await until(
            lambda: (
                {e.worker_id for e in seen if isinstance(e, AlarmCleared) and e.kind == "silence"}
                == {"grabber-small", "grabber-large"}
            ),
            within=SECONDS + 15,
            what="silence cleared by both grabbers",
        )
        # Stop before the file loops and starts the script again.
        await small.stop()
        await large.stop()
    finally:
        await small.stop()
        await large.stop()
    # Each grabber appends what it saw (3 raised, 3 cleared); the projection below keeps one
    # alarm per kind of the URL however many grabbers saw it.
    stored = await eventlog.matching_count(js, f"events.source.{key}")
    assert stored == 12, f"{stored} alarm events stored for one URL at two sizes: {seen}"
    for worker in ("grabber-small", "grabber-large"):
        assert len([e for e in seen if e.worker_id == worker]) == 6
    raised = {e.kind: e for e in seen if isinstance(e, AlarmRaised)}
    cleared = {e.kind: e for e in seen if isinstance(e, AlarmCleared)}
    assert set(raised) == set(cleared) == {"black", "freeze", "silence"}
    for span in SPANS:
        r, c = raised[span.what], cleared[span.what]
        slack = FRAME if span.what != "silence" else 0.15  # 100 ms windows, AAC edges
        assert r.onset == pytest.approx(span.start, abs=slack), r
        assert c.end == pytest.approx(span.end, abs=slack), c
        assert c.onset == r.onset and c.reason == "ended"
        assert r.at >= r.onset_wall + 0.5 - 0.01  # raised after the debounce, never before
        assert r.url == url and r.worker_id in ("grabber-small", "grabber-large")
    # The projection: nothing active, three cleared, three raised.
    await projector.wait_for((await js.stream_info(EVENTS.name)).state.last_seq)
    await projector.stop()
    kv = await js.key_value(ALARMS.name)
    state: SourceState = decode_entry(ALARMS.name, (await kv.get(key)).value or b"").state
    assert state.active == () and state.raised == 3
    assert [a.kind for a in state.recent] == ["silence", "freeze", "black"]


async def test_a_stopped_grabber_clears_and_a_restarted_one_clears_what_it_does_not_see(
    server: SourceServer, nc: Client, js: JetStreamContext, grabber_nc: Client
) -> None:
    url = vod(server, "darkness", scripted_clip(6.0, [Span("black", 0.0, 6.0)]), 6.0)
    key = source_key(url)
    seen = await listen(nc, key)
    projector = Projector(nc, js)
    await projector.start()
    try:
        first = make(grabber_nc, url, (160, 90), "grabber-first")
        await first.start()
        await until(lambda: len(seen) == 1, within=15, what="black raised")
        await first.stop()
        await until(lambda: len(seen) == 2, within=5, what="black cleared at stop")
        assert isinstance(seen[1], AlarmCleared) and seen[1].reason == "stopped"

        # A grabber that died (no clear) leaves the alarm active; the next one on a source that
        # is no longer black clears it as not seen.
        await eventlog.append(js, AlarmRaised(at=1.0, source=key, kind="black", onset=0.0,
                                              onset_wall=1.0, value=1.0))  # fmt: skip
        await projector.wait_for((await js.stream_info(EVENTS.name)).state.last_seq)
        server.add_file("moving.ts", scripted_clip(6.0))
        server.add_file("darkness.m3u8", playlist("moving.ts", 6.0))  # the URL is not black now
        second = make(grabber_nc, url, (160, 90), "grabber-second")
        await second.start()
        try:
            await until(
                lambda: any(getattr(e, "reason", "") == "not-seen" for e in seen),
                within=15,
                what="the inherited alarm cleared as not seen",
            )
        finally:
            await second.stop()
        await projector.wait_for((await js.stream_info(EVENTS.name)).state.last_seq)
        kv = await js.key_value(ALARMS.name)
        state: SourceState = decode_entry(ALARMS.name, (await kv.get(key)).value or b"").state
        assert state.active == ()
    finally:
        await projector.stop()


async def test_a_looped_source_raises_on_every_pass_and_audio_flows_only_when_wanted(
    server: SourceServer, nc: Client, js: JetStreamContext, grabber_nc: Client
) -> None:
    url = vod(server, "blink", scripted_clip(3.0, [Span("black", 1.0, 2.0)]), 3.0)
    key = source_key(url)
    seen = await listen(nc, key)
    grabber = make(grabber_nc, url, (160, 90), "grabber-blink")
    chunks: list[Msg] = []

    async def on_audio(msg: Msg) -> None:
        chunks.append(msg)

    await nc.subscribe(subjects.audio(grabber.source_id), cb=on_audio)
    try:
        await grabber.start()
        # Three passes of the file: the same onset (1.0 s) three times, each one stored.
        await until(lambda: sum(isinstance(e, AlarmRaised) for e in seen) >= 3, within=20,
                    what="black raised on three passes")  # fmt: skip
        assert chunks == [], "decoded audio sent though nobody asked for it"
        for _ in range(3):
            await nc.publish(subjects.audio_wanted(grabber.source_id), b"")
            await asyncio.sleep(0.5)
        assert chunks, "no decoded audio though a stitcher asked for it"
        header, pcm = unpack_audio(chunks[-1].data)
        assert header.rate == 48000 and header.channels == 2 and len(pcm) == header.samples * 4
    finally:
        await grabber.stop()
    stored = await eventlog.matching_count(js, f"events.source.{key}")
    assert stored == len(seen) >= 6, "an alarm of a later pass was dropped as a duplicate"
    onsets = [e.onset for e in seen if isinstance(e, AlarmRaised)]
    assert onsets[:3] == [pytest.approx(onsets[0])] * 3


async def test_pictures_measured_ahead_count_when_shown(grabber_nc: Client) -> None:
    """A paced grabber measures each tile where it scales it, up to a second before the frame
    is handed on: the watch takes a picture only once its wall time has come, and pictures of a
    lost connection that never came are forgotten (its tiles' alarms are what was shown)."""
    now = [1000.0]
    reporter = AlarmReporter(
        js=grabber_nc.jetstream(), key="k" * 20, url="http://x/", fps=25.0, worker_id="w",
        wall=lambda: now[0], tick=0.01,
    )  # fmt: skip
    black = bytes(320 * 180) + bytes([128]) * (320 * 90)
    await reporter.start()
    try:
        # Black pictures for 2 s of source time, to be shown 5 s from now.
        start = now[0]
        for i in range(50):
            reporter.measure(i / 25, start + 5 + i / 25, black, 320, 180)
        # 3 s on, none is due: the source is lost (a picture taken before its time would have
        # been seen at a wall time still to come, and black raised instead).
        now[0] = start + 3.0
        await until(lambda: AlarmKind.LOST in reporter.watch.active, within=5, what="lost")
        assert AlarmKind.BLACK not in reporter.watch.active, "a picture taken before its time"
        now[0] = start + 5.8  # 0.8 s of them shown: black for longer than the 0.5 s debounce
        await until(
            lambda: reporter.watch.active == {AlarmKind.BLACK}, within=5, what="black, not lost"
        )
        reporter.unshown(now[0])  # the connection is lost: the rest never shows
        # Had the rest been taken, pictures would go on to 6.96 s and black with them; without
        # them the source is lost 1 s later (no picture for more than the gap), black ended.
        now[0] = start + 6.8
        await until(
            lambda: reporter.watch.active == {AlarmKind.LOST}, within=5, what="lost, not black"
        )
    finally:
        await reporter.stop(drain=0.5)
