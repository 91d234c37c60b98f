"""Frame bus load: ``python -m bench.busload pub|sub ...``, one process each, for case 7.

- ``pub --url U --prefix P --subjects N --seconds D [--rate FPS] --tile WxH``: publishes packed
  tile frames (:func:`~pipeline.messages.frames.pack_frame`, packed once per subject: this
  measures the transport, not the packing) on ``P.0`` ... ``P.<N-1>`` with core NATS, as fast
  as it can or at ``FPS`` frames per second in all; prints ``{"sent": n, "seconds": s, "cpu": s}``.
- ``sub --url U --prefix P --seconds D``: prints ``ready`` once subscribed to ``P.*``, unpacks
  every frame (what a stitcher does on receipt), ends 1 s after the last one (at most ``D`` +
  30 s after it started); prints ``{"received": n, "first": t, "last": t, "bad": n, "cpu": s}``.

``cpu`` is the process's own CPU time over its measurement (start-up excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from nats.aio.msg import Msg

from pipeline.errors import MessageError
from pipeline.messages.frames import FrameHeader, pack_frame, unpack_frame
from pipeline.nats.connect import connect


async def publish(args: argparse.Namespace) -> None:
    width, height = (int(v) for v in args.tile.split("x"))
    nc = await connect(args.url, name="bench-pub")
    pixels = bytes(width * height * 3 // 2)
    frames = [
        (
            f"{args.prefix}.{i}",
            pack_frame(
                FrameHeader(
                    source_id=f"bench-{i}",
                    seq=0,
                    pts=0.0,
                    wall=time.time(),
                    width=width,
                    height=height,
                ),
                pixels,
            ),
        )  # fmt: skip
        for i in range(args.subjects)
    ]
    sent = 0
    cpu0 = time.process_time()
    began = time.monotonic()
    end = began + args.seconds
    try:
        while time.monotonic() < end:
            if args.rate:
                due = int((time.monotonic() - began) * args.rate)
                while sent < due:
                    subject, payload = frames[sent % len(frames)]
                    await nc.publish(subject, payload)
                    sent += 1
                await asyncio.sleep(0.005)
            else:
                for _ in range(16):
                    subject, payload = frames[sent % len(frames)]
                    await nc.publish(subject, payload)
                    sent += 1
                await asyncio.sleep(0)  # let the client's flusher write
        await nc.flush()
    finally:
        await nc.close()
    out = {"sent": sent, "seconds": time.monotonic() - began, "cpu": time.process_time() - cpu0}
    print(json.dumps(out), flush=True)


async def subscribe(args: argparse.Namespace) -> None:
    nc = await connect(args.url, name="bench-sub")
    state = {"received": 0, "bad": 0, "first": 0.0, "last": 0.0}

    async def on_frame(msg: Msg) -> None:
        try:
            unpack_frame(msg.data)
        except MessageError:
            state["bad"] += 1
        now = time.monotonic()
        if not state["received"]:
            state["first"] = now
        state["received"] += 1
        state["last"] = now

    await nc.subscribe(f"{args.prefix}.*", cb=on_frame, pending_msgs_limit=200_000,
                       pending_bytes_limit=1 << 30)  # fmt: skip
    await nc.flush()
    print("ready", flush=True)
    cpu0 = time.process_time()
    deadline = time.monotonic() + args.seconds + 30
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if state["received"] and now - state["last"] > 1.0:
                break
    finally:
        await nc.close()
    print(json.dumps({**state, "cpu": time.process_time() - cpu0}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Frame bus load for the benchmarks.")
    parser.add_argument("mode", choices=("pub", "sub"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--subjects", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--tile", default="320x180")
    args = parser.parse_args(argv)
    asyncio.run(publish(args) if args.mode == "pub" else subscribe(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
