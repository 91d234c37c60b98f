"""Mosaic audio end to end: a real stitcher over a real nats-server, fed solid-colour frames on
``frames.<sid>`` and tones on ``audio.<sid>`` (as grabbers send them: s16 chunks stamped with the
wall time they were handed on), and the real gateway over HTTP. What the player would fetch
(the init section and whole segments for CMAF, the .ts segments for MPEG-TS) is decoded with
PyAV: which tone the AAC track carries (FFT peak), that it runs without a hole for as long as
the video (sample count), and how far the sound is from the pictures: a tile turns blue at the
very moment its tone starts, and the two are found in the decoded output. Then the players:
hls.js (the gateway's copy) in headless Chromium plays both tracks of both formats, and an
aiortc WebRTC viewer hears the tone as Opus.

Expected A/V offset (aac.py): the sound lags by ``MARGIN + 1/fps + LEAD/48000`` minus the age of
the frame on screen (0 to one source frame, 40 ms here): 0.083 to 0.123 s. The bound allowed
here is wider (:data:`OFFSET_BOUNDS`): the stitcher and this test's publisher share two busy
cores, and a late tick moves the pictures by a frame.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import httpx
import m3u8
import msgspec
import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from pipeline.consumers.aac import LEAD, MARGIN, RATE
from pipeline.consumers.canvas import Planes, planes_of, solid
from pipeline.consumers.sound import LOST_AFTER, SETTLE
from pipeline.consumers.stitcher import Stitcher
from pipeline.messages.audio import AudioHeader, pack_audio
from pipeline.messages.frames import FrameHeader, pack_frame
from pipeline.nats import subjects
from pipeline.runtime.tasks import cancel_and_wait
from tests.gatewayhttp import gateway_http
from tests.test_mosaic_whep import chromium_like, offer_over_nats
from tests.test_sound_pure import onset, peak_hz, tone_amplitude
from tests.test_stitcher import FPS, NAMES, TH, TW, WAIT, mosaic, running, shows, sid, yuv

if TYPE_CHECKING:
    from playwright.async_api import Page

CHUNK = 960
"""Samples per audio chunk: 20 ms at 48 kHz, so chunks and frames start together every 40 ms."""
STEP = CHUNK / RATE
SWITCH = 2.48
"""Seconds into the publisher's run when the switching tile changes colour and tone."""
LAG = MARGIN + 1 / FPS + LEAD / RATE
OFFSET_BOUNDS = (LAG - 1 / FPS - 0.05, LAG + 0.06)
"""Audio onset minus picture onset, seconds, that the sync test accepts."""

Colour = Callable[[float], str]
Tone = Callable[[float], float | None]
"""Seconds into the run -> the tone's frequency (0: silence) or None (no chunk at all)."""


class AvPublisher:
    """Frames at 25 fps and audio chunks every 20 ms for some sources, on one clock, each
    stamped with the wall time it is published at (as a grabber stamps them)."""

    def __init__(
        self, nc: Client, colours: dict[str, Colour], tones: dict[str, Tone], gain: float = 0.3
    ) -> None:
        self._nc = nc
        self.colours = colours
        self.tones = tones
        self._gain = gain
        self._pixels: dict[str, bytes] = {}
        self._task: asyncio.Task[None] | None = None
        self.started_wall = 0.0

    def _frame(self, colour: str) -> bytes:
        if colour not in self._pixels:
            self._pixels[colour] = b"".join(p.tobytes() for p in solid(TW, TH, yuv(colour)))
        return self._pixels[colour]

    async def _step(self, step: int) -> None:
        t = step * STEP
        wall = time.time()
        if step % 2 == 0:
            for name, colour in list(self.colours.items()):
                header = FrameHeader(source_id=sid(name), seq=step // 2, pts=t, wall=wall,
                                     width=TW, height=TH)  # fmt: skip
                await self._nc.publish(
                    subjects.frames(sid(name)), pack_frame(header, self._frame(colour(t)))
                )
        for name, tone in list(self.tones.items()):
            freq = tone(t)
            if freq is None:
                continue
            n = step * CHUNK + np.arange(CHUNK)
            wave = self._gain * np.sin(2 * np.pi * freq * n / RATE) if freq else np.zeros(CHUNK)
            pcm = np.repeat(np.round(wave * 32767).astype(np.int16), 2)  # stereo, interleaved
            header = AudioHeader(source_id=sid(name), seq=step, pts=t, wall=wall, rate=RATE,
                                 channels=2, layout="stereo", samples=CHUNK)  # fmt: skip
            await self._nc.publish(subjects.audio(sid(name)), pack_audio(header, pcm.tobytes()))

    async def _run(self, start: float) -> None:
        loop = asyncio.get_running_loop()
        step = 0
        while True:
            # Catch up on steps a busy loop let pass: the sound has no holes at the source.
            while start + step * STEP <= loop.time():
                await self._step(step)
                step += 1
            await asyncio.sleep(max(0.0, start + step * STEP - loop.time()))

    async def __aenter__(self) -> AvPublisher:
        self.started_wall = time.time()
        start = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(start), name="test a/v publisher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)


def make_stitcher(
    nc: Client, js: JetStreamContext, fp: str, audio: str, hls_format: str, **kwargs: Any
) -> Stitcher:
    state = msgspec.structs.replace(mosaic(fp), audio=audio)
    return Stitcher(nc=nc, js=js, fp=fp, mosaic=state, worker_id=f"st-{fp[:8]}",
                    hls_format=hls_format, **kwargs)  # fmt: skip


@pytest_asyncio.fixture
async def http(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_http(nc, js, tmp_path) as client:
        yield client


async def media_until(http: httpx.AsyncClient, fp: str, wall: float) -> bytes:
    """What a player fetches of every complete segment listed once one made after ``wall``
    (Unix time) is: the init section and the whole segments (CMAF), or the segments (TS)."""
    async with asyncio.timeout(WAIT + max(0.0, wall - time.time())):
        while True:
            got = await http.get(f"/play/{fp}/index.m3u8")
            if got.status_code == 200:
                parsed = m3u8.loads(got.text)
                done = [s for s in parsed.segments if s.uri]
                if done and done[-1].program_date_time.timestamp() > wall:
                    break
            await asyncio.sleep(0.2)
    data = b""
    if parsed.segment_map:
        data = (await http.get(f"/play/{fp}/{parsed.segment_map[0].uri}")).content
    for segment in done:
        response = await http.get(f"/play/{fp}/{segment.uri}")
        assert response.status_code == 200, segment.uri
        data += response.content
    return data


async def drain(sub: Subscription, at_least: int = 0) -> list[Msg]:
    """The messages ``sub`` holds, waiting for ``at_least`` of them."""
    got: list[Msg] = []
    while True:
        try:
            got.append(await sub.next_msg(timeout=WAIT if len(got) < at_least else 0.01))
        except TimeoutError:
            return got


async def until(condition: Callable[[], bool], within: float) -> None:
    """Return once ``condition()`` holds (checked every 50 ms); fail after ``within`` s."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


class Decoded:
    """The pictures and the left channel of the sound of some media, on one timeline."""

    def __init__(self, data: bytes) -> None:
        with av.open(io.BytesIO(data), "r") as media:
            self.kinds = [s.type for s in media.streams]
            self.pictures: list[tuple[float, Planes]] = []
            self.audio_start = 0.0
            chunks = []
            for frame in media.decode(*media.streams):
                if isinstance(frame, av.VideoFrame):
                    planes = planes_of(frame.to_ndarray().tobytes(), frame.width, frame.height)
                    self.pictures.append((float(frame.time or 0.0), planes))
                elif isinstance(frame, av.AudioFrame):
                    if not chunks:
                        self.audio_start = float(frame.time or 0.0)
                    chunks.append(frame.to_ndarray()[0])
        self.pictures.sort(key=lambda p: p[0])
        self.sound: npt.NDArray[np.float32] = (
            np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        )

    @property
    def video_start(self) -> float:
        return self.pictures[0][0]

    @property
    def video_seconds(self) -> float:
        return len(self.pictures) / FPS


def blue_at(t: float) -> str:
    return "green" if t < SWITCH else "blue"


def tone_at(freq: float) -> Tone:
    return lambda t: 0.0 if t < SWITCH else freq


@pytest.mark.parametrize("hls_format", ["cmaf", "ts"])
async def test_the_chosen_tile_is_heard_without_a_hole_and_in_step_with_the_pictures(
    nc: Client, js: JetStreamContext, http: httpx.AsyncClient, hls_format: str
) -> None:
    fp = ("1" if hls_format == "cmaf" else "2") * 32
    colours = {"red": lambda t: "red", "green": blue_at}
    tones: dict[str, Tone] = {"red": lambda t: 440.0, "green": tone_at(880.0)}
    asks = await nc.subscribe("ctl.audio.*")
    stitcher = make_stitcher(nc, js, fp, "1", hls_format)  # tile 1: "green"
    async with running(stitcher), AvPublisher(nc, colours, tones) as publisher:
        assert stitcher._sound is not None
        assert stitcher._sound.subscribed == {subjects.audio(sid("green"))}
        data = await media_until(http, fp, publisher.started_wall + SWITCH + 1.5)
    # It asked the grabber of tile 1 for its audio (about once a second), and no other.
    asked = [m.subject for m in await drain(asks)]
    assert set(asked) == {subjects.audio_wanted(sid("green"))} and len(asked) >= 3, asked
    decoded = Decoded(data)
    assert decoded.kinds == ["video", "audio"]
    # One timeline: the sound starts with the pictures and runs as long, without a hole.
    assert decoded.audio_start == pytest.approx(decoded.video_start, abs=1e-6)
    assert decoded.sound.size == pytest.approx(decoded.video_seconds * RATE, abs=1024)
    # Tile 1's tone, not tile 0's.
    start = onset(decoded.sound, 0.1)
    tone = decoded.sound[start + RATE // 10 : start + RATE // 10 + RATE // 2]
    assert tone.size == RATE // 2 and peak_hz(tone) == pytest.approx(880, abs=4)
    assert float(np.sqrt(np.mean(tone**2))) == pytest.approx(0.3 / 2**0.5, rel=0.1)
    # In step: the tone starts LAG after the tile turns blue (less the frame's age).
    heard = decoded.audio_start + start / RATE
    seen = next(t for t, picture in decoded.pictures if shows(picture, 1, "blue"))
    assert OFFSET_BOUNDS[0] <= heard - seen <= OFFSET_BOUNDS[1], (heard - seen, OFFSET_BOUNDS)
    print(f"\n{hls_format}: audio lags video by {(heard - seen) * 1000:.0f} ms")


async def test_the_default_carries_the_first_tile_with_audio_and_moves_on_when_it_stops(
    nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    fp = "3" * 32
    colours = {name: (lambda n: lambda t: n)(name) for name in ("red", "green", "blue")}
    # Tile 0 has no audio at all; tiles 1 and 2 do.
    tones: dict[str, Tone] = {"green": lambda t: 880.0, "blue": lambda t: 440.0}
    asks = await nc.subscribe("ctl.audio.*")
    stitcher = make_stitcher(nc, js, fp, "", "cmaf")
    async with running(stitcher), AvPublisher(nc, colours, tones) as publisher:
        sound = stitcher._sound
        assert sound is not None and sound.choice.carried is None
        # Looking for audio: every tile's grabber is asked.
        first = {m.subject for m in await drain(asks, at_least=4)}
        assert first == {subjects.audio_wanted(sid(name)) for name in NAMES}
        await until(lambda: sound.choice.carried is not None, SETTLE + WAIT)
        assert sound.choice.carried == sid("green")
        await asyncio.sleep(0.5)  # the subscriptions follow within CHECK
        # Tile 0 stays watched (it may start sending); tile 2 is not needed.
        assert sound.subscribed == {subjects.audio(sid("red")), subjects.audio(sid("green"))}
        await drain(asks)
        later = {m.subject for m in await drain(asks, at_least=2)}
        assert later == {subjects.audio_wanted(sid("red")), subjects.audio_wanted(sid("green"))}
        data = await media_until(http, fp, time.time() + 1.0)
        decoded = Decoded(data)
        tail = decoded.sound[-RATE // 2 :]
        assert peak_hz(tail) == pytest.approx(880, abs=4)

        # Tile 1's audio stops: after LOST_AFTER, tile 2's is carried.
        del publisher.tones["green"]
        stopped = time.time()
        await until(lambda: sound.choice.carried == sid("blue"), LOST_AFTER + SETTLE + WAIT)
        assert time.time() - stopped >= LOST_AFTER - 0.5
        data = await media_until(http, fp, time.time() + 1.0)
    decoded = Decoded(data)
    assert peak_hz(decoded.sound[-RATE // 2 :]) == pytest.approx(440, abs=4)
    assert decoded.sound.size == pytest.approx(decoded.video_seconds * RATE, abs=1024)


async def test_audio_off_makes_no_audio_stream(
    nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    fp = "4" * 32
    colours = {"red": lambda t: "red"}
    stitcher = make_stitcher(nc, js, fp, "off", "cmaf")
    async with running(stitcher), AvPublisher(nc, colours, {"red": lambda t: 440.0}):
        assert stitcher._sound is None
        assert stitcher._renderer is not None and stitcher._renderer.sound is None
        data = await media_until(http, fp, time.time())
    decoded = Decoded(data)
    assert decoded.kinds == ["video"] and decoded.sound.size == 0
    assert len(decoded.pictures) >= FPS


HLS_JS_PLAYER = """async ([playlist, seconds]) => {
  const video = document.createElement("video");
  video.muted = true;  // a page may not make sound without a click; muted, it still decodes
  document.body.append(video);
  const hls = new Hls({ lowLatencyMode: true });
  const codecs = [];
  const fatal = [];
  hls.on(Hls.Events.BUFFER_CODECS, (_, tracks) => {
    for (const [kind, track] of Object.entries(tracks)) {
      if (track?.codec) codecs.push(`${kind}:${track.codec}`);
    }
  });
  hls.on(Hls.Events.ERROR, (_, error) => { if (error.fatal) fatal.push(error.details); });
  hls.loadSource(playlist);
  hls.attachMedia(video);
  await video.play();
  const start = video.currentTime;
  while (video.currentTime < start + seconds && !fatal.length) {
    await new Promise((done) => setTimeout(done, 100));
  }
  const result = {
    codecs, fatal, played: video.currentTime - start,
    audioBytes: video.webkitAudioDecodedByteCount, videoBytes: video.webkitVideoDecodedByteCount,
  };
  hls.destroy();
  return result;
}"""


@pytest.mark.parametrize("hls_format", ["cmaf", "ts"])
async def test_hls_js_plays_the_pictures_and_the_sound(
    nc: Client, js: JetStreamContext, http: httpx.AsyncClient, page: Page, hls_format: str
) -> None:
    """hls.js (the copy the gateway serves) in Chromium: one SourceBuffer for both tracks of
    the CMAF parts (or both demuxed from MPEG-TS), AAC-LC found, both decoded, no fatal
    error."""
    fp = ("5" if hls_format == "cmaf" else "6") * 32
    colours = {"red": lambda t: "red", "green": lambda t: "green"}
    stitcher = make_stitcher(nc, js, fp, "1", hls_format)
    async with running(stitcher), AvPublisher(nc, colours, {"green": lambda t: 880.0}):
        await media_until(http, fp, time.time())
        await page.goto(f"{http.base_url}/")
        await page.add_script_tag(url=f"{http.base_url}/vendor/hls.js")
        result = await page.evaluate(HLS_JS_PLAYER, [f"/play/{fp}/index.m3u8", 3])
    print(f"\nhls.js, {hls_format}: {result}")
    assert not result["fatal"] and result["played"] >= 3
    assert any("mp4a.40.2" in codec for codec in result["codecs"]), result["codecs"]
    assert any("avc1" in codec for codec in result["codecs"]), result["codecs"]
    assert result["audioBytes"] > 0 and result["videoBytes"] > 0


class Listener:
    """An aiortc viewer offering what a browser offers (H.264 video and audio, recvonly); it
    keeps the left channel of the sound it decodes and counts the pictures."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly").setCodecPreferences(chromium_like(
            "42001f", "42e01f"))  # fmt: skip
        self.pc.addTransceiver("audio", direction="recvonly")
        self.sound: list[npt.NDArray[np.float32]] = []
        self.pictures = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._read(track), name="test listener"))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.AudioFrame):
                self.sound.append(frame.to_ndarray().reshape(-1, 2)[:, 0] / 32768.0)
            else:
                self.pictures += 1

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_webrtc_viewer_hears_the_chosen_tile_as_opus(
    nc: Client, js: JetStreamContext
) -> None:
    fp = "7" * 32
    colours = {"red": lambda t: "red", "green": lambda t: "green"}
    tones: dict[str, Tone] = {"red": lambda t: 440.0, "green": lambda t: 880.0}
    stitcher = make_stitcher(nc, js, fp, "1", "cmaf", whep_viewers=2, preset="ultrafast")
    listener = Listener()
    try:
        async with running(stitcher), AvPublisher(nc, colours, tones):
            answer = await offer_over_nats(nc, fp, listener)  # type: ignore[arg-type]
            assert not answer.error, answer.error
            assert "opus/48000/2" in answer.sdp.lower() and "m=audio" in answer.sdp
            await listener.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer.sdp, type="answer")
            )
            await until(lambda: sum(map(len, listener.sound)) >= 2 * RATE, WAIT + 5)
            assert listener.pictures > 0
    finally:
        await listener.close()
    sound = np.concatenate(listener.sound)
    tail = sound[-RATE:]
    assert peak_hz(tail) == pytest.approx(880, abs=4)
    assert float(np.sqrt(np.mean(tail**2))) == pytest.approx(0.3 / 2**0.5, rel=0.15)


async def test_a_grabbers_sound_reaches_the_mosaic(
    nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    """With the real grabber: a 5.1 AAC source (a 1 kHz tone in front left and centre) is
    decoded, sent on ``audio.<sid>`` once the stitcher asks, and carried by the mosaic."""
    from pipeline.messages.events import Tile
    from pipeline.producers.grabber import Grabber
    from pipeline.sources.policy import SourcePolicy
    from pipeline.sources.synthetic import LiveHlsSource, SourceServer
    from pipeline.state.model import MosaicState
    from pipeline.state.mosaic import source_id
    from tests.test_grabber import FAST
    from tests.test_grabber_audio import clip_with_audio, vod

    fp = "8" * 32
    clip = clip_with_audio((40, 90, 200), [-6.0, None, -6.0, None, None, None], "5.1")
    with SourceServer({"plain": LiveHlsSource((40, 90, 200))}) as server:
        url = vod(server, "surround", clip)
        state = MosaicState(fp=fp, tiles=(Tile(url, "tone"),), width=320, height=180, fps=FPS,
                            audio="0")  # fmt: skip
        stitcher = Stitcher(nc=nc, js=js, fp=fp, mosaic=state, worker_id="st-grab",
                            hls_format="cmaf", preset="ultrafast")  # fmt: skip
        grabber = Grabber(nc=nc, source_id=source_id(url, 320, 180), url=url, width=320,
                          height=180, fps=25.0, worker_id="grabber-surround",
                          policy=SourcePolicy.local(), **FAST)  # type: ignore[arg-type]  # fmt: skip
        await grabber.start()
        try:
            async with running(stitcher):
                await until(lambda: stitcher._sound is not None and stitcher._sound.choice
                            .sending(grabber.source_id, stitcher._clock()), WAIT)  # fmt: skip
                data = await media_until(http, fp, time.time() + 2.0)
        finally:
            await grabber.stop()
    decoded = Decoded(data)
    assert decoded.kinds == ["video", "audio"]
    assert decoded.sound.size == pytest.approx(decoded.video_seconds * RATE, abs=1024)
    tail = decoded.sound[-RATE:]
    assert peak_hz(tail) == pytest.approx(1000, abs=4)
    # -6 dBFS in front left, plus the centre at -3 dB: 0.5 * (1 + 0.707). Measured as the
    # tone's amplitude, not the sample peak: a chunk late on a busy machine leaves a few ms
    # of silence whose edges the AAC coder rings (a peak of 1.39 was seen once under load).
    assert tone_amplitude(tail, 1000) == pytest.approx(0.5 * (1 + 2**-0.5), rel=0.1)
