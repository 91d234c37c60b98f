"""The ``tessera`` command.

Every subcommand takes the settings of :mod:`pipeline.config.settings` as flags (over the
environment, over the defaults). A user error prints one line, ``tessera: error: ...``, and exits 1
(usage errors: 2); never a traceback. Ctrl-C or SIGTERM stops a running command gracefully; a second
one forces the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.cli import cluster as clustercli
from pipeline.cli import deploy as deploycli
from pipeline.cli import events as eventscli
from pipeline.cli import jit as jitcli
from pipeline.cli import sign as signcli
from pipeline.cli import tokens as tokenscli
from pipeline.config import instances as instance_settings
from pipeline.config import settings as config_mod
from pipeline.config.flags import given_flags
from pipeline.config.settings import Config
from pipeline.errors import TesseraError
from pipeline.instances import agent as agent_mod
from pipeline.nats.connect import connect, resolve_url, server_info
from pipeline.nats.topology import replicas_for
from pipeline.runtime import logs
from pipeline.runtime.service import run_command, run_until_signal
from pipeline.workers import run as worker_mod

log = logging.getLogger("tessera")

PROVIDER_ENV = "JIT_INSTANCE_PROVIDER_CLASS_PATH"
"""Setting it (like ``--instance-provider``) runs workers on instances, through agents."""

EPILOG = """\
Settings come from defaults < environment < flags; `tessera config` lists them all.
Docs: docs/operations.md (settings, running), docs/events.md (every subject and message)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessera",
        description="Tessera: live HLS mosaics and just-in-time WebRTC review on NATS JetStream.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    up = sub.add_parser(
        "up",
        help="run everything on this machine (embedded NATS, gateway, projector)",
        description="Run Tessera on this machine: an embedded nats-server with JetStream "
        "(unless NATS_URL is set), the JetStream topology, the projector, the controller and "
        "the HTTP gateway. Workers run as child processes, or, with --instance-provider, on "
        "instances that provider launches (each runs `tessera agent`). Ctrl-C stops it all.",
    )
    config_mod.add_arguments(up)
    instance_settings.add_arguments(up)
    up.set_defaults(run=_cmd_up)

    controller = sub.add_parser(
        "controller",
        help="run the control plane only (projector, controller, instances) against NATS_URL",
        description="Run the control plane of a Tessera on several machines: the JetStream "
        "topology, the projector, the controller and where workers run (child processes, or, "
        "with --instance-provider, instances: `agents` places work on the agents that run by "
        "themselves). No gateway: run `tessera gateway` for that. Needs NATS_URL (a cluster).",
    )
    config_mod.add_arguments(controller)
    instance_settings.add_arguments(controller)
    controller.set_defaults(run=_cmd_controller)

    gateway = sub.add_parser(
        "gateway",
        help="run the HTTP gateway only, against NATS_URL",
        description="Run the HTTP gateway of a Tessera on several machines (as many as you "
        "like): /create, /play, /session and the pages, reading what `tessera controller` "
        "projects. /readyz follows the projector's heartbeat. Needs NATS_URL (a cluster).",
    )
    config_mod.add_arguments(gateway)
    gateway.set_defaults(run=_cmd_gateway)

    demo = sub.add_parser(
        "demo",
        help="`up` plus synthetic live cameras, and a link that shows them",
        description="Run `tessera up` with a few synthetic live HLS cameras on loopback and "
        "print a /create link that tiles them into a live mosaic.",
    )
    demo.add_argument("--sources", type=int, default=4, help="how many cameras, 1 to 9 (default 4)")
    config_mod.add_arguments(demo)
    demo.set_defaults(run=_cmd_demo)

    jit = sub.add_parser(
        "jit",
        help="review one file now: run locally and print the viewer URL (the original JIT)",
        description="Run Tessera on this machine with one JIT session for the given inputs, "
        "print its review URL, and exit when it ends.",
    )
    jitcli.add_arguments(jit)
    jit.set_defaults(run=jitcli.run)

    events = sub.add_parser("events", help="read and replay the event log")
    ev_sub = events.add_subparsers(dest="events_command", metavar="ACTION")
    ev_sub.required = True
    tail = ev_sub.add_parser(
        "tail",
        help="print events as JSON lines (nats: `nats sub 'events.>'`)",
        description="Print the last events as JSON lines, then follow new ones.",
    )
    tail.add_argument(
        "subject", nargs="?", default="events.>", help="subject filter (default events.>)"
    )
    tail.add_argument("-n", "--last", type=int, default=10, help="show the last N (default 10)")
    tail.add_argument("--all", action="store_true", help="show the whole history")
    tail.add_argument("--no-follow", action="store_true", help="exit once caught up")
    eventscli.add_audit_arguments(tail)  # --audit, --who, --action
    config_mod.add_arguments(tail, groups=("general", "nats", "logging"))
    tail.set_defaults(run=_cmd_events_tail)

    replay = ev_sub.add_parser(
        "replay",
        help="rebuild every projection from EVENTS",
        description="Wipe the projected state (KV mosaics, sessions, instances, workers) and "
        "fold every event again. Stop `tessera up` first.",
    )
    config_mod.add_arguments(replay, groups=("general", "nats", "logging"))
    replay.set_defaults(run=_cmd_events_replay)

    status = sub.add_parser(
        "status",
        help="show mosaics, sources, sessions and instances with their health",
        description="Read the projected state and heartbeats and show what runs.",
    )
    status.add_argument("--watch", action="store_true", help="redraw every second")
    config_mod.add_arguments(status, groups=("general", "nats", "logging"))
    status.set_defaults(run=_cmd_status)

    bench = sub.add_parser(
        "bench",
        help="run the benchmarks (a source checkout's bench/; see bench/README.md)",
        description="Run bench/run.py of this checkout: --quick, --only NAME,..., --out DIR.",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to bench/run.py")
    bench.set_defaults(run=_cmd_bench)

    cfg = sub.add_parser(
        "config",
        help="show every setting: the flags and env vars it answers to, and its current value",
        description="Show every setting (Tessera's, then the instance settings of `up "
        "--instance-provider` and `agent`) with every flag and environment variable it answers "
        "to and its value from defaults < environment < the flags given here.",
    )
    cfg.add_argument(
        "--markdown", action="store_true", help="print the settings table of docs/operations.md"
    )
    config_mod.add_arguments(cfg)
    instance_settings.add_arguments(cfg)
    cfg.set_defaults(run=_cmd_config)

    agent = sub.add_parser(
        "agent",
        help="run the agent of one instance (starts workers on command)",
        description="Run the agent of one instance: it registers, starts and stops workers on "
        "command over NATS, heartbeats its capacity and serves GET /status on its port.",
    )
    agent_mod.add_arguments(agent)
    agent.set_defaults(run=agent_mod.run)

    clustercli.add_parser(sub)  # `tessera cluster`: the several-machine topology, here
    deploycli.add_parser(sub)  # `tessera deploy`: the Nomad jobs, a NATS server's config
    signcli.add_parser(sub)  # `tessera sign`: signed play and review URLs
    tokenscli.add_parser(sub)  # `tessera tokens`: scoped API tokens
    worker = worker_mod.add_parser(sub)
    worker.set_defaults(run=worker_mod.command)
    return parser


# --- running ----------------------------------------------------------------------------------


async def _cmd_up(config: Config, args: argparse.Namespace) -> int:
    from pipeline.cli.up import Stack

    instances = _instances(args)
    if instances is not None and instances.dev:
        # --dev also means the Config settings of instance_settings.DEV_ALSO (verbose, turn).
        dev_also: dict[str, Any] = dict.fromkeys(instance_settings.DEV_ALSO, True)
        config = dataclasses.replace(config, **dev_also)
        logs.setup(verbose=True, fmt=config.log_format)
    stack = Stack(config, instances=instances)

    def started() -> None:
        assert stack.gateway is not None
        url = stack.gateway.url
        print(
            f"Tessera is up: {url}\n"
            f"  health:  {url}/healthz\n"
            f"  NATS:    {stack.nats_url}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )

    await run_until_signal(stack, on_started=started, force=stack.kill)
    return 0


def _needs_nats_url(config: Config, command: str) -> str:
    if not config.nats_url:
        raise TesseraError(
            f"tessera {command} needs NATS_URL (or --nats-url): the NATS cluster it shares with "
            "the other machines; `tessera up` runs everything on one machine with its own NATS"
        )
    return config.nats_url


async def _cmd_controller(config: Config, args: argparse.Namespace) -> int:
    from pipeline.cli.controlplane import ControlPlane
    from pipeline.nats.auth import redact

    url = _needs_nats_url(config, "controller")
    instances = _instances(args)
    plane = ControlPlane(
        config,
        url_for=lambda role: resolve_url(config, role),
        nats_url=url,
        instances=instances,
    )

    def started() -> None:
        where = "child processes" if instances is None else f"{instances.provider} instances"
        print(
            f"Tessera controller is up: NATS {redact(url)}, workers on {where}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )

    await run_until_signal(plane, on_started=started)
    return 0


async def _cmd_gateway(config: Config, args: argparse.Namespace) -> int:
    from pipeline.cli.gatewayservice import GatewayService

    _needs_nats_url(config, "gateway")
    service = GatewayService(config, resolve_url(config, "gateway"))

    def started() -> None:
        print(f"Tessera gateway is up: {service.url}\nPress Ctrl-C to stop.", flush=True)

    await run_until_signal(service, on_started=started)
    return 0


def _instances(args: argparse.Namespace) -> instance_settings.InstanceConfig | None:
    """The instance settings if an instance provider was chosen (flag or environment), else
    None: workers then run as child processes of `tessera up`, without agents."""
    chosen = "provider" in given_flags(args, instance_settings.InstanceConfig)
    if not chosen and PROVIDER_ENV not in os.environ:
        return None
    return instance_settings.from_namespace(args)


async def _cmd_demo(config: Config, args: argparse.Namespace) -> int:
    from pipeline.cli.demo import Demo

    demo = Demo(config, args.sources)

    def started() -> None:
        print(
            f"Tessera demo is up with {demo.count} live cameras.\n"
            f"  mosaic:  {demo.create_url}\n"
            "  (the link redirects to the live HLS playlist: open it in Safari, VLC or ffplay)\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )

    await run_until_signal(demo, on_started=started, force=demo.stack.kill)
    return 0


async def _cmd_events_tail(config: Config, args: argparse.Namespace) -> int:
    from pipeline.cli.events import tail

    nc = await connect(resolve_url(config), name="tessera-events-tail")
    try:
        await tail(
            nc.jetstream(),
            lambda line: print(line, flush=True),
            subject=args.subject,
            last=None if args.all else args.last,
            follow=not args.no_follow,
            audit=args.audit,
            who=args.who,
            action=args.action,
        )
    finally:
        await nc.close()
    return 0


async def _cmd_events_replay(config: Config, args: argparse.Namespace) -> int:
    from pipeline.control.replay import replay
    from pipeline.runtime.progress import Progress

    nc = await connect(resolve_url(config), name="tessera-events-replay")
    bar = Progress("replay")
    try:
        replicas = replicas_for(server_info(nc), config.nats_replicas)
        applied = await replay(nc, nc.jetstream(), progress=bar.update, replicas=replicas)
    finally:
        bar.close()
        await nc.close()
    print(f"replayed EVENTS: {applied:,} events folded into the projections")
    return 0


BENCH_RUNNER = Path(__file__).resolve().parent.parent / "bench" / "run.py"


async def _cmd_bench(config: Config, args: argparse.Namespace) -> int:
    runner = BENCH_RUNNER
    if not await asyncio.to_thread(runner.is_file):
        raise TesseraError("tessera bench runs from a source checkout (bench/run.py not found)")
    proc = await asyncio.create_subprocess_exec(sys.executable, str(runner), *args.bench_args)
    return await proc.wait()


async def _cmd_status(config: Config, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from pipeline.cli.status import gather, render

    nc = await connect(resolve_url(config), name="tessera-status")
    try:
        js = nc.jetstream()
        stale = 3 * config.heartbeat_interval + 2
        if not args.watch:
            Console(width=max(120, Console().width)).print(render(await gather(js), stale))
            return 0
        with Live(render(await gather(js), stale), refresh_per_second=2) as live:
            while True:
                await asyncio.sleep(1.0)
                live.update(render(await gather(js), stale))
    finally:
        await nc.close()


async def _cmd_config(config: Config, args: argparse.Namespace) -> int:
    if args.markdown:
        print(config_mod.markdown_table(), end="")
        return 0
    instances = instance_settings.from_namespace(args)
    if instances.dev:  # what `tessera up --dev` would run with (see _cmd_up)
        dev_also: dict[str, Any] = dict.fromkeys(instance_settings.DEV_ALSO, True)
        config = dataclasses.replace(config, **dev_also)
    sections: list[tuple[str, list[dict[str, str]], object]] = [
        ("Tessera's settings", config_mod.describe(), config),
        (
            "instance settings (up --instance-provider, agent)",
            instance_settings.describe(),
            instances,
        ),
    ]
    names = [n for _, rows, _ in sections for r in rows for n in r["flags"].split(", ")]
    envs = [n for _, rows, _ in sections for r in rows for n in r["envs"].split(", ")]
    width, env_width = max(map(len, names)), max(map(len, envs))
    for title, rows, values in sections:
        print(f"# {title}: flags, env vars, value, what")
        for row in rows:
            current = getattr(values, row["name"])
            value = "unset" if current is None else str(current)
            # A setting's other names (aliases) go on the lines below its own, in the same columns.
            flags = row["flags"].split(", ") if row["flags"] else [""]
            env_names = row["envs"].split(", ")
            for i in range(max(len(flags), len(env_names))):
                flag = flags[i] if i < len(flags) else ""
                env = env_names[i] if i < len(env_names) else ""
                tail = f"  {value:<24}  {row['help']}" if i == 0 else ""
                print(f"{flag:<{width}}  {env:<{env_width}}{tail}".rstrip())
    return 0


def with_main_module(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` with the command ``MAIN_MODULE`` names put first when none was given: the
    original image ran its orchestrator or its agent by that variable, flags following."""
    command = config_mod.main_command(env)
    given = bool(argv) and not argv[0].startswith("-")
    if command is None or given or argv[:1] in (["-h"], ["--help"]):
        return list(argv)
    return [command, *argv]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tessera`` command."""
    parser = _parser()
    try:
        argv = with_main_module(sys.argv[1:] if argv is None else argv, os.environ)
    except TesseraError as exc:
        parser.exit(2, f"tessera: error: {exc}\n")
    args = parser.parse_args(argv)
    try:
        config = config_mod.from_namespace(args)
    except TesseraError as exc:
        parser.exit(2, f"tessera: error: {exc}\n")
    logs.setup(verbose=config.verbose, fmt=config.log_format)
    run: Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]] = args.run
    return run_command(run(config, args))


if __name__ == "__main__":
    sys.exit(main())
