"""Tile frames as JPEG, for grabbers and stitchers on different machines: the codec on tiles
the grabber's scaler made (round trip within a PSNR bound, a fraction of the bytes, sizes that
are not multiples of 16), the stitcher's lazy decode (only frames a picture shows, each once,
in the render thread; a frame that does not decode keeps the tile's last picture), a grabber
publishing JPEG frames and a stitcher composing them over a real nats-server into segments
whose pixels are checked, and bad JPEG payloads dropped, logged and counted."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator

import av
import msgspec
import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio
import simplejpeg
from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.config.settings import load
from pipeline.consumers.canvas import solid
from pipeline.consumers.compositor import TileKind, TileView
from pipeline.consumers.jpegtiles import JpegTiles
from pipeline.consumers.newest import NewestFrame, fits_tile, tile_views
from pipeline.errors import ConfigError
from pipeline.frames import tilecodec
from pipeline.frames.tilecodec import TileCodecError, TileDecoder
from pipeline.messages.frames import FrameHeader, pack_frame, unpack_frame
from pipeline.nats import subjects
from pipeline.producers.grabber import Grabber
from pipeline.producers.scale import TileScaler
from pipeline.runtime.tasks import cancel_and_wait
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from pipeline.workers.run import frame_encoding
from tests.test_grabber import COLOUR, assert_colour, grab, planes, until
from tests.test_stitcher import (
    GRID,
    NAMES,
    STRIP,
    TH,
    TOLERANCE,
    TW,
    make_stitcher,
    next_notice,
    running,
    segment_frames,
    sid,
    yuv,
)

Packed = npt.NDArray[np.uint8]
MIN_PSNR = 38.0
"""dB, all three planes: what the default quality keeps on camera-like content (the module's
table has 39.5 dB as its worst case on the bench clips)."""


def scene(seed: int) -> av.VideoFrame:
    """A 1280x720 camera-like picture: gradients, flat patches with sharp edges, a ripple, and
    sensor noise."""
    rng = np.random.default_rng(seed)
    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([xx / w * 255, yy / h * 255, (1 - xx / w) * 200 + 30], axis=-1)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 200), rng.integers(0, h - 120)
        patch = (slice(y0, y0 + rng.integers(20, 120)), slice(x0, x0 + rng.integers(20, 200)))
        rgb[patch] = rng.integers(0, 255, 3)
    rgb += 20 * np.sin(xx / 9.0 + seed)[..., None] * np.cos(yy / 13.0)[..., None]
    rgb += rng.normal(0, 3, rgb.shape)
    return av.VideoFrame.from_ndarray(np.clip(rgb, 0, 255).astype(np.uint8), format="rgb24")


def tile(width: int, height: int, seed: int = 0) -> bytes:
    """A packed yuv420p tile as a grabber makes it: a scene fitted by its scaler."""
    return bytes(TileScaler(width, height).scale(scene(seed)))


def psnr(a: Packed, b: Packed) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


@pytest.fixture(scope="module")
def decoder() -> Iterator[TileDecoder]:
    made = TileDecoder()
    yield made
    made.close()


# --- the codec --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"),
    [(320, 180), (640, 360), (322, 182), (426, 240), (160, 90)],
)
def test_jpeg_round_trip_keeps_the_tile_for_a_fraction_of_the_bytes(
    decoder: TileDecoder, width: int, height: int
) -> None:
    # Sizes that are no multiple of 16 (a 1280x720 mosaic of 3 columns has 426x240 tiles):
    # JPEG's 16x16 blocks are padded and cut off again.
    for seed in range(2):
        raw = tile(width, height, seed)
        data = tilecodec.encode(raw, width, height)
        assert data[:2] == b"\xff\xd8"
        assert len(data) <= len(raw) / 4, (len(data), len(raw))
        assert tilecodec.jpeg_size(data) == (width, height)
        back = decoder.decode(data, width, height)
        assert back.shape == (len(raw),)
        original = np.frombuffer(raw, np.uint8)
        assert psnr(original, back) >= MIN_PSNR
        # Each plane in its place: luma alone is as close, chroma not swapped or shifted (that
        # would be under 25 dB; small tiles' chroma is coded a little coarser than 38).
        luma = width * height
        assert psnr(original[:luma], back[:luma]) >= MIN_PSNR
        u, v = slice(luma, luma * 5 // 4), slice(luma * 5 // 4, None)
        assert min(psnr(original[u], back[u]), psnr(original[v], back[v])) >= MIN_PSNR - 4


def test_quality_trades_bytes_for_fidelity_and_a_flat_tile_stays_exact(
    decoder: TileDecoder,
) -> None:
    raw = tile(320, 180)
    original = np.frombuffer(raw, np.uint8)
    low, high = (tilecodec.encode(raw, 320, 180, quality=q) for q in (50, 95))
    assert len(low) < len(tilecodec.encode(raw, 320, 180)) < len(high)
    assert psnr(original, decoder.decode(low, 320, 180)) < psnr(
        original, decoder.decode(high, 320, 180)
    )
    flat = b"".join(p.tobytes() for p in solid(320, 180, (81, 90, 240)))
    back = decoder.decode(tilecodec.encode(flat, 320, 180), 320, 180)
    assert np.abs(back.astype(int) - np.frombuffer(flat, np.uint8)).max() <= 1


def test_what_is_not_a_tile_jpeg_is_refused_with_the_reason(decoder: TileDecoder) -> None:
    raw = tile(320, 180)
    with pytest.raises(ValueError, match="86400 bytes, not 100"):
        tilecodec.encode(bytes(100), 320, 180)
    with pytest.raises(ValueError, match="even"):
        tilecodec.encode(bytes(321 * 180 * 3 // 2), 321, 180)
    with pytest.raises(ValueError, match="1 to 100"):
        tilecodec.encode(raw, 320, 180, quality=0)
    with pytest.raises(TileCodecError, match="not a JPEG"):
        tilecodec.jpeg_size(b"not a jpeg at all")
    gray = simplejpeg.encode_jpeg_yuv_planes(np.zeros((180, 320), np.uint8), None, None)
    rgb444 = simplejpeg.encode_jpeg(np.zeros((180, 320, 3), np.uint8), colorsubsampling="444")
    for other in (gray, rgb444):
        with pytest.raises(TileCodecError, match="not a 4:2:0 YCbCr tile"):
            tilecodec.jpeg_size(other)
        with pytest.raises(TileCodecError, match="not a 4:2:0 tile"):
            decoder.decode(other, 320, 180)
    data = tilecodec.encode(raw, 320, 180)
    with pytest.raises(TileCodecError, match="a 320x180 JPEG for a 160x90 tile"):
        decoder.decode(data, 160, 90)
    with pytest.raises(TileCodecError, match="does not decode"):
        decoder.decode(b"\xff\xd8garbage", 320, 180)
    # The decoder goes on after a refusal.
    assert decoder.decode(data, 320, 180).size == len(raw)


def test_a_jpeg_frame_header_round_trips_and_fits_its_tile_by_size_not_bytes() -> None:
    header = _jpeg_header("s", 3, 320, 180)
    back, pixels = unpack_frame(pack_frame(header, b"\xff\xd8jpeg"))
    assert back == header and bytes(pixels) == b"\xff\xd8jpeg"
    assert fits_tile(header, 7, 320, 180)
    assert not fits_tile(header, 7, 160, 90), "another tile size"
    assert not fits_tile(header, 0, 320, 180), "no bytes"
    assert not fits_tile(msgspec.structs.replace(header, pix_fmt="gray"), 7, 320, 180)
    assert not fits_tile(msgspec.structs.replace(header, encoding="zstd"), 7, 320, 180)


def test_frames_on_nats_are_jpeg_unless_the_setting_says_raw() -> None:
    assert frame_encoding(load(env={})) == "jpeg"
    assert frame_encoding(load(env={"TESSERA_FRAME_TRANSPORT": "shm"})) == "jpeg", "the seeds"
    assert frame_encoding(load(env={"TESSERA_FRAME_ENCODING": "RAW"})) == "raw"
    assert frame_encoding(load(flags={"frame_encoding": "jpeg"})) == "jpeg"
    with pytest.raises(ConfigError, match="TESSERA_FRAME_ENCODING"):
        load(env={"TESSERA_FRAME_ENCODING": "zstd"})


# --- the stitcher's lazy decode ---------------------------------------------------------------


def _jpeg_header(sid: str, seq: int, width: int = 160, height: int = 90) -> FrameHeader:
    return FrameHeader(
        source_id=sid,
        seq=seq,
        pts=seq / 25,
        wall=1000.0 + seq,
        width=width,
        height=height,
        encoding="jpeg",
    )


def pixels_of(view: TileView) -> bytes:
    assert view.pixels is not None
    return bytes(view.pixels)


def test_only_the_frames_a_picture_shows_are_decoded_and_each_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tiles = JpegTiles()
    frames = [tilecodec.encode(tile(160, 90, seed), 160, 90) for seed in range(3)]
    newest = NewestFrame()
    # Three frames arrive between two pictures: only the last is ever decoded.
    for seq, data in enumerate(frames):
        newest.take(_jpeg_header("a", seq), memoryview(data), arrived=10.0)
    # One source shown in two tiles.
    views, _ = tile_views((newest, newest), 10.0, warming=False, dead_after=5.0)
    shown = tiles.decoded(views)
    assert tiles.decoded_frames == 1
    assert all(v.kind is TileKind.LIVE and v.header is not None for v in shown)
    assert pixels_of(shown[0]) == pixels_of(shown[1])
    assert shown[0].header is not None and shown[0].header.encoding == "raw"
    expected = np.frombuffer(tile(160, 90, 2), np.uint8)
    assert psnr(expected, np.frombuffer(pixels_of(shown[0]), np.uint8)) >= MIN_PSNR
    # The next pictures show the same frame (an alarm border came): nothing is decoded again.
    for _ in range(3):
        views, _ = tile_views((newest,), 10.1, warming=False, dead_after=5.0)
        again = tiles.decoded(views)
        assert again[0].serial == shown[0].serial
    assert tiles.decoded_frames == 1
    # Raw views pass untouched, the same sequence when there is nothing to decode.
    plain = FrameHeader(source_id="r", seq=0, pts=0, wall=0, width=160, height=90)
    raw = (TileView(TileKind.LIVE, 1, plain, tile(160, 90)),)
    assert tiles.decoded(raw) is raw

    # A frame that does not decode: counted once, logged, never tried again; the tile keeps
    # its last picture under that picture's serial (the compositor draws nothing anew).
    caplog.set_level(logging.DEBUG, logger="tessera.stitcher")
    newest.take(_jpeg_header("a", 9), memoryview(b"\xff\xd8broken"), arrived=10.2)
    for _ in range(3):
        views, _ = tile_views((newest,), 10.2, warming=False, dead_after=5.0)
        kept = tiles.decoded(views)
        assert kept[0].kind is TileKind.LIVE and kept[0].serial == shown[0].serial
        assert pixels_of(kept[0]) == pixels_of(shown[0])
    assert tiles.bad == 1 and tiles.decoded_frames == 1
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "JPEG tile frame not decoded" in warned[0].getMessage()

    # A source whose first frame is bad waits (with its overlays) until a good one comes.
    other = NewestFrame()
    other.take(_jpeg_header("b", 0), memoryview(b"\xff\xd8broken"), arrived=10.0)
    views, _ = tile_views((other,), 10.0, warming=False, dead_after=5.0)
    assert tiles.decoded(views)[0].kind is TileKind.WAITING and tiles.bad == 2
    other.take(_jpeg_header("b", 1), memoryview(frames[0]), arrived=10.1)
    views, _ = tile_views((other,), 10.1, warming=False, dead_after=5.0)
    assert tiles.decoded(views)[0].kind is TileKind.LIVE and tiles.decoded_frames == 2
    tiles.close()
    tiles.close()


# --- over a real nats-server ------------------------------------------------------------------


def split_tile(name: str) -> bytes:
    """The tile of source ``name``: its colour on the left half, the next source's colour on
    the right (so a picture shifted, mirrored or with its chroma swapped shows)."""
    left, right = yuv(name), yuv(NAMES[(NAMES.index(name) + 1) % len(NAMES)])
    planes = solid(TW, TH, left)
    for plane, value, scale in zip(planes, right, (1, 2, 2), strict=True):
        plane[:, TW // 2 // scale :] = value
    return b"".join(p.tobytes() for p in planes)


def half_yuv(picture: tuple[npt.NDArray[np.uint8], ...], index: int, right: bool) -> list[float]:
    """Mean Y, U, V of one half of tile ``index``'s body (inset from its edges and middle)."""
    rect = GRID.rects[index]
    top, bottom = rect.y + 8, rect.y + TH - STRIP - 8
    left = rect.x + (TW // 2 + 8 if right else 8)
    width = TW // 2 - 16
    return [
        float(plane[top // s : bottom // s, left // s : (left + width) // s].mean())
        for plane, s in zip(picture, (1, 2, 2), strict=True)
    ]


@pytest_asyncio.fixture
async def jpeg_sources(nc: Client) -> AsyncIterator[None]:
    """Every source of the test mosaic publishing JPEG frames at 50 fps (twice the mosaic's
    rate: half of them are replaced before a picture shows them)."""
    payloads = {name: tilecodec.encode(split_tile(name), TW, TH) for name in NAMES}

    async def publish() -> None:
        seq = 0
        while True:
            seq += 1
            for name in NAMES:
                header = _jpeg_header(sid(name), seq, TW, TH)
                header = msgspec.structs.replace(header, wall=time.time())
                await nc.publish(subjects.frames(sid(name)), pack_frame(header, payloads[name]))
            await asyncio.sleep(1 / 50)

    task = asyncio.create_task(publish(), name="test jpeg sources")
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def test_a_stitcher_composes_jpeg_tiles_and_drops_bad_ones(
    nc: Client, js: JetStreamContext, jpeg_sources: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tessera.stitcher")
    fp = "7a" * 16
    notices = await nc.subscribe(subjects.segments(fp))
    stitcher = make_stitcher(nc, js, fp, segment_duration=1.0)
    async with running(stitcher):
        # Not a JPEG, and a JPEG of another size: dropped where they come, logged, counted.
        bad = _jpeg_header(sid("red"), 10**6, TW, TH)
        await nc.publish(subjects.frames(sid("red")), pack_frame(bad, b"\xff\xd8 not a jpeg"))
        small = tilecodec.encode(tile(160, 90), 160, 90)
        await nc.publish(subjects.frames(sid("green")), pack_frame(bad, small))
        await next_notice(notices)
        notice = await next_notice(notices)
        frames = await segment_frames(js, notice.key)
        assert len(frames) == 25
        for picture in (frames[0], frames[-1]):
            for index, name in enumerate(NAMES):
                nxt = NAMES[(index + 1) % len(NAMES)]
                for right, want in ((False, yuv(name)), (True, yuv(nxt))):
                    got = half_yuv(picture, index, right)
                    assert all(abs(g - w) <= TOLERANCE for g, w in zip(got, want, strict=True))
        stats = stitcher.stats()
        assert stats.bad_frames == 2 and stats.dead_tiles == 0
        assert stats.replaced_frames > 0, "frames replaced before a picture showed them"
    reasons = [r.getMessage() for r in caplog.records if "JPEG tile frame" in r.getMessage()]
    assert any("not a JPEG" in r for r in reasons), reasons
    assert any("a 160x90 JPEG for a 320x180 tile" in r for r in reasons), reasons
    # What FRAMES keeps for a late stitcher is the JPEG too: a tenth of the raw tile.
    last = await js.get_last_msg("FRAMES", subjects.frames(sid("blue")))
    header, pixels = unpack_frame(last.data or b"")
    assert header.encoding == "jpeg" and len(pixels) < TW * TH * 3 // 2 / 10
    await notices.unsubscribe()


@pytest.fixture(scope="module")
def camera() -> Iterator[SourceServer]:
    with SourceServer({"colour": LiveHlsSource(COLOUR)}) as running_server:
        yield running_server


async def test_a_grabber_publishes_jpeg_tiles_of_its_source(
    nc: Client, camera: SourceServer, decoder: TileDecoder
) -> None:
    made: list[Grabber] = []
    try:
        options = {"frame_encoding": "jpeg"}
        url = camera.url("colour")
        grabber, seen = await grab(made, nc, url, 320, 180, name="jpeg", **options)  # type: ignore[arg-type]
        await until(lambda: seen.frame_count() >= 10, 10, "10 frames")
        for _, header, data in list(seen.frames):
            assert (header.encoding, header.width, header.height) == ("jpeg", 320, 180)
            assert len(data) < 320 * 180 * 3 // 2 / 4
        header, data = seen.frames[-1][1:]
        raw = decoder.decode(data, 320, 180).tobytes()
        y, u, v = planes(header, raw)
        assert_colour(y[:45], u[:22], v[:22], COLOUR)  # the top quarter: no moving marker
        assert grabber.published_bytes < grabber.published * 320 * 180 * 3 // 2 / 4
    finally:
        for grabber in made:
            await grabber.stop()
