"""A loopback HTTP server that misbehaves on purpose, and a canary that counts who reaches it.

Routes (every loop bounded, every thread joined on ``stop()``):

- ``/canary/<anything>``: counts the hit, answers a tiny playlist. A test under the public
  policy expects 0 hits.
- ``/redirect/<n>?to=URL``: ``302`` to ``URL`` (``n`` only makes distinct paths).
- ``/trickle.m3u8``: a playlist at one byte per second.
- ``/endless.m3u8``: a playlist that never ends (segment lines forever).
- ``/endless.ts``: random bytes forever.
- ``/frozen/index.m3u8``: a live playlist (no ENDLIST) of two real segments that never advances.
- ``/frozen/<n>.ts``, ``/file/<name>``: bytes registered with :meth:`HostileServer.add`.
"""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

ENDLESS_CAP = 256 << 20
"""Most bytes an endless body sends before the server gives up (a bound for the test run)."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: C901 - one route table
        owner = self.server.owner
        owner.hits += 1
        parts = urlsplit(self.path)
        path = parts.path
        if path.startswith("/canary/"):
            owner.canary_hits += 1
            self._send(200, b"#EXTM3U\n", "application/vnd.apple.mpegurl")
        elif path.startswith("/redirect/"):
            target = parse_qs(parts.query).get("to", [""])[0]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/trickle.m3u8":
            self._headers(200, "application/vnd.apple.mpegurl")
            self._drip(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n" * 100, per_second=1)
        elif path == "/endless.m3u8":
            self._headers(200, "application/vnd.apple.mpegurl")
            head = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n"
            # In blocks of 2,000 entries (~40 kB): the body comes as fast as the reader takes it.
            self._pour(
                lambda i: "".join(
                    f"#EXTINF:1,\nseg{i * 2000 + k}.ts\n" for k in range(2000)
                ).encode(),
                head=head,
            )
        elif path == "/endless.ts":
            self._headers(200, "video/mp2t")
            self._pour(lambda i: os.urandom(64 << 10))
        elif path in owner.files:
            data, ctype = owner.files[path]
            self._send(200, data, ctype)
        else:
            self._send(404, b"not here\n", "text/plain")

    def _headers(self, code: int, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.end_headers()

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, body: bytes, *, per_second: int) -> None:
        for i in range(len(body)):
            if self.server.owner.stopping.wait(1 / per_second if i else 0):
                return
            try:
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
            except OSError:
                return

    def _pour(self, chunk: Any, head: bytes = b"") -> None:
        sent = 0
        try:
            self.wfile.write(head)
            i = 0
            while sent < ENDLESS_CAP and not self.server.owner.stopping.is_set():
                data = chunk(i)
                self.wfile.write(data)
                sent += len(data)
                i += 1
        except OSError:
            return  # the client gave up: that is the point

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: HostileServer, host: str, port: int) -> None:
        self.owner = owner
        super().__init__((host, port), _Handler)


class HostileServer:
    """``with HostileServer(host) as hostile:`` serves on ``host`` (a loopback address) and
    ``port`` (0: a free one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.canary_hits = 0
        """Requests for ``/canary/...``."""
        self.hits = 0
        """Requests of any path."""
        self.files: dict[str, tuple[bytes, str]] = {}
        self.stopping = threading.Event()
        self._server = _Server(self, host, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, data: bytes | str, ctype: str = "application/octet-stream") -> str:
        self.files[path] = (data.encode() if isinstance(data, str) else data, ctype)
        return self.url(path)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class SilentServer:
    """Accepts TCP connections and never says a word (until closed)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_for(predicate: Any, within: float) -> bool:
    """Poll ``predicate`` for up to ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
