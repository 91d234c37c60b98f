"""One worker process: a :data:`~pipeline.messages.workers.WorkerSpec` → the grabber, stitcher
or JIT service, run until SIGTERM/SIGINT.

Providers hand a worker its whole spec: the fork server's child calls :func:`main` with the spec
it decoded from the provider's request, and a spawned worker is ``python -m pipeline worker
--spec JSON``, decoded once here. People can type the same worker by kind, which builds the
same spec (it helps when debugging one source):

- ``tessera worker grabber <source key> --url U --size WxH [--size WxH ...] --fps F``
- ``tessera worker stitcher <fp>`` (the mosaic is read from projected state)
- ``tessera worker jit <session_id>`` (the session request is read from projected state)

The worker connects to ``NATS_URL`` as its kind's NATS user, runs its service until
SIGTERM/SIGINT, and stops it gracefully (a second signal exits at once).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Literal

import nats.errors
from nats.aio.client import Client

from pipeline.config import parsers
from pipeline.config import settings as config_mod
from pipeline.config.settings import Config
from pipeline.errors import ConfigError, TesseraError
from pipeline.messages.codec import decode_worker_spec
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec, WorkerSpec, tile_sizes
from pipeline.nats.connect import connect, resolve_url
from pipeline.nats.subjects import token
from pipeline.runtime import logs
from pipeline.runtime.service import Service, run_command, run_until_signal
from pipeline.webrtc.turn import turn_config

log = logging.getLogger("tessera.worker")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``worker`` to the CLI's subcommands (run it with :func:`command`)."""
    worker = sub.add_parser(
        "worker",
        help="run one worker process (started by a provider)",
        description="Run one worker: what providers start. Settings come from the environment.",
    )
    worker.add_argument(
        "--spec",
        metavar="JSON",
        help="the whole worker spec as JSON (what a provider passes), instead of KIND TARGET",
    )
    kinds = worker.add_subparsers(dest="kind", metavar="KIND")
    grabber = kinds.add_parser("grabber", help="pull one source into tile frames")
    grabber.add_argument("target", metavar="KEY", help="the source key (frames.<KEY>-<W>x<H>)")
    grabber.add_argument("--url", required=True)
    grabber.add_argument(
        "--size",
        metavar="WxH",
        action="append",
        required=True,
        type=_size,
        help="a tile size to make (again for each more size)",
    )
    grabber.add_argument("--fps", type=float, default=25.0)
    stitcher = kinds.add_parser("stitcher", help="compose one mosaic into HLS")
    stitcher.add_argument("target", metavar="FP")
    jit = kinds.add_parser("jit", help="serve one JIT session over WebRTC")
    jit.add_argument("target", metavar="SESSION_ID")
    return worker


def spec_from_args(args: argparse.Namespace) -> WorkerSpec:
    """The spec ``tessera worker`` was given: ``--spec JSON``, or a kind and its options."""
    if args.spec is not None:
        if args.kind is not None:
            raise ConfigError(f"tessera worker got both --spec and {args.kind}: give one")
        return decode_worker_spec(args.spec.encode())
    match args.kind:
        case "grabber":
            return GrabberSpec(
                key=args.target, url=args.url, sizes=tile_sizes(args.size), fps=args.fps
            )
        case "stitcher":
            return StitcherSpec(fp=args.target)
        case "jit":
            return JitSpec(session_id=args.target)
    raise ConfigError("tessera worker needs a KIND (grabber, stitcher or jit) or --spec JSON")


def _size(text: str) -> tuple[int, int]:
    """``WxH`` → (W, H)."""
    try:
        return parsers.dimensions(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a tile size is WxH, like 320x180, not {text!r}"
        ) from None


async def command(config: Config, args: argparse.Namespace) -> int:
    """``tessera worker ...``: the CLI has loaded the settings and set up the logs."""
    return await run(config, spec_from_args(args))


def worker_id(spec: WorkerSpec) -> str:
    """The id the provider gave this worker (or the spec's own, ``<kind>-<target>``)."""
    return os.environ.get("TESSERA_WORKER_ID") or spec.worker_id


async def _grabber(config: Config, spec: GrabberSpec, nc: Client) -> Service:
    from pipeline.producers.grabber import Grabber
    from pipeline.sources.policy import SourcePolicy

    return Grabber.from_spec(
        spec,
        nc=nc,
        worker_id=worker_id(spec),
        policy=SourcePolicy.for_config(config),
        heartbeat_interval=config.heartbeat_interval,
        open_timeout=config.source_open_timeout,
        read_timeout=config.source_read_timeout,
        frame_slots=lambda sid: _frame_slot(config, nc, sid),
        on_stuck=_exit_stuck,
        monitoring=config.monitoring,
        frame_encoding=frame_encoding(config),
    )


def frame_encoding(config: Config) -> Literal["raw", "jpeg"]:
    """What a grabber's frames on NATS carry. ``auto`` is JPEG: with frames on NATS
    (``nats``, what an agent's workers have) its stitchers may be on other machines, where a
    raw 320x180 tile costs 17 Mbit/s; with ``shm`` NATS only carries a seed a second, which as
    JPEG costs the grabber 0.15 ms of CPU a second and ``FRAMES`` a tenth of the memory (bench
    case ``tile_transport``)."""
    return "raw" if config.frame_encoding == "raw" else "jpeg"


def _exit_stuck(reason: str) -> None:
    """A grabber's decode thread hangs inside a call no timeout ends: end the process (its
    provider sees the exit and starts it again) rather than heartbeat on without frames."""
    import logging

    logging.getLogger("tessera.worker").error("exiting: %s", reason)
    sys.stderr.flush()
    os._exit(70)  # a thread cannot be cancelled; only the process can end it


def _frame_slot(config: Config, nc: Client, source_id: str) -> Path | None:
    """The shared-memory slot of ``source_id`` when frames go that way: ``shm`` (``tessera up``
    turns ``auto`` into ``shm`` for the workers it starts itself, all on its machine; a worker
    that an agent started keeps ``auto``, which means nats: its stitchers may be elsewhere)."""
    from pipeline.frames import slot as frameslot

    if config.frame_transport != "shm" or not nc.connected_url:
        return None
    url = nc.connected_url
    return frameslot.slot_path(frameslot.namespace(f"{url.hostname}:{url.port}"), source_id)


async def _stitcher(config: Config, spec: StitcherSpec, nc: Client) -> Service:
    from pipeline.consumers.stitcher import Stitcher
    from pipeline.control.read import read_entry
    from pipeline.state.model import MosaicState

    js = nc.jetstream()
    fp = spec.fp
    state = await read_entry(js, "mosaics", fp)
    if not isinstance(state, MosaicState):
        raise TesseraError(f"no mosaic {fp} in the projected state: was it created?")
    return Stitcher(
        nc=nc,
        js=js,
        fp=fp,
        mosaic=state,
        worker_id=worker_id(spec),
        segment_duration=config.segment_duration,
        dead_after=config.dead_source_timeout,
        heartbeat_interval=config.heartbeat_interval,
        preset=config.x264_preset,
        crf=config.x264_crf,
        frame_slots=lambda sid: _frame_slot(config, nc, sid),
        hls_format="ts" if config.hls_format == "ts" else "cmaf",
        whep_viewers=config.mosaic_viewers,
        ice_servers=(turn.ice_server(fp),) if (turn := turn_config(config)) else (),
    )


async def _jit(config: Config, spec: JitSpec, nc: Client) -> Service:
    from pipeline.control.read import read_entry
    from pipeline.producers.jit.worker import JitWorker
    from pipeline.sources.policy import SourcePolicy
    from pipeline.state.model import SessionState

    js = nc.jetstream()
    sid = spec.session_id
    state = await read_entry(js, "sessions", sid)
    if not isinstance(state, SessionState):
        raise TesseraError(f"no session {sid} in the projected state: was it requested?")
    return JitWorker(
        nc=nc,
        js=js,
        session_id=sid,
        inputs=state.inputs,
        options=state.options,
        worker_id=worker_id(spec),
        policy=SourcePolicy.for_config(config),
        media_roots=config.media_root_paths,
        s3_endpoint_url=config.s3_endpoint_url,
        ice_servers=(turn.ice_server(sid),) if (turn := turn_config(config)) else (),
        heartbeat_interval=config.heartbeat_interval,
        proxy_root=config.data_dir / "proxies" if config.jit_proxy else None,
        proxy_bytes=config.jit_proxy_mib * 2**20,
        max_output=parsers.box(config.jit_max_output),
    )


async def run(config: Config, spec: WorkerSpec) -> int:
    """Run the worker ``spec`` describes until a signal."""
    try:
        token(spec.target)  # it names the worker's subjects
    except ValueError as exc:
        raise ConfigError(f"bad worker spec: {exc}") from exc
    nc = await connect(
        resolve_url(config, spec.kind), name=worker_id(spec), role=spec.kind, forever=True
    )
    try:
        service: Service
        match spec:
            case GrabberSpec():
                service = await _grabber(config, spec, nc)
            case StitcherSpec():
                service = await _stitcher(config, spec, nc)
            case JitSpec():
                service = await _jit(config, spec, nc)
        await run_until_signal(service)
    finally:
        await _disconnect(nc)
    return 0


async def _disconnect(nc: Client) -> None:
    """Drain the connection, or just close it when NATS is gone: a worker stopping together
    with its server (Ctrl-C or SIGTERM to a whole stack) ends without a traceback."""
    if nc.is_closed:
        return
    try:
        await nc.drain()
    except (nats.errors.Error, OSError) as exc:
        log.info("NATS gone while stopping (%s): closing", exc)
        await nc.close()


def main(spec: WorkerSpec) -> int:
    """This process is the worker ``spec`` describes: what a forked worker runs (the fork
    server's child, with the worker's environment in place). Returns the exit code.

    The same setup as the ``tessera`` command gives ``tessera worker``: settings from the
    environment (a provider passes them there), logs on stderr, a one-line error and exit 1 for
    a :class:`TesseraError` (2 for a bad setting), 130 for Ctrl-C; :func:`run` handles
    SIGTERM/SIGINT.
    """
    try:
        config = config_mod.load()
    except TesseraError as exc:
        print(f"tessera: error: {exc}", file=sys.stderr)
        return 2
    logs.setup(verbose=config.verbose, fmt=config.log_format)
    return run_command(run(config, spec))
