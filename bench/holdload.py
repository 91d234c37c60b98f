"""Many Low-Latency HLS players held on one gateway: ``n`` keep-alive HTTP/1.1 connections, each
with one blocking playlist reload (``_HLS_msn`` / ``_HLS_part``) in flight.

A player library is far too heavy for a thousand players in one process, so each connection
is a bare asyncio stream speaking just enough HTTP/1.1 (the gateway's answers carry a
``Content-Length``): the load is the gateway's, not the client's.

- :meth:`HeldPlayers.follow`: every connection asks for the part the last answer's preload hint
  names, and asks again as soon as it is answered, as hls.js and Safari do.
- :meth:`HeldPlayers.send_all`: every connection asks once for the same part (one that will not
  exist for a while, say); the call returns once every request is written, with the future of
  their answers.

Each answer is noted with the part asked for, when it was asked and when it was answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pipeline.segments.uris import PartRef, parse_uri

_HINT = re.compile(rb'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"')


@dataclass(frozen=True)
class Answer:
    """One blocking reload and its answer."""

    asked: PartRef
    sent_wall: float
    answered_wall: float
    status: int


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class HeldPlayers:
    """``n`` connections to ``base_url`` (``async with``: opened, then closed on exit)."""

    base_url: str
    fp: str
    n: int
    answers: list[Answer] = field(default_factory=list)
    _conns: list[_Conn] = field(default_factory=list)
    _pending: list[asyncio.Future[Any]] = field(default_factory=list)

    async def __aenter__(self) -> HeldPlayers:
        split = urlsplit(self.base_url)
        host, port = split.hostname or "127.0.0.1", split.port or 80
        try:
            for start in range(0, self.n, 100):  # a hundred at a time: no SYN flood
                opened = await asyncio.gather(
                    *(asyncio.open_connection(host, port) for _ in range(start,
                                                                         min(start + 100, self.n)))
                )  # fmt: skip
                self._conns += [_Conn(r, w) for r, w in opened]
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel what is in flight and close every connection (safe twice)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.writer.close()
        for conn in conns:
            with contextlib.suppress(OSError, ConnectionError):
                await conn.writer.wait_closed()

    async def _ask(self, conn: _Conn, part: PartRef) -> tuple[int, bytes, float]:
        """One blocking reload: (status, body, send wall clock)."""
        path = f"/play/{self.fp}/index.m3u8?_HLS_msn={part.msn}&_HLS_part={part.part}"
        sent = time.time()
        conn.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        await conn.writer.drain()
        head = await conn.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await conn.reader.readexactly(length) if length else b""
        self.answers.append(Answer(part, sent, time.time(), status))
        return status, body, sent

    async def follow(self, start: PartRef, seconds: float) -> None:
        """Every connection follows the playlist from part ``start`` for ``seconds``."""
        end = time.monotonic() + seconds

        async def player(conn: _Conn) -> None:
            part = start
            while time.monotonic() < end:
                status, body, _ = await self._ask(conn, part)
                hint = _HINT.search(body) if status == 200 else None
                ref = parse_uri(hint.group(1).decode()) if hint else None
                if isinstance(ref, PartRef):
                    part = ref
                else:
                    await asyncio.sleep(0.2)  # refused (held too long?): ask again shortly

        await asyncio.gather(*(player(c) for c in self._conns))

    async def send_all(self, part: PartRef) -> asyncio.Future[list[tuple[int, bytes, float]]]:
        """Ask for ``part`` on every connection; once every request is written, return the
        future of every answer."""
        gathered = asyncio.gather(*(self._ask(c, part) for c in self._conns))
        self._pending.append(gathered)
        # Each request is handed to its socket in its task's first step; nothing signals a
        # drained write buffer, so look.
        await asyncio.sleep(0)
        writers = [c.writer for c in self._conns]
        while any(w.transport.get_write_buffer_size() for w in writers):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return gathered
