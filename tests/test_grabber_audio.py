"""The grabber's audio against a real nats-server and sources made here with PyAV (H.264 and AAC
in MPEG-TS, an ended HLS playlist on loopback): per-channel levels and loudness arrive on
``levels.<source_id>``, a 6-channel source shows its one loud channel, a source without audio
publishes none, and the pictures are what they were without audio."""

from __future__ import annotations

import io
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from pipeline.messages.frames import FrameHeader
from pipeline.messages.levels import SourceLevels, decode_levels
from pipeline.nats import subjects
from pipeline.producers.grabber import Grabber
from pipeline.producers.levels import Reading
from pipeline.producers.release import Pixels
from pipeline.sources.policy import SourcePolicy
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from pipeline.state.mosaic import source_id
from tests.decoding import decode_thread
from tests.test_grabber import FAST, Watch, assert_colour, planes, until, watch

RATE = 48000
SECONDS = 8.0  # one pass of the file: more than the 3 s short-term loudness needs
COLOUR = (40, 90, 200)
LEVEL_TOL = 0.5  # dB: AAC at 128 kbit/s per channel of a 1 kHz sine, and the 0.1 dB rounding
SILENT = -60.0  # dBFS: a silent channel after AAC reads below this (digital silence: -120)


def clip_with_audio(
    colour: tuple[int, int, int], levels: Sequence[float | None], layout: str
) -> bytes:
    """An MPEG-TS file of ``SECONDS``: a colour picture and a 1 kHz sine per channel at the
    given peak level (dBFS; None: silence), encoded as AAC."""
    video = LiveHlsSource(colour)
    out_buf = io.BytesIO()
    fps = 25
    with av.open(out_buf, "w", format="mpegts") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vctx = vs.codec_context
        vctx.width, vctx.height, vctx.pix_fmt = video.width, video.height, "yuv420p"
        vctx.time_base = Fraction(1, fps)
        vctx.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
        aud = out.add_stream("aac", rate=RATE, layout=layout)
        actx = aud.codec_context
        actx.bit_rate = 128_000 * len(levels)
        amplitude = np.array([0.0 if db is None else 10 ** (db / 20) for db in levels])[:, None]
        size = actx.frame_size or 1024
        total = round(SECONDS * RATE)
        audio_pts = 0
        now = time.time()
        for i in range(round(SECONDS * fps)):
            pixels = video.render(i, now + i / fps)
            frame = av.VideoFrame.from_ndarray(
                pixels.reshape(video.height * 3 // 2, video.width), format="yuv420p"
            )
            frame.pts = i
            frame.time_base = vctx.time_base
            out.mux(vs.encode(frame))
            # Audio up to this video frame's end, interleaved as a muxer would get it.
            while audio_pts < min(total, (i + 1) * RATE // fps):
                n = min(size, total - audio_pts)
                t = np.arange(audio_pts, audio_pts + n) / RATE
                x = (amplitude * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
                aframe = av.AudioFrame.from_ndarray(x, format="fltp", layout=layout)
                aframe.sample_rate = RATE
                aframe.pts = audio_pts
                aframe.time_base = Fraction(1, RATE)
                out.mux(aud.encode(aframe))
                audio_pts += n
        out.mux(vs.encode(None))
        out.mux(aud.encode(None))
    return out_buf.getvalue()


def vod(server: SourceServer, name: str, data: bytes) -> str:
    """An ended HLS playlist of one segment: paced by its timestamps, and looped."""
    server.add_file(f"{name}.ts", data)
    return server.add_file(
        f"{name}.m3u8",
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SECONDS:.0f}\n"
        f"#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:{SECONDS:.1f},\n{name}.ts\n#EXT-X-ENDLIST\n",
    )


@dataclass
class Levels:
    readings: list[SourceLevels] = field(default_factory=list)

    def steady(self) -> list[SourceLevels]:
        """Readings from 1 s into a pass on (past the encoder's start), until its end."""
        return [r for r in self.readings if 1.0 <= r.t <= SECONDS - 0.5]


async def listen(nc: Client, sid: str) -> Levels:
    got = Levels()

    async def on_levels(msg: Msg) -> None:
        got.readings.append(decode_levels(msg.data, msg.subject))

    await nc.subscribe(subjects.levels(sid), cb=on_levels)
    await nc.flush()
    return got


@pytest.fixture(scope="module")
def server() -> Iterator[SourceServer]:
    with SourceServer({"plain": LiveHlsSource(COLOUR)}) as running:
        yield running


@pytest_asyncio.fixture
async def grabbers() -> AsyncIterator[list[Grabber]]:
    made: list[Grabber] = []
    yield made
    for grabber in made:
        await grabber.stop()


async def grab(
    made: list[Grabber], nc: Client, url: str, name: str
) -> tuple[Grabber, Watch, Levels]:
    sid = source_id(url, 160, 90)
    seen = await watch(nc, sid, f"grabber-{name}")
    levels = await listen(nc, sid)
    grabber = Grabber(
        nc=nc,
        source_id=sid,
        url=url,
        width=160,
        height=90,
        fps=25.0,
        worker_id=f"grabber-{name}",
        policy=SourcePolicy.local(),
        **FAST,  # type: ignore[arg-type]
    )
    made.append(grabber)
    await grabber.start()
    return grabber, seen, levels


def near(got: float, want: float) -> bool:
    return abs(got - want) <= LEVEL_TOL


async def test_stereo_tone_left_loud_right_silent(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    url = vod(server, "stereo", clip_with_audio(COLOUR, [-6.0, None], "stereo"))
    grabber, seen, levels = await grab(grabbers, nc, url, "stereo")
    await until(lambda: len(levels.steady()) >= 20, 10, "2 s of readings")
    await until(
        lambda: any(r.short_term_lufs is not None for r in levels.readings),
        10,
        "short-term loudness after 3 s",
    )
    steady = levels.steady()
    for r in steady:
        assert (r.source_id, r.channels, r.layout) == (grabber.source_id, 2, "stereo")
        assert len(r.peak_db) == len(r.rms_db) == 2
    # Medians: a window may straddle the file's loop (a new connection, a new meter).
    assert near(statistics.median(r.peak_db[0] for r in steady), -6.0)
    assert near(statistics.median(r.rms_db[0] for r in steady), -6.0 - 3.01)
    assert max(r.peak_db[1] for r in steady) < SILENT
    seqs = [r.seq for r in levels.readings]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert abs(levels.readings[-1].wall - time.time()) < 5

    # Loudness of a -6 dBFS 1 kHz sine in one channel of two: -6 - 3.01 - 0.691 + 0.69 (K-weight
    # at 1 kHz) ~ -9 LUFS; AAC and the windows stay within 0.1 LU here; 0.5 is a margin.
    momentary = [r.momentary_lufs for r in steady if r.momentary_lufs is not None]
    assert momentary and abs(statistics.median(momentary) + 9.0) <= 0.5
    short = [r.short_term_lufs for r in levels.readings if r.short_term_lufs is not None]
    assert abs(short[-1] + 9.0) <= 0.5

    # The pictures are what they are without audio.
    await until(lambda: seen.frame_count() >= 10, 5, "frames")
    for _, header, pixels in list(seen.frames)[-5:]:
        y, u, v = planes(header, pixels)
        assert_colour(y[:22], u[:11], v[:11], COLOUR)
    await until(
        lambda: bool(seen.beats) and seen.stats.has_audio and seen.stats.audio_readings > 20,
        5,
        "audio in the heartbeat",
    )
    assert seen.stats.audio_errors == 0 and seen.stats.decode_errors == 0


async def test_six_channels_one_loud(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    loud = 2  # FC in FFmpeg's 5.1 order: FL FR FC LFE BL BR
    levels_in: list[float | None] = [None] * 6
    levels_in[loud] = -12.0
    url = vod(server, "six", clip_with_audio(COLOUR, levels_in, "5.1"))
    _, seen, levels = await grab(grabbers, nc, url, "six")
    await until(lambda: len(levels.steady()) >= 20, 10, "2 s of readings")
    steady = levels.steady()
    assert {(r.channels, r.layout) for r in steady} == {(6, "5.1")}
    assert near(statistics.median(r.peak_db[loud] for r in steady), -12.0)
    assert near(statistics.median(r.rms_db[loud] for r in steady), -12.0 - 3.01)
    for channel in range(6):
        if channel != loud:
            assert max(r.peak_db[channel] for r in steady) < SILENT, channel
    await until(lambda: seen.frame_count() >= 5, 5, "frames")
    _, header, pixels = seen.frames[-1]
    y, u, v = planes(header, pixels)
    assert_colour(y[:22], u[:11], v[:11], COLOUR)


async def test_no_audio_no_levels(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    _, seen, levels = await grab(grabbers, nc, server.url("plain"), "plain")
    await until(lambda: seen.frame_count() >= 30, 10, "30 frames")
    await until(lambda: bool(seen.beats) and seen.stats.connected, 5, "a connected heartbeat")
    await nc.flush()
    assert levels.readings == []
    stats = seen.stats
    assert not stats.has_audio and stats.audio_readings == 0 and stats.audio_errors == 0
    _, header, pixels = seen.frames[-1]
    y, u, v = planes(header, pixels)
    assert_colour(y[:22], u[:11], v[:11], COLOUR)


def test_every_window_is_read_in_order_and_at_its_time(server: SourceServer) -> None:
    """A paced source's audio is decoded in runs, when the decode thread is ahead of its frames
    (``AUDIO_BATCH``): still every 100 ms window of a pass, in order, to the end of the file
    before it loops, and none handed on before the pictures of its time."""
    url = vod(server, "runs", clip_with_audio(COLOUR, [-12.0, -12.0], "stereo"))
    events: list[tuple[str, float]] = []  # ("frame", pts) / ("reading", t), as handed on
    lock = threading.Lock()
    looped = threading.Event()

    def emit(header: FrameHeader, pixels: Pixels) -> None:
        with lock:
            events.append(("frame", header.pts))

    newest = [float("-inf")]

    def levels(reading: Reading, seq: int, wall: float) -> None:
        with lock:
            if reading.t < newest[0] - 1:
                looped.set()
            newest[0] = max(newest[0], reading.t)
            events.append(("reading", reading.t))

    thread = decode_thread(url, "runs", emit, width=160, height=90, levels=levels)
    thread.start()
    try:
        assert looped.wait(SECONDS + 10), "the file looped, with readings after the loop"
    finally:
        thread.stop()
        thread.join()
    with lock:
        handed = list(events)
    times = [t for kind, t in handed if kind == "reading"]
    first_pass = times[: next(i for i in range(1, len(times)) if times[i] < times[i - 1])]
    steps = [round(b - a, 6) for a, b in zip(first_pass, first_pass[1:], strict=False)]
    assert steps and set(steps) == {0.1}, steps
    start = first_pass[0] - 0.1
    assert first_pass[-1] >= start + SECONDS - 0.15, "the pass's last window, before the loop"
    # Not early (handed on at its time, not when decoded, up to a second before): the pictures
    # of 0.8 s before a reading went out before it (in the first pass: the next starts again
    # from the file's first time). 0.8 s leaves room for a release thread kept waiting.
    frames = [(i, t) for i, (kind, t) in enumerate(handed) if kind == "frame"]
    end = next(i for (_, a), (i, b) in zip(frames, frames[1:], strict=False) if b < a)
    for i, (kind, t) in enumerate(handed[:end]):
        if kind == "reading":
            later = [pts for k, pts in handed[i + 1 : end] if k == "frame"]
            assert not any(pts <= t - 0.8 for pts in later), (t, later[:5])
