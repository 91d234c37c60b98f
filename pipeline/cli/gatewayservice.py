"""The HTTP gateway as one service: what ``tessera gateway`` runs, and ``tessera up`` too.

:class:`GatewayService` connects to NATS as the ``gateway`` user (it cannot touch streams),
starts Tessera's TURN server when ``--turn`` is on (the gateway hands sessions its credentials),
and serves :func:`gateway.app.create_app` on ``--host``/``--port``; it stops them in reverse
order. It runs no projector: ``/readyz`` reads the readiness of one in the same process when it
is given one (``tessera up``), else the projector's heartbeat (``tessera gateway``, a process or
a machine of its own: :class:`gateway.health.ProjectorBeat`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client

from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.health import projector_beat
from pipeline.cli.controlplane import close_connection
from pipeline.config.settings import Config
from pipeline.nats.beats import HeartbeatCache
from pipeline.nats.connect import connect
from pipeline.runtime.httpserver import HttpServer
from pipeline.runtime.service import Parts
from pipeline.webrtc.turn import TurnServer, turn_config


@dataclass
class GatewayService(Parts):
    """The gateway: ``await start()``, then ``await stop()`` (safe twice)."""

    config: Config
    nats_url: str
    """The URL to connect as the NATS user ``gateway``, credentials included."""
    projector_caught_up: Callable[[], bool] | None = None
    """Readiness of a projector in this process; None: read from the projector's heartbeat."""
    nc: Client | None = None
    turn: TurnServer | None = None
    http: HttpServer | None = None

    async def _start(self) -> None:
        config = self.config
        turn = turn_config(config)
        if turn is not None:
            self.turn = TurnServer(
                turn,
                listen=config.host,
                run_dir=config.data_dir / "turn",
                allow_loopback=config.binds_loopback and not config.public,
            )
            await self.turn.start()
        self.nc = await connect(self.nats_url, name="tessera-gateway", role="gateway", forever=True)
        js = self.nc.jetstream()
        beats = HeartbeatCache(js, nc=self.nc)
        caught_up = self.projector_caught_up or projector_beat(beats, config.heartbeat_interval)
        ctx = GatewayContext(
            nc=self.nc, js=js, config=config, projector_caught_up=caught_up, turn=turn
        )
        self.http = HttpServer(
            create_app(ctx, beats=beats),
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_timeout / 2,
        )
        await self.http.start()

    @property
    def url(self) -> str:
        """``http://host:port`` the gateway serves on (once started)."""
        assert self.http is not None
        return self.http.url

    async def stop(self) -> None:
        """Stop in reverse order of start. Safe to call twice."""
        http, self.http = self.http, None
        if http is not None:
            await http.stop()
        nc, self.nc = self.nc, None
        if nc is not None:
            await close_connection(nc)
        turn_server, self.turn = self.turn, None
        if turn_server is not None:
            await turn_server.stop()
