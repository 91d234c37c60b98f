"""HTTP for FFmpeg with every hop checked: the source policy on the address we connect to.

FFmpeg's own HTTP client resolves names and follows redirects by itself, so a URL that passes
:meth:`SourcePolicy.check <pipeline.sources.policy.SourcePolicy.check>` could still end up on
127.0.0.1 or 169.254.169.254 through a ``302``, a playlist naming another host, or a DNS answer
that changes between our check and FFmpeg's connect (DNS rebinding). Here PyAV's ``io_open``
hands every open FFmpeg makes (the URL itself, each playlist reload, segment and rendition) to
:class:`WebIO`, which:

- refuses anything but the policy's web schemes (a playlist cannot name ``file:`` or ``data:``);
- resolves the host once, checks every address, and connects the socket to a checked address
  (the host name still goes in ``Host`` and TLS SNI, and the certificate is verified for it), so
  no second DNS answer is ever used;
- follows at most :data:`MAX_REDIRECTS` redirects itself, checking each the same way;
- bounds every body: no progress (:data:`MIN_PROGRESS` bytes) within ``read_timeout`` is a
  stall (a 1 B/s trickle); a playlist larger than :data:`MAX_PLAYLIST_BYTES` is refused.

Hand-written on :mod:`http.client` rather than a client library because the one thing needed,
connecting to an address we chose while speaking to the name we checked, is a single override
there and not offered by the libraries (they resolve by themselves).

Encrypted HLS (``crypto+http``) is refused: the ``crypto`` protocol would wrap an open this
layer cannot see.
"""

from __future__ import annotations

import base64
import http.client
import io
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

from pipeline.sources.policy import Resolver, SourcePolicy, SourceRefused, SourceUnavailable, redact

log = logging.getLogger("tessera.webio")

MAX_REDIRECTS = 5
MAX_PLAYLIST_BYTES = 1 << 20
"""A playlist is text naming segments: 1 MiB is thousands of them; more is an attack."""
MIN_PROGRESS = 1024
"""Bytes a body must deliver within each ``read_timeout`` of waiting for them (a 1 B/s trickle
is a stall). Only time spent waiting in a read counts: a reader that paces itself (a grabber
reading a long file at its frame rate) may take minutes for 1 KiB of a black picture."""
_REDIRECTS = (301, 302, 303, 307, 308)
_WEB = ("http", "https")
_AVIO_FLAG_WRITE = 2
_AVSEEK_SIZE = 0x10000


def _is_playlist(url: str, content_type: str) -> bool:
    return "mpegurl" in content_type.lower() or urlsplit(url).path.lower().endswith(".m3u8")


class Body(io.RawIOBase):
    """One HTTP response body as the file object PyAV reads; seekable with range requests
    when the server offers them (finite files whose index is at the end)."""

    def __init__(self, web: WebIO, opened: _Opened, offset: int) -> None:
        super().__init__()
        self._web = web
        self.url = opened.url
        self._response = response = opened.response
        self._sock = opened.sock
        self._pos = offset
        length = response.getheader("Content-Length")
        self._size = offset + int(length) if length and length.isdigit() else None
        if response.status == 206:
            total = (response.getheader("Content-Range") or "").rpartition("/")[2]
            self._size = int(total) if total.isdigit() else self._size
        self._ranges = (response.getheader("Accept-Ranges") or "").lower() == "bytes"
        ctype = response.getheader("Content-Type") or ""
        self._cap = MAX_PLAYLIST_BYTES if _is_playlist(self.url, ctype) else None
        self._waited = 0.0
        """Seconds spent waiting for data since :data:`MIN_PROGRESS` bytes last came."""
        self._since_mark = 0
        self._read_total = 0

    @property
    def is_playlist(self) -> bool:
        """Whether this is a playlist (by its Content-Type or its path): its size is capped."""
        return self._cap is not None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._ranges and self._size is not None

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 16
        if self._response.isclosed():
            return b""
        timeout = self._web.read_timeout - self._waited
        if timeout <= 0:
            raise self._stalled()
        if self._sock is not None:
            self._sock.settimeout(timeout)
        began = time.monotonic()
        try:
            data = self._response.read1(size)
        except TimeoutError:
            raise self._stalled() from None
        except (OSError, http.client.HTTPException) as exc:
            raise SourceUnavailable(self.url, f"read: {exc}") from exc
        finally:
            self._waited += time.monotonic() - began
        self._web.check_cancel(self.url)
        self._pos += len(data)
        self._read_total += len(data)
        self._since_mark += len(data)
        if self._since_mark >= MIN_PROGRESS or not data:
            self._waited, self._since_mark = 0.0, 0
        if self._cap is not None and self._read_total > self._cap:
            raise self._web.refuse(self.url, f"playlist larger than {self._cap} bytes")
        return data

    def _stalled(self) -> SourceUnavailable:
        return SourceUnavailable(
            self.url,
            f"fewer than {MIN_PROGRESS} bytes in {self._web.read_timeout:g} s (stalled)",
        )

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == _AVSEEK_SIZE:
            return self._size if self._size is not None else -1
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            if self._size is None:
                raise OSError("size unknown")
            offset += self._size
        if offset == self._pos:
            return self._pos
        if not self.seekable():
            raise OSError("not seekable")
        self._response.close()
        opened = self._web.request(self.url, offset=offset)
        self._response, self._sock = opened.response, opened.sock
        self._pos = offset
        return offset

    def close(self) -> None:
        self._response.close()
        super().close()


class _Opened:
    def __init__(
        self, url: str, response: http.client.HTTPResponse, sock: socket.socket | None
    ) -> None:
        self.url = url
        self.response = response
        self.sock = sock
        """The response's socket: its timeout bounds each read."""


class WebIO:
    """Opens http(s) URLs for one source under ``policy``; ``io_open`` is PyAV's hook.

    Blocking: used from the grabber's decode thread (FFmpeg calls ``io_open`` there)."""

    def __init__(
        self,
        policy: SourcePolicy,
        *,
        open_timeout: float,
        read_timeout: float,
        resolve: Resolver = socket.getaddrinfo,
        user_agent: str = "Tessera grabber",
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.policy = policy
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self._resolve = resolve
        self._user_agent = user_agent
        self._cancelled = cancelled
        self.refusals: list[SourceRefused] = []
        """Every open this layer refused, newest last (FFmpeg may just skip a segment)."""
        self.opens = 0

    def refuse(self, url: str, reason: str) -> SourceRefused:
        """Record and return a refusal of ``url``."""
        exc = SourceRefused(url, reason)
        self.refusals.append(exc)
        del self.refusals[:-8]
        log.warning("refused: %s", exc)
        return exc

    def check_cancel(self, url: str) -> None:
        """Raise when the owner wants the current read to end (stopping)."""
        if self._cancelled():
            raise SourceUnavailable(url, "stopped")

    def io_open(self, url: str, flags: int, options: dict[str, Any]) -> Body:
        """PyAV's ``io_open``: open ``url`` for FFmpeg, read-only."""
        if flags & _AVIO_FLAG_WRITE:
            raise self.refuse(url, "writing is not allowed")
        return self.open(url)

    def open(self, url: str, offset: int = 0) -> Body:
        """GET ``url`` (following checked redirects); the body to read."""
        opened = self.request(url, offset=offset)
        self.opens += 1
        return Body(self, opened, offset)

    def request(self, url: str, *, offset: int = 0) -> _Opened:
        """The response to GET ``url`` from ``offset``, after at most :data:`MAX_REDIRECTS`
        redirects, each hop checked against the policy on the address connected to."""
        for _ in range(MAX_REDIRECTS + 1):
            self.check_cancel(url)
            response, sock = self._get(url, offset)
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                response.close()
                if not location:
                    raise SourceUnavailable(url, f"HTTP {response.status} without a Location")
                url = urljoin(url, location)
                continue
            if response.status not in (200, 206):
                response.close()
                raise SourceUnavailable(url, f"HTTP {response.status} {response.reason}")
            return _Opened(url, response, sock)
        raise SourceUnavailable(url, f"more than {MAX_REDIRECTS} redirects")

    def _get(self, url: str, offset: int) -> tuple[http.client.HTTPResponse, socket.socket | None]:
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if scheme not in _WEB or scheme not in self.policy.schemes:
            raise self.refuse(url, f"scheme {scheme or '(none)'!r} not allowed here")
        try:
            target, addresses = self.policy.checked_addresses(url, resolve=self._resolve)
        except SourceRefused as exc:
            raise self.refuse(url, exc.reason) from None
        port = target.port or (443 if scheme == "https" else 80)
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                target.host, port, timeout=self.open_timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(target.host, port, timeout=self.open_timeout)
        pinned = [str(a) for a in addresses]

        def connect_pinned(
            address: tuple[str, int], timeout: float | None = None, source: Any = None
        ) -> socket.socket:
            # The checked addresses, never a fresh DNS answer (rebinding): Host and SNI still
            # carry the name.
            last: OSError | None = None
            for ip in pinned:
                try:
                    return socket.create_connection((ip, address[1]), timeout, source)
                except OSError as exc:
                    last = exc
            raise last or OSError("no address")

        conn._create_connection = connect_pinned  # type: ignore[attr-defined]
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {"User-Agent": self._user_agent, "Connection": "close", "Accept": "*/*"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        if parts.username:
            creds = f"{parts.username}:{parts.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(creds).decode()
        try:
            conn.request("GET", path, headers=headers)
            sock = conn.sock  # getresponse() hands it to the response ("Connection: close")
            return conn.getresponse(), sock
        except TimeoutError as exc:
            conn.close()
            raise SourceUnavailable(url, f"no answer within {self.open_timeout:g} s") from exc
        except ssl.SSLError as exc:
            conn.close()
            raise SourceUnavailable(url, f"TLS: {exc.reason or exc}") from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise SourceUnavailable(url, f"cannot open: {reason}") from exc


__all__ = ["Body", "WebIO", "redact"]
