"""Alarms and meters in a mosaic's output, end to end on a real nats-server: real grabbers on
media made here with PyAV, the projector, a stitcher and the gateway, the output decoded from
LL-HLS as a player gets it.

- A source that goes black (no sound) beside one with a 1 kHz tone at -20 dBFS: the black
  tile has the red alarm border, the other none; the tone's meter bars are lit to -20 dBFS and
  the silent tile has no meter; the clock moves; the mosaic's sound is the tone.
- A source that freezes, one whose sound goes silent, and a 5.1 source with one channel far
  too loud: red border on the frozen tile, amber on the silent and the too-loud ones, and the
  5.1 tile's meter shows one tall bar among six."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import httpx
import numpy as np
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from pipeline.consumers.canvas import Planes, rgb_to_yuv
from pipeline.consumers.overlays import (
    AMBER,
    RED,
    SCALE_DB,
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
from pipeline.state.layouts import layout
from pipeline.state.model import MosaicState, SourceState
from pipeline.state.mosaic import source_key
from pipeline.state.stored import decode_entry
from tests.alarmmedia import Span, scripted_clip
from tests.test_alarms_grabber import vod
from tests.test_grabber import FAST
from tests.test_sound_pure import peak_hz
from tests.test_stitcher import running
from tests.test_stitcher_audio import Decoded, media_until
from tests.test_stitcher_audio import http as http  # noqa: F401 (a fixture)

TW, TH = 320, 180
SECONDS = 40.0


@pytest.fixture(scope="module")
def server() -> Iterator[SourceServer]:
    with SourceServer({}) as running_server:
        yield running_server


class Wall:
    """A mosaic of ``urls`` side by side (one row of 320x180 tiles), run end to end."""

    def __init__(self, urls: Sequence[str], **fields: object) -> None:
        self.n = len(urls)
        self.width, self.height = TW * self.n, TH
        grid = layout(self.n, self.width, self.height, self.n)
        assert all(r.size == (TW, TH) for r in grid.rects)
        self.origins = tuple((r.x, r.y) for r in grid.rects)
        self.fp = f"{self.n:02d}" * 16
        tiles = tuple(Tile(url, f"t{i}") for i, url in enumerate(urls))
        self.state = MosaicState(fp=self.fp, tiles=tiles, width=self.width, height=self.height,
                                 fps=25, cols=self.n, created_at=time.time(),
                                 **fields)  # type: ignore[arg-type]  # fmt: skip

    def tile(self, picture: Planes, index: int) -> Planes:
        x, y = self.origins[index]
        return Planes(
            picture.y[y : y + TH, x : x + TW],
            picture.u[y // 2 : (y + TH) // 2, x // 2 : (x + TW) // 2],
            picture.v[y // 2 : (y + TH) // 2, x // 2 : (x + TW) // 2],
        )

    async def run(
        self,
        nc: Client,
        js: JetStreamContext,
        http: httpx.AsyncClient,
        expect: dict[int, str],
        hold: float,
    ) -> tuple[bytes, bytes]:
        """Run until every tile in ``expect`` has its kind raised; then what a player gets
        (early: right after the start; late: made after every alarm shows)."""
        stitcher = Stitcher(nc=nc, js=js, fp=self.fp, mosaic=self.state, worker_id="st-wall",
                            hls_format="cmaf", preset="ultrafast")  # fmt: skip
        grabbers = [
            Grabber(
                nc=nc,
                source_id=sid,
                url=t.url,
                width=TW,
                height=TH,
                fps=25.0,
                worker_id=f"grabber-{i}",
                policy=SourcePolicy.local(),
                **FAST,
            )  # type: ignore[arg-type]  # fmt: skip
            for i, (sid, t) in enumerate(zip(stitcher.tile_sources, self.state.tiles, strict=True))
        ]
        projector = Projector(nc, js)
        await projector.start()
        kv = await js.key_value(ALARMS.name)

        async def onset(index: int) -> float | None:
            try:
                entry = await kv.get(source_key(self.state.tiles[index].url))
            except KeyNotFoundError:
                return None
            src: SourceState = decode_entry(ALARMS.name, entry.value or b"").state
            return next((a.onset_wall for a in src.active if a.kind == expect[index]), None)

        try:
            for grabber in grabbers:
                await grabber.start()
            async with running(stitcher):
                early = await media_until(http, self.fp, time.time() + 0.5)
                async with asyncio.timeout(30):
                    while True:
                        onsets = [await onset(i) for i in expect]
                        if all(o is not None for o in onsets):
                            break
                        await asyncio.sleep(0.2)
                shown = max(o for o in onsets if o is not None) + hold
                late = await media_until(http, self.fp, max(time.time(), shown) + 1.0)
        finally:
            for grabber in grabbers:
                await grabber.stop()
            await projector.stop()
        return early, late


def border_chroma(planes: Planes) -> tuple[float, float]:
    """Mean U and V of the left border band of a tile (chroma rows of its upper middle)."""
    band = max(1, border_width(TH) // 2)
    rows = slice(TH // 8, 3 * TH // 8)
    return float(planes.u[rows, :band].mean()), float(planes.v[rows, :band].mean())


def has_border(planes: Planes, rgb: tuple[int, int, int]) -> bool:
    _, u, v = rgb_to_yuv(rgb)
    got_u, got_v = border_chroma(planes)
    return abs(got_u - u) < 12 and abs(got_v - v) < 12


def lit_to_db(planes: Planes, channels: int, channel: int) -> float | None:
    """The level (dBFS) bar ``channel`` of a ``channels``-bar meter is lit up to, read off the
    luma (a row is lit when closer to the lit bar's luma than to the unlit one's); None: no
    segment lit."""
    panel = meter_panel(channels, TW, TH)
    assert panel is not None
    rows = panel.segments * panel.segment_rows
    x = panel.x + panel.bar_x[channel] + panel.bar_width // 2
    column = planes.y[panel.bar_top : panel.bar_top + rows, x].astype(float)
    lit = np.abs(column - panel.lit.y[:, 0]) < np.abs(column - panel.unlit.y[:, 0])
    if not lit.any():
        return None
    return -(int(np.flatnonzero(lit)[0]) // panel.segment_rows) * SCALE_DB / panel.segments


async def test_black_border_meters_clock_and_sound(
    server: SourceServer, nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    dark = vod(server, "dark", scripted_clip(SECONDS, [Span("black", 1.5, SECONDS)],
                                             audio=False), SECONDS)  # fmt: skip
    tone = vod(server, "tone", scripted_clip(SECONDS, levels=(-20.0, -20.0)), SECONDS)
    wall = Wall([dark, tone], alarms="black:0.5", audio="1", clock=True)
    early, late = await wall.run(nc, js, http, {0: "black"}, hold=0.5)
    decoded = Decoded(late)
    picture = decoded.pictures[-1][1]
    dark_tile, tone_tile = wall.tile(picture, 0), wall.tile(picture, 1)
    assert has_border(dark_tile, RED), border_chroma(dark_tile)
    assert not has_border(tone_tile, RED) and not has_border(tone_tile, AMBER)
    for channel in (0, 1):  # a segment is 1-3 dB; the bar falls slowly between readings
        level = lit_to_db(tone_tile, 2, channel)
        assert level is not None and abs(level - -20.0) <= 4, level
    assert lit_to_db(dark_tile, 2, 0) is None  # no sound, no meter
    first = Decoded(early).pictures[-1][1]
    corner = (slice(TH - 40, TH), slice(wall.width - 160, wall.width))
    assert np.abs(first.y[corner].astype(int) - picture.y[corner].astype(int)).max() > 50
    assert decoded.kinds == ["video", "audio"]
    assert peak_hz(decoded.sound[-48000:]) == pytest.approx(1000, abs=4)


async def test_freeze_silence_and_one_loud_channel_of_six(
    server: SourceServer, nc: Client, js: JetStreamContext, http: httpx.AsyncClient
) -> None:
    frozen = vod(server, "frozen", scripted_clip(SECONDS, [Span("freeze", 1.5, SECONDS)],
                                                 audio=False), SECONDS)  # fmt: skip
    quiet = vod(server, "quiet", scripted_clip(SECONDS, [Span("silence", 1.5, SECONDS)]), SECONDS)
    six = (-40.0, -40.0, 0.0, None, -40.0, -40.0)  # the centre at full scale
    loud = vod(server, "loud", scripted_clip(SECONDS, levels=six, layout="5.1"), SECONDS)
    wall = Wall([frozen, quiet, loud], alarms="freeze:0.5,silence:0.5,loudness:0.5", audio="off")
    # Loudness is known once 3 s were heard: it is raised last.
    _, late = await wall.run(nc, js, http, {0: "freeze", 1: "silence", 2: "loudness"}, hold=0.5)
    picture = Decoded(late).pictures[-1][1]
    frozen_tile, quiet_tile, loud_tile = (wall.tile(picture, i) for i in range(3))
    assert has_border(frozen_tile, RED), border_chroma(frozen_tile)
    assert has_border(quiet_tile, AMBER), border_chroma(quiet_tile)
    assert has_border(loud_tile, AMBER), border_chroma(loud_tile)
    # The silent source's meter is there but unlit; the 5.1 one shows its centre full scale
    # and the others near -40.
    assert [lit_to_db(quiet_tile, 2, c) for c in (0, 1)] == [None, None]
    bars = [lit_to_db(loud_tile, 6, c) for c in range(6)]
    assert bars[2] is not None and bars[2] >= -4, bars
    assert all(b is None or b <= -30 for i, b in enumerate(bars) if i != 2), bars
