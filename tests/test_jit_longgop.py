"""Issue 19 part 4: long GOPs at review speed. The reader's byte-bounded cache keeps what a seek
decoded on the way to its frame, so stepping backwards through a 250-frame GOP decodes from the
keyframe once per cache-full, and every frame is still exactly the one asked for."""

from __future__ import annotations

import fractions
import random
from pathlib import Path

import pytest

from pipeline.messages.events import SessionOptions
from pipeline.producers.jit.decoder import Picture, VideoReader
from pipeline.producers.jit.framecache import (
    MIN_FRAMES,
    FrameCache,
    backward_refill_share,
    frames_for,
)
from pipeline.producers.jit.inputs import InputAccess, open_input
from pipeline.sources.policy import SourcePolicy
from tests.jitmedia import make_video, read_frame_number

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
