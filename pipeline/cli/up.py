"""``tessera up``: everything on one machine.

Starts, in order: the embedded nats-server (unless ``NATS_URL`` points at one), the control
plane (:class:`~pipeline.cli.controlplane.ControlPlane`: the JetStream topology, the projector,
where workers run, the controller) and the HTTP gateway
(:class:`~pipeline.cli.gatewayservice.GatewayService`); stops them in reverse order within the
shutdown deadline. ``tessera controller`` and ``tessera gateway`` run the same two parts, each
alone, on machines of their own (docs/deploy.md).

Where workers run: by default the local provider, workers as child processes of this one (no
agents: the fastest on one machine). Given an instance config (``--instance-provider``), an
:class:`~pipeline.instances.pool.InstancePool` instead: workers on instances that provider
launches, each with its agent (``local`` runs the agents as child processes here).
The embedded server's URL is left in ``<data dir>/nats.url`` while it runs, so other
``tessera`` commands on this machine find it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pipeline.cli.controlplane import ControlPlane
from pipeline.cli.gatewayservice import GatewayService
from pipeline.config.instances import InstanceConfig
from pipeline.config.settings import Config
from pipeline.control.controller import Controller
from pipeline.control.projector import Projector
from pipeline.errors import NatsUnavailableError, TesseraError
from pipeline.frames import slot as frameslot
from pipeline.instances.pool import InstancePool
from pipeline.nats import auth as natsauth
from pipeline.nats.connect import connect, resolve_url
from pipeline.nats.server import EmbeddedNats
from pipeline.runtime.httpserver import HttpServer
from pipeline.runtime.service import Parts
from pipeline.webrtc.turn import TurnServer
from pipeline.workers.processes import LocalProvider

log = logging.getLogger("tessera.up")


@dataclass
class Stack(Parts):
    """The one-machine Tessera: ``await start()``, then ``await stop()`` (safe twice)."""

    config: Config
    instances: InstanceConfig | None = None
    """Run workers on instances of this provider config; None: local child processes."""
    nats: EmbeddedNats | None = None
    plane: ControlPlane | None = None
    """Projector, where workers run, controller (NATS user ``controller``)."""
    front: GatewayService | None = None
    """The HTTP gateway, on its own connection (NATS user ``gateway``: it cannot touch streams)."""
    _owns_url_file: bool = field(default=False, repr=False)

    @property
    def nats_url(self) -> str:
        """The NATS this stack uses (no credentials in it: see :meth:`url_for`)."""
        if self.config.nats_url:
            return self.config.nats_url
        assert self.nats is not None
        return self.nats.url

    def url_for(self, role: str) -> str:
        """The URL to connect as ``role`` (:mod:`pipeline.nats.auth`)."""
        if self.nats is not None:
            return self.nats.url_for(role)
        return resolve_url(self.config, role)

    # What runs, by the names it has always had here (tests and benchmarks look at them).
    @property
    def gateway(self) -> HttpServer | None:
        return self.front.http if self.front is not None else None

    @property
    def turn(self) -> TurnServer | None:
        return self.front.turn if self.front is not None else None

    @property
    def provider(self) -> LocalProvider | None:
        """The local provider, when workers run as child processes of this one."""
        return self.plane.provider if self.plane is not None else None

    @property
    def pool(self) -> InstancePool | None:
        """The instance pool, when workers run on instances (``instances`` given)."""
        return self.plane.pool if self.plane is not None else None

    @property
    def projector(self) -> Projector | None:
        return self.plane.projector if self.plane is not None else None

    @property
    def controller(self) -> Controller | None:
        return self.plane.controller if self.plane is not None else None

    async def _start(self) -> None:
        config = self.config
        if config.nats_url is None:
            await self._refuse_second_instance()
            users = config.nats_users_path
            assert users is not None  # always, for the embedded server
            self.nats = EmbeddedNats(
                passwords=natsauth.load_or_create(users),
                store_dir=config.nats_store_dir,
                host=config.nats_host,
                port=config.nats_port,
                binary=config.nats_server_bin,
                max_payload=config.nats_max_payload,
                ready_timeout=config.nats_ready_timeout,
                stop_timeout=config.shutdown_timeout / 2,
            )
            url = await self.nats.start()
            config.nats_url_file.write_text(url + "\n")
            self._owns_url_file = True
        self.plane = ControlPlane(
            config, url_for=self.url_for, nats_url=self.nats_url, instances=self.instances
        )
        await self.plane.start()
        projector = self.plane.projector
        assert projector is not None
        self.front = GatewayService(
            config,
            self.url_for("gateway"),
            projector_caught_up=lambda: projector.caught_up.is_set(),
        )
        await self.front.start()

    async def _refuse_second_instance(self) -> None:
        path = self.config.nats_url_file
        try:
            url = path.read_text().strip()
        except FileNotFoundError:
            return
        if not url:
            return
        try:
            probe = await connect(
                resolve_url(self.config, "admin"), name="tessera-probe", attempts=1
            )
        except NatsUnavailableError:
            log.info("removing stale run file", extra={"path": str(path)})
            path.unlink(missing_ok=True)
            return
        await probe.close()
        raise TesseraError(
            f"Tessera already runs with data dir {self.config.data_dir} (NATS at {url}): "
            "stop it first, or use another --data-dir"
        )

    async def stop(self) -> None:
        """Stop in reverse order of start. Safe to call twice."""
        front, self.front = self.front, None
        if front is not None:
            await front.stop()
        plane, self.plane = self.plane, None
        if plane is not None:
            local_workers = plane.provider is not None
            await plane.stop()
            if local_workers and self.nats is not None:
                # Our own server, so our own slots: those a killed grabber left go too.
                parts = urlsplit(self.nats.url)
                frameslot.remove_namespace(frameslot.namespace(f"{parts.hostname}:{parts.port}"))
        nats, self.nats = self.nats, None
        if nats is not None:
            await nats.stop()
        if self._owns_url_file:
            self.config.nats_url_file.unlink(missing_ok=True)
            self._owns_url_file = False

    def kill(self) -> None:
        """Last resort on a second Ctrl-C: kill the server process at once."""
        if self.nats is not None and self.nats.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.nats.pid, signal.SIGKILL)
