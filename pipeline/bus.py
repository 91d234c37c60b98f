"""Connecting to NATS: where it is, and a connection with Tessera's options.

``resolve_url`` answers "which NATS?": ``NATS_URL`` / ``--nats-url`` when set (a cluster in
production), else the URL a running ``tessera up`` left in its data dir. Connection failures
become :class:`~pipeline.errors.NatsUnavailableError` naming the URL and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.errors import NoServersError

from pipeline.config import Config
from pipeline.errors import NatsUnavailableError

log = logging.getLogger("tessera.bus")


def resolve_url(config: Config) -> str:
    """The NATS URL to use, or NatsUnavailableError saying how to get one."""
    if config.nats_url:
        return config.nats_url
    try:
        url = config.nats_url_file.read_text().strip()
    except FileNotFoundError:
        url = ""
    if not url:
        raise NatsUnavailableError(
            f"no NATS to connect to: start one with `tessera up` (data dir {config.data_dir}) "
            "or set NATS_URL"
        )
    return url


async def connect(
    url: str,
    *,
    name: str,
    attempts: int = 3,
    forever: bool = False,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Connect to ``url``. ``forever``: once connected, reconnect without limit (services);
    ``on_reconnect`` runs after every reconnection (e.g. to provision again what a restarted
    server lost: memory streams do not survive a restart)."""
    holder: list[Client] = []

    async def _log_disconnected() -> None:
        # A disconnect while closing is the goodbye, not an outage.
        if holder and not (holder[0].is_closed or holder[0].is_draining):
            log.warning("disconnected from NATS; reconnecting", extra={"url": url})

    async def _reconnected() -> None:
        log.info("reconnected to NATS", extra={"url": url})
        if on_reconnect is not None:
            try:
                await on_reconnect()
            except Exception as exc:  # noqa: BLE001 - logged; the next reconnect tries again
                log.error("after reconnecting: %s", exc)

    try:
        nc = await nats.connect(
            url,
            name=name,
            connect_timeout=2,
            allow_reconnect=True,
            # nats-py applies this to the first connect too, where -1 would retry forever: the
            # first connect is bounded, and only then does a service switch to "never give up".
            max_reconnect_attempts=max(1, attempts),
            reconnect_time_wait=0.5,
            error_cb=_log_error,
            disconnected_cb=_log_disconnected if forever else None,
            reconnected_cb=_reconnected if forever else None,
        )
        holder.append(nc)
    except (NoServersError, OSError, TimeoutError) as exc:
        raise NatsUnavailableError(
            f"cannot reach NATS at {url}: is `tessera up` running, or NATS_URL right?"
        ) from exc
    if forever:
        nc.options["max_reconnect_attempts"] = -1
    return nc


async def _log_error(exc: Exception) -> None:
    log.debug("nats client error: %s", exc)
