"""Case 14, tile transport (issue 20): raw vs JPEG tiles between a grabber and a stitcher on
different machines, per tile at 25 fps.

Tiles are the bench clip (:func:`bench.media.clips`: 1280x720 ``testsrc2`` with temporal noise,
3 Mbit/s H.264) decoded and fitted by the grabber's own code (:func:`bench.stages.grabber_stages`)
at 320x180 and 640x360.

- **Codec** (in this process, one thread, ``time.thread_time`` around each side): the
  grabber's work per frame message, raw (:func:`~pipeline.messages.frames.pack_frame` of the
  planes) or JPEG (:func:`~pipeline.frames.tilecodec.encode` and the pack, what
  ``Grabber._pack`` does), and the stitcher's: raw unpack, or the unpack, the header check the
  intake makes and the decode the render thread makes (:class:`~pipeline.consumers.jpegtiles.
  JpegTiles`, every frame shown); bytes per frame message and per second at 25 fps; PSNR of
  the decoded tile against the raw one (all three planes).
- **Transport**: the tiles of a 1280x720 mosaic (:data:`SIZES`: 16 of 320x180, 4 of 640x360)
  at 25 fps each from one connection to another
  through one nats-server, on ``frames.*`` subjects that ``FRAMES`` captures (what grabbers and
  stitchers use); the receiving side unpacks every frame (and checks the JPEG header). The
  CPU of this process (both sides) and of nats-server per tile frame, raw and JPEG alternated.

The whole cost of one tile frame between two machines is then the codec's two sides plus the
transport: ``tile_cpu_ms_{raw,jpeg}_<size>``, what the cluster case quotes against the bandwidth
saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from nats.aio.msg import Msg

from bench.cases.frame_bus import bus_server
from bench.core import Context, Result, fmt, median
from bench.cpu import cpu_seconds
from bench.media import clips
from bench.stages import grabber_stages
from pipeline.consumers.compositor import TileKind, TileView
from pipeline.consumers.jpegtiles import JpegTiles
from pipeline.frames import tilecodec
from pipeline.messages.frames import pack_frame, unpack_frame
from pipeline.nats.connect import connect

NAME = "tile_transport"
TITLE = "14. Tile transport: raw vs JPEG tiles between machines"
SIZES = {(320, 180): 16, (640, 360): 4}
"""Tile sizes, and how many tiles of each a 1280x720 mosaic has (the transport's subjects)."""
FPS = 25
ENCODINGS = ("raw", "jpeg")


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


def messages(packed: Sequence[bytes], encoding: str) -> tuple[list[bytes], float]:
    """The frame messages a grabber sends for the raw messages ``packed`` (``encoding``
    raw or jpeg), and the grabber's CPU ms per message to make them."""
    out: list[bytes] = []
    began = time.thread_time()
    for message in packed:
        header, pixels = unpack_frame(message)
        if encoding == "jpeg":
            data = tilecodec.encode(pixels, header.width, header.height)
            out.append(pack_frame(msgspec.structs.replace(header, encoding="jpeg"), data))
        else:
            out.append(pack_frame(header, pixels))
    spent = time.thread_time() - began
    # The raw side unpacked each message above (a memoryview, no copy) before packing it, as
    # the jpeg side did: the same on both, and well under a microsecond.
    return out, spent * 1000 / max(1, len(packed))


def receive(sent: Sequence[bytes]) -> tuple[list[bytes], float]:
    """What a stitcher makes of each message, as raw planes, and its CPU ms per message: the
    unpack, and for a JPEG the intake's header check and the render thread's decode."""
    tiles = JpegTiles()
    shown: list[bytes | memoryview | None] = []
    try:
        began = time.thread_time()
        for serial, message in enumerate(sent, start=1):
            header, pixels = unpack_frame(message)
            if header.encoding == "jpeg":
                tilecodec.jpeg_size(pixels)
            view = tiles.decoded((TileView(TileKind.LIVE, serial, header, pixels),))[0]
            shown.append(view.pixels)
        spent = time.thread_time() - began
    finally:
        tiles.close()
    return [bytes(p or b"") for p in shown], spent * 1000 / max(1, len(sent))


def psnr(a: bytes, b: bytes) -> float:
    diff = np.frombuffer(a, np.uint8).astype(np.float64) - np.frombuffer(b, np.uint8)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


def codec(packed: list[bytes], rounds: int) -> dict[str, Any]:
    """Per encoding: grabber ms, stitcher ms, bytes per message (median of rounds), PSNR."""
    figures: dict[str, Any] = {}
    raw_tiles = [bytes(unpack_frame(m)[1]) for m in packed]
    for encoding in ENCODINGS:
        grab, stitch = [], []
        sent: list[bytes] = []
        got: list[bytes] = []
        for _ in range(rounds):
            sent, grab_ms = messages(packed, encoding)
            got, stitch_ms = receive(sent)
            grab.append(grab_ms)
            stitch.append(stitch_ms)
        sizes = [len(m) for m in sent]
        quality = [psnr(a, b) for a, b in zip(raw_tiles, got, strict=True)]
        figures[encoding] = {
            "grabber_ms": median(grab),
            "stitcher_ms": median(stitch),
            "bytes": float(np.mean(sizes)),
            "bytes_max": max(sizes),
            "psnr": min(quality),
            "psnr_mean": float(np.mean([q for q in quality if math.isfinite(q)] or [math.inf])),
            "samples": {"grabber_ms": grab, "stitcher_ms": stitch},
        }
    return figures


async def transport(
    url: str, server_pid: int, sent: list[bytes], tiles: int, seconds: float
) -> dict[str, Any]:
    """``tiles`` subjects at :data:`FPS` each for ``seconds``, one connection to another:
    CPU of this process and of nats-server per tile frame received, bytes per second."""
    pub = await connect(url, name="bench-tiles-pub")
    sub = await connect(url, name="bench-tiles-sub")
    state = {"received": 0, "bytes": 0}
    ticks = int(seconds * FPS)
    all_in = asyncio.Event()

    async def on_frame(msg: Msg) -> None:
        header, pixels = unpack_frame(msg.data)
        if header.encoding == "jpeg":
            tilecodec.jpeg_size(pixels)
        state["received"] += 1
        state["bytes"] += len(msg.data)
        if state["received"] >= ticks * tiles:
            all_in.set()

    try:
        await sub.subscribe("frames.*", cb=on_frame, pending_msgs_limit=100_000,
                            pending_bytes_limit=1 << 30)  # fmt: skip
        await sub.flush()
        server0 = cpu_seconds(server_pid) or 0.0
        cpu0 = time.process_time()
        loop = asyncio.get_running_loop()
        began = loop.time()
        for tick in range(ticks):
            for tile in range(tiles):
                message = sent[(tick + tile * 7) % len(sent)]
                await pub.publish(f"frames.benchtile-{tile}", message)
            await asyncio.sleep(max(0.0, began + (tick + 1) / FPS - loop.time()))
        await pub.flush()
        with contextlib.suppress(TimeoutError):  # a frame lost is counted, not waited for
            await asyncio.wait_for(all_in.wait(), 5.0)
        spent = time.process_time() - cpu0
        server = (cpu_seconds(server_pid) or 0.0) - server0
    finally:
        await sub.close()
        await pub.close()
    frames = max(1, state["received"])
    return {
        "sent": ticks * tiles,
        "received": state["received"],
        "process_ms": spent * 1000 / frames,
        "server_ms": server * 1000 / frames,
        "ms": (spent + server) * 1000 / frames,
        "bytes_per_s_per_tile": state["bytes"] / tiles / seconds,
    }


async def _transport(
    ctx: Context, bus: tuple[str, int], by_encoding: dict[str, list[bytes]], tiles: int
) -> dict[str, Any]:
    """Raw and JPEG through the bus, alternated, round after round: medians per encoding."""
    rounds = ctx.pick(1, 3)
    seconds = ctx.pick(3.0, 6.0)
    runs: dict[str, list[dict[str, Any]]] = {encoding: [] for encoding in ENCODINGS}
    for r in range(rounds):
        for encoding in ENCODINGS:
            one = await transport(*bus, by_encoding[encoding], tiles, seconds)
            runs[encoding].append(one)
            ctx.progress(
                f"round {r + 1}/{rounds} {encoding:4s}: {one['received']}/{one['sent']} "
                f"frames, {one['ms']:.3f} ms CPU a tile frame (nats-server "
                f"{one['server_ms']:.3f}), {one['bytes_per_s_per_tile'] * 8 / 1e6:.2f} "
                "Mbit/s a tile"
            )
    return {
        encoding: {
            "ms": median([r["ms"] for r in runs[encoding]]),
            "server_ms": median([r["server_ms"] for r in runs[encoding]]),
            "process_ms": median([r["process_ms"] for r in runs[encoding]]),
            "runs": runs[encoding],
        }
        for encoding in ENCODINGS
    }


async def _run(ctx: Context) -> list[Result]:
    ctx.progress("the bench clips (made once with ffmpeg, cached)")
    clip = clips(ctx.cache_dir)[0]
    results: list[Result] = []
    async with bus_server(ctx.work_dir / "tiles") as bus:
        for (width, height), tiles in SIZES.items():
            _, packed = grabber_stages(clip, (width, height), ctx.pick(100, 240))
            results += await _size(ctx, bus, packed, f"{width}x{height}", tiles)
    return results


async def _size(
    ctx: Context, bus: tuple[str, int], packed: list[bytes], size: str, tiles: int
) -> list[Result]:
    """The figures of one tile size: the codec's, then the transport's."""
    figures = codec(packed, ctx.pick(2, 5))
    raw, jpeg = figures["raw"], figures["jpeg"]
    ctx.progress(
        f"{size}: raw {raw['bytes']:,.0f} B, grabber {raw['grabber_ms']:.3f} ms, stitcher "
        f"{raw['stitcher_ms']:.3f} ms; jpeg {jpeg['bytes']:,.0f} B, grabber "
        f"{jpeg['grabber_ms']:.3f} ms, stitcher {jpeg['stitcher_ms']:.3f} ms, PSNR "
        f"{jpeg['psnr']:.1f} dB; transport: {tiles} tiles at {FPS} fps"
    )
    sent = {e: messages(packed, e)[0] for e in ENCODINGS}
    moved = await _transport(ctx, bus, sent, tiles)
    raw_mbit = raw["bytes"] * FPS * 8 / 1e6
    jpeg_mbit = jpeg["bytes"] * FPS * 8 / 1e6
    jpeg_ms = jpeg["grabber_ms"] + jpeg["stitcher_ms"]
    raw_ms = raw["grabber_ms"] + raw["stitcher_ms"]
    raw_total = moved["raw"]["ms"] + raw_ms
    jpeg_total = moved["jpeg"]["ms"] + jpeg_ms
    details = {"figures": figures, "frames": len(packed), "quality": tilecodec.QUALITY,
               "transport": moved}  # fmt: skip
    return [
        Result(NAME, f"raw_mbit_s_{size}", raw_mbit, "Mbit/s",
               note=f"a raw {size} tile at {FPS} fps: {raw['bytes']:,.0f} B a frame",
               details=details),
        Result(NAME, f"jpeg_mbit_s_{size}", jpeg_mbit, "Mbit/s",
               note=f"JPEG q{tilecodec.QUALITY}: {jpeg['bytes']:,.0f} B a frame (largest "
               f"{jpeg['bytes_max']:,}), {jpeg_mbit / raw_mbit:.1%} of raw"),
        Result(NAME, f"jpeg_bytes_share_{size}", jpeg["bytes"] / raw["bytes"], "×",
               target=0.2, note="JPEG bytes ÷ raw bytes per frame message"),
        Result(NAME, f"jpeg_codec_ms_{size}", jpeg_ms, "ms/tile",
               note=f"CPU a tile frame: grabber encode {fmt(jpeg['grabber_ms'])} + stitcher "
               f"check and decode {fmt(jpeg['stitcher_ms'])}; raw pack + unpack {fmt(raw_ms)}"),
        Result(NAME, f"jpeg_psnr_{size}", jpeg["psnr"], "dB", target=38.0, op=">=",
               note=f"worst frame, all planes (mean {jpeg['psnr_mean']:.1f} dB)"),
        Result(NAME, f"tile_cpu_ms_raw_{size}", raw_total, "ms/tile",
               note=f"raw, end to end ({tiles} tiles): pack + NATS (both clients "
               f"{fmt(moved['raw']['process_ms'])}, nats-server "
               f"{fmt(moved['raw']['server_ms'])}) + unpack"),
        Result(NAME, f"tile_cpu_ms_jpeg_{size}", jpeg_total, "ms/tile",
               note=f"JPEG, end to end: encode + NATS (both clients "
               f"{fmt(moved['jpeg']['process_ms'])}, nats-server "
               f"{fmt(moved['jpeg']['server_ms'])}) + check and decode; "
               f"{jpeg_total / raw_total:.2f}× raw"),
    ]  # fmt: skip
