"""The stack host: ``python -m bench.stackhost --data-dir DIR [--env KEY=VALUE ...]``.

Runs Tessera's one-machine :class:`~pipeline.cli.up.Stack` (embedded nats-server, projector,
controller, local provider with its worker processes, gateway) in a process of its own, so the
suite can measure the gateway's CPU apart from the load generators and measurement code, which
stay in the runner. Settings come from ``--env`` pairs (the same variables ``tessera up``
reads), never from the runner's environment.

Protocol with the runner, one JSON line per message: once everything runs, the host writes
``{"gateway": url, "nats": url, "pid": pid}`` on stdout. Then each line ``workers`` on its
stdin is answered with ``{"workers": [{"pid", "kind", "target", "worker_id", "started_at"},
...], "spares": n}``: the workers the local provider runs, as it sees them (a worker may run
in a process forked by the fork server, whose command line does not say what it became, so the
provider is asked rather than ``/proc``). The host stops gracefully (the Stack stops its
workers, then nats-server) when its stdin closes, or on SIGTERM/SIGINT. A ``kill -9`` of the
runner still takes it down (parent-death signal, set by the runner).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from pipeline.cli.up import Stack
from pipeline.config.settings import load
from pipeline.runtime import logs


async def serve(env: dict[str, str]) -> None:
    """Start the stack, announce it, run until told to stop, stop it."""
    config = load(env=env)
    logs.setup(verbose=False, fmt="text")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    stack = Stack(config)
    pending = bytearray()

    def on_stdin() -> None:
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            loop.remove_reader(sys.stdin.fileno())
            stop.set()  # the runner closed our stdin (or died): stop
            return
        pending.extend(chunk)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            if line.strip() == b"workers":
                print(json.dumps(workers(stack)), flush=True)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        await stack.start()
        assert stack.gateway is not None
        info = {"gateway": stack.gateway.url, "nats": stack.url_for("admin"), "pid": os.getpid()}
        print(json.dumps(info), flush=True)
        await stop.wait()
    finally:
        await stack.stop()


def workers(stack: Stack) -> dict[str, object]:
    """The provider's running workers with their pids, and how many spares it keeps."""
    provider = stack.provider
    if provider is None:
        return {"workers": [], "spares": 0}
    rows = []
    for worker_id, running in provider.running().items():
        rows.append(
            {
                "pid": provider.pid(worker_id),
                "kind": running.spec.kind,
                "target": running.spec.target,
                "worker_id": worker_id,
                "started_at": running.started_at,
            }
        )
    return {"workers": rows, "spares": int(getattr(provider, "spares", 0))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Tessera's Stack for the benchmarks.")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    env = {"TESSERA_DATA_DIR": args.data_dir}
    for pair in args.env:
        key, _, value = pair.partition("=")
        env[key] = value
    asyncio.run(serve(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
