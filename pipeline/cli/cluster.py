"""``tessera cluster``: the several-machine topology, on this machine.

What a production deployment runs on three or more machines (docs/deploy.md), as processes
here, each with its own data folder and nothing shared but the network:

- a JetStream cluster of ``nats`` servers (:class:`~pipeline.nats.cluster.LocalNatsCluster`,
  3 by default: streams and buckets keep 3 copies);
- the control plane as the Nomad jobs run it: ``tessera controller --instance-provider
  agents`` (projector, controller: it launches nothing, it places work on the agents) and
  ``tessera gateway``, each a process of its own with ``NATS_URL`` set to the cluster;
- ``agents`` × ``tessera agent`` (2 by default), each a "machine" (``machine-1``, …) that
  registers itself by its heartbeat and runs the workers it is told to. Frames between
  grabbers and stitchers cross NATS (no shared memory: ``TESSERA_FRAME_TRANSPORT=nats``), as
  they do between hosts.

The tests (``pytest -m cluster``) and ``just bench``'s cluster case use :class:`LocalCluster`;
it can kill an agent's whole process group or a NATS server (``kill -9``, as a machine failing)
and restart the control plane. Every process dies with this one (parent-death signals).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors

from pipeline.config.settings import Config
from pipeline.errors import MessageError, TesseraError
from pipeline.instances.ready import READY_PREFIX
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import PlacementHeartbeat
from pipeline.nats import auth as natsauth
from pipeline.nats.cluster import LocalNatsCluster, free_ports
from pipeline.nats.connect import connect
from pipeline.nats.topology import HEARTBEATS
from pipeline.runtime.procs import die_with_parent, stop_process

log = logging.getLogger("tessera.cluster")

_UP_LINE = re.compile(r"^Tessera (?:controller |gateway )?is up: (\S+)")


@dataclass
class Machine:
    """One process of the topology standing for a machine: the control plane or an agent."""

    name: str
    data_dir: Path
    argv: list[str]
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    url: str = ""
    """The gateway's URL (control plane) or the agent's status URL, once ready."""
    _drain: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "stderr.log"

    def log_tail(self, lines: int = 15) -> str:
        """The last lines this machine logged (for errors and failing tests)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, ready_timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # its own process group: kill() takes the machine down
                preexec_fn=die_with_parent,
            )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(ready_timeout):
                while line_bytes := await self.proc.stdout.readline():
                    line = line_bytes.decode(errors="replace").strip()
                    if match := _UP_LINE.match(line):
                        self.url = match.group(1)
                        break
                    if line.startswith(READY_PREFIX):
                        self.url = line
                        break
        except TimeoutError:
            await self.stop(1.0)
            raise TesseraError(
                f"{self.name} was not ready within {ready_timeout:g} s:\n{self.log_tail()}"
            ) from None
        if not self.url:
            code = await self.proc.wait()
            raise TesseraError(
                f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}"
            )
        self._drain = asyncio.create_task(self._drain_stdout(), name=f"{self.name}-stdout")
        log.info("machine ready", extra={"machine": self.name, "pid": self.proc.pid})

    async def _drain_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    def kill(self) -> None:
        """SIGKILL the machine's process group (its agent or control plane and what shares the
        group; workers in sessions of their own die with their parent)."""
        if self.pid is None:
            raise TesseraError(f"{self.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    async def stop(self, grace: float) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            await stop_process(proc, grace, self.name)
        task, self._drain = self._drain, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class LocalCluster:
    """The topology of the module docstring: ``await start()``, then ``await stop()``.

    ``env``: settings every process gets (heartbeat intervals, timeouts, capacities). ``port``:
    the gateway's (0: a free one). ``agent_env``: per agent name, settings of that one only.
    """

    def __init__(
        self,
        root: Path,
        *,
        agents: int = 2,
        nats_servers: int = 3,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        agent_env: Mapping[str, Mapping[str, str]] | None = None,
        ready_timeout: float = 60.0,
        grace: float = 10.0,
    ) -> None:
        self.root = root
        self.ready_timeout = ready_timeout
        self.grace = grace
        root.mkdir(parents=True, exist_ok=True)
        self.users_path = root / "nats-users.json"
        passwords = natsauth.load_or_create(self.users_path)
        self.nats = LocalNatsCluster(root / "nats", passwords=passwords, size=nats_servers)
        self.port = port or free_ports(1)[0]
        base = {
            **os.environ,
            "NATS_URL": self.nats.url,
            "TESSERA_NATS_USERS": str(self.users_path),
            "TESSERA_FRAME_TRANSPORT": "nats",
            # The "machines" share this one's cores: each advertises its share, so placement
            # does not count the same core twice.
            "TESSERA_AGENT_CORES": f"{max(1.0, len(os.sched_getaffinity(0)) / max(1, agents)):g}",
            **(env or {}),
        }
        python = [sys.executable, "-m", "pipeline"]
        # The control plane as the Nomad jobs run it (deploy/nomad): the controller and the
        # gateway as processes of their own, sharing nothing but NATS.
        control_dir = root / "control"
        self.control = Machine(
            "control",
            control_dir,
            [*python, "controller", "--instance-provider", "agents"],
            {**base, "TESSERA_DATA_DIR": str(control_dir)},
        )
        gateway_dir = root / "gateway"
        self.gateway = Machine(
            "gateway",
            gateway_dir,
            [*python, "gateway", "--port", str(self.port)],
            {**base, "TESSERA_DATA_DIR": str(gateway_dir)},
        )
        self.agents: list[Machine] = []
        for i in range(agents):
            name = f"machine-{i + 1}"
            data = root / name
            own = dict((agent_env or {}).get(name, {}))
            self.agents.append(
                Machine(
                    name,
                    data,
                    [*python, "agent", "--instance-id", name, "--agent-port", "0"],
                    {**base, "TESSERA_DATA_DIR": str(data), **own},
                )
            )

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def machines(self) -> list[Machine]:
        return [self.control, self.gateway, *self.agents]

    def agent(self, name: str) -> Machine:
        for machine in self.agents:
            if machine.name == name:
                return machine
        raise TesseraError(f"no agent {name!r} (agents: {[m.name for m in self.agents]})")

    async def start(self) -> None:
        """NATS first, then the control plane (it provisions the streams at 3 copies), then
        the agents together."""
        try:
            await self.nats.start()
            await self.control.start(self.ready_timeout)  # it provisions the streams
            await asyncio.gather(
                self.gateway.start(self.ready_timeout),
                *(a.start(self.ready_timeout) for a in self.agents),
            )
            await self.wait_placed(self.ready_timeout)
        except BaseException:
            await self.stop()
            raise

    async def wait_placed(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until the control plane's placement counts every running agent as ready (its
        ``hb.service.placement.*`` beat, which the gateway's 503s are decided from)."""
        want = {a.name for a in self.agents if a.pid is not None}
        nc = await connect(self.nats.url_for("admin"), name="cluster-wait", attempts=3)
        try:
            js = nc.jetstream()
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(nats.errors.Error, TimeoutError, MessageError):
                        msg = await js.get_last_msg(HEARTBEATS.name, "hb.service.placement.>")
                        beat = decode_heartbeat(msg.data or b"", msg.subject or "")
                        if isinstance(beat, PlacementHeartbeat):
                            ready = {a.instance_id for a in beat.agents if a.ready}
                            if want <= ready:
                                return
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise TesseraError(
                f"the control plane did not count agents {sorted(want)} within {timeout:g} s:\n"
                f"{self.control.log_tail()}"
            ) from None
        finally:
            await nc.close()

    async def restart_control(self) -> None:
        """``kill -9`` the control plane (controller and gateway), then start it again (same
        port, same data)."""
        for machine in (self.control, self.gateway):
            machine.kill()
            await machine.stop(self.grace)
        await self.control.start(self.ready_timeout)
        await self.gateway.start(self.ready_timeout)

    async def stop(self) -> None:
        """Agents and the gateway, then the controller, then NATS. Safe twice."""
        machines = [self.gateway, *self.agents]
        await asyncio.gather(*(m.stop(self.grace) for m in machines), return_exceptions=True)
        await self.control.stop(self.grace)
        await self.nats.stop()

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --- the command ------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "cluster",
        help="run the several-machine topology on this machine (NATS cluster, control plane, "
        "agents)",
        description="Run, on this machine, what a deployment runs on several: a JetStream "
        "cluster of nats-servers (streams and buckets at 3 copies), the control plane "
        "(`tessera controller --instance-provider agents`, `tessera gateway`) and agents that "
        "each stand for a machine, "
        "with their own data folders and frames crossing NATS. For trying a cluster, tests "
        "and benchmarks; docs/deploy.md says how to run it on real machines. Ctrl-C stops it.",
    )
    parser.add_argument("--agents", type=int, default=2, help="agent machines (default 2)")
    parser.add_argument(
        "--nats-servers", type=int, default=3, help="nats-servers in the cluster (default 3)"
    )
    parser.add_argument("--port", type=int, default=8080, help="the gateway's port (8080)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the machines keep their data (default: <data dir>/cluster)",
    )
    parser.set_defaults(run=_cmd_cluster)


async def _cmd_cluster(config: Config, args: argparse.Namespace) -> int:
    from pipeline.runtime.service import run_until_signal

    if args.agents < 1 or args.nats_servers < 1:
        raise TesseraError("--agents and --nats-servers must be at least 1")
    cluster = LocalCluster(
        args.dir or config.data_dir / "cluster",
        agents=args.agents,
        nats_servers=args.nats_servers,
        port=args.port,
    )

    def started() -> None:
        lines = [
            f"Tessera cluster is up: {cluster.gateway_url}",
            f"  NATS:    {cluster.nats.url} ({len(cluster.nats.nodes)} servers)",
            *(f"  {m.name}: pid {m.pid}, log {m.log_path}" for m in cluster.machines),
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)

    await run_until_signal(cluster, on_started=started)
    return 0
