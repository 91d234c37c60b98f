"""``tessera up``: everything on one machine.

Starts, in order: the embedded nats-server (unless ``NATS_URL`` points at one), the JetStream
topology, the projector, where workers run, the controller, and the HTTP gateway; stops them in
reverse order within the shutdown deadline.

Where workers run: by default the local provider, workers as child processes of this one (no
agents: the fastest on one machine). Given an instance config (``--instance-provider``), an
:class:`~pipeline.instances.pool.InstancePool` instead: workers on instances that provider
launches, each with its agent (``local`` runs the agents as child processes here).
The embedded server's URL is left in ``<data dir>/nats.url`` while it runs, so other
``tessera`` commands on this machine find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway.app import create_app
from gateway.context import GatewayContext
from pipeline.config.instances import InstanceConfig
from pipeline.config.settings import Config, to_env
from pipeline.control.controller import Controller
from pipeline.control.projector import Projector
from pipeline.errors import NatsUnavailableError, TesseraError
from pipeline.frames import slot as frameslot
from pipeline.instances.base import InstanceProvider, load_provider
from pipeline.instances.local import LocalInstanceProvider
from pipeline.instances.pool import InstancePool
from pipeline.nats import auth as natsauth
from pipeline.nats.connect import connect, resolve_url
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import provision
from pipeline.runtime.httpserver import HttpServer
from pipeline.state.reconcile import SessionTiming, Timing
from pipeline.webrtc.turn import TurnServer, turn_config
from pipeline.workers.processes import LocalProvider

log = logging.getLogger("tessera.up")


@dataclass
class Stack:
    """The one-machine Tessera: ``await start()``, then ``await stop()`` (safe twice)."""

    config: Config
    instances: InstanceConfig | None = None
    """Run workers on instances of this provider config; None: local child processes."""
    nats: EmbeddedNats | None = None
    nc: Client | None = None
    """The control plane's connection (projector, controller; NATS user ``controller``)."""
    js: JetStreamContext | None = None
    gateway_nc: Client | None = None
    """The gateway's own connection (NATS user ``gateway``: it cannot touch streams)."""
    projector: Projector | None = None
    provider: LocalProvider | None = None
    """The local provider, when workers run as child processes of this one."""
    pool: InstancePool | None = None
    """The instance pool, when workers run on instances (``instances`` given)."""
    controller: Controller | None = None
    gateway: HttpServer | None = None
    turn: TurnServer | None = None
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

    def _launcher_env(self) -> dict[str, str]:
        """Environment of the processes this stack starts: its settings, and where the role
        passwords are (for agents, which start workers; a worker gets only its own URL)."""
        env = {**os.environ, **to_env(self.config)}
        users = self.config.nats_users_path
        if users is not None and users.exists():
            env["TESSERA_NATS_USERS"] = str(users)
        return env

    async def start(self) -> None:
        """Start everything; on a failure, stop what started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    def _worker_env(self) -> dict[str, str]:
        """Environment of the workers this stack runs as its own children (one machine)."""
        env = self._launcher_env()
        if self.config.frame_transport == "auto":
            env["TESSERA_FRAME_TRANSPORT"] = "shm"  # grabbers and stitchers share this host
        return env

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
        self.nc = await connect(
            self.url_for("controller"),
            name="tessera-controller",
            role="controller",
            forever=True,
            on_reconnect=self._reprovision,
        )
        self.js = self.nc.jetstream()
        await provision(self.js)
        self.projector = Projector(self.nc, self.js, heartbeat_interval=config.heartbeat_interval)
        await self.projector.start()
        turn = turn_config(config)
        if turn is not None:
            self.turn = TurnServer(
                turn,
                listen=config.host,
                run_dir=config.data_dir / "turn",
                allow_loopback=config.binds_loopback and not config.public,
            )
            await self.turn.start()
        runner: LocalProvider | InstancePool
        if self.instances is None:
            runner = self.provider = LocalProvider(
                nats_url=self.nats_url,
                url_for=self.url_for,
                grace=config.shutdown_timeout / 3,
                env=self._worker_env(),
                fork_server=config.worker_start == "fork",
            )
            await self.provider.start()
        else:
            runner = self.pool = InstancePool(
                self.nc, self.js, self._instance_provider(self.instances), self.instances
            )
        self.controller = Controller(
            self.nc,
            self.js,
            runner,
            timing=Timing(
                idle_timeout=config.idle_timeout,
                heartbeat_timeout=config.worker_heartbeat_timeout,
            ),
            session_timing=SessionTiming(
                running_timeout=config.session_running_timeout,
                idle_timeout=config.session_idle_timeout,
            ),
            poll_interval=config.poll_interval,
        )
        runner.on_exit = self.controller.on_worker_exit
        if self.pool is not None:
            await self.pool.start()  # knows the instances before the controller's first pass
        await self.controller.start()
        projector = self.projector
        self.gateway_nc = await connect(
            self.url_for("gateway"), name="tessera-gateway", role="gateway", forever=True
        )
        ctx = GatewayContext(
            nc=self.gateway_nc,
            js=self.gateway_nc.jetstream(),
            config=config,
            projector_caught_up=lambda: projector.caught_up.is_set(),
            turn=turn,
        )
        self.gateway = HttpServer(
            create_app(ctx),
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_timeout / 2,
        )
        await self.gateway.start()
        if self.provider is not None and self.provider.forks is not None:
            # The fork server imports while everything else starts; a /create right after
            # `tessera up` says it is ready should not wait for those imports (bench case 3).
            if not await self.provider.ready(10.0):
                log.warning("the fork server is not ready: workers start as new processes")

    def _instance_provider(self, instances: InstanceConfig) -> InstanceProvider:
        """The provider that launches instances. Local agents are built here so that they and
        their workers get this stack's settings, flags included (as local workers do)."""
        url = instances.instance_nats_url or self.nats_url
        if instances.provider == "local":
            return LocalInstanceProvider(
                nats_url=url,
                env=self._launcher_env(),
                # An agent stops its workers (a third of the timeout each) before it exits.
                grace=self.config.shutdown_timeout,
            )
        return load_provider(instances.provider, instances, nats_url=self.nats_url)

    async def _reprovision(self) -> None:
        # A restarted nats-server lost its memory streams (frames, segments, playlists):
        # provisioning is idempotent, so do it again on every reconnect.
        if self.js is not None:
            await provision(self.js)

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
        gateway, self.gateway = self.gateway, None
        if gateway is not None:
            await gateway.stop()
        controller, self.controller = self.controller, None
        if controller is not None:
            await controller.stop()
        provider, self.provider = self.provider, None
        if provider is not None:
            await provider.close()
            if self.nats is not None:
                # Our own server, so our own slots: those a killed grabber left go too.
                parts = urlsplit(self.nats.url)
                frameslot.remove_namespace(frameslot.namespace(f"{parts.hostname}:{parts.port}"))
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()
        turn_server, self.turn = self.turn, None
        if turn_server is not None:
            await turn_server.stop()
        projector, self.projector = self.projector, None
        if projector is not None:
            await projector.stop()
        for nc in (self.gateway_nc, self.nc):
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.drain(), 2.0)
                if not nc.is_closed:
                    await nc.close()
        self.gateway_nc = self.nc = None
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
