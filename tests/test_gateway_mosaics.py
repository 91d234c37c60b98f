"""/create and /play over real HTTP (uvicorn on loopback) against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import m3u8
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import ViewerHeartbeat
from pipeline.nats.eventlog import matching_count
from pipeline.nats.topology import HEARTBEATS
from tests.gatewayhttp import gateway_http


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_http(nc, js, tmp_path, TESSERA_MAX_TILES="16") as client:
        yield client


PATTERN = "http://cams.example/{a,b,c,d}[n]/index.m3u8"


async def test_create_redirects_to_a_fingerprinted_playlist_once(
    http: httpx.AsyncClient, js: JetStreamContext
) -> None:
    first = await http.get("/create", params={"urls": PATTERN})
    assert first.status_code == 302
    location = first.headers["location"]
    assert location.startswith("/play/") and location.endswith("/index.m3u8")
    fp = location.split("/")[2]
    assert len(fp) == 32 and fp == fp.lower()
    again = await http.get("/create", params={"urls": PATTERN})
    assert again.headers["location"] == location
    other = await http.get("/create", params={"urls": PATTERN, "fps": "30"})
    assert other.headers["location"] != location
    assert await matching_count(js, f"events.mosaic.{fp}") == 1

    playlist = await http.get(location)
    assert playlist.status_code == 200
    assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert playlist.headers["cache-control"] == "no-cache"
    parsed = m3u8.loads(playlist.text)
    assert parsed.target_duration >= 1 and parsed.segments == [] and not parsed.is_endlist

    msg = await js.get_last_msg(HEARTBEATS.name, f"hb.viewer.mosaic.{fp}")
    beat = decode_heartbeat(msg.data or b"")
    assert isinstance(beat, ViewerHeartbeat) and beat.id == fp


async def test_segments_come_from_the_object_store(
    http: httpx.AsyncClient, js: JetStreamContext
) -> None:
    fp = (await http.get("/create", params={"urls": PATTERN})).headers["location"].split("/")[2]
    store = await js.object_store("segments")
    await store.put(f"{fp}/7.ts", b"\x47" * 188 * 3)
    got = await http.get(f"/play/{fp}/7.ts")
    assert got.status_code == 200
    assert got.content == b"\x47" * 188 * 3
    assert got.headers["content-type"] == "video/mp2t"
    assert "max-age" in got.headers["cache-control"]


@pytest.mark.parametrize(
    "path",
    [
        "/play/" + "0" * 32 + "/index.m3u8",  # well-formed, unknown
        "/play/XYZ/index.m3u8",
        "/play/" + "0" * 31 + "/index.m3u8",
        "/play/{fp}/8.ts",  # known mosaic, missing segment
        "/play/{fp}/..%2F..%2Fetc%2Fpasswd",
        "/play/{fp}/index.m3u8%00",
        "/play/{fp}/-1.ts",
        "/play/{fp}/01.ts",
        "/play/{fp}/" + "9" * 300 + ".ts",
        "/play/{fp}/%2Fetc%2Fpasswd",
    ],
)
async def test_everything_else_under_play_is_the_same_404(
    http: httpx.AsyncClient, path: str
) -> None:
    fp = (await http.get("/create", params={"urls": PATTERN})).headers["location"].split("/")[2]
    got = await http.get(path.replace("{fp}", fp))
    assert got.status_code == 404
    assert got.json() == {"error": "not found"}


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "urls is missing"),
        ({"urls": "http://x/{a,b"}, "urls: unclosed '{' at column 10"),
        ({"urls": "file:///etc/{passwd,shadow}"}, "has scheme 'file'"),
        ({"urls": "concat:http://x/a|http://x/b"}, "has scheme 'concat'"),
        ({"urls": "http://x/{" + ",".join(map(str, range(17))) + "}"}, "more than 16 streams"),
        ({"urls": PATTERN, "size": "big"}, "size='big': use WIDTHxHEIGHT"),
        ({"urls": PATTERN, "size": "99999x2"}, "size='99999x2'"),
        ({"urls": PATTERN, "size": "641x360"}, "must be even"),
        ({"urls": PATTERN, "fps": "0"}, "fps='0': must be a whole number from 1 to 60"),
        ({"urls": PATTERN, "cols": "x"}, "cols='x'"),
        ({"urls": PATTERN, "colour": "red"}, "unknown parameter 'colour'"),
        ({"urls": PATTERN, "alarms": "freeze:x"}, "alarms: 'x' is not a number"),
        ({"urls": PATTERN, "layout": "bogus"}, "layout: 'bogus' is not a layout: use grid"),
        ({"urls": PATTERN, "layout": "focus", "cols": "3"}, "cols= and layout=focus do not"),
    ],
)
async def test_bad_input_is_a_400_with_one_line(
    http: httpx.AsyncClient, js: JetStreamContext, params: dict[str, str], reason: str
) -> None:
    got = await http.get("/create", params=params)
    assert got.status_code == 400
    error = got.json()["error"]
    assert reason in error and "\n" not in error
    assert await matching_count(js, "events.>") == 0, "nothing was recorded"
