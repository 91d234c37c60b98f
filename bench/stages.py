"""Per-frame CPU cost of each stage of Tessera's mosaic path, measured on the benchmark clips
with Tessera's own code, one thread, ``time.thread_time`` around each step:

- grabber: ``demux`` (reading packets from the container), ``decode`` (PyAV with the
  grabber's :data:`~pipeline.producers.decode.DECODER_OPTIONS`, one thread), ``scale``
  (:class:`~pipeline.producers.scale.TileScaler`), ``pack``
  (:func:`~pipeline.messages.frames.pack_frame`);
- stitcher: ``compose`` (:class:`~pipeline.consumers.compositor.Compositor`, every tile new in
  every picture, as with live sources) and ``encode``
  (:class:`~pipeline.consumers.encoder.SegmentEncoder`, the stitcher's settings).

Case 1 multiplies these by the frame rates of a running mosaic to split the CPU it measured per
process into stages; whatever a process spent beyond them is its overhead (Python, the event
loop, NATS client work), counted as transport.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import av

from pipeline.consumers.compositor import Compositor, TileKind, TileView
from pipeline.consumers.encoder import EncoderSettings, SegmentEncoder
from pipeline.messages.events import Tile
from pipeline.messages.frames import FrameHeader, pack_frame
from pipeline.producers.decode import DECODER_OPTIONS
from pipeline.producers.scale import TileScaler
from pipeline.state.layouts import layout

WARMUP = 10
"""Frames decoded before timing starts."""


def _frames(path: Path, count: int, times: dict[str, float]) -> Iterator[av.VideoFrame]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = 1
        ctx.options = dict(DECODER_OPTIONS)
        packets = container.demux(stream)
        made = 0
        while made < count:
            began = time.thread_time()
            packet = next(packets, None)
            times["demux"] += time.thread_time() - began
            if packet is None:
                break
            began = time.thread_time()
            decoded = ctx.decode(packet)
            times["decode"] += time.thread_time() - began
            for frame in decoded:
                made += 1
                yield frame


def decoded(path: Path, count: int) -> Iterator[av.VideoFrame]:
    """The first ``count`` frames of ``path``, decoded as a grabber decodes (untimed)."""
    return _frames(path, count, {"demux": 0.0, "decode": 0.0})


def grabber_stages(
    path: Path, tile: tuple[int, int], count: int
) -> tuple[dict[str, float], list[bytes]]:
    """Milliseconds of CPU per frame of each grabber stage, and the packed tiles made."""
    times = {"demux": 0.0, "decode": 0.0, "scale": 0.0, "pack": 0.0}
    scaler = TileScaler(*tile)
    packed: list[bytes] = []
    timed = 0
    for index, frame in enumerate(_frames(path, count + WARMUP, times)):
        if index == WARMUP:  # the first frames pay for opening the decoder and first allocations
            times.update(dict.fromkeys(times, 0.0))
            packed.clear()
        began = time.thread_time()
        pixels = scaler.scale(frame)
        times["scale"] += time.thread_time() - began
        began = time.thread_time()
        header = FrameHeader(
            source_id="bench", seq=index, pts=index / 25, wall=time.time(), width=tile[0],
            height=tile[1],
        )  # fmt: skip
        packed.append(pack_frame(header, pixels))
        times["pack"] += time.thread_time() - began
        timed += index >= WARMUP
    frames = max(1, timed)
    return {stage: spent * 1000 / frames for stage, spent in times.items()}, packed


def stitcher_stages(
    tiles: list[list[bytes]], size: tuple[int, int], pictures: int, preset: str
) -> dict[str, float]:
    """Milliseconds of CPU per picture to compose ``len(tiles)`` live tiles (tile ``i`` cycles
    through the packed frames ``tiles[i]``) and encode the picture."""
    from pipeline.messages.frames import unpack_frame

    n = len(tiles)
    grid = layout(n, *size)
    compositor = Compositor([Tile(url=f"http://cam/{i}", name=f"camera {i}") for i in range(n)],
                            *size)  # fmt: skip
    encoder = SegmentEncoder(EncoderSettings(width=size[0], height=size[1], fps=25, preset=preset))
    times = {"compose": 0.0, "encode": 0.0}
    try:
        for picture in range(pictures + WARMUP):
            if picture == WARMUP:
                times.update(dict.fromkeys(times, 0.0))
            views = []
            for i, frames in enumerate(tiles):
                header, pixels = unpack_frame(frames[(picture + i) % len(frames)])
                views.append(TileView(TileKind.LIVE, picture + 1, header, pixels))
            assert grid.rects[0].w == views[0].header.width  # type: ignore[union-attr]
            began = time.thread_time()
            canvas = compositor.compose(views)
            times["compose"] += time.thread_time() - began
            began = time.thread_time()
            encoder.encode(canvas.frame)
            times["encode"] += time.thread_time() - began
    finally:
        encoder.close()
    return {stage: spent * 1000 / max(1, pictures) for stage, spent in times.items()}
