"""A mosaic's WebRTC (WHEP) output: the stitcher's encode, packetized to real aiortc viewers.

A real nats-server; :class:`~pipeline.consumers.whep.MosaicWhep` connected as the stitcher's
NATS user; a real libx264 encode (:class:`~pipeline.consumers.encoder.H264Encoder`) of
pictures that each show their own number (:mod:`tests.jitmedia`'s block pattern), fed as the
stitcher feeds it; and a viewer that is a real aiortc peer connection over loopback, offering
what Chromium offers (H.264 Constrained Baseline and High) and decoding what it gets. Then the
same through the gateway's ``/play/<fp>/whep``. Tests wait for frames, replies and heartbeats,
never for a fixed time, except to show that heartbeats stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.mosaic_whep import ice_links
from pipeline.config.settings import load
from pipeline.consumers.encoder import EncodedFrame, EncoderSettings, H264Encoder
from pipeline.consumers.whep import MosaicWhep
from pipeline.messages.codec import decode_heartbeat, decode_reply, encode
from pipeline.messages.control import CommandReply, SignalAnswer, SignalHangup, SignalOffer
from pipeline.messages.heartbeats import ViewerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.connect import connect
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import HEARTBEATS
from pipeline.runtime.httpserver import HttpServer
from pipeline.webrtc.h264 import (
    high_profile_preferences,
    is_constrained_baseline,
    offers_high_profile,
    stream_profile_level_id,
)
from pipeline.webrtc.sdp import h264_profile_level_ids, peer_id_of
from pipeline.webrtc.turn import TurnConfig
from tests.browser import chromium_path, launch
from tests.gatewayhttp import gateway_http
from tests.jitmedia import pattern, read_frame_number
from tests.waiting import until

SETTINGS = EncoderSettings(width=320, height=180, fps=25, segment_duration=0.4, preset="ultrafast")
"""x264's ultrafast (the shipped default) makes Constrained Baseline."""
HIGH = dataclasses.replace(SETTINGS, preset="veryfast")
"""veryfast makes High profile."""
GOP = SETTINGS.frames_per_segment  # a keyframe every 10 frames
BEAT = 0.1  # s between viewer heartbeats in these tests
WALL = 1_700_000_000.5  # what the heartbeats say the time is (the injected clock)
PATTERN = "http://cams.example/{a,b}/index.m3u8"


# -- the stitcher's side: an encode fed to MosaicWhep ---------------------------------------------


def picture(number: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A yuv420p picture (one array, as the canvas gives it) showing ``number``."""
    luma = pattern(number, SETTINGS.width, SETTINGS.height)
    chroma = np.full((SETTINGS.height // 2, SETTINGS.width), 128, np.uint8)
    return np.concatenate([luma, chroma])


class Source:
    """Encodes frame after frame at the mosaic's rate and feeds each one to the outputs, as the
    stitcher's clock does (the encode in a thread, the feed on the loop)."""

    def __init__(self, settings: EncoderSettings = SETTINGS) -> None:
        self.outputs: list[MosaicWhep] = []
        self.sent = 0
        self._encoder = H264Encoder(settings)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="test source")

    async def _run(self) -> None:
        start = time.monotonic()
        while True:
            packets = await asyncio.to_thread(self._encoder.encode, picture(self.sent))
            frames = [
                EncodedFrame(
                    data=bytes(p), pts=p.pts or 0, keyframe=p.is_keyframe, wall=time.time()
                )
                for p in packets
            ]
            for output in self.outputs:
                output.feed(frames)
            self.sent += 1
            # Paced like the stitcher's clock (not a wait for a condition).
            await asyncio.sleep(max(0.0, start + self.sent / SETTINGS.fps - time.monotonic()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._encoder.close()


# -- the viewer's side: an aiortc peer as a browser would be --------------------------------------


CHROMIUM = ("42001f", "42e01f", "f4001f")
"""The H.264 profiles Chromium offers without a hardware decoder (and Main, 4d001f, which
aiortc does not know): Constrained Baseline and High 4:4:4 Predictive, no High."""


def chromium_like(*profiles: str) -> list[Any]:
    """Codec preferences for a viewer offering VP8 and H.264 of these profile-level-ids, with
    RTX, as a browser does."""
    high_profile_preferences()  # aiortc's table has the High entries in this process anyway
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return [
        c
        for c in codecs
        if c.mimeType == "video/VP8"
        or c.mimeType == "video/rtx"
        or c.parameters.get("profile-level-id") in profiles
    ]


class Viewer:
    """A recvonly aiortc viewer that reads the number off every picture it decodes."""

    def __init__(self, profiles: tuple[str, ...] = CHROMIUM) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(chromium_like(*profiles))
        self.numbers: list[int | None] = []
        self.size = (0, 0)
        self.answer = ""
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._read(track), name="test viewer"))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.numbers.append(read_frame_number(frame.to_ndarray(format="gray")))
            self.size = (frame.width, frame.height)
            self._changed.set()

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        self.answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def until(self, check: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not within {within} s: {what} (got {self.numbers})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def assert_in_order_from_keyframes(numbers: list[int | None]) -> None:
    """Every picture readable, in order, starting at a keyframe; a frame is skipped only when
    a viewer fell behind, and then it starts again at a keyframe."""
    assert None not in numbers, f"unreadable pictures: {numbers}"
    got = [n for n in numbers if n is not None]
    assert got[0] % GOP == 0, f"the first picture is not a keyframe's: {got}"
    for before, after in zip(got, got[1:], strict=False):
        assert after > before, f"out of order: {got}"
        assert after == before + 1 or after % GOP == 0, f"{before} then {after}: {got}"


async def signal(nc: Client, fp: str, request: msgspec.Struct) -> bytes:
    msg = await nc.request(subjects.mosaic_signal(fp), encode(request), timeout=10)
    return bytes(msg.data)


async def offer_over_nats(nc: Client, fp: str, viewer: Viewer) -> SignalAnswer:
    got = await signal(nc, fp, SignalOffer(sdp=await viewer.offer()))
    return msgspec.json.decode(got, type=SignalAnswer)


# -- fixtures -------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def stitcher_nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """A connection as the stitcher's NATS user: its permissions are the ones in force."""
    client = await connect(nats_server.url_for("stitcher"), name="test-stitcher", role="stitcher")
    try:
        yield client
    finally:
        await client.close()


class Rig:
    """MosaicWhep outputs on one source, and viewers; all stopped after the test."""

    def __init__(self, nc: Client, settings: EncoderSettings = SETTINGS) -> None:
        self.nc = nc
        self.settings = settings
        self.source = Source(settings)
        self.outputs: list[MosaicWhep] = []
        self.viewers: list[Viewer] = []

    async def output(self, fp: str, **kw: Any) -> MosaicWhep:
        options: dict[str, Any] = {"max_viewers": 4, "heartbeat_interval": BEAT, **kw}
        whep = MosaicWhep(nc=self.nc, fp=fp, settings=self.settings, wall=lambda: WALL, **options)
        await whep.start()
        self.outputs.append(whep)
        self.source.outputs.append(whep)
        return whep

    def viewer(self, *profiles: str) -> Viewer:
        viewer = Viewer(profiles) if profiles else Viewer()
        self.viewers.append(viewer)
        return viewer

    async def close(self) -> None:
        await self.source.stop()
        for viewer in self.viewers:
            await viewer.close()
        for whep in self.outputs:
            await whep.stop()


@pytest_asyncio.fixture
async def rig(stitcher_nc: Client) -> AsyncIterator[Rig]:
    made = Rig(stitcher_nc)
    made.source.start()
    try:
        yield made
    finally:
        await made.close()


@pytest_asyncio.fixture
async def high_rig(stitcher_nc: Client) -> AsyncIterator[Rig]:
    """A rig whose stream is High profile (preset veryfast)."""
    made = Rig(stitcher_nc, HIGH)
    made.source.start()
    try:
        yield made
    finally:
        await made.close()


FP = "ab" * 16


# -- MosaicWhep over NATS -------------------------------------------------------------------------


async def test_a_viewer_gets_the_mosaic_in_order_from_a_keyframe(nc: Client, rig: Rig) -> None:
    whep = await rig.output(FP)
    viewer = rig.viewer()
    answer = await offer_over_nats(nc, FP, viewer)
    assert not answer.error, answer.error
    # The answer puts first the offered profile that fits the stream best (the ultrafast
    # stream is Constrained Baseline), then the others whose decoders take it; no VP8.
    assert h264_profile_level_ids(answer.sdp) == ["42e01f", "42001f", "f4001f"]
    assert "VP8" not in answer.sdp
    await viewer.accept(answer.sdp)

    await viewer.until(lambda: len(viewer.numbers) >= 3 * GOP, 15, f"{3 * GOP} pictures")
    assert_in_order_from_keyframes(viewer.numbers)
    assert viewer.size == (SETTINGS.width, SETTINGS.height)
    assert whep.viewers == 1

    reply = decode_reply(await signal(nc, FP, SignalHangup(peer_id=peer_id_of(answer.sdp))))
    assert reply == CommandReply(ok=True)
    assert whep.viewers == 0
    again = decode_reply(await signal(nc, FP, SignalHangup(peer_id=peer_id_of(answer.sdp))))
    assert not again.ok and "no WebRTC viewer" in again.error


def renumber(sdp: str, old: int, new: int) -> str:
    """``sdp`` with payload type ``old`` numbered ``new`` (its rtpmap, fmtp, feedback, the
    m= line and any RTX pointing at it)."""
    sdp = re.sub(rf"^(a=(?:rtpmap|fmtp|rtcp-fb):){old}\b", rf"\g<1>{new}", sdp, flags=re.M)
    sdp = re.sub(rf"^(m=video .*) {old}\b", rf"\1 {new}", sdp, flags=re.M)
    return sdp.replace(f"apt={old}\r", f"apt={new}\r")


async def test_the_answer_keeps_a_payload_type_below_96(nc: Client, rig: Rig) -> None:
    """Chromium numbers its last codecs (High 4:4:4 Predictive among them) from 35: the answer
    and the packets must use its number, or Chromium drops every packet."""
    await rig.output(FP)
    viewer = rig.viewer("f4001f")
    offer = await viewer.offer()
    (payload_type,) = re.findall(r"^a=rtpmap:(\d+) H264/90000", offer, flags=re.M)
    got = await signal(nc, FP, SignalOffer(sdp=renumber(offer, int(payload_type), 41)))
    answer = msgspec.json.decode(got, type=SignalAnswer)
    assert not answer.error, answer.error
    (formats,) = re.findall(r"^m=video \d+ \S+ (.*?)\s*$", answer.sdp, flags=re.M)
    assert formats.split()[0] == "41" and "apt=41" in answer.sdp, "H.264 and its RTX"
    await viewer.accept(answer.sdp)
    await viewer.until(lambda: len(viewer.numbers) >= GOP, 15, f"{GOP} pictures")
    assert_in_order_from_keyframes(viewer.numbers)


async def test_two_viewers_share_the_one_encode(nc: Client, high_rig: Rig) -> None:
    rig = high_rig  # a High-profile stream: each viewer gets the High profile it offered
    whep = await rig.output(FP)
    # Chrome with a hardware decoder (High), and Safari (Constrained High).
    first, second = rig.viewer("42e01f", "64001f"), rig.viewer("42e01f", "640c1f")
    for viewer in (first, second):
        answer = await offer_over_nats(nc, FP, viewer)
        assert not answer.error, answer.error
        await viewer.accept(answer.sdp)
    assert h264_profile_level_ids(first.answer) == ["64001f"]
    assert h264_profile_level_ids(second.answer) == ["640c1f"]
    for viewer in (first, second):
        await viewer.until(lambda v=viewer: len(v.numbers) >= 2 * GOP, 15, "pictures")
        assert_in_order_from_keyframes(viewer.numbers)
    assert whep.viewers == 2


async def test_offers_past_the_limit_are_refused_as_full(nc: Client, rig: Rig) -> None:
    await rig.output(FP, max_viewers=1)
    first = await offer_over_nats(nc, FP, rig.viewer())
    assert not first.error, first.error
    refused = await offer_over_nats(nc, FP, rig.viewer())
    assert refused.code == "full" and not refused.sdp
    assert "1 WebRTC viewers, its maximum" in refused.error and "\n" not in refused.error
    # A viewer that leaves makes room.
    reply = decode_reply(await signal(nc, FP, SignalHangup(peer_id=peer_id_of(first.sdp))))
    assert reply.ok
    third = await offer_over_nats(nc, FP, rig.viewer())
    assert not third.error, third.error


async def test_a_baseline_stream_plays_to_a_baseline_only_viewer(nc: Client, rig: Rig) -> None:
    """The default preset's stream is Constrained Baseline (read off its SPS): a viewer that
    offers only Baseline (Firefox) gets it, answered with the exact profile."""
    await rig.output(FP)
    viewer = rig.viewer("42e01f")
    answer = await offer_over_nats(nc, FP, viewer)
    assert not answer.error, answer.error
    assert h264_profile_level_ids(answer.sdp) == ["42e01f"]
    await viewer.accept(answer.sdp)
    await viewer.until(lambda: len(viewer.numbers) >= 10, 20, "ten pictures")
    assert_in_order_from_keyframes(viewer.numbers)


def test_the_stream_profile_is_read_off_the_sps() -> None:
    for settings, baseline in ((SETTINGS, True), (HIGH, False)):
        encoder = H264Encoder(settings)
        try:
            first = encoder.encode(picture(0))[0]
        finally:
            encoder.close()
        profile = stream_profile_level_id(bytes(first))
        assert profile is not None and is_constrained_baseline(profile) is baseline, profile
    assert stream_profile_level_id(b"\0\0\1\x65abc") is None  # an IDR slice, no SPS


async def test_offers_it_cannot_serve_are_refused_with_the_reason(
    nc: Client, high_rig: Rig
) -> None:
    rig = high_rig
    whep = await rig.output(FP)
    baseline = await offer_over_nats(nc, FP, rig.viewer("42e01f", "42001f"))
    assert baseline.code == ""
    assert "no H.264 High profile" in baseline.error and "42e01f" in baseline.error
    audio_only = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    audio_only.addTransceiver("audio", direction="recvonly")
    await audio_only.setLocalDescription(await audio_only.createOffer())
    try:
        got = await signal(nc, FP, SignalOffer(sdp=audio_only.localDescription.sdp))
    finally:
        await audio_only.close()
    assert "receives no video" in msgspec.json.decode(got, type=SignalAnswer).error
    raw = await nc.request(subjects.mosaic_signal(FP), b"{}", timeout=10)
    garbage = msgspec.json.decode(raw.data, type=SignalAnswer)
    assert "cannot decode the signalling request" in garbage.error
    assert whep.viewers == 0 and not whep._viewers


async def test_viewers_beat_while_connected_and_not_after_hangup(nc: Client, rig: Rig) -> None:
    beats: list[ViewerHeartbeat] = []

    async def on_beat(msg: Msg) -> None:
        beat = decode_heartbeat(msg.data)
        assert isinstance(beat, ViewerHeartbeat)
        beats.append(beat)

    sub = await nc.subscribe(subjects.viewer_heartbeat("mosaic", FP), cb=on_beat)
    try:
        whep = await rig.output(FP)
        viewer = rig.viewer()
        answer = await offer_over_nats(nc, FP, viewer)
        await viewer.accept(answer.sdp)
        await viewer.until(lambda: len(viewer.numbers) >= 1, 15, "a first picture")
        await until(lambda: len(beats) >= 3, 10, "three viewer heartbeats")
        assert all(b == ViewerHeartbeat(at=WALL, scope="mosaic", id=FP) for b in beats)

        reply = decode_reply(await signal(nc, FP, SignalHangup(peer_id=peer_id_of(answer.sdp))))
        assert reply.ok and whep.viewers == 0
        await nc.flush()  # every beat sent before the reply has arrived by now
        count = len(beats)
        await asyncio.sleep(5 * BEAT)  # five intervals without a beat: they stopped
        assert len(beats) == count
    finally:
        await sub.unsubscribe()


async def test_stop_closes_every_viewer_and_leaves_no_task(nc: Client, rig: Rig) -> None:
    # The test's client makes its reply subscription (a task) on its first request: now.
    with pytest.raises(NoRespondersError):
        await nc.request(subjects.mosaic_signal(FP), b"{}", timeout=5)
    before = asyncio.all_tasks()
    whep = await rig.output(FP)
    viewer = rig.viewer()
    answer = await offer_over_nats(nc, FP, viewer)
    await viewer.accept(answer.sdp)
    await viewer.until(lambda: len(viewer.numbers) >= 1, 15, "a first picture")
    pending = rig.viewer()
    await offer_over_nats(nc, FP, pending)  # answered, never connected

    await whep.stop()
    await whep.stop()
    assert whep.viewers == 0 and whep.status == "stopped"
    with pytest.raises(NoRespondersError):
        await nc.request(subjects.mosaic_signal(FP), b"{}", timeout=5)
    await rig.source.stop()
    for each in rig.viewers:
        await each.close()

    def left() -> set[asyncio.Task[Any]]:
        current = asyncio.current_task()
        return {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}

    # Tasks end on their next turn of the loop: waited for, bounded.
    with contextlib.suppress(AssertionError):
        await until(lambda: not left(), 5, "no task left")
    assert not left(), sorted(t.get_name() for t in left())


async def test_a_viewer_that_never_connects_is_dropped(nc: Client, rig: Rig) -> None:
    whep = await rig.output(FP, connect_timeout=0.3, max_viewers=1)
    answer = await offer_over_nats(nc, FP, rig.viewer())  # answered, never told the answer
    assert not answer.error
    await until(lambda: not whep._viewers, 10, "the unconnected viewer dropped")
    again = await offer_over_nats(nc, FP, rig.viewer())
    assert not again.error, "its place is free again"


def test_high_profile_offers_are_recognised() -> None:
    offer = (
        "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;"
        "packetization-mode=1;profile-level-id=42001f\r\n"
        "a=rtpmap:112 H264/90000\r\na=fmtp:112 level-asymmetry-allowed=1;"
        "packetization-mode=1;profile-level-id=64001F\r\n"
    )
    assert h264_profile_level_ids(offer) == ["42001f", "64001f"]
    assert offers_high_profile(offer)
    assert offers_high_profile(offer.replace("64001F", "640c34"))  # Constrained High, 5.2
    assert offers_high_profile(offer.replace("64001F", "f4001f"))  # High 4:4:4 Predictive
    assert not offers_high_profile(offer.replace("64001F", "4d001f"))  # Main
    assert not offers_high_profile(offer.replace("64001F", "640800"))  # not a profile
    interleaved = offer.replace("mode=1;profile-level-id=64", "mode=0;profile-level-id=64")
    assert not offers_high_profile(interleaved)
    assert h264_profile_level_ids(offer.replace("H264/90000", "VP8/90000")) == []


def test_an_answer_without_a_code_still_decodes() -> None:
    old = b'{"type": "answer/1", "sdp": "", "error": "the session is stopping"}'
    answer = msgspec.json.decode(old, type=SignalAnswer)
    assert answer.code == "" and answer.error == "the session is stopping"
    full = SignalAnswer(error="full up", code="full")
    assert msgspec.json.decode(encode(full), type=SignalAnswer) == full


# -- through the gateway --------------------------------------------------------------------------


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_http(nc, js, tmp_path, request_timeout=20) as client:
        yield client


async def create(http: httpx.AsyncClient) -> str:
    got = await http.get("/create", params={"urls": PATTERN})
    assert got.status_code == 302
    return got.headers["location"].split("/")[2]


SDP = {"content-type": "application/sdp"}


async def test_whep_through_the_gateway(http: httpx.AsyncClient, rig: Rig) -> None:
    fp = await create(http)
    whep = await rig.output(fp, max_viewers=1)
    viewer = rig.viewer()
    got = await http.post(f"/play/{fp}/whep", content=await viewer.offer(), headers=SDP)
    assert got.status_code == 201, got.text
    assert got.headers["content-type"] == "application/sdp"
    assert got.headers["location"] == f"/play/{fp}/whep/{peer_id_of(got.text)}"
    await viewer.accept(got.text)
    await viewer.until(lambda: len(viewer.numbers) >= 2 * GOP, 15, "pictures")
    assert_in_order_from_keyframes(viewer.numbers)

    full = await http.post(f"/play/{fp}/whep", content=await rig.viewer().offer(), headers=SDP)
    assert full.status_code == 503 and full.headers["retry-after"] == "5"
    assert "its maximum" in full.json()["error"]

    gone = await http.delete(got.headers["location"])
    assert gone.status_code == 204 and whep.viewers == 0
    again = await http.delete(got.headers["location"])
    assert again.status_code == 404

    # An offer the stitcher cannot serve (VP8 only) is a 400 with the stitcher's reason.
    vp8 = await http.post(f"/play/{fp}/whep", content=await rig.viewer("none").offer(), headers=SDP)
    assert vp8.status_code == 400 and "no H.264" in vp8.json()["error"]


async def test_a_mosaic_without_its_stitcher_is_a_503_and_a_viewer(
    http: httpx.AsyncClient, js: JetStreamContext
) -> None:
    fp = await create(http)
    subject = subjects.viewer_heartbeat("mosaic", fp)

    async def last_beat() -> int:
        try:
            return (await js.get_last_msg(HEARTBEATS.name, subject)).seq or 0
        except NotFoundError:
            return 0

    # /create's own viewer beat, first (so the one after the 503 is told apart from it).
    deadline = time.monotonic() + 10
    while not (before := await last_beat()):
        assert time.monotonic() < deadline, "no viewer beat from /create"
        await asyncio.sleep(0.02)
    got = await http.post(f"/play/{fp}/whep", content=b"v=0\r\n", headers=SDP)
    assert got.status_code == 503 and got.headers["retry-after"] == "1"
    error = got.json()["error"]
    assert "starting" in error and "\n" not in error
    while await last_beat() <= before:
        assert time.monotonic() < deadline, "the offer was no viewer heartbeat"
        await asyncio.sleep(0.02)
    beat = decode_heartbeat((await js.get_last_msg(HEARTBEATS.name, subject)).data or b"")
    assert isinstance(beat, ViewerHeartbeat) and beat.id == fp and beat.scope == "mosaic"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/play/" + "0" * 32 + "/whep"),  # well-formed, unknown
        ("POST", "/play/XYZ/whep"),
        ("POST", "/play/" + "0" * 31 + "/whep"),
        ("DELETE", "/play/" + "0" * 32 + "/whep/" + "ab" * 16),
        ("DELETE", "/play/{fp}/whep/not%20a%20peer"),
        ("DELETE", "/play/{fp}/whep/" + "ab" * 16),  # known mosaic, no stitcher, no viewer
        ("GET", "/play/{fp}/whep"),
    ],
)
async def test_unknown_mosaics_and_peers_are_the_play_404(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    fp = await create(http)
    got = await http.request(method, path.replace("{fp}", fp), content=b"v=0\r\n", headers=SDP)
    assert got.status_code == 404
    assert got.json() == {"error": "not found"}


async def test_the_offer_must_be_sdp_and_small(http: httpx.AsyncClient) -> None:
    fp = await create(http)
    text = {"content-type": "text/plain"}
    wrong = await http.post(f"/play/{fp}/whep", content=b"{}", headers=text)
    assert wrong.status_code == 415 and "application/sdp" in wrong.json()["error"]
    big = await http.post(f"/play/{fp}/whep", content=b"a" * (65 * 1024), headers=SDP)
    assert big.status_code == 413


# -- in Chromium ----------------------------------------------------------------------------------

WHEP_PAGE = """async (url) => {
    window.pc = new RTCPeerConnection();
    pc.addTransceiver("video", {direction: "recvonly"});
    window.video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    document.body.appendChild(video);
    pc.ontrack = (event) => { video.srcObject = new MediaStream([event.track]); };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
        if (pc.iceGatheringState === "complete") return done();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
    });
    const got = await fetch(url, {method: "POST", body: pc.localDescription.sdp,
                                  headers: {"Content-Type": "application/sdp"}});
    const answer = await got.text();
    if (got.status !== 201) return {status: got.status, error: answer};
    await pc.setRemoteDescription({type: "answer", sdp: answer});
    return {status: got.status, location: got.headers.get("Location"), answer};
}"""
PICTURE = """async () => {
    let decoded = 0, codec = "";
    const stats = await pc.getStats();
    stats.forEach((s) => {
        if (s.type === "inbound-rtp") {
            decoded = s.framesDecoded;
            const c = stats.get(s.codecId);
            if (c) codec = c.sdpFmtpLine || "";
        }
    });
    const [w, h] = [video.videoWidth, video.videoHeight];
    if (!w || !h || video.paused) return {decoded, codec, luma: null};
    const canvas = document.createElement("canvas");
    [canvas.width, canvas.height] = [w, h];
    const context = canvas.getContext("2d");
    context.drawImage(video, 0, 0);
    const rgba = context.getImageData(0, 0, w, h).data;
    const luma = [];
    for (let y = 0; y < h; y++) {
        const row = [];
        for (let x = 0; x < w; x++) {
            const i = 4 * (y * w + x);
            row.push(Math.round(0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2]));
        }
        luma.push(row);
    }
    return {decoded, codec, luma};
}"""


async def test_chromium_plays_the_mosaic_over_whep(http: httpx.AsyncClient, rig: Rig) -> None:
    """What a browser offers (Chromium without a GPU: Constrained Baseline, and High 4:4:4
    Predictive at a payload type below 96 but no High) gets the stitcher's packets, decoded in
    order."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium binary: apt-get install chromium (or set TESSERA_CHROMIUM)")
    pytest.importorskip("playwright.async_api", reason="pip install -e '.[dev]' installs it")
    fp = await create(http)
    whep = await rig.output(fp)
    async with launch(executable) as browser:
        page = await browser.new_page()
        # The gateway's origin, so the page may POST the offer there (no CORS in the way).
        await page.goto(str(http.base_url.join("/healthz")))
        got = await page.evaluate(WHEP_PAGE, f"/play/{fp}/whep")
        assert got["status"] == 201, got
        assert got["location"] == f"/play/{fp}/whep/{peer_id_of(got['answer'])}"
        numbers: list[int | None] = []
        deadline = time.monotonic() + 20
        while len(numbers) < 10:
            assert time.monotonic() < deadline, f"Chromium showed only {numbers}"
            shown = await page.evaluate(PICTURE)
            if shown["luma"] is not None:
                numbers.append(read_frame_number(np.array(shown["luma"], dtype=np.uint8)))
            await asyncio.sleep(0.05)
        # The stream is Constrained Baseline (ultrafast): Chromium gets the exact profile.
        assert "profile-level-id=42e01f" in shown["codec"], shown["codec"]
        assert None not in numbers, numbers
        assert numbers == sorted(numbers) and numbers[-1] > numbers[0], numbers
        assert whep.viewers == 1
        status = await page.evaluate(
            "async (url) => (await fetch(url, {method: 'DELETE'})).status", got["location"]
        )
        assert status == 204 and whep.viewers == 0


async def test_viewers_are_told_the_ice_servers_in_link_headers(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    """OPTIONS (and every 201) names the STUN servers and fresh TURN credentials for the mosaic
    as RFC 9725 Link headers, and the viewer page's parser reads them back whole."""
    config = load(env={"TESSERA_DATA_DIR": str(tmp_path)})
    turn = TurnConfig(host="127.0.0.1", port=3478, tls_port=5349, secret="s3cret", ttl=600.0)
    stun = {"urls": "stun:stun.example.net:3478"}
    ctx = GatewayContext(nc=nc, js=js, config=config, turn=turn, ice_servers=(stun,))
    server = HttpServer(create_app(ctx), host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            fp = await create(http)
            got = await http.options(f"/play/{fp}/whep")
            assert got.status_code == 204 and "POST" in got.headers["allow"]
            expected = [stun, turn.ice_server(fp)]
            link = got.headers["link"]
            if link != ice_links(expected):  # the credentials' second ticked over between
                got = await http.options(f"/play/{fp}/whep")
                expected = [stun, turn.ice_server(fp)]
                link = got.headers["link"]
            assert (await http.options(f"/play/{'0' * 32}/whep")).status_code == 404
            # What the gateway says is what aiortc / a browser would be configured with.
            assert link == ice_links(expected)
            assert link.count('rel="ice-server"') == 4
            executable = chromium_path()
            if executable is None:
                return
            async with launch(executable) as browser:
                page = await browser.new_page()
                await page.goto(str(http.base_url.join("/healthz")))
                parsed = await page.evaluate(
                    "async (link) => (await import('/static/mosaic-webrtc.js')).iceServersOf(link)",
                    link,
                )
    finally:
        await server.stop()
    turn_server = expected[1]  # credentials of that second
    assert parsed == [stun] + [
        {"urls": url, "username": turn_server["username"],
         "credential": turn_server["credential"]}
        for url in turn_server["urls"]
    ]  # fmt: skip
