"""Mosaic faults on the CMAF output (Low-Latency HLS, the default), with real processes on a
real nats-server and a low-latency player that decodes every part it is offered.

- The stitcher worker and nats-server killed together (``kill -9``) mid-segment, the server
  started again on the same port and store (its memory stream ``PARTS`` and bucket
  ``manifests`` are gone, provisioned again empty): every part and segment a served playlist
  named is served whole, but for those of the old run whose fetch raced the kill; numbers never
  go back; the new run follows a discontinuity and the mosaic plays again.
- The stitcher alone killed: the new one goes on after a discontinuity with the same init
  section, the old run's parts stay fetchable, and numbering continues.

The MPEG-TS version of the first is in tests/test_faults_mosaic.py.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx
import pytest
from nats.js import JetStreamContext

from pipeline.cli.up import Stack
from pipeline.config.settings import load
from pipeline.nats import subjects
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import PARTS
from pipeline.segments.uris import INIT, InitUri, PartRef, parse_uri, part_uri, segment_uri
from pipeline.sources.synthetic import SourceServer
from tests.test_faults_mosaic import centre_colour, own_nats, two_sources
from tests.test_llhls import Listed, Text, read
from tests.test_mosaic_e2e import _config, near, newest_picture, until

__all__ = ["two_sources"]  # a fixture, imported to be used here

FPS = 10
COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}
RETRY_PAUSE = 0.2
"""Seconds the player waits after a failed reload before reloading without directives."""


# --- a low-latency player ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reload:
    """A playlist the player was served, as :func:`tests.test_llhls.read` reads it (which
    checks every rule one playlist can break; the ``m3u8`` library loses the EXT-X-MAP and
    EXT-X-DISCONTINUITY of the segment being built, so it is not used here)."""

    answered: float
    """Monotonic time the answer came."""
    asked: PartRef | None
    text: Text

    @property
    def media_sequence(self) -> int:
        return self.text.media_sequence

    @property
    def segments(self) -> list[Listed]:
        return self.text.segments

    @property
    def newest(self) -> PartRef | None:
        """The newest part listed."""
        return self.text.newest

    @property
    def next_part(self) -> PartRef:
        """The part after the newest (the preload hint's, by the rules), which the next
        blocking reload asks for, as hls.js does."""
        hint = parse_uri(self.text.hint)
        assert isinstance(hint, PartRef)
        return hint


@dataclass
class Fetch:
    """What the gateway answered for one init section, part or segment."""

    sent: float
    answered: float
    status: int
    """0: no HTTP answer."""
    frames: int = 0
    """Pictures decoded from it (after its init section and its segment's earlier parts)."""
    expected: int = 0
    """Pictures the playlist's durations promise."""
    error: str = ""

    @property
    def whole(self) -> bool:
        return self.status == 200 and not self.error and self.frames == self.expected


def _pictures(data: bytes) -> int:
    with av.open(io.BytesIO(data), "r", format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


@dataclass
class LowLatencyPlayer:
    """Follows a LL-HLS playlist as hls.js does: each reload is a blocking one for the part
    after the newest it has seen; a 503 or an error is followed, after a short pause, by a
    reload without directives. It fetches every init section, part and segment the first time
    a playlist names it, and decodes each after its init section (a part after the earlier
    parts of its segment, as a player holds them)."""

    http: httpx.AsyncClient
    url: str
    fps: int = FPS
    reloads: list[Reload] = field(default_factory=list)
    refused: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, what) of every reload not answered with a playlist."""
    fetches: dict[str, Fetch] = field(default_factory=dict)
    bad_listings: list[str] = field(default_factory=list)
    inits: dict[str, bytes] = field(default_factory=dict)
    parts: dict[str, bytes] = field(default_factory=dict)

    async def run(self) -> None:
        asked: PartRef | None = None
        while True:
            reload = await self._reload(asked)
            if reload is None:
                asked = None
                await asyncio.sleep(RETRY_PAUSE)
                continue
            self.reloads.append(reload)
            await self._fetch_new(reload)
            asked = reload.next_part

    @property
    def newest(self) -> PartRef:
        """The newest part any playlist named ((-1, -1): none yet)."""
        return max((r.newest for r in self.reloads if r.newest), default=PartRef(-1, -1))

    def media(self, name: str) -> str:
        return f"{self.url.rsplit('/', 1)[0]}/{name}"

    async def _reload(self, asked: PartRef | None) -> Reload | None:
        params = {} if asked is None else {"_HLS_msn": asked.msn, "_HLS_part": asked.part}
        try:
            got = await self.http.get(self.url, params=params)
        except httpx.HTTPError as exc:
            self.refused.append((time.monotonic(), repr(exc)))
            return None
        if got.status_code != 200:
            self.refused.append((time.monotonic(), f"HTTP {got.status_code}"))
            return None
        try:
            text = read(got.text)
        except (AssertionError, KeyError, ValueError) as exc:
            self.bad_listings.append(f"{exc!r} in\n{got.text}")
            return None
        return Reload(time.monotonic(), asked, text)

    async def _fetch_new(self, reload: Reload) -> None:
        for segment in reload.segments:
            if segment.init is not None and segment.init not in self.fetches:
                self.fetches[segment.init] = await self._fetch_init(segment.init)
            for i, (uri, _, _) in enumerate(segment.parts):
                if uri not in self.fetches:
                    self.fetches[uri] = await self._fetch_part(segment, i)
            if segment.uri is not None and segment.uri not in self.fetches:
                self.fetches[segment.uri] = await self._fetch_segment(segment)

    async def _get(self, name: str) -> tuple[Fetch, bytes]:
        sent = time.monotonic()
        try:
            got = await self.http.get(self.media(name))
        except httpx.HTTPError as exc:
            return Fetch(sent, time.monotonic(), 0, error=repr(exc)), b""
        return Fetch(sent, time.monotonic(), got.status_code), got.content

    async def _decoded(self, fetch: Fetch, init: str | None, data: bytes, expected: int) -> Fetch:
        fetch.expected = expected
        if fetch.status != 200:
            return fetch
        head = self.inits.get(init or "")
        if head is None:
            fetch.error = f"no init section {init} to decode it after"
            return fetch
        try:
            fetch.frames = await asyncio.to_thread(_pictures, head + data)
        except av.error.FFmpegError as exc:
            fetch.error = repr(exc)
        return fetch

    async def _fetch_init(self, name: str) -> Fetch:
        fetch, data = await self._get(name)
        if fetch.status == 200:
            if data[4:8] != b"ftyp":
                fetch.error = f"not an init section: {data[:16]!r}"
            else:
                self.inits[name] = data
        return fetch

    async def _fetch_part(self, segment: Listed, index: int) -> Fetch:
        uri = segment.parts[index][0]
        fetch, data = await self._get(uri)
        if fetch.status == 200:
            self.parts[uri] = data
        earlier = [self.parts.get(u) for u, _, _ in segment.parts[:index]]
        if fetch.status == 200 and None in earlier:
            fetch.error = "an earlier part of its segment is missing"
            return fetch
        chain = b"".join(p for p in earlier if p is not None) + data
        expected = sum(round(d * self.fps) for _, d, _ in segment.parts[: index + 1])
        return await self._decoded(fetch, segment.init, chain, expected)

    async def _fetch_segment(self, segment: Listed) -> Fetch:
        assert segment.uri is not None
        fetch, data = await self._get(segment.uri)
        fetch = await self._decoded(fetch, segment.init, data, round(segment.duration * self.fps))
        names = [part_uri(segment.msn, i) for i in range(len(segment.parts))]
        held = [self.parts.get(n) for n in names]
        if fetch.whole and held and None not in held and data != b"".join(filter(None, held)):
            fetch.error = "not its parts joined"
        return fetch


def msn_of(name: str) -> float:
    """The segment a part or segment name belongs to (infinity for an init section: it comes
    with the playlist, not from NATS, and is never excused)."""
    uri = parse_uri(name)
    return math.inf if uri is None or isinstance(uri, InitUri) else uri.msn


def went_back(reloads: list[Reload]) -> list[str]:
    """Where, from one served playlist to the next, the media sequence, the discontinuity
    sequence or the newest part went back, or a segment's discontinuity sequence number
    changed (RFC 8216bis §6.2.2)."""
    back = []
    for a, b in zip(reloads, reloads[1:], strict=False):
        if b.media_sequence < a.media_sequence:
            back.append(f"media sequence {a.media_sequence} -> {b.media_sequence}")
        if b.text.discontinuity_sequence < a.text.discontinuity_sequence:
            back.append(f"discontinuity sequence {a.text.discontinuity_sequence} -> "
                        f"{b.text.discontinuity_sequence}")  # fmt: skip
    newest: PartRef | None = None
    dsn: dict[int, int] = {}
    for r in reloads:
        if r.newest is not None:
            if newest is not None and r.newest < newest:
                back.append(f"newest part {newest} -> {r.newest}")
            newest = r.newest
        for i, s in enumerate(r.segments):
            if dsn.setdefault(s.msn, r.text.dsn(i)) != r.text.dsn(i):
                back.append(f"segment {s.msn} discontinuity sequence {dsn[s.msn]} -> "
                            f"{r.text.dsn(i)}")  # fmt: skip
    return back


def new_run_first(reloads: list[Reload], after: int) -> int:
    """The first segment number above ``after`` any playlist listed."""
    return min(s.msn for r in reloads for s in r.segments if s.msn > after)


def first_listed(reloads: list[Reload], msn: int) -> float:
    """Monotonic time the player was first served a playlist listing segment ``msn``."""
    return min(r.answered for r in reloads if any(s.msn == msn for s in r.segments))


def follows_discontinuity(reloads: list[Reload], msn: int) -> list[bool]:
    """Whether each playlist listing segment ``msn`` marks it with EXT-X-DISCONTINUITY."""
    return [s.discontinuity for r in reloads for s in r.segments if s.msn == msn]


async def created_mosaic(http: httpx.AsyncClient, sources: SourceServer) -> str:
    pattern = f"http://127.0.0.1:{sources.port}/{{red,blue}}[n]/index.m3u8"
    created = await http.get(
        "/create", params={"urls": pattern, "size": "640x360", "fps": str(FPS)}
    )
    assert created.status_code == 302
    return str(created.headers["location"])


def plays(http: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[bool]]:
    """A check that the newest segment shows both tiles' colours."""

    async def check() -> bool:
        _, picture = await newest_picture(http, url)
        return picture.size > 0 and all(
            near(centre_colour(picture, i, 2), rgb) for i, rgb in enumerate(COLOURS.values())
        )

    return check


async def mid_segment(player: LowLatencyPlayer) -> PartRef:
    """Wait until the player has followed a few parts, then seen a new segment begin and its
    third part listed; that part."""

    async def following() -> bool:
        return sum(r.newest is not None for r in player.reloads) >= 5

    await until(following, 10, "the player to follow parts", 0.05)
    before = player.newest.msn

    async def third_part() -> bool:
        return player.newest.msn > before and player.newest.part >= 2

    await until(third_part, 5, "the third part of a new segment", 0.02)
    return player.newest


# --- kill -9 of stitcher and nats-server -----------------------------------------------------


@pytest.mark.timeout(90)
async def test_kill_9_of_stitcher_and_nats_server_never_lists_a_missing_part(
    two_sources: SourceServer, tmp_path: Path
) -> None:
    """The whole stack on a nats-server of its own; a low-latency player follows the playlist
    through the gateway. The stitcher worker and nats-server are killed together in the middle
    of a segment, and the server is started again (same port and store)."""
    async with own_nats(tmp_path / "nats") as server:
        # The outage must not look like the viewers left: idle after 60 s, not 4.
        stack = Stack(load(env=_config(server, tmp_path / "data", TESSERA_IDLE_TIMEOUT="60")))
        await stack.start()
        player_task: asyncio.Task[None] | None = None
        try:
            assert stack.gateway is not None and stack.provider is not None
            provider = stack.provider
            async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=10) as http:
                url = await created_mosaic(http, two_sources)
                playing = plays(http, url)
                await until(playing, 30, "both tiles playing", 0.2)
                player = LowLatencyPlayer(http, url)
                player_task = asyncio.create_task(player.run(), name="low-latency player")
                newest_before = await mid_segment(player)
                stitchers = [w for w, r in provider.running().items() if r.spec.kind == "stitcher"]
                assert len(stitchers) == 1
                stitcher_pid = provider.pid(stitchers[0])
                nats_pid = server.pid
                assert stitcher_pid is not None and nats_pid is not None
                grabbers = {w: provider.pid(w) for w in provider.running() if w not in stitchers}
                # Both at once: the new stitcher cannot start before the server is back, so
                # it finds the memory KV `manifests` (its previous playlist) gone.
                os.kill(stitcher_pid, signal.SIGKILL)
                os.kill(nats_pid, signal.SIGKILL)
                killed = time.monotonic()
                await server.stop()  # reaps the killed process
                await server.start()  # same port, same store
                restarted = time.monotonic()

                async def new_run_listed() -> bool:
                    return player.newest.msn > newest_before.msn

                await until(new_run_listed, 30, "the new run in the player's playlist", 0.05)

                await until(playing, 30, "the mosaic to play again after the restart", 0.2)
                recovered_at = time.monotonic()
                new_stitcher = provider.pid(stitchers[0])

                # Past the worker heartbeat timeout (10 s) after the restart: the controller,
                # blind while NATS was away, must not have taken that for dead workers.
                async def past_heartbeat_timeout() -> bool:
                    return time.monotonic() > restarted + 12

                await until(past_heartbeat_timeout, 15, "the heartbeat timeout to pass", 0.5)
                assert {w: provider.pid(w) for w in grabbers} == grabbers, "grabbers restarted"
                assert provider.pid(stitchers[0]) == new_stitcher, "the new stitcher restarted"
                player_task.cancel()
                await asyncio.gather(player_task, return_exceptions=True)
                player_task = None
        finally:
            if player_task is not None:
                player_task.cancel()
                await asyncio.gather(player_task, return_exceptions=True)
            await stack.stop()

    reloads = player.reloads
    first_new = new_run_first(reloads, newest_before.msn)
    new_run_at = first_listed(reloads, first_new)
    old_named = {s.msn for r in reloads for s in r.segments if s.msn < first_new}
    # What may fail: a part or segment of the old run (the gateway cannot learn of one after
    # the kill, so every playlist naming it was made before) whose fetch the kill raced: not
    # answered before it. Its part may have gone with the server's memory store, or NATS did not
    # answer: 404 or 503, never a broken 200. Everything else was served whole.
    raced = {n: f for n, f in player.fetches.items()
             if msn_of(n) < first_new and f.answered >= killed}  # fmt: skip
    bad = {n: f for n, f in player.fetches.items() if not f.whole and n not in raced}
    raced_bad = {n: f for n, f in raced.items() if not f.whole and f.status not in (404, 503)}
    stale = [r.answered - restarted for r in reloads if r.answered > restarted
             and any(s.msn < first_new for s in r.segments)]  # fmt: skip
    refusals = [what for _, what in player.refused]
    parts = [n for n in player.fetches if isinstance(parse_uri(n), PartRef)]
    print(
        f"\nrestart took {restarted - killed:.2f} s; the new run listed "
        f"{new_run_at - killed:.1f} s and played {recovered_at - killed:.1f} s after the kill; "
        f"old segments listed until {max(stale, default=0):.2f} s after the restart; "
        f"{len(reloads)} playlists ({len(refusals)} refused: {sorted(set(refusals))}), "
        f"{len(parts)} parts and {len(player.fetches) - len(parts)} segments/inits fetched; "
        f"newest before {newest_before}, new run from {first_new}; raced the kill: "
        f"{ {n: f.status for n, f in raced.items()} }; media sequences "
        f"{sorted({r.media_sequence for r in reloads})}"
    )
    assert not player.bad_listings, player.bad_listings
    assert not bad, f"named but not served whole: {bad}"
    assert not raced_bad, f"served broken: {raced_bad}"
    # Reloads are answered with a playlist, or 503 when what they wait for did not come in time
    # (the stitcher is restarting): never 400 or 404, and the gateway was always there.
    assert all(what == "HTTP 503" for what in refusals), refusals
    # Numbers never go back over both kills, and the new run begins above every number used
    # before (a part name never names other media).
    assert not went_back(reloads), went_back(reloads)
    assert first_new > max(old_named)
    # The new run is a new timeline for the player: it follows a discontinuity.
    marked = follows_discontinuity(reloads, first_new)
    assert all(marked), f"segment {first_new}, the new run's first, lacks EXT-X-DISCONTINUITY"
    # The old parts went with the server's memory store: they leave the playlist as soon as the
    # gateway sees the new bucket (it checks every second).
    assert max(stale, default=0) < 3.0
    assert recovered_at - killed < 15


# --- kill -9 of the stitcher alone -----------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_stitcher_killed_alone_goes_on_after_a_discontinuity_with_the_same_init(
    nats_server: EmbeddedNats, js: JetStreamContext, two_sources: SourceServer, tmp_path: Path
) -> None:
    """The stitcher worker killed mid-segment while a low-latency player follows; nats-server
    stays up, and the controller starts another."""
    stack = Stack(load(env=_config(nats_server, tmp_path, TESSERA_IDLE_TIMEOUT="60")))
    await stack.start()
    player_task: asyncio.Task[None] | None = None
    try:
        assert stack.gateway is not None and stack.provider is not None
        provider = stack.provider
        async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=10) as http:
            url = await created_mosaic(http, two_sources)
            fp = url.split("/")[2]
            playing = plays(http, url)
            await until(playing, 30, "both tiles playing", 0.2)
            player = LowLatencyPlayer(http, url)
            player_task = asyncio.create_task(player.run(), name="low-latency player")
            newest_before = await mid_segment(player)
            init_before = player.inits[INIT]
            (stitcher,) = [w for w, r in provider.running().items() if r.spec.kind == "stitcher"]
            old_pid = provider.pid(stitcher)
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)
            killed = time.monotonic()

            async def two_new_segments() -> bool:
                return player.newest.msn > newest_before.msn + 2

            await until(two_new_segments, 20, "two segments of the new run", 0.05)
            assert provider.pid(stitcher) not in (None, old_pid)
            await until(playing, 10, "the new run to play", 0.2)
            # The old run's parts are still in stream PARTS, and served: all that the newest
            # playlist lists of it, and the old run's last (cut short) segment whole.
            reloads = list(player.reloads)
            first_new = new_run_first(reloads, newest_before.msn)
            last = reloads[-1]
            old = [s for s in last.segments if s.msn < first_new]
            assert old, "the new run's playlist lists the old run's segments"
            for s in old:
                for uri, _, _ in s.parts:
                    stored = await js.get_last_msg(PARTS.name, subjects.part(fp, uri), direct=True)
                    assert stored.data == player.parts[uri], uri
            again = await http.get(player.media(segment_uri(first_new - 1)))
            assert again.status_code == 200
            init_after = await http.get(player.media(INIT))
            player_task.cancel()
            await asyncio.gather(player_task, return_exceptions=True)
            player_task = None
    finally:
        if player_task is not None:
            player_task.cancel()
            await asyncio.gather(player_task, return_exceptions=True)
        await stack.stop()

    new_run_at = first_listed(reloads, first_new)
    # The last segment the old run began, and the parts it had: the newest the player saw
    # before the new run (it is held for the next part, so it sees every one listed); the new
    # run lists that segment complete with those parts.
    before = [r for r in reloads if r.answered < new_run_at]
    old_last = max(s.msn for r in before for s in r.segments)
    had = max(len(s.parts) for r in before for s in r.segments if s.msn == old_last)
    cut = [len(s.parts) for r in reloads for s in r.segments
           if s.msn == old_last and s.uri is not None and s.parts]  # fmt: skip
    refusals = [what for _, what in player.refused]
    parts = [n for n in player.fetches if isinstance(parse_uri(n), PartRef)]
    print(
        f"\nthe new run listed {new_run_at - killed:.1f} s after the kill; newest before "
        f"{newest_before}, old run's last segment {old_last} "
        f"({had} parts, then listed complete with {sorted(set(cut))}), new run from "
        f"{first_new}; "
        f"{len(reloads)} playlists ({len(refusals)} refused: {sorted(set(refusals))}), "
        f"{len(parts)} parts and {len(player.fetches) - len(parts)} segments/inits fetched; "
        f"media sequences {sorted({r.media_sequence for r in reloads})}"
    )
    assert not player.bad_listings, player.bad_listings
    # Everything named was served whole: no 404, nothing the kill could have lost.
    bad = {n: f for n, f in player.fetches.items() if not f.whole}
    assert not bad, f"named but not served whole: {bad}"
    assert all(what == "HTTP 503" for what in refusals), refusals
    assert not went_back(reloads), went_back(reloads)
    # Numbering continues: the new run's first segment follows the last one the old run began,
    # which the new playlist lists complete with the parts it had, and after a discontinuity.
    assert old_last >= newest_before.msn and first_new == old_last + 1
    assert cut and set(cut) == {had}
    assert all(follows_discontinuity(reloads, first_new))
    assert not any(s.discontinuity for r in reloads for s in r.segments if s.msn > first_new)
    # The same init section, under the same name, for both runs.
    assert {s.init for r in reloads for s in r.segments} == {INIT}
    assert init_after.status_code == 200 and init_after.content == init_before
