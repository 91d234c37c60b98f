"""Connecting to NATS: where it is, and a connection with Tessera's options.

``resolve_url`` answers "which NATS?": ``NATS_URL`` / ``--nats-url`` when set (a cluster in
production), else the URL a running ``tessera up`` left in its data dir. Connection failures
become :class:`~pipeline.errors.NatsUnavailableError` naming the URL and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoServersError

from pipeline.config.settings import Config
from pipeline.errors import NatsUnavailableError
from pipeline.nats import auth as natsauth

log = logging.getLogger("tessera.bus")

NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)
"""What a NATS call raises while NATS is away or a cluster elects a leader: a service loop
catches these, logs, and tries again on its next pass instead of ending."""


def resolve_url(config: Config, role: str = "admin") -> str:
    """The NATS URL to use as ``role`` (see :mod:`pipeline.nats.auth`), or NatsUnavailableError
    saying how to get one. A URL that names a user already is used as it is."""
    url = config.nats_url
    if not url:
        try:
            url = config.nats_url_file.read_text().strip()
        except FileNotFoundError:
            url = ""
    if not url:
        raise NatsUnavailableError(
            f"no NATS to connect to: start one with `tessera up` (data dir {config.data_dir}) "
            "or set NATS_URL"
        )
    users = config.nats_users_path
    if users is None or natsauth.has_credentials(url):
        return url
    try:
        passwords = natsauth.load(users)
    except FileNotFoundError:
        if config.nats_users_file is not None:
            raise NatsUnavailableError(
                f"NATS users file {users} (TESSERA_NATS_USERS) does not exist"
            ) from None
        return url  # an embedded server of an older version, without users
    if role not in passwords:
        raise NatsUnavailableError(f"NATS users file {users} has no user for role {role!r}")
    return natsauth.with_credentials(url, role, passwords[role])


async def connect(
    url: str,
    *,
    name: str,
    role: str | None = None,
    attempts: int = 3,
    forever: bool = False,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Connect to ``url`` (as ``role``: its reply inboxes are ``_INBOX.<role>.*``, the only
    ones its NATS user may read). ``forever``: once connected, reconnect without limit (services);
    ``on_reconnect`` runs after every reconnection (e.g. to provision again what a restarted
    server lost: memory streams do not survive a restart)."""
    holder: list[Client] = []
    shown = natsauth.redact(url)
    refused: list[str] = []

    async def _on_error(exc: Exception) -> None:
        if "authorization" in str(exc).lower():
            refused.append(str(exc))
        await _log_error(exc)

    async def _log_disconnected() -> None:
        # A disconnect while closing is the goodbye, not an outage.
        if holder and not (holder[0].is_closed or holder[0].is_draining):
            log.warning("disconnected from NATS; reconnecting", extra={"url": shown})

    async def _reconnected() -> None:
        log.info("reconnected to NATS", extra={"url": shown})
        if on_reconnect is not None:
            try:
                await on_reconnect()
            except Exception as exc:  # noqa: BLE001 - logged; the next reconnect tries again
                log.error("after reconnecting: %s", exc)

    try:
        bare, user, password = _credentials(url)
        nc = await nats.connect(
            bare,
            user=user,
            password=password,
            name=name,
            connect_timeout=2,
            allow_reconnect=True,
            # nats-py applies this to the first connect too, where -1 would retry forever: the
            # first connect is bounded, and only then does a service switch to "never give up".
            max_reconnect_attempts=max(1, attempts),
            reconnect_time_wait=0.5,
            inbox_prefix=natsauth.inbox_prefix(role),
            error_cb=_on_error,
            disconnected_cb=_log_disconnected if forever else None,
            reconnected_cb=_reconnected if forever else None,
        )
        holder.append(nc)
    except (NoServersError, OSError, TimeoutError, NatsError) as exc:
        if refused or "authorization" in str(exc).lower():
            raise NatsUnavailableError(
                f"NATS at {shown} refused user {urlsplit(url).username or '(none)'}: check "
                "TESSERA_NATS_USERS or the user in NATS_URL"
            ) from exc
        raise NatsUnavailableError(
            f"cannot reach NATS at {shown}: is `tessera up` running, or NATS_URL right?"
        ) from exc
    if forever:
        nc.options["max_reconnect_attempts"] = -1
    return nc


def server_info(nc: Client) -> dict[str, Any]:
    """The INFO the connected server sent (its name, cluster, the cluster's client URLs).
    nats-py keeps it in a private attribute; this is the one place that reads it."""
    info = getattr(nc, "_server_info", None)
    return dict(info) if isinstance(info, dict) else {}


def servers(url: str) -> list[str]:
    """The server URLs of ``url``: one, or several comma-separated (a cluster's servers, as
    ``NATS_URL`` takes them); nats-py wants them as a list."""
    return [one.strip() for one in url.split(",") if one.strip()]


def _credentials(url: str) -> tuple[list[str], str | None, str | None]:
    """The server URLs without their user and password, and the user and password (of the
    first URL that names them; a token stays in its URL). Given as options, nats-py sends them
    to every server, including those the cluster announces, which a user inside each URL would
    not reach (``authentication error`` on each discovered server)."""
    bare: list[str] = []
    user: str | None = None
    password: str | None = None
    for one in servers(url):
        parts = urlsplit(one)
        if parts.username is None or parts.password is None:
            bare.append(one)  # no user, or a token (``nats://token@host``): as it is
            continue
        if user is None:
            user, password = unquote(parts.username), unquote(parts.password)
        bare.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])))
    return bare, user, password


async def _log_error(exc: Exception) -> None:
    if "permissions violation" in str(exc).lower():
        # A role doing what it may not: a bug or an intrusion, either way worth a warning.
        log.warning("NATS refused: %s", exc)
    else:
        log.debug("nats client error: %s", exc)
