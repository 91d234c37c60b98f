"""``tessera worker KIND TARGET ...``: one worker process, as a provider starts it.

- ``tessera worker grabber <source_id> --url U --width W --height H --fps F``
- ``tessera worker stitcher <fp>`` (the mosaic is read from projected state)
- ``tessera worker jit <session_id>`` (the session request is read from projected state)

The worker connects to ``NATS_URL``, runs its service until SIGTERM/SIGINT, and stops it
gracefully (a second signal exits at once). It is not meant to be typed by people, but it can
be, which helps when debugging one source.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.config.settings import Config
from pipeline.errors import TesseraError
from pipeline.nats.connect import connect, resolve_url
from pipeline.nats.subjects import token
from pipeline.runtime.service import Service, run_until_signal
from pipeline.webrtc.turn import turn_config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``worker`` to the CLI's subcommands."""
    worker = sub.add_parser(
        "worker",
        help="run one worker process (started by a provider)",
        description="Run one worker: what providers start. Settings come from the environment.",
    )
    kinds = worker.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    grabber = kinds.add_parser("grabber", help="pull one source into tile frames")
    grabber.add_argument("target", metavar="SOURCE_ID")
    grabber.add_argument("--url", required=True)
    grabber.add_argument("--width", type=int, required=True)
    grabber.add_argument("--height", type=int, required=True)
    grabber.add_argument("--fps", type=float, default=25.0)
    stitcher = kinds.add_parser("stitcher", help="compose one mosaic into HLS")
    stitcher.add_argument("target", metavar="FP")
    jit = kinds.add_parser("jit", help="serve one JIT session over WebRTC")
    jit.add_argument("target", metavar="SESSION_ID")
    return worker


def worker_id(args: argparse.Namespace) -> str:
    """The id the provider gave this worker (or ``<kind>-<target>``)."""
    return os.environ.get("TESSERA_WORKER_ID") or f"{args.kind}-{args.target}"


async def _grabber(config: Config, args: argparse.Namespace, nc: object) -> Service:
    from pipeline.producers.grabber import Grabber
    from pipeline.sources.policy import SourcePolicy

    return Grabber(
        nc=nc,  # type: ignore[arg-type]
        source_id=token(args.target),
        url=args.url,
        width=args.width,
        height=args.height,
        fps=args.fps,
        worker_id=worker_id(args),
        policy=SourcePolicy.for_config(config),
        heartbeat_interval=config.heartbeat_interval,
        open_timeout=config.source_open_timeout,
        read_timeout=config.source_read_timeout,
        frame_slot=_frame_slot(config, nc, args.target),
        on_stuck=_exit_stuck,
    )


def _exit_stuck(reason: str) -> None:
    """A grabber's decode thread hangs inside a call no timeout ends: end the process (its
    provider sees the exit and starts it again) rather than heartbeat on without frames."""
    import logging
    import sys

    logging.getLogger("tessera.worker").error("exiting: %s", reason)
    sys.stderr.flush()
    os._exit(70)  # a thread cannot be cancelled; only the process can end it


def _frame_slot(config: Config, nc: object, source_id: str) -> Path | None:
    """The shared-memory slot of ``source_id`` when frames go that way: ``shm`` (``tessera up``
    turns ``auto`` into ``shm`` for the workers it starts itself, all on its machine; a worker
    that an agent started keeps ``auto``, which means nats: its stitchers may be elsewhere)."""
    from nats.aio.client import Client

    from pipeline.frames import slot as frameslot

    if config.frame_transport != "shm" or not isinstance(nc, Client) or not nc.connected_url:
        return None
    url = nc.connected_url
    return frameslot.slot_path(frameslot.namespace(f"{url.hostname}:{url.port}"), source_id)


async def _stitcher(config: Config, args: argparse.Namespace, nc: object) -> Service:
    from nats.aio.client import Client

    from pipeline.consumers.stitcher import Stitcher
    from pipeline.control.read import read_entry
    from pipeline.state.model import MosaicState

    assert isinstance(nc, Client)
    js = nc.jetstream()
    fp = token(args.target)
    state = await read_entry(js, "mosaics", fp)
    if not isinstance(state, MosaicState):
        raise TesseraError(f"no mosaic {fp} in the projected state: was it created?")
    return Stitcher(
        nc=nc,
        js=js,
        fp=fp,
        mosaic=state,
        worker_id=worker_id(args),
        segment_duration=config.segment_duration,
        dead_after=config.dead_source_timeout,
        heartbeat_interval=config.heartbeat_interval,
        preset=config.x264_preset,
        crf=config.x264_crf,
        frame_slots=lambda sid: _frame_slot(config, nc, sid),
    )


async def _jit(config: Config, args: argparse.Namespace, nc: object) -> Service:
    from nats.aio.client import Client

    from pipeline.control.read import read_entry
    from pipeline.producers.jit.worker import JitWorker
    from pipeline.sources.policy import SourcePolicy
    from pipeline.state.model import SessionState

    assert isinstance(nc, Client)
    js = nc.jetstream()
    sid = token(args.target)
    state = await read_entry(js, "sessions", sid)
    if not isinstance(state, SessionState):
        raise TesseraError(f"no session {sid} in the projected state: was it requested?")
    return JitWorker(
        nc=nc,
        js=js,
        session_id=sid,
        inputs=state.inputs,
        options=state.options,
        worker_id=worker_id(args),
        policy=SourcePolicy.for_config(config),
        media_roots=config.media_root_paths,
        s3_endpoint_url=config.s3_endpoint_url,
        ice_servers=(turn.ice_server(sid),) if (turn := turn_config(config)) else (),
        heartbeat_interval=config.heartbeat_interval,
    )


async def run(config: Config, args: argparse.Namespace) -> int:
    """Run the worker ``args.kind`` until a signal."""
    nc = await connect(
        resolve_url(config, args.kind), name=worker_id(args), role=args.kind, forever=True
    )
    try:
        make = {"grabber": _grabber, "stitcher": _stitcher, "jit": _jit}[args.kind]
        service = await make(config, args, nc)
        await run_until_signal(service)
    finally:
        if not nc.is_closed:
            await nc.drain()
    return 0
