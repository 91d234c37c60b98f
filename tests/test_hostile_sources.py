"""Hostile sources, over loopback (reliability acceptance points 1-5).

- Public policy (a deployment serving others): the "public" source server is 127.0.0.2, allowed
  by an explicit CIDR as an operator would allow a camera network; the canary is 127.0.0.1 on
  the same port, which the public policy refuses. Redirects, playlist entries, nested playlists
  and DNS answers that point at the canary must never reach it (0 hits).
- Bombs: each opened in a process of its own (``tests.hostile_probe``), as a grabber worker
  would, so its peak memory is measured alone: refused or failed within its time budget and
  under the memory cap.
- Silent and frozen sources, and a flapping one, against a real grabber: an error within the
  budget, the thread count back to baseline, one decode thread however often it flaps.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from nats.aio.client import Client

from pipeline.producers.grabber import Grabber
from pipeline.sources.opener import open_input
from pipeline.sources.policy import SourcePolicy, SourceRefused
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from tests.hostile import HostileServer, SilentServer
from tests.hostile_media import huge_header_h264, many_streams_mkv
from tests.test_grabber import grab, has_error, until

SOURCE_HOST = "127.0.0.2"
CANARY_HOST = "127.0.0.1"
PUBLIC = SourcePolicy.public([f"{SOURCE_HOST}/32"])
BUDGET = 2.0  # open and read timeouts of the probes, s
MEMORY_CAP_MB = 300.0  # peak RSS of a probe process (about 90 MiB when idle)


def vod_playlist(*uris: str) -> str:
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:0"]
    for uri in uris:
        lines += ["#EXTINF:1.0,", uri]
    return "\n".join(lines + ["#EXT-X-ENDLIST", ""])


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[HostileServer, HostileServer]]:
    """(the allowed source server on 127.0.0.2, the canary on 127.0.0.1, same port)."""
    with HostileServer(SOURCE_HOST) as source:
        with HostileServer(CANARY_HOST, port=source.port) as canary:
            clip = LiveHlsSource((200, 40, 40), width=64, height=36)
            now = time.time()
            for seq in range(2):
                source.add(f"/seg{seq}.ts", clip.encode_segment(seq, now + seq), "video/mp2t")
                canary.add(f"/seg{seq}.ts", clip.encode_segment(seq, now + seq), "video/mp2t")
            ctype = "application/vnd.apple.mpegurl"
            source.add("/good.m3u8", vod_playlist("seg0.ts", "seg1.ts"), ctype)
            canary.add("/good.m3u8", vod_playlist("seg0.ts", "seg1.ts"), ctype)
            canary_seg = canary.url("/canary/seg.ts")
            source.add("/evil-segment.m3u8", vod_playlist(canary_seg), ctype)
            source.add(
                "/evil-master.m3u8",
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\n"
                f"{canary.url('/canary/variant.m3u8')}\n",
                ctype,
            )
            source.add(
                "/redirect-segment.m3u8",
                vod_playlist(source.url(f"/redirect/1?to={canary_seg}")),
                ctype,
            )
            yield source, canary


def open_and_decode(url: str, policy: SourcePolicy, **kwargs: Any) -> int:
    with open_input(url, policy, open_timeout=BUDGET, read_timeout=BUDGET, **kwargs) as c:
        return sum(1 for _ in c.decode(video=0))


# -- 1, 2: the public policy -------------------------------------------------------------------


def test_the_allowed_source_plays(servers: tuple[HostileServer, HostileServer]) -> None:
    source, _ = servers
    assert open_and_decode(source.url("/good.m3u8"), PUBLIC) > 10


@pytest.mark.parametrize(
    "path",
    [
        "/redirect/0?to={canary}/canary/index.m3u8",  # a redirect of the source itself
        "/redirect-segment.m3u8",  # a playlist entry that redirects
        "/evil-segment.m3u8",  # a playlist entry on the canary
        "/evil-master.m3u8",  # a nested playlist on the canary
    ],
)
def test_redirects_and_playlist_entries_never_reach_the_canary(
    servers: tuple[HostileServer, HostileServer], path: str
) -> None:
    source, canary = servers
    url = source.url(path.format(canary=f"http://{CANARY_HOST}:{canary.port}"))
    with pytest.raises(SourceRefused, match="loopback address, refused"):
        open_and_decode(url, PUBLIC)
    assert canary.hits == 0


class Rebinding:
    """A resolver whose first answer is the allowed address and every later one the canary."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, host: str, port: Any, *args: Any) -> list[tuple[Any, ...]]:
        with self.lock:
            self.calls += 1
            ip = SOURCE_HOST if self.calls == 1 else CANARY_HOST
        return [(2, 1, 6, "", (ip, port))]


def test_dns_rebinding_never_reaches_the_canary(
    servers: tuple[HostileServer, HostileServer],
) -> None:
    source, canary = servers
    resolver = Rebinding()
    url = f"http://camera.test:{source.port}/good.m3u8"
    # The playlist comes from the checked address; its segments, on the same name, resolve
    # to the canary the next time, which is refused before any connection.
    with pytest.raises(SourceRefused, match=r"camera.test \(127.0.0.1\) is a loopback address"):
        open_and_decode(url, PUBLIC, resolve=resolver)
    assert resolver.calls >= 2
    assert canary.hits == 0


def test_a_name_resolving_to_the_canary_is_refused(
    servers: tuple[HostileServer, HostileServer],
) -> None:
    _, canary = servers

    def to_canary(host: str, port: Any, *args: Any) -> list[tuple[Any, ...]]:
        return [(2, 1, 6, "", (CANARY_HOST, port))]

    with pytest.raises(SourceRefused, match="loopback address"):
        url = f"http://canary.test:{canary.port}/canary/x.m3u8"
        open_and_decode(url, PUBLIC, resolve=to_canary)
    assert canary.hits == 0


# -- 3: bombs, each in a process of its own ------------------------------------------------------


async def probe(url: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.hostile_probe", url, "--timeout", str(BUDGET),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def bombs() -> Iterator[HostileServer]:
    with HostileServer() as server:
        server.add("/huge.h264", huge_header_h264(16384))
        server.add("/big.h264", huge_header_h264(8192))
        server.add("/many.mkv", many_streams_mkv(1000), "video/x-matroska")
        yield server


@pytest.mark.parametrize(
    ("path", "outcomes", "says", "budget"),
    [
        # FFmpeg refuses a 16384x16384 SPS by itself: no picture size, nothing decoded.
        ("/huge.h264", {"unavailable", "refused"}, "", BUDGET + 2),
        # 8192x8192 passes FFmpeg's own check; ours (4096x2160) refuses it.
        ("/big.h264", {"refused"}, "pixel limit", BUDGET + 2),
        ("/many.mkv", {"refused"}, "1000 streams", BUDGET + 2),
        ("/endless.ts", {"unavailable"}, "", BUDGET + 3),
        ("/endless.m3u8", {"refused"}, "playlist larger than", BUDGET + 2),
        ("/trickle.m3u8", {"unavailable"}, "stalled", BUDGET + 2),
    ],
)
async def test_bombs_are_refused_or_cut_within_budget_and_memory(
    bombs: HostileServer, path: str, outcomes: set[str], says: str, budget: float
) -> None:
    result = await probe(bombs.url(path))
    assert result["outcome"] in outcomes, result
    assert says in result["error"], result
    assert result["frames"] == 0, result
    assert result["seconds"] <= budget, result
    assert result["peak_mb"] <= MEMORY_CAP_MB, result


# -- 4, 5: silent, frozen and flapping sources against a real grabber ------------------------


def grabber_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("grabber-"))


@pytest.fixture
def frozen() -> Iterator[HostileServer]:
    """A live playlist (no ENDLIST) of two real segments that never advances."""
    with HostileServer() as server:
        clip = LiveHlsSource((40, 200, 40), width=64, height=36)
        now = time.time()
        for seq in range(2):
            server.add(f"/frozen/{seq}.ts", clip.encode_segment(seq, now + seq), "video/mp2t")
        server.add(
            "/frozen/index.m3u8",
            vod_playlist("0.ts", "1.ts").replace("#EXT-X-ENDLIST\n", ""),
            "application/vnd.apple.mpegurl",
        )
        yield server


@pytest.mark.parametrize("kind", ["silent", "frozen"])
async def test_silent_and_frozen_sources_fail_in_time_and_leave_nothing(
    nc: Client, frozen: HostileServer, kind: str
) -> None:
    baseline_threads = threading.active_count()
    made: list[Grabber] = []
    with SilentServer() as silent:
        url = silent.url("/live.m3u8") if kind == "silent" else frozen.url("/frozen/index.m3u8")
        try:
            started = time.monotonic()
            grabber, seen = await grab(
                made, nc, url, 64, 36, open_timeout=BUDGET, read_timeout=BUDGET
            )
            await until(lambda: has_error(seen), BUDGET * 2 + 3, f"the {kind} source's error")
            took = time.monotonic() - started
            reason = seen.stats.last_error
            # frozen: two segments of frames (2 s), then no data for BUDGET s.
            assert took <= BUDGET + (2.0 if kind == "frozen" else 0.0) + 2.5, (took, reason)
            expected = "no answer" if kind == "silent" else "stopped advancing"
            assert expected in reason, reason
            assert grabber_threads() == 1, "one decode thread, whatever happens"
            if kind == "frozen":
                # Reconnects replay the same two segments: never shown again as live.
                frames = seen.frame_count()
                await until(lambda: grabber.decoder.reconnects >= 2, BUDGET * 3 + 3, "reconnects")
                assert seen.frame_count() == frames and grabber.decoder.stale > 0
            if kind == "frozen":
                # Reconnects replay the same two segments: never shown again as live.
                frames = seen.frame_count()
                await until(lambda: grabber.decoder.reconnects >= 2, BUDGET * 3 + 3, "reconnects")
                assert seen.frame_count() == frames and grabber.decoder.stale > 0
        finally:
            for g in made:
                await g.stop()
    assert grabber_threads() == 0
    assert threading.active_count() <= baseline_threads


def zombies() -> list[int]:
    """Our children that ended and were not reaped."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(int(pid))
    return found


async def test_a_source_flapping_50_times_keeps_one_grabber_and_a_bounded_rate(
    nc: Client,
) -> None:
    made: list[Grabber] = []
    colour = (40, 40, 200)
    with SourceServer({"flap": LiveHlsSource(colour, width=64, height=36)}) as server:
        try:
            grabber, seen = await grab(made, nc, server.url("flap"), 64, 36)
            await until(lambda: seen.frame_count() > 5, 10, "first frames")
            started = time.monotonic()
            threads_seen = set()
            for _ in range(50):
                server.stop_source("flap")
                await asyncio.sleep(0.1)
                server.start_source("flap")
                await asyncio.sleep(0.1)
                threads_seen.add(grabber_threads())
            elapsed = time.monotonic() - started
            frames_after_flaps = seen.frame_count()
            await until(
                lambda: seen.frame_count() > frames_after_flaps + 5, 15, "frames after the flaps"
            )
            reconnects = grabber.decoder.reconnects
        finally:
            for g in made:
                await g.stop()
    assert threads_seen == {1}, "one decode thread throughout"
    assert zombies() == []
    # Backoff (FAST: 0.1 s doubling to 0.4 s, jittered to [d/2, d]): at most one attempt per
    # 50 ms; a retry loop without backoff would reconnect hundreds of times.
    assert reconnects <= elapsed / 0.05 + 2, (reconnects, elapsed)
    assert grabber_threads() == 0


async def test_a_hung_decode_thread_is_reported_to_the_watchdog(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every FFmpeg call and read has a timeout; a hang beyond them all (simulated here by an
    open that never returns: the one injected fault, in our own code) reaches ``on_stuck``,
    which in a worker process exits it so that its provider starts it again."""
    release = threading.Event()

    def hangs(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        raise SourceRefused("http://hung.test/", "released")

    monkeypatch.setattr("pipeline.producers.decode.open_input", hangs)
    stuck: list[str] = []
    made: list[Grabber] = []
    try:
        grabber, _ = await grab(made, nc, "http://hung.test/live.m3u8", 64, 36)
        grabber.on_stuck = stuck.append
        grabber.stuck_after = 1.5
        await until(lambda: bool(stuck), 6, "the watchdog's call")
        assert "stuck" in stuck[0]
        await asyncio.sleep(1.5)
        assert len(stuck) == 1, "once per hang"
    finally:
        release.set()
        for g in made:
            await g.stop()
    assert grabber_threads() == 0
