"""HTTP metrics by route, as a small pure-ASGI middleware.

``tessera_http_requests_total{method, path, status}`` and
``tessera_http_request_duration_seconds{method, path}``, where ``path`` is the route's template
(``/play/{fp}/{name}``), read from ``scope["route"]`` after Starlette matched it, so labels stay
few whatever the URLs. Written here rather than taken from starlette-exporter because that
middleware matched every route again per request: a quarter of the gateway's time under load
(bench case 5), where reading the route Starlette already matched costs nothing.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class HttpMetrics:
    """Counts and times every HTTP request by route."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "tessera_http_requests",
            "HTTP requests by route and status",
            ["method", "path", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "tessera_http_request_duration_seconds",
            "HTTP request duration by route",
            ["method", "path"],
            buckets=BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.requests.labels(method, path, str(status)).inc()
            self.duration.labels(method, path).observe(time.perf_counter() - start)
