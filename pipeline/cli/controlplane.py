"""The control plane as one service: what ``tessera controller`` runs, and ``tessera up`` too.

:class:`ControlPlane` connects to NATS as the ``controller`` user, provisions the JetStream
topology (again after every reconnection: a restarted server lost its memory streams), and runs,
in order, the projector, where workers run, and the controller; it stops them in reverse order.
Where workers run: with no instance config, the local provider (workers as child processes of
this one, no agents); with one (``--instance-provider``), an
:class:`~pipeline.instances.pool.InstancePool` over that provider (``local`` runs the agents as
child processes here, ``agents`` launches nothing and places work on the agents that register
themselves).

It knows no HTTP and no embedded server: ``tessera up`` (:mod:`pipeline.cli.up`) composes it
with those; ``tessera controller`` runs it alone against ``NATS_URL``, as the Nomad job
``deploy/nomad/controller.nomad.hcl`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.config.instances import InstanceConfig
from pipeline.config.settings import Config, to_env
from pipeline.control.controller import Controller
from pipeline.control.projector import Projector
from pipeline.instances.base import InstanceProvider, load_provider
from pipeline.instances.local import LocalInstanceProvider
from pipeline.instances.pool import InstancePool
from pipeline.nats.connect import connect, server_info
from pipeline.nats.topology import provision, replicas_for
from pipeline.runtime.service import Parts
from pipeline.state.reconcile import SessionTiming, Timing
from pipeline.workers.processes import LocalProvider

log = logging.getLogger("tessera.controlplane")


@dataclass
class ControlPlane(Parts):
    """Projector, where workers run, and controller: ``await start()``, then ``await stop()``
    (safe twice)."""

    config: Config
    url_for: Callable[[str], str]
    """The URL to connect as a NATS role (:mod:`pipeline.nats.auth`), credentials included."""
    nats_url: str
    """The NATS URL without credentials, handed to the processes this plane starts."""
    instances: InstanceConfig | None = None
    """Run workers on instances of this provider config; None: local child processes."""
    nc: Client | None = None
    """The plane's connection (projector, controller, pool; NATS user ``controller``)."""
    js: JetStreamContext | None = None
    replicas: int = 1
    """Copies of each stream and bucket (3 on a NATS cluster: ``replicas_for``)."""
    projector: Projector | None = None
    provider: LocalProvider | None = None
    """The local provider, when workers run as child processes of this one."""
    pool: InstancePool | None = None
    """The instance pool, when workers run on instances (``instances`` given)."""
    controller: Controller | None = None

    def launcher_env(self) -> dict[str, str]:
        """Environment of the processes this plane starts: its settings, and where the role
        passwords are (for agents, which start workers; a worker gets only its own URL)."""
        env = {**os.environ, **to_env(self.config)}
        users = self.config.nats_users_path
        if users is not None and users.exists():
            env["TESSERA_NATS_USERS"] = str(users)
        return env

    def worker_env(self) -> dict[str, str]:
        """Environment of the workers this plane runs as its own children (one machine)."""
        env = self.launcher_env()
        if self.config.frame_transport == "auto":
            env["TESSERA_FRAME_TRANSPORT"] = "shm"  # grabbers and stitchers share this host
        return env

    async def _start(self) -> None:
        config = self.config
        self.nc = await connect(
            self.url_for("controller"),
            name="tessera-controller",
            role="controller",
            forever=True,
            on_reconnect=self._reprovision,
        )
        self.js = self.nc.jetstream()
        self.replicas = replicas_for(server_info(self.nc), config.nats_replicas)
        await provision(self.js, self.replicas, shrink=self.config.nats_replicas > 0)
        self.projector = Projector(self.nc, self.js, heartbeat_interval=config.heartbeat_interval)
        await self.projector.start()
        runner: LocalProvider | InstancePool
        if self.instances is None:
            runner = self.provider = LocalProvider(
                nats_url=self.nats_url,
                url_for=self.url_for,
                grace=config.shutdown_timeout / 3,
                env=self.worker_env(),
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
            # Costs by mosaic, and grabbers beside their stitchers: what the controller knows.
            self.pool.demand = self.controller.demand
            await self.pool.start()  # knows the instances before the controller's first pass
        await self.controller.start()
        if self.provider is not None and self.provider.forks is not None:
            # The fork server imported while the rest started; a /create right after the ready
            # line should not wait for those imports (bench case 3).
            if not await self.provider.ready(10.0):
                log.warning("the fork server is not ready: workers start as new processes")

    def _instance_provider(self, instances: InstanceConfig) -> InstanceProvider:
        """The provider that launches instances. Local agents are built here so that they and
        their workers get this plane's settings, flags included (as local workers do)."""
        url = instances.instance_nats_url or self.nats_url
        if instances.provider == "local":
            return LocalInstanceProvider(
                nats_url=url,
                env=self.launcher_env(),
                # An agent stops its workers (a third of the timeout each) before it exits.
                grace=self.config.shutdown_timeout,
            )
        return load_provider(instances.provider, instances, nats_url=self.nats_url)

    async def _reprovision(self) -> None:
        # A restarted nats-server lost its memory streams (frames, segments, playlists):
        # provisioning is idempotent, so do it again on every reconnect.
        if self.js is not None:
            await provision(self.js, self.replicas, shrink=self.config.nats_replicas > 0)

    async def stop(self) -> None:
        """Stop in reverse order of start. Safe to call twice."""
        controller, self.controller = self.controller, None
        if controller is not None:
            await controller.stop()
        provider, self.provider = self.provider, None
        if provider is not None:
            await provider.close()
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()
        projector, self.projector = self.projector, None
        if projector is not None:
            await projector.stop()
        nc, self.nc = self.nc, None
        self.js = None
        if nc is not None:
            await close_connection(nc)


async def close_connection(nc: Client) -> None:
    """Drain ``nc`` (at most 2 s), then close it; a connection already gone is fine."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.drain(), 2.0)
    if not nc.is_closed:
        await nc.close()
