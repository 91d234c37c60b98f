"""Who may do what, how often: API tokens with scopes, and rate limits.

- **Tokens** (:mod:`pipeline.access.tokens`): a request names itself with
  ``Authorization: Bearer <token>``: a scoped token from ``tessera tokens create``
  (``tsr_<name>_<secret>``), or the gateway's own token (``TESSERA_API_TOKEN`` or
  ``<data dir>/api-token``, mode 0600), which is the token ``api-token`` with every scope. The
  scoped tokens are kept in memory from a watch of KV ``tokens`` (every key, then each change:
  a revocation holds from the moment the watch sees it), so checking one costs no NATS round
  trip.
- **What needs which scope** (:meth:`Guard.needs`). An install is *closed* when it has its own
  token: set (``TESSERA_API_TOKEN``), or made because it serves others (a non-loopback bind,
  ``--public``) or signs play URLs (``--play-secret``). A closed install asks the ``sessions``
  scope for the session API and ``admin`` for the admin routes; ``/create`` asks ``mosaics``
  only when play URLs are signed (unsigned, a mosaic is one open URL, as it always was). An
  open install (loopback, no token, no play secret) asks nothing, but still names a caller
  whose valid token comes along (for the audit trail).
- **Answers**: no token, an unknown or revoked one: ``401`` with ``WWW-Authenticate``; a valid
  token without the scope: ``403`` with ``"code": "scope"`` and a one-line reason naming the
  scope.
- **Rate limits** are token buckets per token name when a valid token comes with the request,
  else per client address (the peer address; a proxy in front must be trusted explicitly,
  which Tessera does not do yet); a token may carry its own rate. Bounded in memory: the least
  recently seen keys are forgotten first.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.access.tokens import (
    Identity,
    Revoked,
    Scope,
    TokenError,
    TokenRecord,
    decode_record,
    identify,
)
from pipeline.config.settings import Config
from pipeline.nats.follow import CHECK_EVERY, KvFollower
from pipeline.nats.topology import TOKENS
from pipeline.runtime.secretfile import stored_secret

log = logging.getLogger("tessera.gateway")

_REALM = 'Bearer realm="tessera"'


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` requests per second per key, bursts up to ``burst``; a key may have its own
    rate (a token's). Pure but for the clock."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0

    def take(self, client: str, rate: float | None = None) -> float:
        """0.0 if ``client`` may go on now, else seconds until it may. ``rate``: this key's
        own requests per second (its burst is five seconds' worth), else the limiter's."""
        rate, burst = (self.rate, self.burst) if rate is None else (rate, _burst(rate))
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Bucket(tokens=float(burst), updated=now)
            self._buckets[client] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - bucket.tokens) / rate


def api_token(config: Config) -> str | None:
    """The gateway's own token, or None when the install is open (loopback-only, none set, play
    URLs unsigned). Made and stored in ``<data dir>/api-token`` on first use."""
    if config.api_token:
        return config.api_token
    if config.binds_loopback and not config.public and not config.play_secret:
        return None
    path = config.data_dir / "api-token"
    return stored_secret(path)


def _burst(rate: float) -> int:
    return max(1, math.ceil(rate * 5))


class TokenWatch:
    """The scoped tokens of KV ``tokens``, in memory: every key loaded, then each change
    followed (:class:`~pipeline.nats.follow.KvFollower`). A replaced bucket is watched again; a lost
    one holds no tokens until it is back (a token that cannot be checked is refused, never let
    through)."""

    def __init__(self, js: JetStreamContext, check_every: float = CHECK_EVERY) -> None:
        self.records: dict[str, TokenRecord] = {}
        self._follower = KvFollower(
            js, TOKENS, load=self._load, apply=self._change, check_every=check_every,
            required=False, missing="scoped tokens are refused (only the gateway's own token "
            "is valid) until it is provisioned",
        )  # fmt: skip

    async def start(self) -> None:
        """Load every token, then follow changes in the background."""
        await self._follower.start()

    def _load(self, snapshot: dict[str, bytes]) -> None:
        records: dict[str, TokenRecord] = {}
        for key, value in snapshot.items():
            self._apply(records, key, value)
        self.records = records

    def _change(self, key: str, value: bytes | None) -> None:
        self._apply(self.records, key, value)

    @staticmethod
    def _apply(records: dict[str, TokenRecord], key: str, value: bytes | None) -> None:
        if not value:
            records.pop(key, None)
            return
        try:
            records[key] = decode_record(value, key)
        except TokenError as exc:
            # Unreadable: not valid (a token is never let through on a record we cannot read).
            records.pop(key, None)
            log.warning("token record ignored", extra={"error": str(exc)})

    async def stop(self) -> None:
        """Stop following. Safe twice."""
        await self._follower.stop()


_UNSET = object()


class Guard:
    """Token checks and rate limits for the gateway's handlers. ``js``: where KV ``tokens`` is
    (None: only the gateway's own token is known)."""

    def __init__(
        self, config: Config, js: JetStreamContext | None = None, *,
        check_every: float = CHECK_EVERY,
    ) -> None:  # fmt: skip
        self.token = api_token(config)
        self.closed = self.token is not None
        """The session and admin APIs need a token."""
        self.signed = bool(config.play_secret)
        """Play URLs are signed: ``/create`` needs a token too (the mosaics scope)."""
        self.tokens = TokenWatch(js, check_every) if js is not None else None
        self.create_limit = RateLimiter(config.create_rate, _burst(config.create_rate))
        self.session_limit = RateLimiter(config.session_rate, _burst(config.session_rate))

    async def start(self) -> None:
        """Load the scoped tokens and follow them."""
        if self.tokens is not None:
            await self.tokens.start()

    async def stop(self) -> None:
        """Safe twice."""
        if self.tokens is not None:
            await self.tokens.stop()

    def needs(self, scope: Scope) -> bool:
        """True if a request must carry a token with ``scope`` here."""
        return self.signed if scope == "mosaics" else self.closed

    def _verdict(self, request: Request) -> Identity | Revoked | None:
        """Who the request's bearer token says it is (computed once per request)."""
        got = getattr(request.state, "tessera_identity", _UNSET)
        if got is not _UNSET:
            return got  # type: ignore[return-value]
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        verdict: Identity | Revoked | None = None
        if scheme.lower() == "bearer" and given.strip():
            records = self.tokens.records if self.tokens is not None else {}
            verdict = identify(given.strip(), records, self.token)
        request.state.tessera_identity = verdict
        if isinstance(verdict, Identity):
            request.state.token_name = verdict.name  # who the audit trail names
        return verdict

    def may_see_rooms(self, request: Request) -> bool:
        """Whether a refusal may name the agents' room (their ids, cores, memory and workers):
        on an open install, or to a token with the ``admin`` scope. An install that serves
        others keeps its machines and their load from everyone else."""
        identity = self.identify(request)
        return not self.closed or (identity is not None and identity.allows("admin"))

    def identify(self, request: Request) -> Identity | None:
        """The valid token the request carries, if any (and ``request.state.token_name``)."""
        verdict = self._verdict(request)
        return verdict if isinstance(verdict, Identity) else None

    def authorize(self, request: Request, scope: Scope = "sessions") -> Response | None:
        """None if the request may do what needs ``scope``; else a 401 (no, an unknown or a
        revoked token) or a 403 (a valid token without ``scope``)."""
        verdict = self._verdict(request)
        if not self.needs(scope):
            return None
        if isinstance(verdict, Identity):
            if verdict.allows(scope):
                return None
            return JSONResponse(
                {"error": f"token {verdict.name!r} lacks the {scope} scope this needs: "
                          f"use a token with {scope} (or admin)", "code": "scope"},
                status_code=403,
                headers={"WWW-Authenticate":
                         f'{_REALM}, error="insufficient_scope", scope="{scope}"'},
            )  # fmt: skip
        if isinstance(verdict, Revoked):
            reason = f"token {verdict.name!r} is revoked: ask for a new one"
            challenge = f'{_REALM}, error="invalid_token"'
        elif request.headers.get("authorization"):
            reason = f"unknown token: this needs a token with the {scope} scope"
            challenge = f'{_REALM}, error="invalid_token"'
        else:
            reason = (
                f"this needs an API token with the {scope} scope: "
                "send Authorization: Bearer <token>"
            )
            challenge = _REALM
        return JSONResponse(
            {"error": reason, "code": "token"},
            status_code=401,
            headers={"WWW-Authenticate": challenge},
        )

    @staticmethod
    def client(request: Request) -> str:
        """The client's address (the peer of the connection)."""
        return request.client.host if request.client else "unknown"

    def limit(self, limiter: RateLimiter, request: Request) -> Response | None:
        """None if the caller is within its rate, else a 429 with Retry-After. The caller is
        its valid token when it sends one (each token its own bucket), else its address."""
        identity = self.identify(request)
        if identity is not None:
            wait = limiter.take(f"token:{identity.name}", identity.rate)
            who = f"token {identity.name!r}"
        else:
            wait = limiter.take(f"addr:{self.client(request)}")
            who = "this address"
        if wait <= 0:
            return None
        return JSONResponse(
            {"error": f"too many requests from {who}: slow down"},
            status_code=429,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
