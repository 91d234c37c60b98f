"""The live HLS test sources: what they serve decodes to the colour asked for, their media
sequence advances in real time, and a stopped source looks dead until it is started again."""

from __future__ import annotations

import io
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from itertools import pairwise

import av
import m3u8
import numpy as np
import pytest

from pipeline.sources.synthetic import (
    STAMP_BLOCKS,
    LiveHlsSource,
    SourceServer,
    make_clip,
    read_stamp,
    rgb_to_yuv601,
    stamp_height,
)

TOLERANCE = 3  # mean of a flat H.264 area vs the exact BT.601 value (quantisation, rounding)


def wait_until(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``check`` every 50 ms until it holds, or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.05)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        data: bytes = answer.read()
        return data


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def server() -> Iterator[SourceServer]:
    with SourceServer(
        {
            "red": LiveHlsSource((220, 30, 30), window=3),
            "teal": LiveHlsSource((0, 128, 128), stamp=True),
        }
    ) as running:
        yield running


def decode_segment(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data), "r") as container:
        return list(container.decode(video=0))


def test_playlist_and_segment_decode_to_the_colour(server: SourceServer) -> None:
    playlist = m3u8.loads(fetch(server.url("red")).decode())
    assert playlist.target_duration == 1
    assert playlist.segments, "a started source lists a segment at once"
    segment_url = server.url("red").rsplit("/", 1)[0] + "/" + playlist.segments[-1].uri
    frames = decode_segment(fetch(segment_url))
    assert len(frames) == 25
    assert frames[0].key_frame, "every segment starts a GOP"
    assert (frames[0].width, frames[0].height) == (320, 180)

    y_want, u_want, v_want = rgb_to_yuv601((220, 30, 30))
    picture = frames[0].to_ndarray()  # yuv420p: Y rows, then U and V packed below
    y, uv = picture[:180], picture[180:].reshape(2, 90, 160)
    # The top band has no marker: a flat field of the source colour.
    assert abs(float(y[:40].mean()) - y_want) <= TOLERANCE
    assert abs(float(uv[0][:20].mean()) - u_want) <= TOLERANCE
    assert abs(float(uv[1][:20].mean()) - v_want) <= TOLERANCE
    # The marker is white and moves between frames.
    assert y.max() >= 225
    columns = [int(np.argmax(f.to_ndarray()[:180].max(axis=0) > 200)) for f in frames[:10]]
    assert len(set(columns)) > 1, f"the marker does not move: {columns}"


def test_media_sequence_advances_and_timestamps_continue(server: SourceServer) -> None:
    def newest() -> int:
        p = m3u8.loads(fetch(server.url("red")).decode())
        return int(p.media_sequence or 0) + len(p.segments) - 1

    first = newest()
    wait_until(lambda: newest() >= first + 2, 5, "two new segments")
    wait_until(lambda: server.source("red").media_sequence > 0, 8, "the window to slide")
    playlist = m3u8.loads(fetch(server.url("red")).decode())
    assert len(playlist.segments) <= 3
    assert playlist.media_sequence == server.source("red").media_sequence

    # Consecutive segments carry consecutive timestamps: one continuous stream.
    base = server.url("red").rsplit("/", 1)[0]
    a, b = playlist.segments[-2].uri, playlist.segments[-1].uri
    end_a = decode_segment(fetch(f"{base}/{a}"))[-1].time
    start_b = decode_segment(fetch(f"{base}/{b}"))[0].time
    assert start_b == pytest.approx(end_a + 1 / 25, abs=1e-3)


def test_stamp_carries_the_capture_time(server: SourceServer) -> None:
    playlist = m3u8.loads(fetch(server.url("teal")).decode())
    base = server.url("teal").rsplit("/", 1)[0]
    frames = decode_segment(fetch(f"{base}/{playlist.segments[-1].uri}"))
    stamps = [read_stamp(f.to_ndarray()[:180]) for f in frames]
    assert None not in stamps
    now_ms = int(time.time() * 1000) & 0xFFFFFFFF
    age = (now_ms - stamps[-1]) & 0xFFFFFFFF  # type: ignore[operator]
    assert age < 5000, f"the last frame was captured {age} ms ago"
    steps = {(b - a) & 0xFFFFFFFF for a, b in pairwise(stamps)}  # type: ignore[operator]
    assert steps <= {39, 40, 41}, f"frames 40 ms apart: {steps}"
    # It survives scaling (it is read at any size) and is absent from unstamped sources.
    small = frames[0].reformat(width=160, height=90).to_ndarray()[:90]
    assert read_stamp(small) == stamps[0]
    assert read_stamp(np.full((180, 320), 80, np.uint8)) is None
    assert stamp_height(180) * STAMP_BLOCKS > 0


def test_stop_and_start_a_source(server: SourceServer) -> None:
    url = server.url("red")
    before = server.source("red").media_sequence + 1
    playlist = m3u8.loads(fetch(url).decode())
    newest_before = int(playlist.media_sequence or 0) + len(playlist.segments) - 1
    segment = url.rsplit("/", 1)[0] + "/" + playlist.segments[-1].uri

    server.stop_source("red")
    assert status(url) == 404
    assert status(segment) == 404
    assert status(server.url("teal")) == 200, "the other sources live on"
    server.stop_source("red")  # twice is fine

    server.start_source("red")
    playlist = m3u8.loads(fetch(url).decode())
    assert int(playlist.media_sequence or 0) > newest_before >= before - 1
    assert status(f"{url.rsplit('/', 1)[0]}/{playlist.segments[0].uri}") == 200


def test_unknown_paths_are_404(server: SourceServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/", "/nope/index.m3u8", "/red/999999.ts", "/red/x.ts", "/red/../etc/passwd"):
        assert status(base + path) == 404, path


def test_server_stop_joins_every_thread() -> None:
    before = set(threading.enumerate())
    server = SourceServer({"a": LiveHlsSource((10, 200, 10))})
    server.add_file("hello.txt", "hello")
    server.start()
    assert fetch(server.file_url("hello.txt")) == b"hello"
    fetch(server.url("a"))
    port = server.port
    server.stop()
    server.stop()  # twice is fine
    assert set(threading.enumerate()) <= before
    with pytest.raises(urllib.error.URLError):  # connection refused: nothing listens any more
        fetch(f"http://127.0.0.1:{port}/a/index.m3u8")


@pytest.mark.parametrize("fmt", ["mp4", "mpegts"])
def test_clips_are_finished_files_of_the_colour(fmt: str) -> None:
    data = make_clip((20, 20, 230), seconds=0.4, width=64, height=36, fps=10, format=fmt)
    with av.open(io.BytesIO(data), "r") as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4
    y_want = rgb_to_yuv601((20, 20, 230))[0]
    assert abs(float(frames[0].to_ndarray()[:8].mean()) - y_want) <= TOLERANCE
