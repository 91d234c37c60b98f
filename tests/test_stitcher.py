"""The stitcher service against a real nats-server: synthetic solid-colour sources go in on
``frames.<sid>``; what comes out (segments in the object store, the playlist in KV, notices,
heartbeats) is fetched and decoded with PyAV, and the pixels of every tile are checked.

Colours are compared in YUV, the space the pipeline works in: a tile's body (away from its
label strip and edges) must average within ``TOLERANCE`` of its source's Y, U and V after a
trip through x264 (CRF 23 reproduces flat colours within 1-2 levels; 6 leaves room for the
encoder's deblocking near tile edges).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Iterable

import av
import m3u8
import msgspec
import numpy as np
import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from pipeline.consumers.canvas import Planes, planes_of, planes_to_rgb, rgb_to_yuv, solid
from pipeline.consumers.deadtile import dead_tile
from pipeline.consumers.labels import strip_height
from pipeline.consumers.stitcher import Status, Stitcher, StitcherError
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.events import Tile
from pipeline.messages.frames import FrameHeader, pack_frame
from pipeline.messages.heartbeats import StitcherStats, WorkerHeartbeat
from pipeline.messages.segments import SegmentNotice
from pipeline.nats import subjects
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.state.layouts import layout
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import source_id

W, H, FPS = 640, 360, 25
GRID = layout(4, W, H)
TW, TH = GRID.rects[0].size
STRIP = strip_height(TH)
TOLERANCE = 6
COLOURS = {
    "red": (200, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 200),
    "yellow": (220, 200, 40),
}
NAMES = tuple(COLOURS)
WAIT = 10.0
"""Upper bound for any single condition (a segment takes 1 s; this only bounds a failure)."""

_notice = msgspec.json.Decoder(SegmentNotice)


def mosaic(fp: str) -> MosaicState:
    tiles = tuple(Tile(f"test://{name}/live.m3u8", name) for name in NAMES)
    return MosaicState(fp=fp, tiles=tiles, width=W, height=H, fps=FPS)


def sid(name: str) -> str:
    return source_id(f"test://{name}/live.m3u8", TW, TH)


def yuv(name: str) -> tuple[int, int, int]:
    return rgb_to_yuv(COLOURS[name])


class FramePublisher:
    """Publishes a solid-colour frame of every active source at ``fps``, on deadlines."""

    def __init__(self, nc: Client, names: Iterable[str], fps: int = FPS) -> None:
        self._nc = nc
        self.active = set(names)
        self._fps = fps
        self._pixels = {n: b"".join(p.tobytes() for p in solid(TW, TH, yuv(n))) for n in COLOURS}
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    async def publish_once(self) -> None:
        self._seq += 1
        for name in sorted(self.active):
            header = FrameHeader(
                source_id=sid(name),
                seq=self._seq,
                pts=self._seq / self._fps,
                wall=time.time(),
                width=TW,
                height=TH,
            )
            await self._nc.publish(
                subjects.frames(sid(name)), pack_frame(header, self._pixels[name])
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            await self.publish_once()
            tick += 1
            await asyncio.sleep(max(0.0, start + tick / self._fps - loop.time()))

    async def __aenter__(self) -> FramePublisher:
        self._task = asyncio.create_task(self._run(), name="test frame publisher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)


@contextlib.asynccontextmanager
async def running(stitcher: Stitcher) -> AsyncIterator[Stitcher]:
    await stitcher.start()
    try:
        yield stitcher
    finally:
        await stitcher.stop()


def make_stitcher(nc: Client, js: JetStreamContext, fp: str, **kwargs: object) -> Stitcher:
    """A stitcher of :func:`mosaic` ``fp``; MPEG-TS unless told otherwise (this file is about the
    TS output and everything every output shares; tests/test_stitcher_cmaf.py is about CMAF)."""
    kwargs.setdefault("hls_format", "ts")
    return Stitcher(
        nc=nc,
        js=js,
        fp=fp,
        mosaic=mosaic(fp),
        worker_id=f"st-{fp[:8]}",
        **kwargs,  # type: ignore[arg-type]
    )


async def next_notice(sub: Subscription, within: float = WAIT) -> SegmentNotice:
    msg = await sub.next_msg(timeout=within)
    return _notice.decode(msg.data)


async def segment_frames(js: JetStreamContext, key: str) -> list[Planes]:
    store = await js.object_store("segments")
    result = await store.get(key)
    assert result.data
    with av.open(io.BytesIO(result.data), "r", format="mpegts") as container:
        frames = [f.to_ndarray() for f in container.decode(video=0)]
    return [planes_of(f.tobytes(), W, H) for f in frames]


def tile_yuv(picture: Planes, index: int) -> tuple[float, float, float]:
    """Mean Y, U, V of tile ``index``'s body: inset 4 px, above its label strip."""
    x, y = GRID.rects[index].x, GRID.rects[index].y
    top, bottom, left, right = y + 4, y + TH - STRIP - 4, x + 4, x + TW - 4
    return (
        float(picture.y[top:bottom, left:right].mean()),
        float(picture.u[top // 2 : bottom // 2, left // 2 : right // 2].mean()),
        float(picture.v[top // 2 : bottom // 2, left // 2 : right // 2].mean()),
    )


def shows(picture: Planes, index: int, name: str) -> bool:
    got = tile_yuv(picture, index)
    return all(abs(g - w) <= TOLERANCE for g, w in zip(got, yuv(name), strict=True))


def shows_dead(picture: Planes, index: int) -> bool:
    x, y = GRID.rects[index].x, GRID.rects[index].y
    region = picture.y[y : y + TH, x : x + TW].astype(int)
    expected = dead_tile(TW, TH, NAMES[index]).y.astype(int)
    return float(np.abs(region - expected).mean()) < 6


def assert_all_colours(picture: Planes, except_: int | None = None) -> None:
    for index, name in enumerate(NAMES):
        if index != except_:
            assert shows(picture, index, name), (name, tile_yuv(picture, index), yuv(name))


async def test_stitcher_puts_every_source_in_its_place_with_labels(
    nc: Client, js: JetStreamContext
) -> None:
    fp = "a" * 32
    notices = await nc.subscribe(subjects.segments(fp))
    beats = await nc.subscribe(subjects.worker_heartbeat(f"st-{fp[:8]}"))
    stitcher = make_stitcher(nc, js, fp, segment_duration=1.0, heartbeat_interval=0.2)
    async with FramePublisher(nc, NAMES), running(stitcher):
        # A broken message on a source's subject is counted and ignored.
        await nc.publish(subjects.frames(sid("red")), b"\0\0\0\5junk!")
        first = await next_notice(notices)
        second = await next_notice(notices)
        assert second.seq == first.seq + 1 and first.seq == 0
        assert second.key == f"{fp}/{second.seq}.ts"
        assert second.duration == pytest.approx(1.0) and second.size > 0
        assert 0 < second.first_wall <= second.at

        # The playlist names only stored segments, relative, in order.
        kv = await js.key_value("manifests")
        entry = await kv.get(fp)
        assert entry.value
        playlist = m3u8.loads(entry.value.decode())
        assert playlist.target_duration == 1 and playlist.is_independent_segments
        assert [s.uri for s in playlist.segments][:2] == ["0.ts", "1.ts"]
        store = await js.object_store("segments")
        for segment in playlist.segments:
            info = await store.get_info(f"{fp}/{segment.uri}")
            assert info.size and segment.program_date_time is not None
        third = await next_notice(notices)
        later = m3u8.loads((await kv.get(fp)).value.decode())  # type: ignore[union-attr]
        assert (later.media_sequence or 0) >= (playlist.media_sequence or 0)
        assert f"{third.seq}.ts" in [s.uri for s in later.segments]

        # Pixels: every tile shows its source's colour in its grid cell, with a label.
        frames = await segment_frames(js, third.key)
        assert len(frames) == FPS
        picture = frames[-1]
        assert_all_colours(picture)
        for index, name in enumerate(NAMES):
            x, y = GRID.rects[index].x, GRID.rects[index].y
            strip = picture.y[y + TH - STRIP : y + TH, x : x + TW]
            assert strip.mean() < yuv(name)[0] - 20 or strip.max() > 200  # dark strip, text
            assert strip.max() > 200  # white text drawn: the name

        # Heartbeat: ready, with stats.
        deadline = time.monotonic() + WAIT
        beat = None
        while time.monotonic() < deadline:
            hb = decode_heartbeat((await beats.next_msg(timeout=WAIT)).data)
            if isinstance(hb, WorkerHeartbeat) and hb.ready:
                beat = hb
                break
        assert beat is not None and beat.kind == "stitcher" and beat.target == fp
        assert isinstance(beat.stats, StitcherStats)
        assert beat.stats.segments >= 1 and beat.stats.tiles == 4 and beat.stats.dead_tiles == 0
        assert beat.stats.bad_frames == 1
        assert 0 < beat.stats.encode_ms < 1000 / FPS
        assert beat.stats.fps > FPS * 0.8
        assert stitcher.status is Status.RUNNING

    # Stopped: twice is fine, a last beat says "not ready", no task is left behind.
    await stitcher.stop()
    assert stitcher.status in (Status.STOPPED,)
    assert not [t for t in asyncio.all_tasks() if fp in t.get_name()]
    last = None
    with contextlib.suppress(TimeoutError):
        while True:
            last = decode_heartbeat((await beats.next_msg(timeout=0.5)).data)
    assert isinstance(last, WorkerHeartbeat) and not last.ready
    await notices.unsubscribe()
    await beats.unsubscribe()


async def test_a_silent_source_turns_dead_and_comes_back(nc: Client, js: JetStreamContext) -> None:
    fp = "b" * 32
    dead_after = 1.0
    notices = await nc.subscribe(subjects.segments(fp))
    stitcher = make_stitcher(nc, js, fp, segment_duration=1.0, dead_after=dead_after)
    async with FramePublisher(nc, NAMES) as publisher, running(stitcher):
        notice = await next_notice(notices)
        assert_all_colours((await segment_frames(js, notice.key))[-1])

        publisher.active.discard("blue")
        silent_at = time.monotonic()
        while True:
            notice = await next_notice(notices)
            picture = (await segment_frames(js, notice.key))[-1]
            if shows_dead(picture, 2):
                break
            assert time.monotonic() - silent_at < dead_after + 2 * 1.0 + 1.0
        # Within dead_after + one segment (plus a little for storing it).
        assert time.monotonic() - silent_at < dead_after + 1.0 + 1.0
        assert_all_colours(picture, except_=2)
        rgb = planes_to_rgb(picture)
        x, y = GRID.rects[2].x, GRID.rects[2].y
        cloud = rgb[y + 30 : y + 100, x + 100 : x + 220].reshape(-1, 3).astype(int)
        assert ((cloud[:, 0] > 150) & (cloud[:, 1] < 90) & (cloud[:, 2] < 90)).mean() > 0.3
        assert stitcher.stats().dead_tiles == 1

        publisher.active.add("blue")
        back_at = time.monotonic()
        while True:
            notice = await next_notice(notices)
            picture = (await segment_frames(js, notice.key))[-1]
            if shows(picture, 2, "blue"):
                break
            assert time.monotonic() - back_at < 2 * 1.0 + 1.0
        assert_all_colours(picture)
    await notices.unsubscribe()


async def test_a_late_clock_skips_ticks_and_counts_them(nc: Client, js: JetStreamContext) -> None:
    fp = "e" * 32
    jump = 0.0

    def clock() -> float:
        return time.monotonic() + jump

    notices = await nc.subscribe(subjects.segments(fp))
    stitcher = make_stitcher(nc, js, fp, clock=clock)
    async with FramePublisher(nc, NAMES), running(stitcher):
        await next_notice(notices)
        # A loaded machine may make a tick or two late on its own: count from here.
        before = stitcher.stats().late_frames
        jump = 1.0  # the stitcher "wakes up" a second late: 25 ticks are due at once
        notice = await next_notice(notices)
        # Skipped and counted, not made up (made up, they would not count as late); segments
        # still hold whole seconds of media.
        assert stitcher.stats().late_frames - before >= FPS - 1
        frames = await segment_frames(js, notice.key)
        assert len(frames) == FPS
        assert_all_colours(frames[-1])
    await notices.unsubscribe()


async def test_a_new_stitcher_shows_running_sources_at_once_and_continues_the_sequence(
    nc: Client, js: JetStreamContext
) -> None:
    fp = "c" * 32
    notices = await nc.subscribe(subjects.segments(fp))
    publisher = FramePublisher(nc, NAMES)
    for _ in range(3):
        await publisher.publish_once()
    await nc.flush()
    # Nothing publishes any more: all the stitchers can have is what FRAMES holds.
    first = make_stitcher(nc, js, fp, dead_after=8.0)
    async with running(first):
        notice = await next_notice(notices)
        frames = await segment_frames(js, notice.key)
        assert_all_colours(frames[0])  # the very first picture: seeded, not "waiting"
        last = await next_notice(notices)
    last_pts = (await segment_frames_pts(js, last.key))[-1]

    second = make_stitcher(nc, js, fp, dead_after=8.0)
    async with running(second):
        notice = await next_notice(notices)
        assert notice.seq == last.seq + 1  # media sequence continues across restarts
        frames = await segment_frames(js, notice.key)
        assert_all_colours(frames[0])
        first_pts = (await segment_frames_pts(js, notice.key))[0]
        assert first_pts == last_pts + 90_000 // FPS  # and so does the timeline
        playlist = m3u8.loads((await (await js.key_value("manifests")).get(fp)).value.decode())  # type: ignore[union-attr]
        assert playlist.media_sequence == notice.seq
    await notices.unsubscribe()


async def segment_frames_pts(js: JetStreamContext, key: str) -> list[int]:
    store = await js.object_store("segments")
    result = await store.get(key)
    assert result.data
    with av.open(io.BytesIO(result.data), "r", format="mpegts") as container:
        return [int(f.pts or 0) for f in container.decode(video=0)]


async def test_start_failure_cleans_up_and_stop_is_safe(nc: Client, js: JetStreamContext) -> None:
    fp = "d" * 32
    await js.delete_stream("KV_manifests")
    stitcher = make_stitcher(nc, js, fp)
    with pytest.raises(StitcherError, match="KV 'manifests' must exist"):
        await stitcher.start()
    assert stitcher.status is Status.FAILED
    await stitcher.stop()
    await stitcher.stop()
    assert not [t for t in asyncio.all_tasks() if fp in t.get_name()]

    never = make_stitcher(nc, js, fp)
    await never.stop()
    await never.start()  # stopped before it started: does nothing
    assert never.status is Status.STOPPED


async def test_a_store_that_lost_the_listed_segments_starts_a_new_run(
    nc: Client, js: JetStreamContext
) -> None:
    """What a restarted nats-server does to the memory object store, done by hand: the
    playlist must never name a segment that is not stored, and sequences keep growing."""
    fp = "d" * 32
    notices = await nc.subscribe(subjects.segments(fp))
    store = await js.object_store("segments")
    kv = await js.key_value("manifests")
    async with FramePublisher(nc, NAMES), running(make_stitcher(nc, js, fp)):
        seen = [await next_notice(notices) for _ in range(3)]
        for notice in seen:
            await store.delete(notice.key)
        after = [await next_notice(notices) for _ in range(2)]
        assert [n.seq for n in after] == [seen[-1].seq + 1, seen[-1].seq + 2]
        entry = await kv.get(fp)
        assert entry.value is not None
        playlist = m3u8.loads(entry.value.decode())
        listed = [int(s.uri.split(".")[0]) for s in playlist.segments]
        assert listed == [n.seq for n in after]
        assert playlist.media_sequence == after[0].seq
        for seq in listed:
            assert (await store.get(f"{fp}/{seq}.ts")).data, f"{seq}.ts is listed but not stored"
    await notices.unsubscribe()
