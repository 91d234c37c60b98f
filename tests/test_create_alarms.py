"""``alarms=`` in ``/create``: read into canonical text, part of the fingerprint (but never of a
mosaic with the default holds, whose fingerprint is what it always was), carried by
``mosaic created`` into the projected mosaic state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from starlette.requests import Request

from gateway.mosaics import BadRequest, parse_create
from pipeline.control.projector import Projector
from pipeline.control.read import read_entry
from pipeline.messages.codec import decode_event, encode
from pipeline.messages.events import MosaicCreated, Tile
from pipeline.nats.eventlog import matching_count
from pipeline.nats.topology import EVENTS, MOSAICS
from pipeline.state.evolve import evolve
from pipeline.state.model import MosaicState
from pipeline.state.mosaic import MosaicConfig, config_of, created, fingerprint
from pipeline.state.stored import decode_entry
from tests.gatewayhttp import gateway_http

PATTERN = "http://cams.example/{a,b,c,d}[n]/index.m3u8"
STUDIO = MosaicConfig(
    tiles=(Tile("http://cams.example/a/index.m3u8", "a"), Tile("http://cams.example/b/index.m3u8")),
    width=1920,
    height=1080,
    fps=30,
    cols=2,
    title="Studio A",
)

# Computed with the code from before alarms= existed (commit 811ae68): these mosaics' /play
# URLs must never change.
STUDIO_FP = "5f9be967bb667cb8bc2cd0703ccbe969"
PATTERN_FP = "ff6f0cba9d2ed52a353607d63533d475"


def _request(**params: str) -> Request:
    return Request({"type": "http", "query_string": urlencode(params).encode()})


def _create(alarms: str | None) -> MosaicConfig:
    params = {"urls": PATTERN} if alarms is None else {"urls": PATTERN, "alarms": alarms}
    return parse_create(_request(**params), max_tiles=16)


# --- the fingerprint ---------------------------------------------------------------------------


def test_a_mosaic_with_default_holds_keeps_its_old_fingerprint() -> None:
    assert fingerprint(STUDIO) == STUDIO_FP
    assert fingerprint(_create(None)) == PATTERN_FP


DEFAULT_TEXTS = [
    "",
    "  ",
    "default",
    "DEFAULT",
    "black:2",
    "black",
    " Black : 2s ",
    "freeze:2,black:2",
]


@pytest.mark.parametrize("alarms", DEFAULT_TEXTS)
def test_alarms_equal_to_the_defaults_are_the_same_mosaic(alarms: str) -> None:
    config = _create(alarms)
    assert config.alarms == ""
    assert fingerprint(config) == PATTERN_FP
    # Whatever text a config carries, the fingerprint reads it as its canonical form.
    assert fingerprint(msgspec.structs.replace(STUDIO, alarms=alarms)) == STUDIO_FP


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("black:3,freeze:5", "freeze:5,black:3"),
        ("freeze:5, -silence", "-silence,freeze:5.000s"),
        ("off,black,lost:7", "off, lost:7, black:2"),
        ("off", "-black,-freeze,-silence,-loudness,-no-audio,-lost"),
    ],
)
def test_the_same_overrides_in_another_order_are_the_same_mosaic(first: str, second: str) -> None:
    a, b = _create(first), _create(second)
    assert a.alarms == b.alarms != ""
    assert fingerprint(a) == fingerprint(b) != PATTERN_FP


def test_different_overrides_are_different_mosaics() -> None:
    texts = ["", "black:3", "black:4", "freeze:3", "-black", "off", "off,black", "lost:7"]
    fps = {fingerprint(_create(text)) for text in texts}
    assert len(fps) == len(texts)


def test_the_stored_text_is_canonical() -> None:
    assert _create("Freeze:5s , black:3").alarms == "black:3,freeze:5"
    assert _create("off,lost:7,black").alarms == "off,black,lost:7"
    assert _create("-silence").alarms == "-silence"


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alarms", "reason"),
    [
        ("blak:2", "unknown alarm kind 'blak' at column 1: did you mean 'black'?"),
        ("black:0.1", "black hold 0.1 s is out of range at column 7: use 0.5 to 600 seconds"),
        ("freeze:abc", "'abc' is not a number of seconds at column 8"),
        ("black:2,,freeze:3", "empty entry at column 9"),
        ("black,black:3", "'black' named twice at column 7"),
        ("black:2,off", "'off' after other entries at column 9"),
        ("-black:3", "'-black' takes no seconds at column 7"),
        ("black 2", "unexpected '2' after 'black' at column 7"),
        ("black:", "missing seconds after 'black:' at column 6"),
        ("loudness:1.23456", "has more than 3 decimals at column 10"),
    ],
)
def test_a_bad_value_names_alarms_and_the_column(alarms: str, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        _create(alarms)
    message = str(caught.value)
    assert message.startswith("alarms: ") and reason in message
    assert "\n" not in message, "one line, as the urls= errors are"


def test_alarms_given_twice_is_refused() -> None:
    query = urlencode([("urls", PATTERN), ("alarms", "black:3"), ("alarms", "freeze:5")])
    request = Request({"type": "http", "query_string": query.encode()})
    with pytest.raises(BadRequest, match="alarms: given more than once"):
        parse_create(request, max_tiles=16)


def test_an_unknown_parameter_lists_alarms() -> None:
    with pytest.raises(BadRequest, match="use urls, size, fps, cols, title, alarms"):
        parse_create(_request(urls=PATTERN, alarm="black:3"), max_tiles=16)


# --- events and state ----------------------------------------------------------------------------


def test_an_event_from_before_alarms_decodes_with_the_defaults() -> None:
    old = (
        b'{"type":"mosaic.created/1","at":1.5,"fp":"' + STUDIO_FP.encode() + b'","tiles":'
        b'[{"url":"http://cams.example/a/index.m3u8","name":"a"}],"width":640,"height":360,"fps":25}'
    )
    event = decode_event(old)
    assert isinstance(event, MosaicCreated) and event.alarms == ""
    state = evolve(None, event)
    assert isinstance(state, MosaicState) and state.alarms == ""


def test_an_entry_projected_before_alarms_decodes_with_the_defaults() -> None:
    old = (
        b'{"seq":3,"state":{"fp":"' + STUDIO_FP.encode() + b'","tiles":[{"url":"http://x/a"}],'
        b'"width":640,"height":360,"fps":25,"cols":null,"title":"","created_at":1.5,"version":1}}'
    )
    entry = decode_entry(MOSAICS.name, old)
    assert isinstance(entry.state, MosaicState) and entry.state.alarms == ""


def test_alarms_round_trip_through_the_event_and_the_fold() -> None:
    config = msgspec.structs.replace(STUDIO, alarms="black:3,freeze:5")
    fp = fingerprint(config)
    event = created(config, fp, 2.0)
    decoded = decode_event(encode(event))
    assert decoded == event
    state = evolve(None, decoded)
    assert isinstance(state, MosaicState) and state.alarms == "black:3,freeze:5"
    assert config_of(state) == config
    assert fingerprint(config_of(state)) == fp


# --- end to end: /create -> EVENTS -> projector -> KV --------------------------------------------


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_http(nc, js, tmp_path, TESSERA_MAX_TILES="16") as client:
        yield client


async def _fp(http: httpx.AsyncClient, **params: str) -> str:
    got = await http.get("/create", params={"urls": PATTERN, **params})
    assert got.status_code == 302, got.text
    return str(got.headers["location"]).split("/")[2]


async def test_create_projects_the_canonical_alarms(
    http: httpx.AsyncClient, nc: Client, js: JetStreamContext
) -> None:
    fp = await _fp(http, alarms="freeze:5, black:3s")
    assert await _fp(http, alarms="black:3,freeze:5") == fp
    assert await _fp(http) == PATTERN_FP != fp
    assert await _fp(http, alarms="black:2") == PATTERN_FP
    assert await matching_count(js, "events.mosaic.>") == 2

    last = await js.get_last_msg(EVENTS.name, f"events.mosaic.{PATTERN_FP}")  # the later
    projector = Projector(nc, js, fetch_timeout=0.2)
    await projector.start()
    try:
        async with asyncio.timeout(10):
            await projector.wait_for(last.seq)
    finally:
        await projector.stop()
    state = await read_entry(js, MOSAICS.name, fp)
    assert isinstance(state, MosaicState) and state.alarms == "black:3,freeze:5"
    plain = await read_entry(js, MOSAICS.name, PATTERN_FP)
    assert isinstance(plain, MosaicState) and plain.alarms == ""


async def test_a_bad_alarms_value_is_a_400_and_records_nothing(
    http: httpx.AsyncClient, js: JetStreamContext
) -> None:
    got = await http.get("/create", params={"urls": PATTERN, "alarms": "black:2,blak:3"})
    assert got.status_code == 400
    assert got.json()["error"] == (
        "alarms: unknown alarm kind 'blak' at column 9: did you mean 'black'?"
    )
    assert await matching_count(js, "events.>") == 0


# --- audio= and clock= -------------------------------------------------------------------------

# Computed with the code from before each field existed (9578087 for audio=, c1437d7 for clock=):
# a mosaic that does not use a newer field keeps the fingerprint it had.
STUDIO_BLACK3_FP = "2f899ee84b8640ea1487ad54765f6ae3"
STUDIO_BLACK3_AUDIO1_FP = "252fd86b2466aa4b3f686bb77664cfcf"


def test_newer_fields_at_their_defaults_keep_the_older_fingerprints() -> None:
    with_alarms = msgspec.structs.replace(STUDIO, alarms="black:3")
    assert fingerprint(with_alarms) == STUDIO_BLACK3_FP
    with_audio = msgspec.structs.replace(with_alarms, audio="1")
    assert fingerprint(with_audio) == STUDIO_BLACK3_AUDIO1_FP
    with_clock = msgspec.structs.replace(with_audio, clock=True)
    assert len({fingerprint(with_clock), STUDIO_BLACK3_AUDIO1_FP, STUDIO_FP}) == 3


@pytest.mark.parametrize(
    ("audio", "canonical"), [("", ""), ("auto", ""), ("off", "off"), ("2", "2"), ("B", "1")]
)
def test_audio_names_a_tile_by_index_or_name(audio: str, canonical: str) -> None:
    named = "http://cams.example/{a,b,c,d}[n]/index.m3u8"
    config = parse_create(_request(urls=named, audio=audio), max_tiles=16)
    assert config.audio == canonical


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"audio": "9"}, "audio: tile 9 does not exist: give a tile index from 0 to 3"),
        ({"audio": "studio"}, "audio: no tile is named 'studio'"),
        ({"clock": "local"}, "clock='local': use clock=utc"),
    ],
)
def test_bad_audio_or_clock_is_a_one_line_400(params: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        parse_create(_request(urls=PATTERN, **params), max_tiles=16)
