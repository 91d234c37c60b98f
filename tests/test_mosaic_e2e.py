"""Mosaics end to end: `/create` → controller → grabber and stitcher processes → FRAMES →
segments → `/play`, against a real nats-server, with live HLS sources made by PyAV on loopback.

Everything here is real: the gateway is uvicorn on a loopback port, the workers are child
processes started by the local provider, and the pictures are decoded from the segments the
gateway serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import io
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import m3u8
import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from pipeline.cli.up import Stack
from pipeline.config.settings import load
from pipeline.messages.frames import unpack_frame
from pipeline.messages.workers import GrabberSpec, StitcherSpec
from pipeline.nats import subjects
from pipeline.nats.server import EmbeddedNats
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from pipeline.state.layouts import Rect, layout
from pipeline.state.mosaic import source_id
from tests.jitmedia import make_video
from tests.natsenv import server_env
from tests.waiting import until

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
}
TOLERANCE = 40  # per RGB channel: H.264 at mosaic quality, the moving marker, the scaler
EVERY = 0.2  # s between the checks of until(): most here fetch and decode a segment


@dataclass
class Rig:
    stack: Stack
    http: httpx.AsyncClient
    sources: SourceServer
    js: JetStreamContext
    media: Path


@pytest.fixture
def sources() -> Iterator[SourceServer]:
    server = SourceServer(
        {name: LiveHlsSource(rgb, width=320, height=180, fps=25) for name, rgb in COLOURS.items()}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _config(nats_server: EmbeddedNats, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **server_env(nats_server),
        "TESSERA_DATA_DIR": str(data_dir),
        "JIT_ORCHESTRATOR_PORT": "0",
        "TESSERA_HEARTBEAT_INTERVAL": "0.5",
        "TESSERA_POLL_INTERVAL": "0.5",
        "TESSERA_X264_PRESET": "ultrafast",
        "TESSERA_SOURCE_OPEN_TIMEOUT": "3",
        "TESSERA_SOURCE_READ_TIMEOUT": "3",
    }
    env.update(extra)
    return env


@pytest_asyncio.fixture
async def rig(
    nats_server: EmbeddedNats, js: JetStreamContext, sources: SourceServer, tmp_path: Path
) -> AsyncIterator[Rig]:
    media = tmp_path / "media"
    media.mkdir()
    env = _config(nats_server, tmp_path, TESSERA_IDLE_TIMEOUT="4", JIT_MEDIA_ROOTS=str(media))
    stack = Stack(load(env=env))
    await stack.start()
    try:
        assert stack.gateway is not None
        async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=10) as http:
            yield Rig(stack, http, sources, js, media)
    finally:
        await stack.stop()


async def newest_picture(http: httpx.AsyncClient, playlist_url: str) -> tuple[int, np.ndarray]:
    """(media sequence of, RGB pixels of the last frame of) the newest segment, or (-1, empty)."""
    playlist = m3u8.loads((await http.get(playlist_url)).text)
    # A Low-Latency HLS playlist ends with the segment being built: parts, no URI yet.
    complete = [i for i, s in enumerate(playlist.segments) if s.uri]
    if not complete:
        return -1, np.zeros((0, 0, 3), np.uint8)
    segment = playlist.segments[complete[-1]]
    seq = playlist.media_sequence + complete[-1]
    base = playlist_url.rsplit("/", 1)[0]
    got = await http.get(f"{base}/{segment.uri}")
    assert got.status_code == 200, f"the playlist names a segment the gateway cannot serve: {seq}"
    data = got.content
    if segment.init_section is not None:  # fMP4: the init section first
        init = await http.get(f"{base}/{segment.init_section.uri}")
        assert init.status_code == 200, "the playlist names an init section the gateway lacks"
        data = init.content + data
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert frames, "a segment with no picture"
    return seq, frames[-1]


def tile_colour(picture: np.ndarray, index: int, n: int) -> tuple[int, int, int]:
    """Mean RGB of a tile's upper part (the name strip is at the bottom)."""
    height, width = picture.shape[:2]
    grid = layout(n, width, height)
    x, y = grid.rects[index].x, grid.rects[index].y
    h = grid.rects[index].h * 6 // 10
    region = picture[y + 4 : y + h, x + 4 : x + grid.rects[index].w - 4]
    r, g, b = region.reshape(-1, 3).mean(axis=0)
    return int(r), int(g), int(b)


def near(actual: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - e) <= TOLERANCE for a, e in zip(actual, expected, strict=True))


def is_dead_tile(rgb: tuple[int, int, int]) -> bool:
    r, g, b = rgb
    return r > g + 40 and r > b + 40


async def test_create_plays_every_source_in_its_tile_and_a_dead_source_comes_back(
    rig: Rig,
) -> None:
    names = list(COLOURS)
    port = rig.sources.port
    pattern = f"http://127.0.0.1:{port}/{{{','.join(names)}}}[n]/index.m3u8"
    created = await rig.http.get("/create", params={"urls": pattern, "size": "640x360"})
    assert created.status_code == 302
    playlist_url = created.headers["location"]

    picture = np.zeros((0, 0, 3), np.uint8)

    async def all_tiles_live() -> bool:
        nonlocal picture
        _, picture = await newest_picture(rig.http, playlist_url)
        if picture.size == 0:
            return False
        return all(near(tile_colour(picture, i, 4), COLOURS[n]) for i, n in enumerate(names))

    await until(all_tiles_live, 30, "every tile shows its source's colour", EVERY)
    assert picture.shape == (360, 640, 3)
    # The name strip at the bottom of each tile is drawn: not the plain source colour.
    grid = layout(4, 640, 360)
    for i, name in enumerate(names):
        r = grid.rects[i]
        strip = picture[r.bottom - 24 : r.bottom, r.x : r.right]
        assert strip.std() > 20, f"no name drawn on tile {name}"

    # /metrics during the running mosaic: every source and the stitcher report real rates.
    fp = playlist_url.split("/")[2]

    async def rates_reported() -> bool:
        text = (await rig.http.get("/metrics")).text
        fps_in = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("tessera_source_fps_in{")]  # fmt: skip
        stitch = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(f'tessera_mosaic_stitch_fps{{mosaic="{fp}"}}')]  # fmt: skip
        return len(fps_in) == 4 and min(fps_in) > 0 and bool(stitch) and stitch[0] > 0

    await until(rates_reported, 10, "non-zero source and stitch rates in /metrics", EVERY)
    text = (await rig.http.get("/metrics")).text
    assert "tessera_http_requests_total{" in text and 'path="/play/{fp}/{name}"' in text
    assert 'tessera_stream_messages{stream="EVENTS"}' in text
    # The default output is Low-Latency HLS: its parts are counted, and held requests shown.
    parts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith(f'tessera_mosaic_parts_total{{mosaic="{fp}"}}')]  # fmt: skip
    assert parts and parts[0] > 0, "no LL-HLS parts counted"
    assert "tessera_gateway_held_requests " in text

    # One source dies: its tile turns into the dead-source tile within 5 s (+ a segment),
    # while the others keep their colours.
    rig.sources.stop_source("green")
    stopped = time.monotonic()

    async def green_dead() -> bool:
        nonlocal picture
        _, picture = await newest_picture(rig.http, playlist_url)
        return is_dead_tile(tile_colour(picture, 1, 4))

    await until(green_dead, 5 + 1 + 1.5, "the dead-source tile", EVERY)
    assert time.monotonic() - stopped <= 5 + 1 + 1.5
    for i, name in enumerate(names):
        if name != "green":
            assert near(tile_colour(picture, i, 4), COLOURS[name]), f"tile {name} was affected"

    rig.sources.start_source("green")
    await until(all_tiles_live, 20, "the restarted source's colour to come back", EVERY)


async def test_a_source_that_cannot_be_opened_never_stops_the_mosaic(rig: Rig) -> None:
    port = rig.sources.port
    pattern = f"http://127.0.0.1:{port}/{{red,nosuchsource,blue}}[n]/index.m3u8"
    created = await rig.http.get("/create", params={"urls": pattern, "size": "640x360"})
    playlist_url = created.headers["location"]

    async def live() -> bool:
        _, picture = await newest_picture(rig.http, playlist_url)
        if picture.size == 0:
            return False
        return near(tile_colour(picture, 0, 3), COLOURS["red"]) and near(
            tile_colour(picture, 2, 3), COLOURS["blue"]
        )

    await until(live, 30, "the openable tiles to play", EVERY)
    before, _ = await newest_picture(rig.http, playlist_url)

    async def advanced() -> bool:
        seq, picture = await newest_picture(rig.http, playlist_url)
        return seq > before + 1 and not near(tile_colour(picture, 1, 3), COLOURS["red"])

    await until(advanced, 10, "the mosaic to keep going", EVERY)


async def test_the_original_lifecycle_with_real_workers(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> None:
    """A–D then C–F watched → 6 grabbers; A–D idle → its stitcher and A, B stop; C–F idle →
    all stop; A–D watched again → what it needs restarts. Idle timeout shortened to 3 s."""
    letters = "ABCDEF"
    palette = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200),
               (200, 40, 200)]  # fmt: skip
    server = SourceServer(
        {c: LiveHlsSource(rgb, width=160, height=90, fps=10) for c, rgb in zip(letters, palette,
                                                                                 strict=True)}
    )  # fmt: skip
    server.start()
    stack = Stack(load(env=_config(nats_server, tmp_path, TESSERA_IDLE_TIMEOUT="3")))
    await stack.start()
    watching: dict[str, str] = {}

    async def watch() -> None:
        while True:
            for url in list(watching.values()):
                await http.get(url)
            await asyncio.sleep(0.5)

    try:
        assert stack.gateway is not None and stack.provider is not None
        provider = stack.provider
        async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=10) as http:
            watcher = asyncio.create_task(watch())

            async def create(group: str) -> str:
                pattern = f"http://127.0.0.1:{server.port}/{{{','.join(group)}}}[n]/index.m3u8"
                got = await http.get(
                    "/create", params={"urls": pattern, "size": "320x180", "fps": "10"}
                )
                return str(got.headers["location"])

            def kinds() -> tuple[set[str], int]:
                running = provider.running().values()
                grabber_urls = {
                    r.spec.url.split("/")[-2] for r in running if isinstance(r.spec, GrabberSpec)
                }
                stitchers = sum(1 for r in running if r.spec.kind == "stitcher")
                return grabber_urls, stitchers

            try:
                watching["AD"] = await create("ABCD")
                watching["CF"] = await create("CDEF")

                async def six() -> bool:
                    return kinds() == (set("ABCDEF"), 2)

                await until(six, 15, "6 grabbers (not 8) and 2 stitchers", EVERY)
                pids = {wid: provider.pid(wid) for wid in provider.running()}

                del watching["AD"]

                async def ad_idle() -> bool:
                    return kinds() == (set("CDEF"), 1)

                await until(ad_idle, 10, "A–D's stitcher and grabbers A, B to stop", EVERY)
                for wid, run in provider.running().items():
                    assert provider.pid(wid) == pids[wid], f"{run.spec} was restarted, not kept"

                del watching["CF"]

                async def all_idle() -> bool:
                    return kinds() == (set(), 0)

                await until(all_idle, 10, "everything to stop", EVERY)

                watching["AD"] = await create("ABCD")

                async def ad_back() -> bool:
                    return kinds() == (set("ABCD"), 1)

                await until(ad_back, 15, "A–D's workers to start again", EVERY)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
    finally:
        await stack.stop()
        server.stop()


async def test_status_shows_a_running_mosaic_its_sources_and_a_session(rig: Rig) -> None:
    clip = make_video(rig.media / "review.mp4", frames=50, rate=fractions.Fraction(25))
    session = await rig.http.post("/session", json={"inputs": [{"url": str(clip)}]})
    sid = session.json()["id"]
    port = rig.sources.port
    pattern = f"http://127.0.0.1:{port}/{{red,blue}}[n]/index.m3u8"
    created = await rig.http.get(
        "/create", params={"urls": pattern, "size": "640x360", "title": "Ops wall"}
    )
    playlist_url = created.headers["location"]
    fp = playlist_url.split("/")[2]

    async def running() -> bool:
        seq, _ = await newest_picture(rig.http, playlist_url)
        return seq >= 1

    await until(running, 30, "the mosaic to run", EVERY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "TESSERA_"))}
    env["NATS_URL"] = rig.stack.url_for("admin")
    env["COLUMNS"] = "200"

    async def shows_everything() -> str | None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "status",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        rows = [line for line in text.splitlines() if fp[:12] in line]
        ok = bool(rows) and "Ops wall" in rows[0] and " ok " in rows[0]
        sessions = [line for line in text.splitlines() if sid[:12] in line]
        ok = ok and bool(sessions) and " running " in sessions[0] and "review.mp4" in sessions[0]
        return text if ok and text.count(" ok ") >= 3 else None

    deadline = time.monotonic() + 30
    text = None
    while text is None and time.monotonic() < deadline:
        text = await shows_everything()
    assert text is not None, "status never showed the mosaic, its sources and the session"
    assert "Mosaics (1)" in text and "Sources" in text and "Sessions (1)" in text


def rect_colour(picture: np.ndarray, rect: Rect) -> tuple[int, int, int]:
    """Median RGB of the middle of a tile's upper part (the name strip is at the bottom, the
    moving square a minority)."""
    region = picture[rect.y + rect.h // 8 : rect.y + rect.h * 5 // 8,
                     rect.x + rect.w // 8 : rect.right - rect.w // 8]  # fmt: skip
    r, g, b = np.median(region.reshape(-1, 3), axis=0)
    return int(r), int(g), int(b)


async def test_a_focus_mosaic_shows_the_first_source_large_and_the_others_small(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> None:
    """``layout=focus`` of six sources: tile 0 fills the 2x2 block of a 3x3 grid at its own
    size (its own grabber), the five others the cells around it."""
    palette = {"p0": (220, 30, 30), "p1": (30, 200, 40), "p2": (30, 40, 220),
               "p3": (230, 220, 30), "p4": (30, 200, 200), "p5": (200, 40, 200)}  # fmt: skip
    names = list(palette)
    server = SourceServer(
        {n: LiveHlsSource(rgb, width=160, height=90, fps=10) for n, rgb in palette.items()}
    )
    server.start()
    stack = Stack(load(env=_config(nats_server, tmp_path)))
    try:
        await stack.start()
        assert stack.gateway is not None and stack.provider is not None
        async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=10) as http:
            pattern = f"http://127.0.0.1:{server.port}/{{{','.join(names)}}}[n]/index.m3u8"
            params = {"urls": pattern, "size": "640x360", "fps": "10", "layout": "focus"}
            created = await http.get("/create", params=params)
            assert created.status_code == 302
            playlist_url = created.headers["location"]
            grid = layout(6, 640, 360, kind="focus")
            big, small = grid.rects[0], grid.rects[1:]
            assert (big.w, big.h) == (2 * small[0].w, 2 * small[0].h)
            picture = np.zeros((0, 0, 3), np.uint8)

            async def every_tile_live() -> bool:
                nonlocal picture
                _, picture = await newest_picture(http, playlist_url)
                if picture.size == 0:
                    return False
                return all(
                    near(rect_colour(picture, rect), palette[name])
                    for rect, name in zip(grid.rects, names, strict=True)
                )

            await until(every_tile_live, 30, "the big tile and the five small ones", EVERY)
            assert picture.shape == (360, 640, 3)
            # The big tile is tile 0's colour all over its block (the cells of its 2x2 block
            # that small tiles would have had, too).
            for half in (
                Rect(big.x, big.y, big.w // 2, big.h // 2),
                Rect(big.x + big.w // 2, big.y + big.h // 2, big.w // 2, big.h // 4),
            ):
                assert near(rect_colour(picture, half), palette["p0"])  # fmt: skip
            # Tile 0's grabber makes the big tile's size, the others the small one's.
            sizes = {
                r.spec.url.split("/")[-2]: r.spec.sizes
                for r in stack.provider.running().values()
                if isinstance(r.spec, GrabberSpec)
            }
            assert sizes == {n: ((big if n == "p0" else small[0]).size,) for n in names}
    finally:
        await stack.stop()
        server.stop()


async def test_mosaics_that_differ_only_in_their_titles_share_one_stitcher(rig: Rig) -> None:
    """Two ``/create`` calls for the same tiles and size with two titles are two mosaics (two
    fingerprints, two pages) but one picture: the earliest's stitcher makes the stream and both
    play URLs serve it; the second's viewers alone keep it running."""
    names = list(COLOURS)
    port = rig.sources.port
    pattern = f"http://127.0.0.1:{port}/{{{','.join(names)}}}[n]/index.m3u8"
    params = {"urls": pattern, "size": "640x360"}
    first = await rig.http.get("/create", params={**params, "title": "Control room"})
    second = await rig.http.get("/create", params={**params, "title": "Lobby screen"})
    assert first.status_code == second.status_code == 302
    fp_first = first.headers["location"].split("/")[2]
    playlist_url = second.headers["location"]
    fp_second = playlist_url.split("/")[2]
    assert fp_first != fp_second

    async def all_tiles_live() -> bool:
        _, picture = await newest_picture(rig.http, playlist_url)  # the second's URL only
        if picture.size == 0:
            return False
        return all(near(tile_colour(picture, i, 4), COLOURS[n]) for i, n in enumerate(names))

    await until(all_tiles_live, 30, "the second mosaic's URL plays every tile", EVERY)
    assert rig.stack.provider is not None
    stitchers = [
        r.spec.fp for r in rig.stack.provider.running().values() if isinstance(r.spec, StitcherSpec)
    ]
    assert stitchers == [fp_first], "one stitcher, the first mosaic's, for both titles"
    # Both URLs name the same stream: their playlists list the same segments (taken a moment
    # apart, they overlap), and a segment of one is served under the other's URL.
    one = m3u8.loads((await rig.http.get(f"/play/{fp_first}/index.m3u8")).text)
    two = m3u8.loads((await rig.http.get(f"/play/{fp_second}/index.m3u8")).text)
    common = {s.uri for s in one.segments if s.uri} & {s.uri for s in two.segments if s.uri}
    assert common, "the two titles' playlists share no segment"
    uri = sorted(common)[0]
    a = await rig.http.get(f"/play/{fp_first}/{uri}")
    b = await rig.http.get(f"/play/{fp_second}/{uri}")
    assert a.status_code == b.status_code == 200 and a.content == b.content


async def test_two_sizes_of_the_same_sources_share_one_grabber_each(rig: Rig, nc: Client) -> None:
    """Two mosaics of the same four sources at two tile sizes (640x360 → 320x180 tiles, 320x180
    → 160x90): one grabber per source making both sizes (one fetch of each segment), both
    pictures right. The second size is added to the running grabbers in place (retiled: the
    same processes, the same connections), so the first mosaic's tiles never stop: their
    frames go on in order, numbered on from before. When the small mosaic is no longer watched
    its size is dropped the same way and the big one plays on."""
    names = list(COLOURS)
    port = rig.sources.port
    pattern = f"http://127.0.0.1:{port}/{{{','.join(names)}}}[n]/index.m3u8"
    made: dict[str, str] = {}
    watching: dict[str, str] = {}

    async def create(size: str) -> None:
        created = await rig.http.get("/create", params={"urls": pattern, "size": size})
        assert created.status_code == 302
        made[size] = watching[size] = created.headers["location"]

    async def watch() -> None:
        while True:
            for url in list(watching.values()):
                await rig.http.get(url)
            await asyncio.sleep(0.5)

    def grabbers() -> dict[str, tuple[tuple[int, int], ...]]:
        assert rig.stack.provider is not None
        return {
            r.spec.url.split("/")[-2]: r.spec.sizes
            for r in rig.stack.provider.running().values()
            if isinstance(r.spec, GrabberSpec)
        }

    async def plays(size: str) -> bool:
        _, picture = await newest_picture(rig.http, made[size])
        if picture.size == 0:
            return False
        w, h = (int(x) for x in size.split("x"))
        assert picture.shape == (h, w, 3)
        return all(near(tile_colour(picture, i, 4), COLOURS[n]) for i, n in enumerate(names))

    watcher = asyncio.create_task(watch())
    try:
        await create("640x360")

        async def big_alone() -> bool:
            return grabbers() == {n: ((320, 180),) for n in names} and await plays("640x360")

        await until(big_alone, 40, "the big mosaic, one size per grabber", EVERY)
        # The big mosaic's frames of one source (with shm, NATS carries a seed a second).
        red = f"http://127.0.0.1:{port}/red/index.m3u8"
        arrived: list[tuple[float, int]] = []

        async def on_frame(msg: Msg) -> None:
            arrived.append((time.monotonic(), unpack_frame(msg.data)[0].seq))

        assert rig.stack.provider is not None
        pids = {wid: rig.stack.provider.pid(wid) for wid in rig.stack.provider.running()}

        sub = await nc.subscribe(subjects.frames(source_id(red, 320, 180)), cb=on_frame)
        await create("320x180")
        both = {n: ((320, 180), (160, 90)) for n in names}

        async def shared() -> bool:
            return grabbers() == both and await plays("640x360") and await plays("320x180")

        await until(
            shared, 40, "one grabber per source making both sizes, both mosaics right", EVERY
        )
        await asyncio.sleep(1.5)
        await sub.unsubscribe()
        gap = max(b[0] - a[0] for a, b in itertools.pairwise(arrived))
        print(f"the big mosaic's longest wait for a frame while its grabber retiled: {gap:.2f} s")
        # The same grabber processes (a restart would number its frames from 0 again).
        seqs = [seq for _, seq in arrived]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        assert {wid: rig.stack.provider.pid(wid) for wid in pids if "grabber" in wid} == {
            wid: pid for wid, pid in pids.items() if "grabber" in wid
        }, "a grabber was restarted, not retiled"
        # One decode per source: over a few seconds, each new segment is fetched once (two
        # grabbers per source would fetch each twice).
        before = rig.sources.requests()
        await asyncio.sleep(3.0)
        after = rig.sources.requests()
        fetched = {p: n - before.get(p, 0) for p, n in after.items() if p.endswith(".ts")}
        fetched = {p: n for p, n in fetched.items() if n}
        assert {p.split("/")[1] for p in fetched} == set(names), fetched
        assert max(fetched.values()) == 1, f"a segment fetched twice: {fetched}"
        assert grabbers() == both, "the sizes changed while the mosaics did not"
        # /metrics and the grabbers' beats name the sizes.
        text = (await rig.http.get("/metrics")).text
        sizes = [line for line in text.splitlines()
                 if line.startswith("tessera_source_tile_size_info{")]  # fmt: skip
        assert len(sizes) == 8 and sum('size="160x90"' in line for line in sizes) == 4

        del watching["320x180"]  # nobody watches the small mosaic any more

        async def one_size() -> bool:
            return grabbers() == {n: ((320, 180),) for n in names}

        await until(one_size, 20, "the small size dropped from every grabber", EVERY)
        await until(lambda: plays("640x360"), 20, "the big mosaic playing on", EVERY)
        for wid, pid in pids.items():
            if "grabber" in wid:
                assert rig.stack.provider.pid(wid) == pid, f"{wid} restarted, not retiled"
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
