"""Decoding no more than a tile shows (issue 18): FFmpeg's ``lowres`` for codecs that have it,
and non-reference frames left undecoded when the fps cap would drop them anyway, with the check
that stops skipping when too few frames are left. Pure rules, then the real decode thread on
files made here with PyAV (MPEG-2, H.264 at 50 fps with and without B-frames) served over
loopback HTTP."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.messages.frames import FrameHeader
from pipeline.producers.release import Pixels
from pipeline.producers.scale import lowres_factor
from pipeline.producers.timing import NONREF_CHECK_SECONDS, NonrefSkip
from pipeline.sources.policy import SourcePolicy
from pipeline.sources.synthetic import SourceServer, rgb_to_yuv601
from tests.decoding import decode_thread

# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "size", "tile", "want"),
    [
        ("mpeg2video", (1280, 720), (320, 180), 2),
        ("mpeg2video", (1280, 720), (321, 180), 1),  # a quarter would be narrower than the tile
        ("mpeg2video", (1920, 1080), (160, 90), 3),  # at most 1/8
        ("mpeg2video", (1280, 720), (1280, 720), 0),
        ("mjpeg", (1920, 1080), (480, 270), 2),
        ("h264", (1920, 1080), (160, 90), 0),  # no lowres in H.264
        ("hevc", (3840, 2160), (160, 90), 0),
    ],
)
def test_lowres_keeps_the_tile_covered(
    codec: str, size: tuple[int, int], tile: tuple[int, int], want: int
) -> None:
    assert lowres_factor(codec, *size, *tile) == want


def feed(skip: NonrefSkip, fps: float, seconds: float) -> list[bool]:
    return [skip.decoded(i / fps) for i in range(round(seconds * fps))]


def test_nonref_skip_only_for_sources_twice_the_cap() -> None:
    assert NonrefSkip(50.0, 25.0).active
    assert NonrefSkip(59.94, 30.0).active
    assert not NonrefSkip(30.0, 25.0).active
    assert not NonrefSkip(0.0, 25.0).active  # the source's rate is not known


def test_nonref_skip_stays_when_what_is_decoded_covers_the_cap() -> None:
    skip = NonrefSkip(50.0, 25.0)
    assert not any(feed(skip, 25.0, NONREF_CHECK_SECONDS + 1))  # IBPBP: one frame in two
    assert skip.active and skip.checked


def test_nonref_skip_stops_when_too_few_frames_are_left() -> None:
    skip = NonrefSkip(50.0, 25.0)
    stops = feed(skip, 12.5, NONREF_CHECK_SECONDS + 1)  # IBBBP: one frame in four
    assert stops.count(True) == 1 and stops.index(True) == round(NONREF_CHECK_SECONDS * 12.5)
    assert not skip.active


# -- the decode thread -------------------------------------------------------------------------

LOCAL = SourcePolicy.local()
QUADRANTS = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 60))
"""Top left, top right, bottom left, bottom right of the test pictures."""


def quadrant_picture(width: int, height: int) -> av.VideoFrame:
    rgb = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    for i, colour in enumerate(QUADRANTS):
        rgb[(i // 2) * h2 : (i // 2 + 1) * h2, (i % 2) * w2 : (i % 2 + 1) * w2] = colour
    return av.VideoFrame.from_ndarray(rgb, format="rgb24")


def encode(
    codec: str, fmt: str, *, fps: int, seconds: float, size: tuple[int, int], **options: str
) -> bytes:
    out_buf = io.BytesIO()
    mux_options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fmt == "mp4" else {}
    with av.open(out_buf, "w", format=fmt, options=mux_options) as out:
        stream = out.add_stream(codec, rate=fps)
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = size[0], size[1], "yuv420p"
        ctx.time_base = Fraction(1, fps)
        ctx.thread_count = 1
        ctx.options = options
        picture = quadrant_picture(*size).reformat(format="yuv420p")
        for i in range(round(seconds * fps)):
            frame = picture.reformat()  # a copy: each frame its own timestamp
            frame.pts = i
            frame.time_base = ctx.time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return out_buf.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[SourceServer]:
    with SourceServer() as server:
        server.add_file(
            "mpeg2.ts",
            encode("mpeg2video", "mpegts", fps=25, seconds=3, size=(1280, 720), b="4M"),
            "video/mp2t",
        )
        x264 = {"preset": "ultrafast", "g": "50"}
        for name, bframes in (("ibp", "1"), ("ibbbp", "3")):
            server.add_file(
                f"{name}.mp4",
                encode(
                    "libx264", "mp4", fps=50, seconds=4, size=(320, 180), **x264,
                    **{"x264-params": f"bframes={bframes}:b-pyramid=none:b-adapt=0"},
                ),
                "video/mp4",
            )  # fmt: skip
        yield server


class Run:
    """A decode thread on one URL for a 320x180 tile at 25 fps, until ``frames`` are out."""

    def __init__(self, url: str, frames: int) -> None:
        self.frames: list[tuple[FrameHeader, bytes]] = []
        self.enough = threading.Event()
        self.want = frames
        self.thread = decode_thread(url, "economy", self.emit, timeout=5.0)

    def emit(self, header: FrameHeader, pixels: Pixels) -> None:
        self.frames.append((header, bytes(pixels)))
        if len(self.frames) >= self.want:
            self.enough.set()

    def __enter__(self) -> Run:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.stop()
        self.thread.join()

    def wait(self, within: float) -> None:
        last = self.thread.last_error
        assert self.enough.wait(within), f"{self.want} frames in {within} s (last error: {last!r})"


def tile_colours(pixels: bytes) -> list[tuple[float, float, float]]:
    """Mean Y, U, V of the middle of each quadrant of a packed 320x180 yuv420p tile."""
    flat = np.frombuffer(pixels, np.uint8)
    y = flat[: 320 * 180].reshape(180, 320)
    u = flat[320 * 180 : 320 * 180 * 5 // 4].reshape(90, 160)
    v = flat[320 * 180 * 5 // 4 :].reshape(90, 160)
    out = []
    for i in range(4):
        r, c = i // 2, i % 2
        ys = y[r * 90 + 20 : r * 90 + 70, c * 160 + 40 : c * 160 + 120]
        us = u[r * 45 + 10 : r * 45 + 35, c * 80 + 20 : c * 80 + 60]
        vs = v[r * 45 + 10 : r * 45 + 35, c * 80 + 20 : c * 80 + 60]
        out.append((float(ys.mean()), float(us.mean()), float(vs.mean())))
    return out


def assert_quadrants(pixels: bytes) -> None:
    for got, rgb in zip(tile_colours(pixels), QUADRANTS, strict=True):
        want = rgb_to_yuv601(rgb)
        assert all(abs(g - w) <= 6 for g, w in zip(got, want, strict=True)), (got, want)


def test_mpeg2_is_decoded_at_a_quarter_of_its_size(server: SourceServer) -> None:
    with Run(server.file_url("mpeg2.ts"), 10) as run:
        run.wait(15)
        assert run.thread.lowres == 2 and run.thread.reduced == "lowres 1/4"
    for header, pixels in run.frames:
        assert (header.width, header.height) == (320, 180)
        assert_quadrants(pixels)


def test_a_50_fps_source_in_a_25_fps_tile_skips_its_b_frames(server: SourceServer) -> None:
    # IBPBP...: the B-frames are the non-reference half; what is left is 25 frames a second.
    frames = round((NONREF_CHECK_SECONDS + 1) * 25)
    with Run(server.file_url("ibp.mp4"), frames) as run:
        run.wait(NONREF_CHECK_SECONDS + 12)
        assert run.thread.reduced == "non-ref skipped"
        decoded = run.thread.decoded
    # Decoded: about the frames handed on, not twice as many (the thread may be a few ahead).
    assert decoded <= len(run.frames) + 30, (decoded, len(run.frames))
    times = [header.pts for header, _ in run.frames[:frames]]
    steps = {round(b - a, 3) for a, b in zip(times, times[1:], strict=False)}
    assert steps == {0.04}, steps  # every tile frame there, none twice
    assert_quadrants(run.frames[-1][1])


def test_skipping_stops_when_too_few_frames_would_be_left(server: SourceServer) -> None:
    # IBBBP...: without the B-frames one frame in four is left, 12.5 a second: after the check
    # the decoder decodes everything again and the tile gets its 25 frames a second.
    frames = round((NONREF_CHECK_SECONDS + 1.5) * 25)
    with Run(server.file_url("ibbbp.mp4"), frames) as run:
        run.wait(NONREF_CHECK_SECONDS + 15)
        assert run.thread.reduced == ""
    late = [header.pts for header, _ in run.frames if header.pts > NONREF_CHECK_SECONDS + 0.2]
    steps = {round(b - a, 3) for a, b in zip(late, late[1:], strict=False)}
    assert late and steps == {0.04}, steps
