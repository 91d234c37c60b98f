"""What every gateway route shares: the NATS connection, JetStream, config and services.

Built once by whoever runs the gateway (``tessera up`` or a test) and handed to
:func:`gateway.app.create_app`; routes read it from ``request.app.state.ctx``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.config.settings import Config
from pipeline.webrtc.turn import TurnConfig


@dataclass
class GatewayContext:
    """Shared clients and settings of one gateway process."""

    nc: Client
    js: JetStreamContext
    config: Config
    projector_caught_up: Callable[[], bool] | None = None
    """Readiness of the projector that runs beside this gateway (None: not ours to report)."""
    ice_servers: tuple[dict[str, Any], ...] = ()
    """ICE servers (STUN/TURN) handed to session clients."""
    turn: TurnConfig | None = None
    """Tessera's own TURN server: each session gets fresh credentials for it."""
    started_at: float = field(default_factory=time.time)
