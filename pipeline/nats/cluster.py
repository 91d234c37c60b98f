"""A JetStream cluster of ``nats-server`` processes on this machine.

The cluster topology of issue #20 on one box: ``size`` servers (3 by default) on loopback, each
with its own store, joined by authenticated routes, so that streams and buckets can keep 3
replicas and a server can be killed while the others go on. Tests, ``just bench`` and
``tessera cluster`` use it; in production each server runs on a machine of its own
(``deploy/nomad/nats.nomad.hcl``) with the same config (:func:`pipeline.nats.server.render_config`).

Ports are chosen free once and kept, so a server restarted after a kill comes back at the same
address and the clients' URL lists stay right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from pathlib import Path

import nats
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError

from pipeline.errors import NatsServerError
from pipeline.nats.auth import with_credentials
from pipeline.nats.connect import servers
from pipeline.nats.server import ClusterConfig, EmbeddedNats

log = logging.getLogger("tessera.nats.cluster")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class LocalNatsCluster:
    """``size`` clustered nats-servers on ``host``: ``await start()``, then ``await stop()``.

    ``passwords``: role -> password (:mod:`pipeline.nats.auth`), the same users on every server.
    """

    def __init__(
        self,
        root: Path,
        *,
        passwords: dict[str, str],
        size: int = 3,
        host: str = "127.0.0.1",
        binary: str | None = None,
        max_payload: int = 8 * 1024 * 1024,
        ready_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one server, not {size}")
        self.root = root
        self.passwords = passwords
        self.host = host
        self.ready_timeout = ready_timeout
        ports = free_ports(3 * size, host)
        client, routes, monitor = ports[:size], ports[size : 2 * size], ports[2 * size :]
        secret = secrets.token_urlsafe(18)
        self.nodes: list[EmbeddedNats] = []
        for i in range(size):
            peers = tuple(f"nats-route://{host}:{routes[j]}" for j in range(size) if j != i)
            self.nodes.append(
                EmbeddedNats(
                    store_dir=root / f"nats-{i + 1}" / "jetstream",
                    host=host,
                    port=client[i],
                    binary=binary,
                    max_payload=max_payload,
                    ready_timeout=ready_timeout,
                    stop_timeout=stop_timeout,
                    passwords=passwords,
                    cluster=ClusterConfig(
                        server_name=f"nats-{i + 1}",
                        listen=f"{host}:{routes[i]}",
                        routes=peers,
                        route_password=secret,
                    ),
                    monitor_port=monitor[i],
                    logger=logging.getLogger(f"tessera.nats.{i + 1}"),
                )
            )
        self.urls = tuple(f"nats://{host}:{node.port}" for node in self.nodes)
        self.monitor_urls = tuple(f"http://{host}:{port}" for port in monitor)
        """Each server's monitoring endpoint (``/connz``: bytes per client connection)."""

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (what ``NATS_URL`` takes)."""
        return ",".join(self.urls)

    def url_for(self, role: str) -> str:
        """:attr:`url` with ``role``'s credentials in each URL."""
        return with_credentials(self.url, role, self.passwords[role])

    async def start(self) -> str:
        """Start every server, then wait until JetStream has a meta leader; return :attr:`url`."""
        try:
            await asyncio.gather(*(node.start() for node in self.nodes))
            await self.wait_jetstream()
        except BaseException:
            await self.stop()
            raise
        log.info("nats cluster ready", extra={"servers": len(self.nodes), "url": self.url})
        return self.url

    async def wait_jetstream(self) -> None:
        """Until the cluster answers JetStream API calls (a meta leader is elected), or
        NatsServerError after ``ready_timeout`` s."""
        deadline = time.monotonic() + self.ready_timeout
        nc = await nats.connect(
            servers(self.url_for("admin")),
            connect_timeout=2,
            max_reconnect_attempts=3,
            name="cluster-wait",
        )
        try:
            js = nc.jetstream()
            last = ""
            while time.monotonic() < deadline:
                try:
                    await js.account_info()
                    return
                except (APIError, nats.errors.Error, TimeoutError) as exc:
                    last = str(exc) or type(exc).__name__
                await asyncio.sleep(0.2)
            raise NatsServerError(
                f"the NATS cluster had no JetStream leader within {self.ready_timeout:g} s ({last})"
            )
        finally:
            await nc.close()

    def kill(self, index: int) -> int:
        """SIGKILL server ``index`` (0-based), as a machine failing would; returns its pid.
        :meth:`restart` brings it back at the same address with the same store."""
        pid = self.nodes[index].pid
        if pid is None:
            raise NatsServerError(f"nats server {index + 1} is not running")
        os.kill(pid, signal.SIGKILL)
        return pid

    async def restart(self, index: int) -> None:
        """Reap server ``index`` (killed or not) and start it again."""
        node = self.nodes[index]
        await node.stop()
        await node.start()

    async def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after the grace). Safe twice."""
        results = await asyncio.gather(
            *(node.stop() for node in self.nodes), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("cannot stop a nats server: %s", result)

    async def __aenter__(self) -> LocalNatsCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.stop()


class AppendProbe:
    """Appends numbered probe facts to ``EVENTS`` without pause (``events.probe.<n>``, a type
    no Tessera folds: the projector skips and counts them) while something is being broken, and
    then says which acknowledged ones are missing. What ``kill -9`` of a server must not lose.

    ``async with AppendProbe(js):`` appends until the block ends; :meth:`lost` then asks
    ``EVENTS`` (retrying while a new leader is elected) which acknowledged probes it lacks.
    """

    def __init__(self, js: JetStreamContext, every: float = 0.01) -> None:
        self._js = js
        self.every = every
        self.acked: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AppendProbe:
        self._task = asyncio.create_task(self._append(), name="append-probe")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _append(self) -> None:
        n = 0
        while not self._stop.is_set():
            subject = f"events.probe.{n}"
            try:
                await self._js.publish(
                    subject, b'{"type":"probe/1"}', timeout=2, headers={"Nats-Msg-Id": subject}
                )
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.05)  # not acknowledged: tried again, not counted
                continue
            self.acked.append(subject)
            n += 1
            await asyncio.sleep(self.every)

    async def lost(self, within: float = 60.0) -> list[str]:
        """The acknowledged probes ``EVENTS`` does not hold (empty: none lost)."""
        deadline = time.monotonic() + within
        while True:
            try:
                info = await self._js.stream_info("EVENTS", subjects_filter="events.probe.>")
                break
            except (nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)  # no leader yet: an election takes 4-10 s
        stored = set((info.state.subjects or {}).keys())
        return [subject for subject in self.acked if subject not in stored]
