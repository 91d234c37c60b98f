"""Issue 19 part 4: long GOPs at review speed. The reader's byte-bounded cache keeps what a seek
decoded on the way to its frame, so stepping backwards through a 250-frame GOP decodes from the
keyframe once per cache-full, and every frame is still exactly the one asked for. The seek
proxy (intra-only JPEG, built in the background) gives a seek's frame at once: its pictures are
the frames asked for, it stays within its bound, and a session sends a seek's proxy picture,
then the exact one (or only the exact one where the proxy has no such frame yet)."""

from __future__ import annotations

import asyncio
import fractions
import os
import random
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client

from pipeline.messages.control import FrameReport, Play, Seek
from pipeline.messages.events import SessionInput, SessionOptions
from pipeline.producers.jit import proxy, proxyplan
from pipeline.producers.jit.decoder import Picture, ReadInterrupted, VideoReader, decode_threads
from pipeline.producers.jit.framecache import (
    MIN_FRAMES,
    FrameCache,
    backward_refill_share,
    frames_for,
)
from pipeline.producers.jit.inputs import InputAccess, open_input
from pipeline.producers.jit.proxy import MIN_WORK, ProxyBuilder, ProxyReader, ProxyStore
from pipeline.producers.jit.worker import JitWorker
from pipeline.sources.policy import SourcePolicy
from tests import test_jit_worker
from tests.jitmedia import make_video, read_frame_number
from tests.test_jit_worker import Viewer, watch
from tests.waiting import until

# The worker tests' fixtures: a started session, and aiortc completing frames as browsers do.
session = test_jit_worker.session
browser_like_jitter_buffer = test_jit_worker.browser_like_jitter_buffer

FRAMES = 300
GOP = 250


@pytest.fixture(scope="module")
def longgop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("longgop")
    return make_video(folder / "gop250.mp4", frames=FRAMES, rate=fractions.Fraction(25), gop=GOP)


def reader(path: Path, cached: int, options: SessionOptions | None = None) -> VideoReader:
    """A reader of ``path`` whose cache holds ``cached`` decoded pictures."""
    access = InputAccess(SourcePolicy.local(), media_roots=(path.parent,))
    options = options or SessionOptions()
    probe = VideoReader(open_input(str(path), 1, access), options)
    picture_bytes = probe.picture_bytes  # with the decoder's line padding
    probe.close()
    return VideoReader(
        open_input(str(path), 1, access), options, cache_bytes=cached * picture_bytes
    )


def number_of(picture: Picture | None) -> int | None:
    assert picture is not None
    return read_frame_number(picture.data[: picture.height])


# -- sizing and the cache alone ----------------------------------------------------------------


def test_frames_for_sizes_by_bytes_with_a_floor() -> None:
    hd = 1920 * 1080 * 3 // 2
    assert frames_for(hd, 256 * 2**20) == 86
    assert frames_for(3840 * 2160 * 3 // 2, 256 * 2**20) == 21
    assert frames_for(hd, 0) == MIN_FRAMES
    with pytest.raises(ValueError, match="picture_bytes=0"):
        frames_for(0, 100)


def test_backward_refill_share() -> None:
    assert backward_refill_share(21) == pytest.approx(0.05)
    assert backward_refill_share(1) == 1.0


def test_cache_stays_within_its_budget_and_keeps_the_frames_ahead_of_the_playhead() -> None:
    cache: FrameCache[str] = FrameCache(budget=10 * 100)
    cache.move_to(50)  # forwards
    for frame in range(60):
        cache.put(frame, f"f{frame}", 100)
        assert cache.bytes <= cache.budget
    assert len(cache) == 10 and cache.peak_bytes == 1000
    kept = list(cache)
    # Frames behind count four times as far: 50-58 ahead, 49 behind (48, as far as 58 is,
    # went first: ties drop the lower end).
    assert kept == [49, *range(50, 59)]
    cache.move_to(30)  # backwards: now 30 and below are ahead
    for frame in range(60):
        cache.put(frame, f"f{frame}", 100)
    assert list(cache) == [*range(23, 31), 31, 32]
    assert cache.get(23) == "f23" and cache.get(33) is None


def test_cache_replacing_a_frame_counts_its_bytes_once() -> None:
    cache: FrameCache[str] = FrameCache(budget=1000)
    cache.put(3, "a", 400)
    cache.put(3, "b", 300)
    assert cache.bytes == 300 and cache.get(3) == "b"


def test_cache_keeps_a_few_frames_even_over_budget() -> None:
    cache: FrameCache[int] = FrameCache(budget=10)
    for frame in range(10):
        cache.put(frame, frame, 100)
    assert len(cache) == MIN_FRAMES
    with pytest.raises(ValueError, match="budget=-1"):
        FrameCache[int](budget=-1)


# -- the reader on a 250-frame GOP ---------------------------------------------------------------


def test_a_read_in_a_hurry_skips_the_frames_between_and_lands_exactly(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Playback that fell behind skips ahead (``Due.hurry``): the reader decodes forward to the
    frame that is due without the frames nothing refers to (the B-frames: two of every three
    frames of this file), so a decoder slower than real time still gets there sooner; the frame
    is exact, B-frame or not."""
    path = tmp_path_factory.mktemp("bframes") / "gop250b.mp4"
    make_video(path, frames=120, rate=fractions.Fraction(25), gop=250, bframes=2,
               codec="mpeg2video")  # fmt: skip
    plain, hurried = reader(path, 8), reader(path, 8)
    try:
        for video in (plain, hurried):
            assert number_of(video.read(10)) == 10
        base = (plain.decoded, hurried.decoded)
        for n in (30, 47, 49):  # within the forward limit (2 s): decoded forward, no seek
            assert number_of(plain.read(n)) == n
            assert number_of(hurried.read(n, hurry=True)) == n
        assert plain.seeks == hurried.seeks == 0
        plain_decoded = plain.decoded - base[0]
        hurried_decoded = hurried.decoded - base[1]
        assert plain_decoded >= 39
        assert hurried_decoded <= plain_decoded * 0.6, (hurried_decoded, plain_decoded)
        print(f"decoded forward 10 -> 49: {plain_decoded} frames, in a hurry {hurried_decoded}")
        # After a hurried read, reading on frame by frame decodes every frame again.
        for n in range(50, 56):
            assert number_of(hurried.read(n)) == n
    finally:
        plain.close()
        hurried.close()


def test_random_seeks_land_on_the_exact_frame(longgop: Path) -> None:
    video = reader(longgop, 16)
    try:
        rng = random.Random(19)
        for target in [*rng.sample(range(FRAMES), 30), GOP - 1, GOP, GOP + 1, 0, FRAMES - 1]:
            picture = video.read(target)
            assert picture is not None and picture.frame == target
            assert number_of(picture) == target
    finally:
        video.close()


def test_a_session_decodes_a_video_above_720p_with_frame_threads_unless_it_says(
    tmp_path: Path,
) -> None:
    """``threads`` left unset: two frame threads above 1280x720 (case 12: an exact 1080p seek
    1.7 s instead of 3.0), one at or below it (the original program's default); a session
    that gives ``threads`` gets what it asked for."""
    assert decode_threads(SessionOptions(), 1920, 1080) == (2, "frame")
    assert decode_threads(SessionOptions(), 3840, 2160) == (2, "frame")
    assert decode_threads(SessionOptions(), 1280, 720) == (1, "slice")
    assert decode_threads(SessionOptions(threads=1), 3840, 2160) == (1, "slice")
    assert decode_threads(SessionOptions(threads=0, thread_type="auto"), 640, 360) == (0, "auto")
    # An A/B compare's two readers decode at once: one thread each.
    assert decode_threads(SessionOptions(), 1920, 1080, readers=2) == (1, "slice")
    path = make_video(tmp_path / "big.mp4", frames=12, rate=fractions.Fraction(25),
                      width=1296, height=736, gop=6)  # fmt: skip
    video = reader(path, 4)
    try:
        ctx = video._stream.codec_context
        assert (ctx.thread_count, ctx.thread_type.name) == (2, "FRAME")
        for n in (7, 8, 3, 11, 0):
            assert number_of(video.read(n)) == n
    finally:
        video.close()


@pytest.fixture(scope="module", params=["mp4", "ts", "mkv"])
def bframes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GOP-250 file with B-frames (two in a row, as IBBP), in three containers: frames come
    out of the decoder in another order than their packets go in."""
    folder = tmp_path_factory.mktemp("bframes")
    return make_video(folder / f"gop250b.{request.param}", frames=FRAMES,
                      rate=fractions.Fraction(25), gop=GOP, bframes=2,
                      codec="mpeg2video")  # fmt: skip


@pytest.mark.parametrize("threads", [1, 2])
def test_seeks_and_steps_are_exact_where_frames_are_reordered(bframes: Path, threads: int) -> None:
    options = SessionOptions(threads=threads, thread_type="frame")
    video = reader(bframes, 16, options)
    try:
        rng = random.Random(7)
        targets = [*rng.sample(range(FRAMES), 25), GOP - 1, GOP, GOP + 1, GOP + 2, 1, 2, 0]
        for target in [*targets, FRAMES - 1]:
            picture = video.read(target)
            assert picture is not None and picture.frame == target, (target, picture)
            assert number_of(picture) == target
            # A step either way from there (a B-frame's neighbours are decoded out of order).
            for n in (target + 1, target - 1):
                if 0 <= n < FRAMES:
                    assert number_of(video.read(n)) == n
    finally:
        video.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_backward_steps_across_a_gop_boundary_are_exact_and_decoded_once(
    longgop: Path, threads: int
) -> None:
    window = 40
    options = SessionOptions(threads=threads, thread_type="frame")
    video = reader(longgop, window, options)
    try:
        assert video.cache_frames == window
        start = GOP + 30
        assert number_of(video.read(start)) == start
        seeks, decoded = video.seeks, video.decoded
        # Back from 280 to 200: across the keyframe at 250 into the first GOP.
        for n in range(start - 1, start - 81, -1):
            assert number_of(video.read(n)) == n
            assert video.cache_bytes <= video.cache_budget
        # 280 -> 250 are within the second GOP (31 frames, cached by the first read); 249 needs
        # a decode of the first GOP from 0, which leaves frames 210-249 behind it; 209 needs
        # one more. Two seeks in 80 steps, not 80.
        assert video.seeks - seeks == 2
        # Each seek decodes at most a GOP (plus the decoder's reordering delay).
        assert video.decoded - decoded <= 2 * (GOP + 8)
        assert video.cache_peak_bytes <= video.cache_budget
    finally:
        video.close()


def test_backward_steps_after_the_first_are_cache_hits(longgop: Path) -> None:
    window = 40
    video = reader(longgop, window)
    try:
        assert number_of(video.read(200)) == 200
        hits = video.hits
        assert number_of(video.read(199)) == 199  # a hit: the seek to 200 decoded 0-200
        seeks, decoded = video.seeks, video.decoded
        for n in range(198, 200 - window, -1):
            assert number_of(video.read(n)) == n
        assert video.seeks == seeks and video.decoded == decoded
        assert video.hits - hits == window - 1
    finally:
        video.close()


def test_stepping_forward_then_back_stays_exact(longgop: Path) -> None:
    video = reader(longgop, 8)
    try:
        frames = [100, 101, 102, 101, 100, 99, 100, 260, 259, 258, 257, 256, 255, 254, 253, 252]
        assert [number_of(video.read(n)) for n in frames] == frames
        assert video.cache_peak_bytes <= video.cache_budget
    finally:
        video.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_seek_skips_unreferenced_frames_and_its_pictures_are_the_same_bits(
    longgop: Path, threads: int
) -> None:
    options = SessionOptions(threads=threads, thread_type="frame")
    sought, walked = reader(longgop, 16, options), reader(longgop, 16, options)
    try:
        target = 240
        picture = sought.read(target)
        assert picture is not None and number_of(picture) == target
        # From the keyframe at 0: the B-frames no frame refers to are not decoded before
        # the 16 frames the cache keeps (225-240), and all from there are.
        assert sought.decoded < target
        for n in range(target - 15, target + 1):
            assert n in sought._cache, n
        truth = [walked.read(n) for n in range(target + 1)]
        assert walked.decoded >= target + 1  # decoded forwards, every frame
        for n in range(target - 15, target + 1):
            again = sought.read(n)
            assert again is not None and truth[n] is not None
            assert np.array_equal(again.data, truth[n].data), n
        assert number_of(sought.read(target + 5)) == target + 5
    finally:
        sought.close()
        walked.close()


def test_a_read_called_off_leaves_the_reader_exact(longgop: Path) -> None:
    video = reader(longgop, 8)
    try:
        calls = 0

        def stop() -> bool:
            nonlocal calls
            calls += 1
            return calls > 5

        with pytest.raises(ReadInterrupted):
            video.read(200, stop)  # a seek from the keyframe at 0, called off after 6 frames
        assert not video.cached(200)
        for n in (200, 201, 150, 3):
            assert number_of(video.read(n)) == n
    finally:
        video.close()


# -- the seek proxy: its plan ------------------------------------------------------------------


def test_the_plan_builds_the_playhead_first_then_ahead_then_behind() -> None:
    order: list[int] = []
    built: dict[int, int] = {}
    previous = None
    while (step := proxyplan.next_step(built, 8, 3, previous, 10**9, 0)).build is not None:
        order.append(step.build)
        built[step.build] = 100
        previous = step.build
    # On from the chunk just made while it is at most one farther than the best: 3 4 5, then
    # 2 (cost 1) against 6 (cost 3), ...
    assert order == [3, 4, 5, 2, 6, 7, 1, 0]
    assert proxyplan.cost(2, 3) == 1 and proxyplan.cost(1, 3) == 3


def test_the_plan_makes_room_by_dropping_the_farthest_chunks_only() -> None:
    built = {0: 100, 1: 100, 2: 100}
    # The playhead moved to chunk 6: chunk 6 is built after dropping 0 (farthest), not more.
    assert proxyplan.next_step(built, 8, 6, None, 300, 100) == proxyplan.Step(6, (0,))
    # Room for nothing nearer than what is there: wait.
    assert proxyplan.next_step(built, 8, 1, 2, 300, 100) == proxyplan.Step(None)
    # Too big even alone: nothing is dropped for it.
    assert proxyplan.next_step(built, 8, 6, None, 300, 1000) == proxyplan.Step(None)
    assert proxyplan.next_step({0: 1, 1: 1}, 2, 0, 1, 10, 1) == proxyplan.Step(None)


def test_proxy_sizes() -> None:
    assert proxyplan.proxy_size(1920, 1080) == (1920, 1080)  # the output picture itself
    assert proxyplan.proxy_size(1280, 720) == (1280, 720)
    assert proxyplan.proxy_size(3840, 2160) == (1920, 1080)  # down to 1080p's pixels
    assert proxyplan.proxy_size(7680, 4320) == (1920, 1080)
    assert proxyplan.proxy_size(2560, 1440) == (1920, 1080)
    w, h = proxyplan.proxy_size(2048, 1080)  # just above: a little smaller, not halved
    assert w * h <= proxyplan.MAX_PIXELS and w >= 1960 and abs(w / h - 2048 / 1080) < 0.01
    assert proxyplan.proxy_size(1001, 501) == (1000, 500)  # even sides
    assert proxyplan.proxy_size(20, 10) == (20, 16)
    assert proxyplan.chunk_frames(Fraction(30000, 1001)) == 300
    assert proxyplan.chunk_count(300, 250) == 2


# -- the seek proxy on a 250-frame GOP -----------------------------------------------------------


def builder_of(path: Path, folder: Path, budget: int, playhead: list[int]) -> ProxyBuilder:
    access = InputAccess(SourcePolicy.local(), media_roots=(path.parent,))
    store = ProxyStore(folder, budget)
    return ProxyBuilder(
        store,
        lambda: VideoReader(open_input(str(path), 1, access), SessionOptions(), cache_bytes=0),
        frame_count=FRAMES,
        rate=Fraction(25),
        size=(320, 180),
        playhead=lambda: playhead[0],
        name="jit-proxy-build-test",
        min_work=0,  # a 320x180 file seeks fast: build its proxy all the same
    )


def test_every_proxy_picture_is_the_frame_asked_for(longgop: Path, tmp_path: Path) -> None:
    folder = tmp_path / "proxy"
    builder = builder_of(longgop, folder, 2**30, [0])
    exact = reader(longgop, 8)
    try:
        builder.start()
        assert builder.wait_done(60) and builder.stats.status == "done", builder.error
        store = builder.store
        assert store.frames == FRAMES and store.built().keys() == {0, 1}
        assert sum(p.stat().st_size for p in folder.iterdir()) == store.bytes
        proxy = ProxyReader(store, (320, 180))
        rng = random.Random(4)
        for n in [*rng.sample(range(FRAMES), 25), 0, GOP - 1, GOP, FRAMES - 1]:
            picture = proxy.read(n)
            assert picture is not None and not picture.exact
            assert picture.frame == n and number_of(picture) == n
            assert picture.data.shape == (270, 320)
            truth = exact.read(n)
            assert truth is not None and truth.exact and picture.pts == truth.pts
        assert proxy.read(FRAMES) is None
    finally:
        builder.stop()
        exact.close()
        builder.store.close()
    assert not folder.exists()
    builder.store.close()  # twice


def test_short_gops_get_no_proxy(longgop: Path, tmp_path: Path) -> None:
    video = reader(longgop, 8)
    try:
        assert video.longest_gop(500) == GOP
        assert video.longest_gop(100) == 100  # no second keyframe in 100 frames
        assert number_of(video.read(7)) == 7  # the scan leaves the reader exact
    finally:
        video.close()
    # 250 frames of 320x180 are 7 frames of 1080p: a seek is cheap, no proxy is built.
    builder = builder_of(longgop, tmp_path / "p", 2**30, [0])
    builder.min_work = MIN_WORK
    try:
        builder.start()
        assert builder.wait_done(30) and builder.stats.status == "skipped"
        assert builder.work == pytest.approx(GOP * 320 * 180 / (1920 * 1080))
        assert builder.store.frames == 0
    finally:
        builder.stop()
        builder.store.close()


def test_a_proxy_too_big_for_its_bound_covers_the_playhead_and_follows_it(
    longgop: Path, tmp_path: Path
) -> None:
    # Measure a chunk, then allow a little more than one (less than one and a chunk's
    # estimate, 110 % of the chunks made so far).
    probe = builder_of(longgop, tmp_path / "probe", 2**30, [0])
    probe.start()
    assert probe.wait_done(60)
    chunk0 = probe.store.built()[0]
    probe.stop()
    probe.store.close()

    playhead = [10]
    builder = builder_of(longgop, tmp_path / "bounded", chunk0 * 6 // 5, playhead)
    store = builder.store
    try:
        builder.start()
        assert builder.wait_done(60) and builder.stats.status == "full"
        assert store.built().keys() == {0} and store.peak_bytes <= store.budget
        assert store.has(0) and store.has(GOP - 1) and not store.has(GOP)
        # The playhead moves into the second chunk: the first is dropped to make room for it.
        playhead[0] = 280
        deadline = time.monotonic() + 60
        while not (store.has(280) and store.built().keys() == {1}):
            assert time.monotonic() < deadline, store.built()
            time.sleep(0.05)
        assert not store.has(0) and store.evicted == 1 and store.peak_bytes <= store.budget
        assert len(list(store.folder.iterdir())) == 1
    finally:
        builder.stop()
        store.close()


def test_the_builder_waits_while_the_session_plays(longgop: Path, tmp_path: Path) -> None:
    store = ProxyStore(tmp_path / "p", 2**30)
    playing = threading.Event()
    playing.set()
    access = InputAccess(SourcePolicy.local(), media_roots=(longgop.parent,))
    builder = ProxyBuilder(
        store,
        lambda: VideoReader(open_input(str(longgop), 1, access), SessionOptions()),
        frame_count=FRAMES,
        rate=Fraction(25),
        size=(320, 180),
        playhead=lambda: 0,
        busy=playing.is_set,
        min_work=0,
    )
    try:
        builder.start()
        deadline = time.monotonic() + 10
        while builder.stats.status != "playing":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert store.frames == 0
        playing.clear()
        assert builder.wait_done(60) and store.frames == FRAMES
    finally:
        builder.stop()
        store.close()


# -- the seek proxy in a session, over WebRTC ----------------------------------------------------


@pytest.fixture
def media(longgop: Path) -> SimpleNamespace:
    return SimpleNamespace(root=longgop.parent)


async def settled(worker: JitWorker, status: str) -> None:
    deadline = time.monotonic() + 60
    while worker.stats().proxy != status:
        assert time.monotonic() < deadline, worker.stats()
        await asyncio.sleep(0.05)


async def seek_reports(viewer: Viewer, target: int) -> list[FrameReport]:
    """Seek; the reports that came until the exact picture of ``target`` was shown."""
    frames, reports = len(viewer.frames), len(viewer.reports)
    reply = await viewer.send(Seek(frame=target))
    assert reply.ok, reply.error

    def exact_shown() -> bool:
        # Its exact report, and as many pictures as reports (a picture per report).
        done = any(r.exact for _, r in viewer.reports[reports:])
        return done and len(viewer.frames) - frames >= len(viewer.reports) - reports

    await viewer.until(exact_shown, 10, f"the exact picture of frame {target}")
    assert viewer.numbers(frames) and set(viewer.numbers(frames)) == {target}
    return [r for _, r in viewer.reports[reports:]]


async def test_a_seek_sends_the_proxy_picture_of_its_frame_then_the_exact_one(
    nc: Client, session: Any, longgop: Path, tmp_path: Path
) -> None:
    """A seek whose exact picture is not at hand sends its proxy picture before the exact
    decode starts, however quick that decode would be (this small file decodes a GOP in tens
    of ms): never the grace a step forward waits."""
    proxies = tmp_path / "proxies"
    worker = await session(SessionInput(str(longgop)), proxy_root=proxies, proxy_min_work=0)
    folder = proxies / worker.session_id
    await settled(worker, "done")
    assert worker.stats().proxy_frames == FRAMES and any(folder.iterdir())
    viewer, _ = await watch(nc, session, worker)
    # Each a decode from a keyframe: 200 from 0, 280 from 250, 240 from 0 (the cache has
    # 0-200 and 250-280).
    for target in (200, 280, 240):
        reports = await seek_reports(viewer, target)
        assert {r.frame for r in reports} == {target}
        assert [r.exact for r in reports] == [False, True], reports
    assert worker.player is not None and worker.player.proxy_pictures >= 1
    assert worker.stats().proxy_pictures == worker.player.proxy_pictures
    # A step within the cache is exact at once.
    reports = await seek_reports(viewer, 239)
    assert [r.exact for r in reports] == [True]
    await worker.stop()
    assert not folder.exists()
    assert proxies.exists() and not any(proxies.iterdir())


async def test_without_room_for_a_proxy_a_seek_decodes_as_before(
    nc: Client, session: Any, longgop: Path, tmp_path: Path
) -> None:
    proxies = tmp_path / "proxies"
    worker = await session(
        SessionInput(str(longgop)), proxy_root=proxies, proxy_bytes=1, proxy_min_work=0
    )
    await settled(worker, "full")
    assert worker.stats().proxy_frames == 0
    assert not any((proxies / worker.session_id).iterdir())
    viewer, _ = await watch(nc, session, worker)
    reports = await seek_reports(viewer, 200)
    assert [(r.frame, r.exact) for r in reports] == [(200, True)]
    await worker.stop()
    assert not (proxies / worker.session_id).exists()


async def test_a_session_removes_the_proxies_that_ended_sessions_left(
    session: Any, longgop: Path, tmp_path: Path
) -> None:
    proxies = tmp_path / "proxies"
    then = time.time() - 2 * proxy.SWEEP_AFTER
    left, fresh = proxies / ("d" * 32), proxies / ("f" * 32)  # a dead worker's; one being made
    for made in (left, fresh):
        made.mkdir(parents=True)
        (made / "chunk-0000.mjpeg").write_bytes(b"\xff\xd8")
    for path in (left / "chunk-0000.mjpeg", left):
        os.utime(path, (then, then))
    worker = await session(SessionInput(str(longgop)), proxy_root=proxies, proxy_min_work=0)
    await until(lambda: not left.exists(), 10, "the proxy of a session that no longer runs gone")
    assert fresh.exists() and (proxies / worker.session_id).exists()
    await worker.stop()


async def test_a_newer_seek_shows_its_proxy_picture_without_waiting_for_the_older_decode(
    nc: Client, session: Any, longgop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scrubbing: a seek that comes while the last seek's exact picture still decodes sends
    its own proxy picture at once, not once the older decode has been called off at its next
    frame (100 ms and more at UHD; here a read held until the test lets it go)."""
    first, second = 200, 100
    held, released, slow = threading.Event(), threading.Event(), [False]
    read = VideoReader.read

    def slow_read(self: VideoReader, n: int, *args: Any, **kwargs: Any) -> Picture | None:
        if n == first and slow[0]:
            slow[0] = False
            held.set()
            released.wait(20)  # the older decode, still under way in the video thread
        return read(self, n, *args, **kwargs)

    monkeypatch.setattr(VideoReader, "read", slow_read)
    worker = await session(SessionInput(str(longgop)), proxy_root=tmp_path, proxy_min_work=0)
    await settled(worker, "done")  # (the builder reads frames too: not slowed)
    viewer, _ = await watch(nc, session, worker)
    mark = len(viewer.reports)

    def seen(frame: int, exact: bool) -> bool:
        return any((r.frame, r.exact) == (frame, exact) for _, r in viewer.reports[mark:])

    try:
        slow[0] = True
        assert (await viewer.send(Seek(frame=first))).ok
        await viewer.until(lambda: seen(first, False), 10, "the first seek's proxy picture")
        assert await asyncio.to_thread(held.wait, 10), "its exact decode under way"
        assert (await viewer.send(Seek(frame=second))).ok
        await viewer.until(lambda: seen(second, False), 10, "the second seek's proxy picture")
        assert not released.is_set()
    finally:
        released.set()
    await viewer.until(lambda: seen(second, True), 10, "the second seek's exact picture")
    reports = [(r.frame, r.exact) for _, r in viewer.reports[mark:]]
    assert reports == [(first, False), (second, False), (second, True)], reports


async def test_a_seek_while_playing_goes_on_from_its_frame(
    nc: Client, session: Any, longgop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Playing, a seek whose frame takes long to decode (2 s here, as a 1080p GOP-250 file's
    do): its proxy picture at once, then its exact picture, and playing goes on from there,
    frame by frame, instead of skipping the 50 frames the decode took to catch up."""
    target, slow = 200, [False]  # the proxy's builder reads the frames too: not then
    read = VideoReader.read

    def slow_read(self: VideoReader, n: int, *args: Any, **kwargs: Any) -> Picture | None:
        if n == target and slow[0]:
            slow[0] = False
            time.sleep(2.0)  # in the video thread: what a long decode does to the schedule
        return read(self, n, *args, **kwargs)

    monkeypatch.setattr(VideoReader, "read", slow_read)
    worker = await session(SessionInput(str(longgop)), proxy_root=tmp_path, proxy_min_work=0)
    await settled(worker, "done")
    viewer, _ = await watch(nc, session, worker)
    assert (await viewer.send(Play())).ok
    await viewer.until(lambda: len(viewer.reports) >= 5, 10, "playing")
    mark = len(viewer.reports)
    slow[0] = True
    assert (await viewer.send(Seek(frame=target))).ok

    def run() -> list[FrameReport]:
        after = [r for _, r in viewer.reports[mark:]]
        starts = [i for i, r in enumerate(after) if r.frame == target]
        return after[starts[0] :] if starts else []

    await viewer.until(lambda: sum(r.exact for r in run()) >= 11, 15, "ten frames on from it")
    reports = run()
    assert [r.exact for r in reports[:2]] in ([False, True], [True, True]), reports[:3]
    exact = [r.frame for r in reports if r.exact]
    assert exact[0] == target and exact == sorted(set(exact))
    assert worker.player is not None
    late = worker.player.playback.late
    # Each gap is a skip the schedule counted (a stall of this machine); the 2 s decode is not
    # one: it would have made 50 late frames.
    assert exact[10] - exact[0] - 10 <= late < 40, (exact[:12], late)
