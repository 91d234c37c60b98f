"""Mosaic faults (issue: reliability, points 11 and 15), with real processes on a real
nats-server and the pictures decoded from what comes out.

- A stitcher made slow (SIGSTOP/SIGCONT of its worker process): the frame publishers are never
  held up or disconnected, the stitcher's memory stays bounded, and once it runs again the
  newest segment shows the present within a couple of segment durations (late ticks are
  skipped and counted, not made up).
- A stitcher killed (``kill -9``) mid-segment and nats-server killed and restarted on the same
  port and store, while a player polls the playlist through the gateway: every playlist it is
  served names only segments the gateway then serves whole, and the media sequence never goes
  back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx
import m3u8
import msgspec
import numpy as np
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from gateway.livestate import LiveState
from pipeline.cli.up import Stack
from pipeline.config.settings import load
from pipeline.consumers.canvas import Planes, planes_of, rgb_to_yuv, solid
from pipeline.consumers.labels import strip_height
from pipeline.control.projector import Projector
from pipeline.control.read import read_entry
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.events import MosaicCreated, Tile
from pipeline.messages.frames import FrameHeader, pack_frame
from pipeline.messages.heartbeats import StitcherStats, WorkerHeartbeat
from pipeline.messages.segments import SegmentNotice
from pipeline.nats import auth as natsauth
from pipeline.nats import subjects
from pipeline.nats.connect import connect
from pipeline.nats.eventlog import append
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import MANIFESTS, provision
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.segments.playlist import PlaylistWindow, SegmentEntry
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from pipeline.state.layouts import layout
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import source_id
from tests.natsenv import server_env, users_file
from tests.test_durability import free_port
from tests.test_mosaic_e2e import _config, near, newest_picture, until

FAULTS_LOG = logging.getLogger("tests.faults.nats")
"""The own servers' log: not the session server's, whose refusal check must not see them."""


def write_users(store_dir: Path) -> dict[str, str]:
    """Fresh role passwords, in the users file a stack on that store reads them from."""
    passwords = natsauth.new_passwords()
    users = users_file(store_dir)
    users.parent.mkdir(parents=True, exist_ok=True)
    users.write_text(json.dumps(passwords))
    users.chmod(0o600)
    return passwords


@contextlib.asynccontextmanager
async def own_nats(root: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server of the test's own (so it can be killed), with per-role users; its
    :func:`~tests.natsenv.server_env` is a stack's way in, as for the session's server."""
    store = root / "store"
    server = EmbeddedNats(
        store_dir=store, port=free_port(), passwords=write_users(store), logger=FAULTS_LOG
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# --- 11: a stitcher made slow ------------------------------------------------------------------

SW, SH, SFPS = 1280, 720, 25
"""A 720p mosaic: 4 tiles of 640x360, 346 KB a frame, 35 MB/s of frames into the stitcher, so
a stopped stitcher has the nats-server's 64 MB per-client buffer full within two seconds."""
SGRID = layout(4, SW, SH)
STW, STH = SGRID.rects[0].size
NAMES = ("a", "b", "c", "d")
BEFORE = {"a": (200, 40, 40), "b": (40, 180, 60), "c": (40, 70, 200), "d": (220, 200, 40)}
AFTER = {"a": (40, 180, 180), "b": (200, 60, 200), "c": (230, 230, 230), "d": (90, 90, 90)}
YUV_TOLERANCE = 8


def tile_url(name: str) -> str:
    return f"test://{name}/live.m3u8"


def tile_subject(name: str) -> str:
    return subjects.frames(source_id(tile_url(name), STW, STH))


class Grabbers:
    """What the grabbers of four sources do to NATS: a solid-colour frame per tile at ``fps``
    on absolute deadlines, over their own connection as NATS user ``grabber``; it records how
    long each round of publishes took and whether the connection ever dropped."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.palette = BEFORE
        self._frames = {
            rgb: b"".join(p.tobytes() for p in solid(STW, STH, rgb_to_yuv(rgb)))
            for rgb in (*BEFORE.values(), *AFTER.values())
        }
        self.rounds: list[tuple[float, float]] = []
        """(monotonic time a round of four publishes began, seconds it took)."""
        self.disconnected = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            began = time.monotonic()
            for name in NAMES:
                header = FrameHeader(
                    source_id=source_id(tile_url(name), STW, STH),
                    seq=tick,
                    pts=tick / SFPS,
                    wall=time.time(),
                    width=STW,
                    height=STH,
                )
                pixels = self._frames[self.palette[name]]
                await self.nc.publish(tile_subject(name), pack_frame(header, pixels))
            self.rounds.append((began, time.monotonic() - began))
            self.disconnected += not self.nc.is_connected
            tick += 1
            await asyncio.sleep(max(0.0, start + tick / SFPS - loop.time()))

    async def __aenter__(self) -> Grabbers:
        self._task = asyncio.create_task(self._run(), name="test grabbers")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)


def _pdeath_kill() -> None:
    # SIGKILL, not the workers' SIGTERM: a stopped process does not act on SIGTERM, and this
    # one is stopped on purpose for seconds.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.asynccontextmanager
async def stitcher_worker(
    nats_server: EmbeddedNats, fp: str, worker_id: str, log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``tessera worker stitcher <fp>``, as the local provider starts it."""
    env = {
        **os.environ,
        **server_env(nats_server),
        "TESSERA_WORKER_ID": worker_id,
        "TESSERA_HEARTBEAT_INTERVAL": "0.5",
        "TESSERA_X264_PRESET": "ultrafast",
        "TESSERA_DATA_DIR": str(log_path.parent),
        # These faults are checked on the MPEG-TS output (segments in the object store);
        # the CMAF output's are in tests/test_faults_cmaf.py.
        "TESSERA_HLS_FORMAT": "ts",
    }
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "worker", "stitcher", fp,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, preexec_fn=_pdeath_kill,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def segment_pictures(js: JetStreamContext, key: str) -> list[Planes]:
    store = await js.object_store("segments")
    data = (await store.get(key)).data
    assert data, f"{key} is empty"
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        return [planes_of(f.to_ndarray().tobytes(), SW, SH) for f in container.decode(video=0)]


def shows_palette(picture: Planes, palette: dict[str, tuple[int, int, int]]) -> bool:
    strip = strip_height(STH)
    for index, name in enumerate(NAMES):
        x, y = SGRID.rects[index].x, SGRID.rects[index].y
        top, bottom, left, right = y + 8, y + STH - strip - 8, x + 8, x + STW - 8
        got = (
            float(picture.y[top:bottom, left:right].mean()),
            float(picture.u[top // 2 : bottom // 2, left // 2 : right // 2].mean()),
            float(picture.v[top // 2 : bottom // 2, left // 2 : right // 2].mean()),
        )
        want = rgb_to_yuv(palette[name])
        if any(abs(g - w) > YUV_TOLERANCE for g, w in zip(got, want, strict=True)):
            return False
    return True


RSS_GROWTH_MB = 32
"""The stitcher's resident memory may grow by less than this while stopped and catching up.
The frames offered meanwhile are 52 or 138 MB; none of that may pile up in the stitcher (the
server holds at most 64 MB for it and then cuts it off; nats-py reads 32 KB at a time and the
callback keeps only the newest frame of a tile; its subscriptions cap what may wait at a few
frames a tile)."""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "stop_for",
    [
        pytest.param(1.5, id="backlog-delivered"),
        pytest.param(4.0, id="cut-off-by-the-server"),
    ],
)
async def test_a_stopped_stitcher_never_holds_up_grabbers_and_catches_up_with_the_present(
    nats_server: EmbeddedNats, nc: Client, js: JetStreamContext, tmp_path: Path, stop_for: float
) -> None:
    """Stopped for ``stop_for`` seconds: 1.5 s of frames (52 MB) fit the server's 64 MB buffer
    for the stitcher and reach it all at once when it resumes; 4 s of them do not, and the
    server cuts the stitcher off as a slow consumer (it reconnects when it resumes)."""
    fp = "5" * 32
    wid = f"stitcher-{fp}"
    tiles = tuple(Tile(tile_url(n), n) for n in NAMES)
    projector = Projector(nc, js, heartbeat_interval=0.5)
    await projector.start()
    try:
        created = MosaicCreated(at=time.time(), fp=fp, tiles=tiles, width=SW, height=SH, fps=SFPS)
        await append(js, created, msg_id=f"mosaic-{fp}", expect_first=True)

        async def projected() -> bool:
            return isinstance(await read_entry(js, "mosaics", fp), MosaicState)

        await until(projected, 10, "the mosaic in KV mosaics", 0.2)
    finally:
        await projector.stop()

    notices: list[tuple[float, SegmentNotice]] = []
    beats: list[WorkerHeartbeat] = []
    seen_frames: list[float] = []

    async def on_notice(msg: Msg) -> None:
        notices.append((time.monotonic(), msgspec.json.decode(msg.data, type=SegmentNotice)))

    async def on_beat(msg: Msg) -> None:
        beat = decode_heartbeat(msg.data)
        if isinstance(beat, WorkerHeartbeat):
            beats.append(beat)

    async def on_frame(msg: Msg) -> None:
        seen_frames.append(time.monotonic())

    subs = [
        await nc.subscribe(subjects.segments(fp), cb=on_notice),
        await nc.subscribe(subjects.worker_heartbeat(wid), cb=on_beat),
        # What the server forwards of one tile: the rate the grabbers really achieved.
        await nc.subscribe(tile_subject("a"), cb=on_frame),
    ]
    grabber_nc = await connect(nats_server.url_for("grabber"), name="grabbers", role="grabber")
    rss: list[tuple[float, float]] = []
    sampler: asyncio.Task[None] | None = None
    try:
        async with (
            Grabbers(grabber_nc) as grabbers,
            stitcher_worker(nats_server, fp, wid, tmp_path / "stitcher.log") as proc,
        ):

            async def sample() -> None:
                while True:
                    rss.append((time.monotonic(), rss_mb(proc.pid)))
                    await asyncio.sleep(0.1)

            async def three_segments() -> bool:
                return len(notices) >= 3 or proc.returncode is not None

            await until(three_segments, 20, "three segments", 0.1)
            assert proc.returncode is None, (tmp_path / "stitcher.log").read_text()[-2000:]
            sampler = asyncio.create_task(sample(), name="rss sampler")
            await asyncio.sleep(2.0)
            baseline = max(r for _, r in rss)

            os.kill(proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            await asyncio.sleep(stop_for)
            grabbers.palette = AFTER  # the present, from now on
            os.kill(proc.pid, signal.SIGCONT)
            resumed = time.monotonic()
            segments_before = len(notices)

            current: tuple[float, SegmentNotice] | None = None
            checked = segments_before

            async def shows_present() -> bool:
                nonlocal current, checked
                while checked < len(notices):
                    at, notice = notices[checked]
                    checked += 1
                    # Its first picture too: every picture in it is of the present.
                    if shows_palette((await segment_pictures(js, notice.key))[0], AFTER):
                        current = (at, notice)
                        return True
                return False

            await until(shows_present, 10, "a segment showing the present", 0.05)
            assert current is not None
            # Memory is watched a little longer: the catching up is over by then.
            await asyncio.sleep(max(0.0, resumed + 4.0 - time.monotonic()))

            async def late_beat() -> bool:
                return bool(beats) and beats[-1].ready and beats[-1].at > time.time() - 0.6

            await until(late_beat, 5, "a fresh heartbeat", 0.2)
            frames = await segment_pictures(js, current[1].key)
            assert proc.returncode is None, "the stitcher died"
    finally:
        await cancel_and_wait(sampler)
        for sub in subs:
            await sub.unsubscribe()
        reconnects = grabber_nc.stats["reconnects"]
        await grabber_nc.close()

    log_lines = [
        line.split(" ", 3)[-1][:60]
        for line in (tmp_path / "stitcher.log").read_text().splitlines()
        if "NATS" in line
    ]
    during = [d for t, d in grabbers.rounds if stopped <= t < resumed]
    seen = [t for t in seen_frames if stopped <= t < resumed]
    caught_up = current[0] - resumed
    late = beats[-1].stats.late_frames if isinstance(beats[-1].stats, StitcherStats) else -1
    peak = max(r for t, r in rss if t >= stopped)
    after = [n for t, n in notices if resumed <= t <= resumed + stop_for]
    print(
        f"\nstopped {stop_for:g} s: {len(during)} rounds published (of {stop_for * SFPS:g}), "
        f"longest {max(during) * 1000:.1f} ms; the server forwarded {len(seen)} frames of a tile;"
        f" stitcher RSS {baseline:.0f} MB before, peak {peak:.0f} MB; the present on screen "
        f"{caught_up:.2f} s after resuming (segment {current[1].seq}, latency "
        f"{current[1].at - current[1].first_wall:.2f} s); {late} late frames skipped; "
        f"{len(after)} segments in the {stop_for:g} s after; stitcher log: {log_lines}"
    )
    # The grabbers were never held up: every round of four publishes was made on time, the
    # server forwarded them as they came, and their connection never dropped.
    assert reconnects == 0 and grabbers.disconnected == 0
    assert len(during) >= 0.9 * stop_for * SFPS
    assert len(seen) >= 0.9 * stop_for * SFPS
    assert max(during) < 0.25, f"a round of publishes took {max(during):.3f} s"
    # Memory stayed bounded: not the backlog offered while stopped.
    assert peak - baseline < RSS_GROWTH_MB, f"RSS {baseline:.0f} -> {peak:.0f} MB"
    # Latency recovered: the present is on screen within two segment durations (plus the
    # time to store one), in a segment of a whole second whose pictures are fresh.
    assert caught_up < 2 * 1.0 + 0.5
    assert len(frames) == SFPS and shows_palette(frames[-1], AFTER)
    assert current[1].at - current[1].first_wall < 1.0 + 0.5
    # The ticks missed while stopped were skipped and counted, not made up: no burst of
    # segments after resuming.
    assert 0.8 * stop_for * SFPS <= late <= (stop_for + 2) * SFPS
    assert len(after) <= stop_for + 1


# --- 15: stitcher killed mid-segment, nats-server restarted ----------------------------------


@dataclass
class SegmentCheck:
    status: int
    frames: int
    error: str = ""


@dataclass
class PlaylistPoller:
    """A player that reloads the playlist every ``every`` seconds and fetches (and decodes)
    every segment the first time a playlist names it."""

    http: httpx.AsyncClient
    url: str
    every: float = 0.2
    polls: list[tuple[float, int, list[int]]] = field(default_factory=list)
    """(monotonic time, EXT-X-MEDIA-SEQUENCE, listed segment numbers) of every playlist."""
    errors: list[str] = field(default_factory=list)
    segments: dict[int, SegmentCheck] = field(default_factory=dict)
    bad_listings: list[str] = field(default_factory=list)

    async def run(self) -> None:
        base = self.url.rsplit("/", 1)[0]
        while True:
            await self._poll(base)
            await asyncio.sleep(self.every)

    async def _poll(self, base: str) -> None:
        try:
            got = await self.http.get(self.url)
        except httpx.HTTPError as exc:
            self.errors.append(f"playlist: {exc!r}")
            return
        if got.status_code != 200:
            self.errors.append(f"playlist: HTTP {got.status_code}")
            return
        playlist = m3u8.loads(got.text)
        first = int(playlist.media_sequence or 0)
        listed = [int(str(s.uri).removesuffix(".ts")) for s in playlist.segments]
        if listed != list(range(first, first + len(listed))):
            self.bad_listings.append(f"media sequence {first} lists {listed}")
        self.polls.append((time.monotonic(), first, listed))
        for seq in listed:
            if seq not in self.segments:
                self.segments[seq] = await self._fetch(f"{base}/{seq}.ts")

    async def _fetch(self, url: str) -> SegmentCheck:
        try:
            got = await self.http.get(url)
        except httpx.HTTPError as exc:
            return SegmentCheck(0, 0, repr(exc))
        if got.status_code != 200:
            return SegmentCheck(got.status_code, 0)
        try:
            frames = await asyncio.to_thread(_count_frames, got.content)
        except av.error.FFmpegError as exc:
            return SegmentCheck(200, 0, repr(exc))
        return SegmentCheck(200, frames)

    @property
    def newest(self) -> int:
        """The newest segment number any playlist named (-1: none yet)."""
        return max((p[2][-1] for p in self.polls if p[2]), default=-1)


def centre_colour(picture: np.ndarray, index: int, n: int) -> tuple[int, int, int]:
    """Mean RGB of the middle of a tile (a 16:9 source is letterboxed in a tall tile)."""
    grid = layout(n, picture.shape[1], picture.shape[0])
    x, y = grid.rects[index].x, grid.rects[index].y
    w, h = grid.rects[index].size
    region = picture[y + h * 3 // 8 : y + h * 5 // 8, x + w // 8 : x + w * 7 // 8]
    r, g, b = region.reshape(-1, 3).mean(axis=0)
    return int(r), int(g), int(b)


def _count_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture
def two_sources() -> Iterator[SourceServer]:
    server = SourceServer(
        {
            "red": LiveHlsSource((220, 30, 30), width=320, height=180, fps=10),
            "blue": LiveHlsSource((30, 40, 220), width=320, height=180, fps=10),
        }
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_gateway_follows_a_lost_and_replaced_playlist_bucket(
    nc: Client, js: JetStreamContext
) -> None:
    """What a restarted nats-server does to KV `manifests` (gone, then provisioned again
    empty), done by hand under the gateway's live state: it lets go of the lost playlist at
    once (an empty one continuing its media sequence) and follows the new bucket."""
    fp = "7" * 32
    kv = await js.key_value(MANIFESTS.name)
    window = PlaylistWindow.for_segments(1.0)
    for seq in (7, 8, 9):
        window, _ = window.push(SegmentEntry(seq, 1.0, time.time()))
    await kv.put(fp, window.render().encode())
    live = LiveState(js, check_every=0.1)
    await live.start()

    def served() -> m3u8.M3U8:
        return m3u8.loads(live.playlists[fp].decode())

    async def lists(*seqs: int) -> bool:
        return [s.uri for s in served().segments] == [f"{s}.ts" for s in seqs]

    try:
        assert await lists(7, 8, 9)
        await js.delete_stream(MANIFESTS.stream_name)

        async def continued() -> bool:
            return await lists() and served().media_sequence == 10

        await until(continued, 5, "an empty playlist continuing at 10", 0.05)
        await provision(js)
        kv = await js.key_value(MANIFESTS.name)
        window, _ = window.restart().push(SegmentEntry(14, 1.0, time.time()))
        await kv.put(fp, window.render().encode())

        async def new_run() -> bool:
            return await lists(14)

        await until(new_run, 5, "the new bucket's playlist", 0.05)
        assert live.rewatched == 1
        # A playlist that expires (the bucket's TTL) leaves its continuation too.
        await kv.delete(fp)

        async def expired() -> bool:
            return await lists() and served().media_sequence == 15

        await until(expired, 5, "an empty playlist continuing at 15", 0.05)
    finally:
        await live.stop()


@pytest.mark.timeout(90)
async def test_kill_9_of_stitcher_and_nats_server_never_lists_a_missing_segment(
    two_sources: SourceServer, tmp_path: Path
) -> None:
    """The whole stack on a nats-server of its own; a player polls the playlist through the
    gateway five times a second and fetches every segment it names. The stitcher worker and
    nats-server are killed together half a segment after a new segment was listed, and the
    server is started again (same port and store: its memory streams and buckets are gone
    and provisioned again empty)."""
    colours = {"red": (220, 30, 30), "blue": (30, 40, 220)}
    async with own_nats(tmp_path / "nats") as server:
        # The outage must not look like the viewers left: idle after 60 s, not 4.
        stack = Stack(load(env=_config(server, tmp_path / "data", TESSERA_IDLE_TIMEOUT="60",
                                       TESSERA_HLS_FORMAT="ts")))  # fmt: skip
        await stack.start()
        poller_task: asyncio.Task[None] | None = None
        try:
            assert stack.gateway is not None and stack.provider is not None
            provider = stack.provider
            async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=5) as http:
                pattern = f"http://127.0.0.1:{two_sources.port}/{{red,blue}}[n]/index.m3u8"
                created = await http.get(
                    "/create", params={"urls": pattern, "size": "640x360", "fps": "10"}
                )
                assert created.status_code == 302
                url = created.headers["location"]

                async def playing() -> bool:
                    _, picture = await newest_picture(http, url)
                    return picture.size > 0 and all(
                        near(centre_colour(picture, i, 2), rgb)
                        for i, rgb in enumerate(colours.values())
                    )

                await until(playing, 30, "both tiles playing", 0.2)
                poller = PlaylistPoller(http, url)
                poller_task = asyncio.create_task(poller.run(), name="playlist poller")

                async def poller_saw_three() -> bool:
                    return len({p[1] for p in poller.polls}) >= 3

                await until(poller_saw_three, 10, "the poller to see the window slide", 0.1)

                # Mid-segment: half a segment after the playlist named a new one.
                before = poller.newest

                async def new_segment() -> bool:
                    return poller.newest > before

                await until(new_segment, 5, "a new segment", 0.02)
                await asyncio.sleep(0.5)
                stitchers = [w for w, r in provider.running().items() if r.spec.kind == "stitcher"]
                assert len(stitchers) == 1
                stitcher_pid = provider.pid(stitchers[0])
                nats_pid = server.pid
                assert stitcher_pid is not None and nats_pid is not None
                grabbers = {w: provider.pid(w) for w in provider.running() if w not in stitchers}
                newest_before = poller.newest
                # Both at once: the new stitcher cannot start before the server is back, so
                # it finds the memory KV `manifests` (its previous playlist) gone.
                os.kill(stitcher_pid, signal.SIGKILL)
                os.kill(nats_pid, signal.SIGKILL)
                killed = time.monotonic()
                await server.stop()  # reaps the killed process
                await server.start()  # same port, same store
                restarted = time.monotonic()

                async def recovered() -> bool:
                    if poller.newest <= newest_before:
                        return False
                    return await playing()

                await until(recovered, 30, "the mosaic to play again after the restart", 0.2)
                recovered_at = time.monotonic()
                new_stitcher = provider.pid(stitchers[0])

                # Past the worker heartbeat timeout (10 s) after the restart: the controller,
                # blind while NATS was away, must not have taken that for dead workers.
                async def past_heartbeat_timeout() -> bool:
                    return time.monotonic() > restarted + 12

                await until(past_heartbeat_timeout, 15, "the heartbeat timeout to pass", 0.5)
                assert {w: provider.pid(w) for w in grabbers} == grabbers, "grabbers restarted"
                assert provider.pid(stitchers[0]) == new_stitcher, "the new stitcher restarted"
                await cancel_and_wait(poller_task)
                poller_task = None

            sequences = [p[1] for p in poller.polls]
            stale = [t - restarted for t, _, listed in poller.polls if listed and t > restarted
                     and listed[0] <= newest_before]  # fmt: skip
            print(
                f"\nrestart took {restarted - killed:.2f} s; played again "
                f"{recovered_at - killed:.1f} s after the kill; old segments listed until "
                f"{max(stale, default=0):.2f} s after the restart; {len(poller.polls)} playlists, "
                f"{len(poller.segments)} segments; newest before {newest_before}, media "
                f"sequences {sorted(set(sequences))}; poll errors {poller.errors}"
            )
            assert not poller.errors, poller.errors
            assert not poller.bad_listings, poller.bad_listings
            # Every segment a playlist named was served whole: 200 and one second of pictures.
            bad = {s: c for s, c in poller.segments.items() if c.status != 200 or c.frames != 10}
            assert not bad, f"named but not served whole: {bad}"
            # EXT-X-MEDIA-SEQUENCE never goes back, over both kills (RFC 8216 §6.2.2). What is
            # accepted: the old run's playlist, then (until the new stitcher's first segment)
            # an empty one continuing its media sequence, then the new run, which starts above
            # every number used before, so no number is reused for other media; its first
            # number comes after a gap, which a player sees as segments that left the window,
            # and its timestamps (derived from the number) jump by that gap's duration, so no
            # EXT-X-DISCONTINUITY is needed: old and new run never share a playlist.
            back = [(a, b) for a, b in zip(sequences, sequences[1:], strict=False) if b < a]
            assert not back, f"media sequence went back: {back}"
            new_run = [listed for t, _, listed in poller.polls if t > restarted and listed
                       and listed[-1] > newest_before]  # fmt: skip
            assert new_run and min(new_run[0]) > newest_before
            # The segments listed before went with the server's memory store: this gateway
            # still has them in its cache (the poller fetched them), a player that had not
            # would get a 404, so they leave the playlist as soon as the gateway sees the new
            # bucket (it checks every second).
            assert max(stale, default=0) < 3.0
            assert recovered_at - killed < 15
        finally:
            await cancel_and_wait(poller_task)
            await stack.stop()
