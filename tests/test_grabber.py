"""The grabber against a real nats-server and live HLS sources made by PyAV on loopback: tile
size and colour of what it publishes, letterboxing, the fps cap and pacing, dead sources and
their return, hostile URLs, looping files, and a stop that leaves nothing running. Also the
pure parts it is built from: the timing decisions and the tile scaler."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from itertools import pairwise
from pathlib import Path

import av
import msgspec
import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.errors import ConfigError
from pipeline.frames.slot import SlotFrame, SlotReader
from pipeline.messages.codec import decode_heartbeat, decode_reply, encode
from pipeline.messages.control import CommandReply, Retile
from pipeline.messages.frames import FrameHeader, unpack_frame
from pipeline.messages.heartbeats import GrabberStats, WorkerHeartbeat
from pipeline.messages.workers import GrabberSpec
from pipeline.nats import subjects
from pipeline.producers.decode import GrabberState
from pipeline.producers.grabber import QUEUE_SIZE, Grabber, TileOut
from pipeline.producers.scale import BLACK, TileScaler
from pipeline.producers.timing import (
    Backoff,
    FpsCap,
    FramePacer,
    PtsClock,
    StaleGuard,
    Verdict,
    loop_delay,
)
from pipeline.sources.policy import SourcePolicy
from pipeline.sources.synthetic import LiveHlsSource, SourceServer, refused_url, rgb_to_yuv601
from pipeline.state.mosaic import key_of_source, source_id
from tests.waiting import until

COLOUR = (200, 60, 30)
# Mean Y/U/V of a flat area of a grabbed tile vs the exact BT.601 limited-range value of the
# source colour: H.264 quantisation of a flat field and the scaler's rounding stay within 3;
# 4 leaves a margin.
TOLERANCE = 4
FAST = {
    "heartbeat_interval": 0.2,
    "open_timeout": 2.0,
    "read_timeout": 1.5,
    "backoff_initial": 0.1,
    "backoff_max": 0.4,
}


@dataclass
class Watch:
    """What a grabber sent: frames (with the time they arrived) and heartbeats."""

    frames: deque[tuple[float, FrameHeader, bytes]] = field(
        default_factory=lambda: deque(maxlen=400)
    )
    beats: list[WorkerHeartbeat] = field(default_factory=list)

    @property
    def stats(self) -> GrabberStats:
        assert self.beats, "no heartbeat yet"
        stats = self.beats[-1].stats
        assert isinstance(stats, GrabberStats)
        return stats

    def frame_count(self) -> int:
        return len(self.frames)


async def watch(nc: Client, sid: str, worker_id: str) -> Watch:
    seen = Watch()

    async def on_frame(msg: Msg) -> None:
        header, pixels = unpack_frame(msg.data)
        seen.frames.append((time.monotonic(), header, bytes(pixels)))

    async def on_beat(msg: Msg) -> None:
        beat = decode_heartbeat(msg.data, msg.subject)
        assert isinstance(beat, WorkerHeartbeat)
        seen.beats.append(beat)

    await nc.subscribe(subjects.frames(sid), cb=on_frame)
    await nc.subscribe(subjects.worker_heartbeat(worker_id), cb=on_beat)
    await nc.flush()
    return seen


@pytest.fixture(scope="module")
def server() -> Iterator[SourceServer]:
    with SourceServer(
        {
            "colour": LiveHlsSource(COLOUR),
            "dying": LiveHlsSource((30, 160, 60)),
        }
    ) as running:
        yield running


@pytest_asyncio.fixture
async def grabbers(nc: Client) -> AsyncIterator[list[Grabber]]:
    """Grabbers made in a test, all stopped at its end whatever happens."""
    made: list[Grabber] = []
    yield made
    for grabber in made:
        await grabber.stop()


async def grab(
    made: list[Grabber],
    nc: Client,
    url: str,
    width: int,
    height: int,
    *,
    fps: float = 25.0,
    name: str = "",
    **options: float,
) -> tuple[Grabber, Watch]:
    sid = source_id(url, width, height)
    worker_id = f"grabber-{name or sid[:12]}"
    seen = await watch(nc, sid, worker_id)
    grabber = Grabber(
        nc=nc,
        source_id=sid,
        url=url,
        width=width,
        height=height,
        fps=fps,
        worker_id=worker_id,
        policy=SourcePolicy.local(),
        **{**FAST, **options},  # type: ignore[arg-type]
    )
    made.append(grabber)
    await grabber.start()
    return grabber, seen


def planes(header: FrameHeader, pixels: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w, h = header.width, header.height
    flat = np.frombuffer(pixels, np.uint8)
    y = flat[: w * h].reshape(h, w)
    u = flat[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
    v = flat[w * h * 5 // 4 :].reshape(h // 2, w // 2)
    return y, u, v


def assert_colour(y: np.ndarray, u: np.ndarray, v: np.ndarray, rgb: tuple[int, int, int]) -> None:
    want = rgb_to_yuv601(rgb)
    got = (float(y.mean()), float(u.mean()), float(v.mean()))
    assert all(abs(g - w) <= TOLERANCE for g, w in zip(got, want, strict=True)), (got, want)


def has_error(seen: Watch) -> bool:
    return bool(seen.beats) and bool(seen.stats.last_error)


def has_retried(seen: Watch, times: int) -> bool:
    return bool(seen.beats) and seen.stats.reconnects >= times


# -- against NATS and live sources ------------------------------------------------------------


async def test_frames_have_the_tile_size_and_the_source_colour(
    nc: Client, js: JetStreamContext, server: SourceServer, grabbers: list[Grabber]
) -> None:
    grabber, seen = await grab(grabbers, nc, server.url("colour"), 160, 90)
    await until(lambda: seen.frame_count() >= 30, 10, "30 frames")
    assert grabber.status is GrabberState.CONNECTED

    frames = list(seen.frames)
    for _, header, pixels in frames:
        assert (header.width, header.height, header.pix_fmt) == (160, 90, "yuv420p")
        assert header.source_id == grabber.source_id
        assert len(pixels) == 160 * 90 * 3 // 2
    seqs = [h.seq for _, h, _ in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    pts = [h.pts for _, h, _ in frames]
    assert pts == sorted(pts)
    assert abs(frames[-1][1].wall - time.time()) < 5

    # The top quarter has no marker: a flat field of the source colour.
    y, u, v = planes(frames[-1][1], frames[-1][2])
    assert_colour(y[:22], u[:11], v[:11], COLOUR)
    assert y.max() > 200, "the white marker made it through the scaler"

    # The FRAMES stream captured the core NATS publishes.
    last = await js.get_last_msg("FRAMES", subjects.frames(grabber.source_id))
    assert last.data is not None
    assert unpack_frame(last.data)[0].source_id == grabber.source_id

    await until(lambda: bool(seen.beats) and seen.stats.fps_out > 0, 5, "a heartbeat with rates")
    beat = seen.beats[-1]
    assert (beat.kind, beat.target, beat.ready) == ("grabber", grabber.key, True)
    assert seen.stats.connected and seen.stats.state == "connected"
    # Decoding runs up to a second ahead in bursts (the release thread paces the output), so
    # the decode rate settles at the source's once that second is decoded.
    await until(lambda: 15 <= seen.stats.fps_in <= 40, 8, "a steady decode rate")


async def test_letterbox_and_pillarbox_bars_are_black(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    url = server.url("colour")
    _, square = await grab(grabbers, nc, url, 160, 160)  # 16:9 in 1:1: bars above and below
    _, wide = await grab(grabbers, nc, url, 320, 90)  # 16:9 in 32:9: bars left and right
    await until(lambda: square.frame_count() > 3 and wide.frame_count() > 3, 10, "frames")

    y, u, v = planes(*square.frames[-1][1:])
    # fit(): 160x90 picture, centred at an even offset: rows 34..124.
    for rows in (slice(0, 34), slice(124, 160)):
        crows = slice(rows.start // 2, rows.stop // 2)
        assert (y[rows] == BLACK[0]).all() and (u[crows] == BLACK[1]).all()
        assert (v[crows] == BLACK[2]).all()
    assert_colour(y[34:56], u[17:28], v[17:28], COLOUR)

    y, u, v = planes(*wide.frames[-1][1:])
    for cols in (slice(0, 80), slice(240, 320)):
        ccols = slice(cols.start // 2, cols.stop // 2)
        assert (y[:, cols] == BLACK[0]).all() and (u[:, ccols] == BLACK[1]).all()
        assert (v[:, ccols] == BLACK[2]).all()
    assert_colour(y[:22, 80:240], u[:11, 40:120], v[:11, 40:120], COLOUR)


async def test_fps_cap_and_pacing(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    _, capped = await grab(grabbers, nc, server.url("colour"), 64, 36, fps=5)
    _, full = await grab(grabbers, nc, server.url("colour"), 96, 54)
    await until(lambda: capped.frame_count() >= 10, 10, "10 frames at 5 fps")
    steps = [round(b[1].pts - a[1].pts, 3) for a, b in pairwise(capped.frames)]
    assert set(steps) == {0.2}, f"5 of every 25 frames, evenly: {steps}"

    # HLS delivers a whole segment (25 frames) at once; pacing spreads them out: no second-long
    # gaps between arrivals, and about 25 frames per second.
    start = len(full.frames)
    await until(lambda: len(full.frames) >= start + 50, 5, "50 more frames")
    arrivals = [t for t, _, _ in list(full.frames)[start:]]
    gaps = [b - a for a, b in pairwise(arrivals)]
    assert max(gaps) < 0.5, f"bursty: gaps up to {max(gaps):.2f} s"
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 18 <= rate <= 32, f"{rate:.1f} frames/s"


async def test_dead_source_reconnects_with_backoff_and_comes_back(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    grabber, seen = await grab(grabbers, nc, server.url("dying"), 64, 36)
    await until(lambda: seen.frame_count() > 5, 10, "first frames")
    await until(lambda: bool(seen.beats) and seen.stats.connected, 5, "a connected heartbeat")

    server.stop_source("dying")
    try:
        await until(lambda: not seen.stats.connected, 8, "a disconnected heartbeat")
        assert not seen.beats[-1].ready
        assert seen.stats.last_error, "the heartbeat says why"
        assert grabber.url in seen.stats.last_error
        assert seen.stats.state in ("waiting", "connecting")
        first = seen.stats.reconnects
        started = time.monotonic()
        await until(lambda: seen.stats.reconnects >= first + 3, 8, "reconnects growing")
        # Backoff: 0.1 s doubling to a 0.4 s cap, jittered to [d/2, d]: at most one attempt per
        # 50 ms even at the start; a fixed-rate retry loop would show hundreds.
        elapsed = time.monotonic() - started
        assert seen.stats.reconnects - first <= elapsed / 0.05 + 2
        frames_while_dead = seen.frame_count()
    finally:
        server.start_source("dying")

    await until(lambda: seen.frame_count() > frames_while_dead + 5, 10, "frames again")
    await until(lambda: seen.stats.connected, 5, "connected again")
    assert seen.beats[-1].ready
    y, u, v = planes(*seen.frames[-1][1:])
    assert_colour(y[:8], u[:4], v[:4], (30, 160, 60))


async def test_unopenable_urls_never_crash_and_never_publish(
    nc: Client, js: JetStreamContext, server: SourceServer, grabbers: list[Grabber]
) -> None:
    server.add_file(
        "passwd.m3u8",
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    )
    cases = {
        "refused": (refused_url(), "Connection refused"),
        "file": ("file:///etc/passwd", "scheme 'file' not allowed"),
        "concat": ("concat:/etc/passwd|/etc/hosts", "scheme 'concat' not allowed"),
        "playlist": (server.file_url("passwd.m3u8"), "cannot open"),
    }
    watched = {}
    for name, (url, _) in cases.items():
        watched[name] = await grab(grabbers, nc, url, 64, 36, name=name)

    for name, (_, reason) in cases.items():
        grabber, seen = watched[name]
        await until(partial(has_error, seen), 5, name)
        stats = seen.stats
        assert reason in stats.last_error, (name, stats.last_error)
        assert not stats.connected and not seen.beats[-1].ready
        assert "\n" not in stats.last_error
    for name in ("refused", "playlist"):
        grabber, seen = watched[name]
        await until(partial(has_retried, seen, 2), 5, f"{name} retries")

    for name, (grabber, seen) in watched.items():
        assert grabber.status is not GrabberState.STOPPED
        assert seen.frame_count() == 0, f"{name} published frames"
        with pytest.raises(NotFoundError):
            await js.get_last_msg("FRAMES", subjects.frames(grabber.source_id))


async def test_a_finished_file_loops_at_its_own_pace(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    # An ended VOD playlist of two 1 s segments: finite, so it is paced and played again.
    clip = LiveHlsSource((90, 90, 220))
    now = time.time()
    server.add_file("vod0.ts", clip.encode_segment(0, now))
    server.add_file("vod1.ts", clip.encode_segment(1, now + 1))
    server.add_file(
        "vod.m3u8",
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXTINF:1.0,\nvod0.ts\n#EXTINF:1.0,\nvod1.ts\n#EXT-X-ENDLIST\n",
    )
    grabber, seen = await grab(grabbers, nc, server.file_url("vod.m3u8"), 64, 36)
    await until(lambda: grabber.decoder.loops >= 1, 8, "the file to loop")
    await until(lambda: seen.frame_count() >= 70, 8, "frames after the loop")
    frames = list(seen.frames)
    arrivals = [t for t, _, _ in frames]
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert rate <= 32, f"read faster than real time: {rate:.0f} frames/s"
    pts = [h.pts for _, h, _ in frames]
    assert any(b < a for a, b in pairwise(pts)), "timestamps start again after a loop"
    assert max(b - a for a, b in pairwise(arrivals)) < 0.5, "no pause at the loop"
    assert grabber.decoder.reconnects == 0
    await until(lambda: bool(seen.beats) and seen.stats.loops >= 1, 3, "loops in the heartbeat")


def own_threads() -> set[threading.Thread]:
    """Threads now, less the source server's request pool (it grows on demand)."""
    return {t for t in threading.enumerate() if not t.name.startswith("source-http")}


async def test_stop_leaves_no_thread_and_is_safe_twice(
    nc: Client, js: JetStreamContext, server: SourceServer
) -> None:
    # ``js``: the streams exist, so that the alarms a stop appends (the source went quiet) do
    # not retry for want of EVENTS when this test runs alone.
    before = own_threads()
    grabber, seen = await grab([], nc, server.url("colour"), 64, 36)
    await until(lambda: seen.frame_count() > 3, 10, "frames")
    # The decode thread, and the one that hands paced frames on at their time.
    assert sorted(t.name for t in own_threads() - before) == [
        f"grabber-{grabber.source_id}",
        f"release-{grabber.source_id}",
    ]
    await grabber.stop()
    await grabber.stop()
    assert own_threads() <= before
    assert grabber.status is GrabberState.STOPPED
    await until(lambda: not seen.beats[-1].ready, 2, "a last 'not ready' heartbeat")
    assert seen.stats.state == "stopped" and not seen.stats.connected

    # Stopping while an open hangs on a server that never answers returns within the open
    # timeout: FFmpeg is interrupted, not abandoned.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.setblocking(False)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x.m3u8"
        grabber, seen = await grab([], nc, url, 64, 36, open_timeout=1.0)
        accepted: list[socket.socket] = []

        def connected() -> bool:
            try:
                accepted.append(silent.accept()[0])
            except BlockingIOError:
                return False
            return True

        await until(connected, 5, "FFmpeg to connect (it now waits for an answer)")
        started = time.monotonic()
        await grabber.stop()
        assert time.monotonic() - started < 2.5
        for conn in accepted:
            conn.close()
    assert own_threads() <= before


async def test_tiles_too_big_for_nats_are_refused_at_start(nc: Client) -> None:
    # The test server's max_payload is 8 MiB; a 3840x2160 tile is 12.4 MB.
    spec = GrabberSpec(key="huge", url="http://127.0.0.1:9/x", sizes=((3840, 2160), (320, 180)))
    grabber = Grabber.from_spec(spec, nc=nc, worker_id="w-huge", policy=SourcePolicy.local())
    with pytest.raises(ConfigError, match="over the NATS max_payload"):
        await grabber.start()
    await grabber.stop()
    with pytest.raises(ValueError, match="even"):
        Grabber(
            nc=nc,
            source_id="odd",
            url="http://127.0.0.1:9/x",
            width=63,
            height=36,
            fps=5,
            worker_id="w",
            policy=SourcePolicy.local(),
        )


# -- pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "cap"), [(25, 25), (25, 10), (30, 25), (50, 25), (25, 5)])
def test_fps_cap_keeps_at_most_the_cap(source: float, cap: float) -> None:
    keep = FpsCap(cap)
    kept = [i / source for i in range(int(source * 20)) if keep.keep(i / source)]
    assert len(kept) == pytest.approx(min(source, cap) * 20, abs=2)
    assert min(b - a for a, b in pairwise(kept)) >= 1 / source - 1e-9


def test_fps_cap_tolerates_jitter_and_restarts_on_jumps() -> None:
    keep = FpsCap(25)
    jittery = [i * 0.04 + (0.003 if i % 2 else -0.003) for i in range(250)]
    assert sum(keep.keep(t) for t in jittery) >= 245, "a jittery 25 fps source keeps its frames"
    assert keep.keep(1.0), "a jump back starts again"
    assert keep.keep(1000.0), "so does a gap"


def test_pts_clock_paces_and_reanchors() -> None:
    clock = PtsClock(max_lead=10, max_lag=3)
    assert clock.due(100.0, now=50.0) == 50.0  # the first frame anchors: due now
    assert clock.due(100.5, now=50.0) == 50.5  # a burst: the rest are spread out
    assert clock.due(101.0, now=52.0) == 51.0  # late but within max_lag: shown at once
    assert clock.due(200.0, now=52.0) == 52.0  # 99 s ahead: a jump, re-anchored
    assert clock.due(150.0, now=53.0) == 53.0  # far behind: re-anchored
    assert clock.reanchors == 2
    clock.anchor(0.0, 60.0)  # a looping file's next pass follows its last frame
    assert clock.due(0.04, now=59.0) == pytest.approx(60.04)


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    lows = Backoff(0.5, 10, rng=lambda: 0.0)
    assert [lows.next() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    highs = Backoff(0.5, 10, rng=lambda: 0.999999)
    assert max(highs.next() for _ in range(100)) <= 10
    highs.reset()
    assert highs.next() == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_backoff_after_a_failure_resets_when_healthy_and_waits_longest_after_a_refusal() -> None:
    backoff = Backoff(1.0, 8.0, rng=lambda: 1.0)
    assert [backoff.after(healthy=False, refused=False) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert backoff.after(healthy=False, refused=True) == 8.0
    assert backoff.after(healthy=True, refused=False) == 1.0
    assert loop_delay(0.25) == 0.75, "a short file is played again at most once a second"
    assert loop_delay(3.0) == 0.0


def test_frame_pacer_drops_repeats_and_frames_over_the_cap_and_paces_the_rest() -> None:
    guard = StaleGuard()
    guard.fresh(1.0)  # shown before a reconnect
    pacer = FramePacer(10, opened=100.0, pace=True, stale=guard)
    assert pacer.admit(0.96, 100.0) is Verdict.STALE
    assert pacer.admit(1.04, 100.0) is Verdict.KEEP
    assert (pacer.last_t, pacer.due, pacer.first_kept) == (1.04, 100.0, 100.0)
    assert pacer.admit(1.08, 100.01) is Verdict.OVER_CAP  # a 25 fps source capped at 10
    assert pacer.admit(1.16, 100.02) is Verdict.KEEP
    assert pacer.due == pytest.approx(100.12) and pacer.kept == 2

    # A looping file's next pass: its first frame is due one source frame after the last.
    carry = pacer.carry()
    assert carry is not None and carry.step == pytest.approx(0.08)
    again = FramePacer(10, opened=100.15, pace=True, carried=carry)
    assert again.admit(0.0, 100.15) is Verdict.KEEP
    assert again.due == pytest.approx(100.20)

    live = FramePacer(10, opened=5.0, pace=False)
    assert live.admit(None, 5.5) is Verdict.KEEP, "no timestamp: timed from the open"
    assert live.last_t == 0.5 and live.carry() is None


def yuv_frame(
    width: int, height: int, yuv: tuple[int, int, int], fmt: str = "yuv420p"
) -> av.VideoFrame:
    data = np.empty((height * 3 // 2, width), np.uint8)
    data[:height] = yuv[0]
    chroma = data[height:].reshape(2, height // 2, width // 2)
    chroma[0], chroma[1] = yuv[1], yuv[2]
    return av.VideoFrame.from_ndarray(data, format=fmt)


def test_tile_scaler_fits_centres_and_pads() -> None:
    scaler = TileScaler(100, 100)
    pixels = scaler.scale(yuv_frame(1280, 720, (120, 90, 160)))
    assert len(pixels) == scaler.frame_size == 100 * 100 * 3 // 2
    assert scaler.placement == (0, 22, 100, 56)  # even offset, even size
    y = np.frombuffer(pixels, np.uint8)[:10000].reshape(100, 100)
    assert (y[:22] == 16).all() and (y[78:] == 16).all() and (y[22:78] == 120).all()

    # Anamorphic: 720x576 with 64:45 pixels displays as 16:9 and fills a 16:9 tile.
    scaler = TileScaler(320, 180)
    scaler.scale(yuv_frame(720, 576, (80, 128, 128)), Fraction(64, 45))
    assert scaler.placement == (0, 0, 320, 180)
    # A size change mid-stream re-lays out (and re-blacks) the tile.
    scaler.scale(yuv_frame(180, 320, (80, 128, 128)))
    assert scaler.placement == (110, 0, 100, 180)


def test_tile_scaler_converts_full_range_to_limited() -> None:
    pixels = TileScaler(64, 36).scale(yuv_frame(128, 72, (255, 128, 128), fmt="yuvj420p"))
    assert np.frombuffer(pixels, np.uint8)[: 64 * 36].mean() == pytest.approx(235, abs=1)


def test_stale_guard_drops_repeats_after_a_reconnect_but_not_a_restart() -> None:
    guard = StaleGuard(window=10.0)
    assert all(guard.fresh(t) for t in (100.0, 100.04, 101.0))
    # A frozen playlist replayed from its start: the same times again.
    assert not any(guard.fresh(t) for t in (99.0, 100.0, 101.0))
    assert guard.fresh(101.04), "newer than anything shown: live again"
    assert guard.fresh(0.0), "far back: an encoder restart, not a repeat"
    assert guard.fresh(0.04)


# -- several tile sizes from one decode -----------------------------------------------------------


async def test_one_grabber_makes_every_tile_size_from_one_decode(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    """320x180, 160x90 and a square 64x64 of one source: one decode thread, each size on its
    own subject (the same frames: the same sequence numbers), the right colour and bars in
    each; the heartbeat's target is the source key and its stats name the sizes."""
    url = server.url("colour")
    sizes = ((320, 180), (160, 90), (64, 64))
    sids = [source_id(url, w, h) for w, h in sizes]
    key = key_of_source(sids[0])
    seen = [await watch(nc, sid, f"grabber-{key}") for sid in sids]
    before = own_threads()
    grabber = Grabber(
        nc=nc,
        source_id=sids[0],
        url=url,
        width=320,
        height=180,
        fps=25.0,
        worker_id=f"grabber-{key}",
        policy=SourcePolicy.local(),
        also=[TileOut(sid, w, h) for sid, (w, h) in zip(sids[1:], sizes[1:], strict=True)],
        key=key,
        **FAST,  # type: ignore[arg-type]
    )
    grabbers.append(grabber)
    await grabber.start()
    await until(lambda: all(s.frame_count() >= 10 for s in seen), 10, "frames of every size")
    assert sorted(t.name for t in own_threads() - before) == [
        f"grabber-{sids[0]}",
        f"release-{sids[0]}",
    ], "one decode (and release) thread for all sizes"
    seqs = []
    for watched, sid, (w, h) in zip(seen, sids, sizes, strict=True):
        _, header, pixels = watched.frames[-1]
        assert (header.source_id, header.width, header.height) == (sid, w, h)
        assert len(pixels) == w * h * 3 // 2
        seqs.append({f[1].seq for f in watched.frames})
        y, u, v = planes(header, pixels)
        top = 16 if (w, h) == (64, 64) else h // 8  # in the picture's upper part
        assert_colour(y[top : top + 4], u[top // 2 : top // 2 + 2], v[top // 2 : top // 2 + 2],
                      COLOUR)  # fmt: skip
    # The square tile is letterboxed: 64x36 of picture, black bars above and below.
    _, header, pixels = seen[2].frames[-1]
    y, _, _ = planes(header, pixels)
    assert (y[:12] == BLACK[0]).all() and (y[-12:] == BLACK[0]).all()
    assert len(seqs[0] & seqs[1] & seqs[2]) >= 5, "the same frames in every size"
    await until(lambda: bool(seen[0].beats) and seen[0].stats.fps_out > 0, 5, "a heartbeat")
    beat = seen[0].beats[-1]
    assert (beat.target, beat.worker_id) == (key, f"grabber-{key}")
    assert seen[0].stats.sizes == ("320x180", "160x90", "64x64")


async def test_a_running_grabber_is_retiled_on_its_control_subject(
    nc: Client, server: SourceServer, grabbers: list[Grabber]
) -> None:
    """``ctl.worker.<worker_id>`` with a :class:`Retile`: a size added starts at once on its
    subject, the size kept goes on with its frames numbered on (the same decode thread, no
    reconnect), a size dropped stops, a new fps caps what follows; a spec of another source is
    refused with a one-line reason and changes nothing."""
    url = server.url("colour")
    spec = GrabberSpec(key=key_of_source(source_id(url, 320, 180)), url=url, sizes=((320, 180),))
    big, small = spec.source_ids[0], source_id(url, 160, 90)
    seen = {sid: await watch(nc, sid, spec.worker_id) for sid in (big, small)}
    grabber = Grabber.from_spec(
        spec, nc=nc, worker_id=spec.worker_id, policy=SourcePolicy.local(), **FAST
    )
    grabbers.append(grabber)
    await grabber.start()
    await until(lambda: seen[big].frame_count() >= 5, 10, "frames of the first size")

    async def retile(new: GrabberSpec) -> CommandReply:
        msg = await nc.request(
            subjects.worker_control(spec.worker_id), encode(Retile(spec=new)), timeout=5
        )
        return decode_reply(msg.data, msg.subject)

    both = msgspec.structs.replace(spec, sizes=((320, 180), (160, 90)))
    assert await retile(both) == CommandReply(ok=True)
    await until(lambda: seen[small].frame_count() >= 5, 10, "frames of the added size")
    _, header, pixels = seen[small].frames[-1]
    assert (header.width, header.height) == (160, 90)
    y, u, v = planes(header, pixels)
    assert_colour(y[:22], u[:11], v[:11], COLOUR)
    seqs = [h.seq for _, h, _ in seen[big].frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] < 5
    assert seen[small].frames[0][1].seq > seqs[0], "the added size numbers on, not from 0"
    await until(lambda: seen[big].stats.sizes == ("320x180", "160x90"), 5, "both sizes beaten")
    assert grabber.decoder.reconnects == grabber.decoder.reopens == 0

    refused = await retile(msgspec.structs.replace(both, url=server.url("dying")))
    assert not refused.ok and "not" in refused.error and "\n" not in refused.error
    assert grabber.sizes == ("320x180", "160x90")

    slow = msgspec.structs.replace(spec, sizes=((160, 90),), fps=10.0)
    assert await retile(slow) == CommandReply(ok=True)
    count = seen[big].frame_count()
    await until(lambda: seen[small].frame_count() >= 40, 15, "more frames of the kept size")
    assert seen[big].frame_count() - count <= 2 * QUEUE_SIZE, "the dropped size went on"
    pts = [h.pts for _, h, _ in list(seen[small].frames)[-8:]]
    # 25 fps would step by 0.04 s; the cap keeps a frame in 2 or 3 (it allows some jitter).
    assert all(b - a >= 0.07 for a, b in pairwise(pts)), f"not capped at 10 fps: {pts}"
    assert grabber.decoder.reconnects == 0 and grabber.decoder.reopens == 1  # the new fps
    assert (grabber.source_id, grabber.sizes, grabber.fps) == (small, ("160x90",), 10.0)
    assert grabber.retiles == 2


async def test_a_retiled_grabbers_slots_follow_its_sizes(
    nc: Client, server: SourceServer, grabbers: list[Grabber], tmp_path: Path
) -> None:
    """With shared-memory slots: a size added gets its slot (written with its frames), a size
    dropped keeps its slot file until the next change (a frame of it may still be on its way)
    and then it is removed, a size given back takes its slot up again, and the stop removes
    every slot file."""
    url = server.url("colour")
    spec = GrabberSpec(key=key_of_source(source_id(url, 320, 180)), url=url, sizes=((320, 180),))
    both = msgspec.structs.replace(spec, sizes=((320, 180), (160, 90)))
    big, small = both.source_ids
    slots = tmp_path / "slots"
    slots.mkdir()
    grabber = Grabber.from_spec(
        spec, nc=nc, worker_id=spec.worker_id, policy=SourcePolicy.local(),
        frame_slots=lambda sid: slots / sid, **FAST,
    )  # fmt: skip
    grabbers.append(grabber)
    await grabber.start()

    def files() -> set[str]:
        return {p.name for p in slots.iterdir()}

    await grabber.retile(both)
    assert files() == {big, small}
    reader = SlotReader(slots / small)
    frames: list[SlotFrame] = []

    def written() -> bool:
        frame = reader.read()
        if frame is not None:
            frames.append(frame)
        return bool(frames)

    await until(written, 10, "a frame in the added size's slot")
    assert (frames[0].width, frames[0].height) == (160, 90)
    reader.close()
    only_small = msgspec.structs.replace(spec, sizes=((160, 90),))
    await grabber.retile(only_small)
    assert files() == {big, small}  # kept one change longer
    await grabber.retile(only_small)
    assert files() == {small}
    await grabber.retile(both)
    await grabber.retile(only_small)
    await grabber.retile(both)  # the big one back from retirement, slot and all
    assert files() == {big, small}
    await grabber.stop()
    assert files() == set()


def textured(width: int, height: int) -> av.VideoFrame:
    """A picture with detail at every scale (gradients and a checkerboard), yuv420p."""
    yy, xx = np.mgrid[0:height, 0:width]
    luma = 16 + (xx * 219 // width + ((xx // 8 + yy // 8) % 2) * 40) % 220
    data = np.empty((height * 3 // 2, width), np.uint8)
    data[:height] = luma
    chroma = data[height:].reshape(2, height // 2, width // 2)
    chroma[0] = 128 + (yy[::2, ::2] * 60 // height)
    chroma[1] = 100 + (xx[::2, ::2] * 50 // width)
    return av.VideoFrame.from_ndarray(data, format="yuv420p")


def psnr(a: bytes | memoryview, b: bytes | memoryview) -> float:
    x = np.frombuffer(a, np.uint8).astype(np.float64)
    y = np.frombuffer(b, np.uint8).astype(np.float64)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_a_smaller_tile_scaled_from_the_larger_one_matches_one_scaled_from_the_source() -> None:
    """The smaller sizes are scaled from the largest tile's picture (cheaper: bench case 11):
    the same placement, and within a rounding of the tile scaled from the decoded picture."""
    source = textured(1280, 720)
    large = TileScaler(320, 180)
    large.scale(source)
    assert large.picture is not None and (large.picture.width, large.picture.height) == (320, 180)
    for w, h in ((160, 90), (64, 64), (240, 180)):
        direct, via = TileScaler(w, h), TileScaler(w, h)
        want = bytes(direct.scale(source))
        got = bytes(via.scale(source, via=large.picture))
        assert via.placement == direct.placement
        assert psnr(got, want) > 38, (w, h, psnr(got, want))
    # A tile whose picture needs more pixels than the larger tile's has: from the source.
    square = TileScaler(320, 320)
    square.scale(source)  # its picture: 320x180
    wide, alone = TileScaler(400, 226), TileScaler(400, 226)
    assert bytes(wide.scale(source, via=square.picture)) == bytes(alone.scale(source))
