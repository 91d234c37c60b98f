"""Waiting for a provider to say an instance is ready: a bounded poll loop shared by the
providers whose APIs have no push notification (EC2, Docker, Nomad)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeline.instances.base import NotReadyError

T = TypeVar("T")


async def poll_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,  # noqa: ASYNC109 - the error names it and the setting that sets it
    interval: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``check`` every ``interval`` s until it returns a value; NotReadyError after
    ``timeout`` s naming ``what`` and the setting that sets the timeout."""
    deadline = clock() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        left = deadline - clock()
        if left <= 0:
            raise NotReadyError(
                f"{what} was not ready after {timeout:g} s: look at the instance's logs, "
                "or allow more time with JIT_INSTANCE_READY_TIMEOUT"
            )
        await asyncio.sleep(min(interval, left))
