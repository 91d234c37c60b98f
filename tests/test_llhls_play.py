"""A CMAF mosaic end to end: a real stitcher (Low-Latency HLS output) fed solid-colour tiles
over a real nats-server, and the real gateway over HTTP. The playlist is read with ``m3u8``,
init section, parts and segments are decoded with PyAV and the tiles' pixels checked, and a
player's blocking reloads are followed from part to part across segment boundaries.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import av
import httpx
import m3u8
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.consumers.canvas import Planes, planes_of
from pipeline.segments import manifest
from tests.gatewayhttp import gateway_http
from tests.test_stitcher import (
    FPS,
    NAMES,
    WAIT,
    FramePublisher,
    H,
    W,
    assert_all_colours,
    make_stitcher,
    running,
)


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_http(nc, js, tmp_path) as client:
        yield client


def decode(data: bytes) -> list[Planes]:
    """Every picture in an init section followed by parts or segments (fMP4)."""
    with av.open(io.BytesIO(data), "r", format="mp4") as container:
        return [planes_of(f.to_ndarray().tobytes(), W, H) for f in container.decode(video=0)]


async def playlist(http: httpx.AsyncClient, fp: str, **query: int) -> m3u8.M3U8:
    got = await http.get(f"/play/{fp}/index.m3u8",
                         params={f"_HLS_{k}": v for k, v in query.items()})  # fmt: skip
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/vnd.apple.mpegurl"
    return m3u8.loads(got.text)


async def first_playlist(http: httpx.AsyncClient, fp: str) -> m3u8.M3U8:
    """The playlist once it lists a complete segment."""
    async with asyncio.timeout(WAIT):
        while True:
            # 404 until the stitcher's first manifest: the mosaic is not recorded in this test.
            got = await http.get(f"/play/{fp}/index.m3u8")
            if got.status_code == 200:
                parsed = m3u8.loads(got.text)
                if any(s.uri for s in parsed.segments):
                    return parsed
            await asyncio.sleep(0.1)


def last_part(parsed: m3u8.M3U8) -> tuple[int, int]:
    """(msn, part) of the newest part listed."""
    msn = (parsed.media_sequence or 0) + len(parsed.segments) - 1
    return msn, len(parsed.segments[-1].parts) - 1


async def test_a_cmaf_mosaic_plays_part_by_part_and_segment_by_segment(
    nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    fp = "c" * 32
    stitcher = make_stitcher(nc, js, fp, hls_format="cmaf")
    async with FramePublisher(nc, NAMES), running(stitcher):
        parsed = await first_playlist(http, fp)
        # The low-latency tags, as a player reads them.
        assert parsed.version == 6 and parsed.is_independent_segments
        assert parsed.server_control.can_block_reload == "YES"
        assert parsed.part_inf.part_target == pytest.approx(0.2)
        assert parsed.server_control.part_hold_back == pytest.approx(0.6)
        assert parsed.segment_map[0].uri == "init.mp4"
        assert parsed.preload_hint.hint_type == "PART"

        # Blocking reloads from part to part: each answer lists the part asked for, and the
        # hint always names the part after the newest one.
        msn, part = last_part(parsed)
        crossed = False
        for _ in range(12):
            want = (msn, part + 1)
            got = await playlist(http, fp, msn=want[0], part=want[1])
            newest = last_part(got)
            if newest[0] > msn:
                crossed = True
                want = (newest[0], 0) if want[1] >= 5 else want
            assert newest >= want, (newest, want)
            hint_msn, hint_part = newest if len(got.segments[-1].parts) < 5 else (newest[0] + 1, -1)
            assert got.preload_hint.uri == f"{hint_msn}.{hint_part + 1}.m4s"
            msn, part = newest
        assert crossed, "12 parts of 0.2 s cross a segment boundary"

        # The init section and the parts of a complete segment decode to the tiles.
        listed = [s for s in got.segments if s.uri]
        segment = listed[-1]
        init = (await http.get(f"/play/{fp}/init.mp4")).content
        parts = []
        for p in segment.parts:
            response = await http.get(f"/play/{fp}/{p.uri}")
            assert response.status_code == 200
            assert response.headers["content-type"] == "video/mp4"
            assert "immutable" in response.headers["cache-control"]
            parts.append(response.content)
        assert segment.parts[0].independent == "YES"
        pictures = decode(init + b"".join(parts))
        assert len(pictures) == FPS
        for picture in (pictures[0], pictures[-1]):
            assert_all_colours(picture)
        # The whole segment is its parts joined; one part alone plays after the init.
        whole = await http.get(f"/play/{fp}/{segment.uri}")
        assert whole.content == b"".join(parts)
        assert len(decode(init + parts[0])) == 5

        # The part the preload hint names is held until it exists, then served.
        hinted = got.preload_hint.uri
        early = await http.get(f"/play/{fp}/{hinted}")
        assert early.status_code == 200 and early.content.find(b"moof") == 4

        # The KV value is the manifest the gateway serves from.
        entry = await (await js.key_value("manifests")).get(fp)
        assert entry.value and manifest.is_cmaf(entry.value)


async def test_blocking_reload_answers_bad_requests_and_gives_up_in_time(
    nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    fp = "d" * 32
    stitcher = make_stitcher(nc, js, fp, hls_format="cmaf")
    async with FramePublisher(nc, NAMES):
        async with running(stitcher):
            parsed = await first_playlist(http, fp)
            msn, _ = last_part(parsed)
            for query, reason in (
                ({"_HLS_part": "1"}, "_HLS_part without _HLS_msn"),
                ({"_HLS_msn": "x"}, "not a decimal integer"),
                # Far enough that the stitcher cannot catch up while the test runs.
                ({"_HLS_msn": str(msn + 50)}, "more than 2 past"),
                ({"_HLS_msn": str(msn + 2), "_HLS_part": "60"}, "parts past the last one"),
            ):
                got = await http.get(f"/play/{fp}/index.m3u8", params=query)
                assert got.status_code == 400 and reason in got.json()["error"], got.text
            # Many players held for the same next part are answered together.
            answers = await asyncio.gather(*(playlist(http, fp, msn=msn + 1) for _ in range(20)))
            assert all(last_part(a)[0] >= msn + 1 for a in answers)
        # The stitcher is gone: a request for what will not come is held 3 target durations,
        # then answered 503 with a reason.
        parsed = await playlist(http, fp)
        msn, part = last_part(parsed)
        got = await http.get(f"/play/{fp}/index.m3u8",
                             params={"_HLS_msn": msn, "_HLS_part": part + 2})  # fmt: skip
        assert got.status_code == 503 and "did not come" in got.json()["error"]
        assert got.headers["retry-after"] == "1"
        for name in ("9.m4s", "99999.0.m4s", "init-5.mp4", "1.2.3.m4s", "00.m4s"):
            assert (await http.get(f"/play/{fp}/{name}")).status_code == 404, name


async def test_a_restarted_stitcher_goes_on_after_a_discontinuity(
    nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    fp = "e" * 32
    async with FramePublisher(nc, NAMES):
        async with running(make_stitcher(nc, js, fp, hls_format="cmaf")):
            before = await first_playlist(http, fp)
        last_msn, _ = last_part(await playlist(http, fp))
        async with running(make_stitcher(nc, js, fp, hls_format="cmaf")):
            got = await playlist(http, fp, msn=last_msn + 2)
            numbers = [(got.media_sequence or 0) + i for i in range(len(got.segments))]
            first_new = numbers.index(last_msn + 1)
            assert got.segments[first_new].discontinuity
            assert not any(s.discontinuity for s in got.segments[first_new + 1 :])
            assert numbers[0] >= (before.media_sequence or 0)
            # Same settings, same init bytes: the same init name, and the new run plays after it.
            assert {s.init_section.uri for s in got.segments} == {"init.mp4"}
            init = (await http.get(f"/play/{fp}/init.mp4")).content
            seg = (await http.get(f"/play/{fp}/{last_msn + 1}.m4s")).content
            pictures = decode(init + seg)
            assert len(pictures) == FPS
            assert_all_colours(pictures[-1])
