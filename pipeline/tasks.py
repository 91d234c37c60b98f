"""Task helpers that keep cancellation honest."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[object] | asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it to end.

    The task's own CancelledError is absorbed; a cancellation of the *caller* while it waits
    is re-raised (``Task.cancelling()``), so stopping a service never swallows a shutdown.
    """
    if task is None or task.done():
        if task is not None and not task.cancelled():
            task.exception()  # retrieve it, so asyncio does not log "never retrieved"
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
