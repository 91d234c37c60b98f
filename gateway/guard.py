"""Who may do what, how often: the bearer token and per-client rate limits.

- The **token** guards what starts work on request (``POST /session``, its signalling and
  control, ``DELETE``). It is off for a loopback-only install (the demo, a desk watching LAN
  cameras) unless ``TESSERA_API_TOKEN`` is set, and on everywhere else: a gateway bound to a
  non-loopback address or started with ``--public`` without a token configured makes one and
  stores it in ``<data dir>/api-token`` (mode 0600).
- **Rate limits** are token buckets per client address (the peer address; a proxy in front must
  be trusted explicitly, which Tessera does not do yet), bounded in memory: the least recently
  seen clients are forgotten first.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.config.settings import Config
from pipeline.runtime.secretfile import stored_secret


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` requests per second per client, bursts up to ``burst``. Pure but for the clock."""

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

    def take(self, client: str) -> float:
        """0.0 if ``client`` may go on now, else seconds until it may."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
            self._buckets[client] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - bucket.tokens) / self.rate


def api_token(config: Config) -> str | None:
    """The token the API requires, or None when it is open (loopback-only, none set)."""
    if config.api_token:
        return config.api_token
    if config.binds_loopback and not config.public:
        return None
    path = config.data_dir / "api-token"
    return stored_secret(path)


def _burst(rate: float) -> int:
    return max(1, math.ceil(rate * 5))


class Guard:
    """Token check and rate limits for the gateway's handlers."""

    def __init__(self, config: Config) -> None:
        self.token = api_token(config)
        self.create_limit = RateLimiter(
            config.create_rate, max(1, math.ceil(config.create_rate * 5))
        )
        self.session_limit = RateLimiter(
            config.session_rate, max(1, math.ceil(config.session_rate * 5))
        )

    def authorize(self, request: Request) -> Response | None:
        """None if the request carries the token (or none is needed), else a 401."""
        if self.token is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), self.token):
            return None
        return JSONResponse(
            {"error": "this needs the API token: send Authorization: Bearer <token>"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="tessera"'},
        )

    @staticmethod
    def client(request: Request) -> str:
        """The client's address (the peer of the connection)."""
        return request.client.host if request.client else "unknown"

    def limit(self, limiter: RateLimiter, request: Request) -> Response | None:
        """None if the client is within its rate, else a 429 with Retry-After."""
        wait = limiter.take(self.client(request))
        if wait <= 0:
            return None
        return JSONResponse(
            {"error": "too many requests from this address: slow down"},
            status_code=429,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
