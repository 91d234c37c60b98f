"""Case 7, frame bus: tile frames (320x180 yuv420p, Tessera's message format) from one
publisher process to one subscriber process through one nats-server, on subjects the ``FRAMES``
stream captures (memory storage, 3 per subject: what grabbers and stitchers use) against the
same through raw core NATS (subjects no stream captures). Interleaved FRAMES, raw, FRAMES, ...

- throughput: the publisher as fast as it can; frames per second received;
- cost: 400 frames/s over 16 subjects (a 16-tile mosaic at 25 fps); CPU-seconds per second of
  publisher + nats-server + subscriber, and its share of case 1's CPU per 16-tile mosaic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.core import ROOT, Context, Result, fmt, median
from bench.cpu import cpu_seconds
from pipeline.nats.connect import connect
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import provision
from pipeline.runtime.procs import die_with_parent

NAME = "frame_bus"
TITLE = "7. Frame bus (FRAMES vs raw core NATS)"
TILE = "320x180"
MOSAIC_FPS = 16 * 25
PREFIXES = {"FRAMES": "frames", "raw": "benchraw"}


def run(ctx: Context) -> list[Result]:
    return asyncio.run(_run(ctx))


async def _child(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
           os.environ.get("PYTHONPATH")]))}  # fmt: skip
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.busload", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent,
    )  # fmt: skip


async def one(url: str, server_pid: int, prefix: str, seconds: float, rate: float,
              subjects: int) -> dict[str, Any]:  # fmt: skip
    """One publisher → one subscriber run; received rate and CPU of the three processes."""
    common = ["--url", url, "--prefix", prefix, "--seconds", str(seconds)]
    sub = await _child("sub", *common)
    pub: asyncio.subprocess.Process | None = None
    try:
        assert sub.stdout is not None
        ready = await asyncio.wait_for(sub.stdout.readline(), 20)
        if ready.strip() != b"ready":
            raise RuntimeError("the subscriber did not start")
        server0 = cpu_seconds(server_pid) or 0.0
        pub = await _child("pub", *common, "--subjects", str(subjects), "--rate", str(rate),
                           "--tile", TILE)  # fmt: skip
        pub_out, _ = await asyncio.wait_for(pub.communicate(), seconds + 30)
        server1 = cpu_seconds(server_pid) or 0.0
        sub_out, _ = await asyncio.wait_for(sub.communicate(), seconds + 40)
    finally:
        for proc in (pub, sub):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    sent = json.loads(pub_out.decode().strip().splitlines()[-1])
    got = json.loads(sub_out.decode().strip().splitlines()[-1])
    span = max(1e-6, got["last"] - got["first"])
    return {
        "sent": sent["sent"],
        "received": got["received"],
        "fps": got["received"] / span,
        "lost": max(0, sent["sent"] - got["received"]),
        "cpu_per_s": (sent["cpu"] + got["cpu"] + server1 - server0) / sent["seconds"],
        "cpu_split": {
            "publisher": sent["cpu"] / sent["seconds"],
            "nats-server": (server1 - server0) / sent["seconds"],
            "subscriber": got["cpu"] / sent["seconds"],
        },
        "seconds": sent["seconds"],
    }


@contextlib.asynccontextmanager
async def bus_server(folder: Path) -> AsyncIterator[tuple[str, int]]:
    """A nats-server of its own in ``folder``, with Tessera's streams (``FRAMES`` captures
    ``frames.>``): its URL and pid (for its CPU); stopped on the way out."""
    server = EmbeddedNats(store_dir=folder / "store")
    await server.start()
    try:
        nc = await connect(server.url, name="bench-provision")
        await provision(nc.jetstream())
        await nc.close()
        assert server.pid is not None
        yield server.url, server.pid
    finally:
        await server.stop()


async def _run(ctx: Context) -> list[Result]:
    rounds = ctx.pick(1, 3)
    burst = ctx.pick(1.5, 4.0)
    paced = ctx.pick(2.0, 6.0)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        kind: {"throughput": [], "cost": []} for kind in PREFIXES
    }
    async with bus_server(ctx.work_dir / "bus") as (url, pid):
        for r in range(rounds):
            for kind, prefix in PREFIXES.items():
                fast = await one(url, pid, prefix, burst, 0.0, 1)
                cost = await one(url, pid, prefix, paced, MOSAIC_FPS, 16)
                runs[kind]["throughput"].append(fast)
                runs[kind]["cost"].append(cost)
                ctx.progress(
                    f"round {r + 1}/{rounds} {kind:6s}: {fast['fps']:,.0f} frames/s "
                    f"({fast['lost']} of {fast['sent']} lost); at {MOSAIC_FPS} frames/s "
                    f"{cost['cpu_per_s']:.3f} CPU-s/s"
                )
    mosaic = ctx.shared.get("mosaic_cost", {}).get(16, {}).get("tessera")
    results = []
    frames_fps = [r["fps"] for r in runs["FRAMES"]["throughput"]]
    raw_fps = [r["fps"] for r in runs["raw"]["throughput"]]
    ratios = [f / r for f, r in zip(frames_fps, raw_fps, strict=True)]
    frames_cost = median([r["cpu_per_s"] for r in runs["FRAMES"]["cost"]])
    raw_cost = median([r["cpu_per_s"] for r in runs["raw"]["cost"]])
    split = {
        part: median([r["cpu_split"][part] for r in runs["FRAMES"]["cost"]])
        for part in ("publisher", "nats-server", "subscriber")
    }
    results.append(Result(
        NAME, "frames_throughput", median(frames_fps), "frames/s",
        note=f"{median(ratios):.2f}× raw core NATS ({fmt(median(raw_fps))} frames/s) in the "
        f"same run; {TILE} yuv420p frames, one publisher, one subscriber",
        details={"fps_samples": frames_fps, "label": "FRAMES (JetStream-captured)",
                 "ratio_to_raw": ratios, "runs": runs["FRAMES"]["throughput"]},
    ))  # fmt: skip
    results.append(Result(
        NAME, "raw_core_throughput", median(raw_fps), "frames/s",
        note="the same frames on subjects no stream captures",
        details={"fps_samples": raw_fps, "label": "raw core NATS",
                 "runs": runs["raw"]["throughput"]},
    ))  # fmt: skip
    share = f"{frames_cost / mosaic:.0%} of case 1's 16-tile mosaic ({fmt(mosaic)} CPU-s/s)" \
        if mosaic else "run mosaic_cost too for its share of a mosaic's CPU"  # fmt: skip
    results.append(Result(
        NAME, "transport_cpu_16_tiles", frames_cost, "CPU-s/s",
        note=f"{MOSAIC_FPS} frames/s through FRAMES: publisher {fmt(split['publisher'])}, "
        f"nats-server {fmt(split['nats-server'])}, subscriber {fmt(split['subscriber'])}; "
        f"raw core {fmt(raw_cost)} ({frames_cost / raw_cost:.2f}×); {share}",
        details={"frames": runs["FRAMES"]["cost"], "raw": runs["raw"]["cost"], "split": split,
                 "raw_cpu_per_s": raw_cost, "mosaic_cpu_per_s": mosaic,
                 "share_of_mosaic": frames_cost / mosaic if mosaic else None},
    ))  # fmt: skip
    return results
