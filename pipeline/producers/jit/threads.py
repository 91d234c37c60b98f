"""A named thread that owns PyAV objects: every call on them runs there, one at a time.

FFmpeg contexts are not thread-safe and decoding blocks, so each reader (the video input, the
audio inputs) lives in one :class:`MediaThread`: opened there, read there, closed there, and
the event loop only awaits results. A call submitted while another runs waits its turn (the
queue is as deep as the player's own pipelining: one prefetch and one request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class MediaThread:
    """One worker thread named ``name`` (tests find leftovers by that prefix)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name
        )

    def submit(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """Run ``fn(*args)`` in the thread; the future can be cancelled (its result is then
        dropped, though a call already running finishes)."""
        if self._executor is None:
            raise RuntimeError(f"thread {self.name} is closed")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def call(self, fn: Callable[..., T], *args: object) -> concurrent.futures.Future[T]:
        """Run ``fn(*args)`` in the thread, asked from another thread rather than the event
        loop: another media thread that needs this one's work done beside its own (an A/B
        compare's video thread reading B's frame while it decodes A's)."""
        if self._executor is None:
            raise RuntimeError(f"thread {self.name} is closed")
        return self._executor.submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the thread and return its result."""
        return await self.submit(fn, *args)

    async def close(self, last: Callable[[], object] | None = None) -> None:
        """Run ``last`` (closing what the thread owns) after what is queued, then end the
        thread. Safe to call twice."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            if last is not None:
                await asyncio.get_running_loop().run_in_executor(executor, last)
        finally:
            # The thread is idle now (its last call returned): joining it is immediate.
            executor.shutdown(wait=True, cancel_futures=True)
