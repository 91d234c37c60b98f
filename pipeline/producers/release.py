"""Decode ahead, release on time: the thread that hands a grabber's paced frames on when due.

A paced source (everything fetched over HTTP, see :mod:`pipeline.producers.decode`) could have
its decode thread wake for every frame, decode it and wait for its time. Instead the decode
thread decodes and scales up to :data:`AHEAD` frames ahead of their time, in bursts with warm
caches, and puts each here with its due time; the :class:`Releaser` thread
(``release-<source_id>``) sleeps until each is due and hands it on. Frames keep their order and
their times; only the decoding moves earlier.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias

from pipeline.messages.frames import FrameHeader

AHEAD = 25
"""Paced frames the decode thread may decode and scale ahead of their time (1 s at 25 fps): it
then decodes in bursts of ``AHEAD // 2`` with warm caches instead of waking for every frame
(measured, 720p -> 320x180: 2.47 ms of thread CPU a frame waking per frame, 2.04 with 8
ahead, 1.98 with 25). Memory: 25 tile frames of each size (2 MB at 320x180)."""

Pixels: TypeAlias = bytes | bytearray | memoryview
"""A packed yuv420p tile."""
_Queued: TypeAlias = tuple[float, Sequence[FrameHeader], tuple[int, ...], bytearray]
"""A frame waiting: its due time, the header and byte size of each tile, their bytes."""


class Releaser:
    """Hands paced frames on at their due time, from a thread of its own.

    The decode thread puts ``(due, headers, tiles)`` (one frame as a tile of each size,
    copied into a buffer of the releaser's own: ``frame_sizes`` sizes the buffers at first,
    and a buffer grows when the tiles change) and may run up to :data:`AHEAD` frames ahead; the
    releaser thread sleeps until each frame is due and emits its tiles, in order. The tiles
    may change from one frame to the next (a grabber given other tile sizes while it runs).
    ``drain()`` drops what is queued (a new connection, a stop). Both threads end when
    ``stopping`` is set."""

    def __init__(
        self,
        emit: Callable[[FrameHeader, Pixels], None],
        stopping: threading.Event,
        frame_sizes: Sequence[int],
        name: str,
        idle: Callable[[], None] | None = None,
        done: Callable[[], None] | None = None,
    ) -> None:
        """``idle()`` is called in the decode thread when it is ahead and is about to wait: a
        time for work that can wait (the grabber decodes its audio then); ``done()`` in the
        release thread after each frame's tiles were emitted."""
        self._emit = emit
        self._idle = idle
        self._done = done
        self._stopping = stopping
        self._queue: queue.Queue[_Queued] = queue.Queue(AHEAD)
        pool = AHEAD + 2  # queued, one being emitted, one being filled
        self._free: queue.Queue[bytearray] = queue.Queue(pool)  # a fixed pool, recycled
        for _ in range(pool):
            self._free.put(bytearray(sum(frame_sizes)))
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, due: float, headers: Sequence[FrameHeader], tiles: Sequence[Pixels]) -> None:
        """Queue a frame's tiles (decode thread); waits while :data:`AHEAD` are queued."""
        buf: bytearray | None = None
        while buf is None:
            if self._stopping.is_set():
                return
            try:
                buf = self._free.get(timeout=0.2)
            except queue.Empty:
                continue
        sizes = tuple(len(pixels) for pixels in tiles)
        if len(buf) < sum(sizes):
            buf.extend(bytes(sum(sizes) - len(buf)))  # the tiles grew: once per buffer
        start = 0
        for size, pixels in zip(sizes, tiles, strict=True):
            buf[start : start + size] = pixels
            start += size
        while True:
            if self._stopping.is_set():
                self._free.put(buf)
                return
            try:
                self._queue.put((due, headers, sizes, buf), timeout=0.2)
                break
            except queue.Full:
                continue
        if self._queue.qsize() >= AHEAD:
            # Full: sleep until about half is out, then decode the next burst.
            if self._idle is not None:
                self._idle()
            half = (AHEAD // 2) / 25.0
            self._stopping.wait(max(0.0, due - time.monotonic() - half))

    @property
    def queued(self) -> int:
        """Frames waiting for their time: how far ahead the decode thread is."""
        return self._queue.qsize()

    def drain(self) -> None:
        """Drop the frames not yet due (decode thread)."""
        while True:
            try:
                *_, buf = self._queue.get_nowait()
            except queue.Empty:
                return
            self._free.put(buf)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                due, headers, sizes, buf = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            wait = due - time.monotonic()
            if wait <= 0 or not self._stopping.wait(wait):
                with memoryview(buf) as view:
                    start = 0
                    for size, header in zip(sizes, headers, strict=True):
                        self._emit(header, view[start : start + size])
                        start += size
                if self._done is not None:
                    self._done()
            self._free.put(buf)

    def join(self) -> None:
        """Wait for the thread (after ``stopping`` is set)."""
        self._thread.join()
