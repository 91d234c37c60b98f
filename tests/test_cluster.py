"""Tessera as several machines: a 3-server JetStream cluster, the control plane, two agents.

Marker ``cluster`` (``python -m pytest -m cluster``). Everything is real and runs on this box as
:class:`pipeline.cli.cluster.LocalCluster` runs it: three nats-servers joined by routes (streams
and buckets at 3 copies, frames at 1), ``tessera up --instance-provider agents`` as its own
process, and two ``tessera agent`` processes ("machines"), each with its own data folder and its
workers, frames crossing NATS between them (no shared memory). Network namespaces work on
this box, but a server in one would have to listen on a bridge address, and servers started
here listen on 127.0.0.1 only: separate processes told to use NATS for frames stand in for
separate hosts. Sources are live HLS made by PyAV on loopback; pictures are decoded from the
segments the gateway serves.

The invariants of issue #20: a 9-tile mosaic spread over both agents shows every tile; ``kill
-9`` of an agent moves its workers to the other and every tile comes back; ``kill -9`` of a
NATS server loses no acknowledged event and no listed segment; a control plane killed and
started again picks up where it was (no worker started twice); a review session whose machine
dies resumes at its frame on the other. Times are logged, not asserted
(``just bench``'s cluster case measures them); the bounds here only stop a stuck test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import m3u8
import numpy as np
import pytest
import pytest_asyncio
from aiortc import RTCSessionDescription
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.cli.cluster import LocalCluster
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import InstanceHeartbeat, JitStats, WorkerHeartbeat
from pipeline.nats.cluster import AppendProbe
from pipeline.nats.connect import connect
from pipeline.nats.topology import EVENTS, FRAMES
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from tests.jitmedia import make_video
from tests.test_jit_worker import RATE_25, Viewer, browser_like_jitter_buffer  # noqa: F401
from tests.test_mosaic_e2e import near, newest_picture, tile_colour
from tests.waiting import until

pytestmark = pytest.mark.cluster

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "cyan": (30, 210, 220),
    "magenta": (210, 40, 210),
    "orange": (240, 140, 20),
    "grey": (128, 128, 128),
    "white": (235, 235, 235),
}
EVERY = 0.25  # s between the checks of until(): gently, several fetch and decode a segment
ENV = {
    "TESSERA_HEARTBEAT_INTERVAL": "0.5",
    "TESSERA_POLL_INTERVAL": "0.5",
    "JIT_INSTANCE_POLL_INTERVAL": "0.5",
    "TESSERA_INSTANCE_HEARTBEAT_TIMEOUT": "3",
    "TESSERA_WORKER_HEARTBEAT_TIMEOUT": "4",
    "TESSERA_X264_PRESET": "ultrafast",
    "TESSERA_SOURCE_OPEN_TIMEOUT": "3",
    "TESSERA_SOURCE_READ_TIMEOUT": "3",
    # Each machine takes at most 6 grabbers: 9 tiles need both.
    "TESSERA_CAPACITY_GRABBER": "6",
    "TESSERA_CAPACITY_STITCHER": "2",
    "TESSERA_CAPACITY_JIT": "2",
}


@pytest.fixture
def sources() -> Iterator[SourceServer]:
    server = SourceServer(
        {n: LiveHlsSource(rgb, width=160, height=90, fps=10) for n, rgb in COLOURS.items()}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    machines = LocalCluster(tmp_path / "cluster", agents=2, env=ENV)
    await machines.start()
    try:
        yield machines
    finally:
        await machines.stop()


@pytest_asyncio.fixture
async def admin(cluster: LocalCluster) -> AsyncIterator[Client]:
    nc = await connect(cluster.nats.url_for("admin"), name="test-admin", forever=True)
    try:
        yield nc
    finally:
        await nc.close()


async def workers_on(js: JetStreamContext, agent: str) -> tuple[str, ...]:
    """What ``agent``'s newest heartbeat says it runs."""
    subject = f"hb.instance.{agent}"
    try:
        msg = await js.get_last_msg("HEARTBEATS", subject)
    except NotFoundError:
        return ()
    beat = decode_heartbeat(msg.data or b"", subject)
    assert isinstance(beat, InstanceHeartbeat)
    return beat.workers


async def create_wall(http: httpx.AsyncClient, sources: SourceServer) -> str:
    pattern = f"http://127.0.0.1:{sources.port}/{{{','.join(COLOURS)}}}[n]/index.m3u8"
    created = await http.get("/create", params={"urls": pattern, "size": "480x270", "fps": "10"})
    assert created.status_code == 302, created.text
    return str(created.headers["location"])


def tiles_match(picture: np.ndarray) -> list[str]:
    """Names of the tiles that do not show their source's colour (empty: all do)."""
    if picture.size == 0:
        return list(COLOURS)
    return [
        name
        for i, (name, rgb) in enumerate(COLOURS.items())
        if not near(tile_colour(picture, i, len(COLOURS)), rgb)
    ]


async def every_tile_live(http: httpx.AsyncClient, playlist: str) -> bool:
    _, picture = await newest_picture(http, playlist)
    return not tiles_match(picture)


async def test_a_wall_across_two_agents_survives_the_loss_of_one(
    cluster: LocalCluster, admin: Client, sources: SourceServer
) -> None:
    js = admin.jetstream()
    # The streams that hold facts keep 3 copies; frames keep one (see pipeline/nats/topology).
    events = await js.stream_info(EVENTS.name)
    assert events.config.num_replicas == 3 and events.cluster is not None
    assert len(events.cluster.replicas or []) == 2
    assert (await js.stream_info(FRAMES.name)).config.num_replicas == 1
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        playlist = await create_wall(http, sources)
        start = time.monotonic()
        await until(lambda: every_tile_live(http, playlist), 90, "every tile live", EVERY)
        print(f"9 tiles live after {time.monotonic() - start:.1f} s")

        placed = {a.name: await workers_on(js, a.name) for a in cluster.agents}
        grabbers = {a: [w for w in ws if w.startswith("grabber-")] for a, ws in placed.items()}
        assert all(grabbers.values()), f"grabbers are not on both machines: {placed}"
        assert sum(len(g) for g in grabbers.values()) == 9
        stitcher = [a for a, ws in placed.items() if any(w.startswith("stitcher-") for w in ws)]
        assert len(stitcher) == 1, placed

        # kill -9 the machine with the stitcher: the survivor takes the stitcher and as many
        # grabbers as it may run (6 of 9); the other 3 tiles show "dead" until a machine
        # with room comes back.
        victim = cluster.agent(stitcher[0])
        survivor = next(a for a in cluster.agents if a is not victim)
        killed_at = time.monotonic()
        victim.kill()

        async def moved() -> bool:
            ws = await workers_on(js, survivor.name)
            return any(w.startswith("stitcher-") for w in ws)

        await until(moved, 60, "the stitcher restarted on the surviving machine", EVERY)
        took = time.monotonic() - killed_at
        print(f"stitcher moved {took:.1f} s after the kill (heartbeat deadline 3 s)")

        def at_most_six(picture: np.ndarray) -> bool:
            return len(tiles_match(picture)) <= 3

        async def live_again() -> bool:
            _, picture = await newest_picture(http, playlist)
            return picture.size > 0 and at_most_six(picture)

        await until(live_again, 60, "the mosaic plays again with the tiles that fit", EVERY)
        print(f"playing again {time.monotonic() - killed_at:.1f} s after the kill")
        survivors = await workers_on(js, survivor.name)
        assert sum(w.startswith("grabber-") for w in survivors) == 6, survivors


async def test_a_nats_server_and_the_control_plane_can_die_without_losing_anything(
    cluster: LocalCluster, admin: Client, sources: SourceServer
) -> None:
    js = admin.jetstream()
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=10) as http:
        playlist = await create_wall(http, sources)
        await until(lambda: every_tile_live(http, playlist), 90, "every tile live", EVERY)

        # Facts appended without pause while the EVENTS leader's server is killed: every one
        # JetStream acknowledged must be there afterwards.
        before = m3u8.loads((await http.get(playlist)).text)
        listed = [s.uri for s in before.segments if s.uri]
        async with AppendProbe(js) as probe:
            await asyncio.sleep(1.0)
            leader = (await js.stream_info(EVENTS.name)).cluster
            assert leader is not None and leader.leader is not None
            index = int(leader.leader.rsplit("-", 1)[1]) - 1
            cluster.nats.kill(index)
            acked_before = len(probe.acked)

            async def new_leader_takes_appends() -> bool:
                try:
                    info = (await js.stream_info(EVENTS.name)).cluster
                except Exception:  # noqa: BLE001 - no leader yet
                    return False
                moved = info is not None and info.leader not in (None, f"nats-{index + 1}")
                return moved and len(probe.acked) > acked_before + 10

            await until(new_leader_takes_appends, 90, "a new EVENTS leader taking appends", EVERY)
        lost = await probe.lost()
        print(f"{len(probe.acked)} events acknowledged across the kill of nats-{index + 1}")
        assert not lost, f"lost acknowledged events: {lost[:5]}"

        # Every segment that was listed before the kill and is still listed can be fetched,
        # and so can every segment listed now.
        base = playlist.rsplit("/", 1)[0]
        now = m3u8.loads((await http.get(playlist)).text)
        still = [u for u in listed if u in {s.uri for s in now.segments}]
        for uri in {*still, *(s.uri for s in now.segments if s.uri)}:
            got = await http.get(f"{base}/{uri}")
            assert got.status_code == 200, f"listed segment {uri} is gone: {got.status_code}"
        await until(lambda: every_tile_live(http, playlist), 60, "every tile live after", EVERY)

        # The control plane is killed and started again: it finds the workers the agents run
        # (no second copy of any) and the mosaic goes on.
        workers_before = {a.name: set(await workers_on(js, a.name)) for a in cluster.agents}
        seq_before = m3u8.loads((await http.get(playlist)).text).media_sequence
        await cluster.restart_control()

        async def resumed() -> bool:
            got = await http.get(playlist)
            return got.status_code == 200 and m3u8.loads(got.text).media_sequence > seq_before

        await until(resumed, 60, "the playlist advances after the control plane restarted", EVERY)
        await until(
            lambda: every_tile_live(http, playlist), 60, "every tile live after restart", EVERY
        )
        everything = [w for a in cluster.agents for w in await workers_on(js, a.name)]
        assert len(everything) == len(set(everything)), f"a worker runs twice: {everything}"
        after = {a.name: set(await workers_on(js, a.name)) for a in cluster.agents}
        assert after == workers_before, "the restarted control plane moved or restarted work"


async def test_a_review_session_whose_machine_dies_resumes_at_its_frame_on_the_other(
    cluster_with_media: tuple[LocalCluster, Path],
) -> None:
    """The choice for a JIT session whose worker died (issue #20): it restarts on another
    machine at its last position (the new worker reads its predecessor's last heartbeat), and
    a viewer that connects again gets that very frame."""
    cluster, media = cluster_with_media
    nc = await connect(cluster.nats.url_for("admin"), name="test-admin", forever=True)
    js = nc.jetstream()
    async with httpx.AsyncClient(base_url=cluster.gateway_url, timeout=20) as http:
        created = await http.post("/session", json={"inputs": [{"url": str(media)}]})
        assert created.status_code == 201, created.text
        session = created.json()
        wid = f"jit-{session['id']}"
        subject = f"hb.worker.{wid}"

        async def running_on() -> str:
            for agent in cluster.agents:
                if wid in await workers_on(js, agent.name):
                    return agent.name
            return ""

        async def runs() -> bool:
            return bool(await running_on())

        await until(runs, 60, "the session's worker runs", EVERY)
        got = await http.post(session["control_url"], json={"type": "seek", "frame": 123})
        assert got.status_code == 200 and got.json()["ok"], got.text

        async def reported(frame: int, since: float = 0.0) -> bool:
            msg = await js.get_last_msg("HEARTBEATS", subject)
            beat = decode_heartbeat(msg.data or b"", subject)
            assert isinstance(beat, WorkerHeartbeat)
            stats = beat.stats
            return isinstance(stats, JitStats) and stats.position == frame and beat.at > since

        await until(lambda: reported(123), 20, "the worker reports frame 123", EVERY)
        host = await running_on()
        victim = cluster.agent(host)
        other = next(a for a in cluster.agents if a is not victim).name
        killed = time.time()
        victim.kill()

        async def resumed() -> bool:
            # (the dead machine's last beat stays stored: ask the other one)
            return wid in await workers_on(js, other) and await reported(123, since=killed)

        await until(resumed, 60, f"the session resumed at frame 123 on {other}", EVERY)

        viewer = Viewer()
        try:
            await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
            answer = await http.post(
                session["whep_url"],
                content=viewer.pc.localDescription.sdp,
                headers={"content-type": "application/sdp"},
            )
            assert answer.status_code == 201, answer.text
            await viewer.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer.text, type="answer")
            )
            await viewer.ready()
            await viewer.until(lambda: bool(viewer.frames), 20, "a picture")
            assert viewer.numbers()[0] == 123, viewer.numbers()[:5]
        finally:
            await viewer.close()
            await nc.close()


@pytest_asyncio.fixture
async def cluster_with_media(tmp_path: Path) -> AsyncIterator[tuple[LocalCluster, Path]]:
    media = tmp_path / "media"
    media.mkdir()
    clip = media / "clip.mp4"
    make_video(clip, frames=250, rate=RATE_25)
    machines = LocalCluster(
        tmp_path / "cluster", agents=2, env={**ENV, "JIT_MEDIA_ROOTS": str(media)}
    )
    await machines.start()
    try:
        yield machines, clip
    finally:
        await machines.stop()
