"""Waiting in tests: poll a condition of the system under test until it holds, for so long."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


@overload
async def until(
    check: Callable[[], Awaitable[T | None]], within: float, what: str, every: float = ...
) -> T: ...
@overload
async def until(
    check: Callable[[], T | None], within: float, what: str, every: float = ...
) -> T: ...
async def until(
    check: Callable[[], object], within: float, what: str, every: float = 0.05
) -> object:
    """Call ``check`` (a function or an async one) every ``every`` s until it returns something
    truthy, and return that; after ``within`` s, fail with an AssertionError that says ``what``
    was awaited. A check that fetches and decodes (a segment, say) wants a gentler ``every``."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(every)
