"""Alarms and meters in a mosaic's output, end to end on a real nats-server: real grabbers on
media made here with PyAV (one source goes black at a known time and has no sound, the other
moves and carries a 1 kHz tone at -20 dBFS), the projector, a stitcher and the gateway. The
decoded LL-HLS output shows the black tile with the red alarm border and the other without one,
the other's meter bars lit up to -20 dBFS and none on the silent tile, a clock that moves, and
the tone as the mosaic's sound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.consumers.canvas import Planes, rgb_to_yuv
from pipeline.consumers.overlays import (
    PICTURE_KINDS,
    SCALE_DB,
    alarm_colour,
    border_width,
    meter_panel,
)
from pipeline.consumers.stitcher import Stitcher
from pipeline.control.projector import Projector
from pipeline.messages.events import Tile
from pipeline.nats.topology import ALARMS
from pipeline.producers.grabber import Grabber
from pipeline.sources.policy import SourcePolicy
from pipeline.sources.synthetic import SourceServer
from pipeline.state.model import MosaicState, SourceState
from pipeline.state.mosaic import layout, source_id, source_key
from pipeline.state.stored import decode_entry
from tests.alarmmedia import Span, scripted_clip
from tests.test_alarms_grabber import vod
from tests.test_grabber import FAST
from tests.test_sound_pure import peak_hz
from tests.test_stitcher import running
from tests.test_stitcher_audio import Decoded, media_until
from tests.test_stitcher_audio import http as http  # noqa: F401 (a fixture)

W, H, TW, TH = 640, 180, 320, 180  # two 16:9 tiles side by side, no borders
FP = "a1" * 16
BLACK_AT = 1.5
TONE_DB = -20.0


@pytest.fixture(scope="module")
def server() -> Iterator[SourceServer]:
    with SourceServer({}) as running_server:
        yield running_server


def tile(picture: Planes, index: int) -> Planes:
    x, y = layout(2, W, H, 2).origins[index]
    return Planes(
        picture.y[y : y + TH, x : x + TW],
        picture.u[y // 2 : (y + TH) // 2, x // 2 : (x + TW) // 2],
        picture.v[y // 2 : (y + TH) // 2, x // 2 : (x + TW) // 2],
    )


def border_chroma(planes: Planes) -> tuple[float, float]:
    """Mean U and V of the left border band of a tile (chroma rows of its middle half)."""
    band = max(1, border_width(TH) // 2)
    rows = slice(TH // 8, 3 * TH // 8)
    return float(planes.u[rows, :band].mean()), float(planes.v[rows, :band].mean())


def top_lit_db(planes: Planes, channel: int) -> float | None:
    """The level (dBFS) the meter's bar ``channel`` is lit up to, read off the luma: a row is
    lit when it is closer to the lit bar's luma than to the unlit one's."""
    panel = meter_panel(2, TW, TH)
    assert panel is not None
    rows = panel.segments * panel.segment_rows
    x = panel.x + panel.bar_x[channel] + panel.bar_width // 2
    column = planes.y[panel.bar_top : panel.bar_top + rows, x].astype(float)
    lit = np.abs(column - panel.lit.y[:, 0]) < np.abs(column - panel.unlit.y[:, 0])
    if not lit.any():
        return None
    top_segment = int(np.flatnonzero(lit)[0]) // panel.segment_rows
    return -top_segment * SCALE_DB / panel.segments


async def test_the_output_shows_the_alarm_border_the_meters_the_clock_and_the_sound(
    server: SourceServer, nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    dark = vod(
        server, "dark", scripted_clip(40.0, [Span("black", BLACK_AT, 40.0)], audio=False), 40.0
    )
    tone = vod(server, "tone", scripted_clip(40.0, levels=(TONE_DB, TONE_DB)), 40.0)
    state = MosaicState(
        fp=FP, tiles=(Tile(dark, "dark"), Tile(tone, "tone")), width=W, height=H, fps=25,
        cols=2, alarms="black:0.5", audio="1", clock=True, created_at=time.time(),
    )  # fmt: skip
    grabbers = [
        Grabber(
            nc=nc,
            source_id=source_id(url, TW, TH),
            url=url,
            width=TW,
            height=TH,
            fps=25.0,
            worker_id=f"grabber-{name}",
            policy=SourcePolicy.local(),
            **FAST,
        )  # type: ignore[arg-type]  # fmt: skip
        for name, url in (("dark", dark), ("tone", tone))
    ]
    assert (layout(2, W, H, 2).tile_width, layout(2, W, H, 2).tile_height) == (TW, TH)
    projector = Projector(nc, js)
    await projector.start()
    kv = await js.key_value(ALARMS.name)
    stitcher = Stitcher(nc=nc, js=js, fp=FP, mosaic=state, worker_id="st-alarms",
                        hls_format="cmaf", preset="ultrafast")  # fmt: skip
    black: list[float] = []

    async def black_raised() -> bool:
        try:
            entry = await kv.get(source_key(dark))
        except Exception:  # noqa: BLE001 - not there yet
            return False
        src: SourceState = decode_entry(ALARMS.name, entry.value or b"").state
        black[:] = [a.onset_wall for a in src.active if a.kind == "black"]
        return bool(black)

    try:
        for grabber in grabbers:
            await grabber.start()
        async with running(stitcher):
            first = await media_until(http, FP, time.time() + 0.5)
            deadline = time.monotonic() + 20
            while not await black_raised():
                assert time.monotonic() < deadline, "black never raised"
                await asyncio.sleep(0.2)
            # The mosaic shows it from onset + its 0.5 s hold; take media made after that.
            data = await media_until(http, FP, max(time.time(), black[0] + 0.5) + 1.0)
    finally:
        for grabber in grabbers:
            await grabber.stop()
        await projector.stop()

    decoded = Decoded(data)
    picture = decoded.pictures[-1][1]
    dark_tile, tone_tile = tile(picture, 0), tile(picture, 1)
    # The black tile has the red (picture-kind) border; the moving one none.
    red = rgb_to_yuv(alarm_colour(tuple(PICTURE_KINDS)))
    u, v = border_chroma(dark_tile)
    assert abs(u - red[1]) < 12 and abs(v - red[2]) < 12, (u, v, red)
    u, v = border_chroma(tone_tile)
    assert abs(v - red[2]) > 40, "the tile without an alarm has a red border"
    # The tone's meter: both bars lit up to about -20 dBFS (a segment is 1-3 dB, the bar
    # falls slowly between readings); the silent tile has no meter at all.
    for channel in (0, 1):
        level = top_lit_db(tone_tile, channel)
        assert level is not None and abs(level - TONE_DB) <= 4, level
    assert top_lit_db(dark_tile, 0) is None
    # The clock moved between the first media and the last.
    early = Decoded(first).pictures[-1][1]
    corner = (slice(H - 40, H), slice(W - 160, W))
    assert np.abs(early.y[corner].astype(int) - picture.y[corner].astype(int)).max() > 50
    # The sound is the tone tile's.
    assert decoded.kinds == ["video", "audio"]
    assert peak_hz(decoded.sound[-48000:]) == pytest.approx(1000, abs=4)
