"""Running a Starlette app (the gateway, an agent's status page) under uvicorn inside a Tessera
process, as a service.

The socket is bound here, before uvicorn starts, so "port in use" is a clear error rather than
uvicorn's ``sys.exit``; and uvicorn's own signal handling is off, because the process that runs
the gateway owns SIGINT/SIGTERM and stops its services in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

from pipeline.errors import ConfigError, TesseraError
from pipeline.runtime.tasks import cancel_and_wait

log = logging.getLogger("tessera.gateway")

try:
    import httptools  # noqa: F401

    _HTTPTOOLS = True
except ImportError:  # pragma: no cover - a dependency, but degrade rather than fail
    _HTTPTOOLS = False


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or ConfigError naming the address and the fix."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the
    # socket says it is TCP; with proto 0 every response on a kept-alive connection waited
    # ~40 ms for the client's delayed ACK (Nagle), capping the gateway at ~1,400 req/s.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use: choose another with --port "
                "(JIT_ORCHESTRATOR_PORT), or stop what uses it"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServer:
    """uvicorn serving ``app`` on ``host:port``; ``start()`` returns once it accepts."""

    def __init__(self, app: ASGIApp, *, host: str, port: int, shutdown_timeout: float = 5.0):
        self.app = app
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` it serves on."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; raise ConfigError if the port cannot be had."""
        self._sock = bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, round(self.shutdown_timeout)),
            server_header=False,
            # httptools parses HTTP several times faster than h11 (bench case 5) where present.
            http="httptools" if _HTTPTOOLS else "h11",
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="gateway")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise TesseraError("the HTTP gateway stopped while starting")
            await asyncio.sleep(0.01)
        log.info("gateway listening", extra={"url": self.url})

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight (within the deadline). Safe twice."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            # Long-lived responses (Server-Sent Events) end first when the app can end them,
            # so that the requests in flight finish instead of waiting out the deadline.
            drain = getattr(getattr(self.app, "state", None), "drain", None)
            if callable(drain):
                result = drain()
                if asyncio.iscoroutine(result):
                    await result
            server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), self.shutdown_timeout + 1)
            except TimeoutError:
                server.force_exit = True
                await cancel_and_wait(task)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
