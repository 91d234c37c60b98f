"""Task helpers that keep cancellation honest: one task (:func:`cancel_and_wait`) or a
service's group of them (:class:`Tasks`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_log = logging.getLogger("tessera.tasks")


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


async def wait_set(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` have passed (None: no limit); whether it is
    set. For a service loop's "wake up or tick": Python 3.11's ``asyncio.wait_for`` loses a
    cancel that lands as the event is set (it returns the result instead), so the loop would
    run on and its owner's stop wait for :class:`Tasks`' second cancel, 5 s later (seen in a
    stitcher's WebRTC output, stopped just after a viewer left). ``asyncio.timeout`` does not."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Tasks:
    """The tasks one service owns, as one group: :meth:`spawn` adds one, :meth:`close` cancels
    them all and waits until every one has ended.

    This keeps the guarantees of :class:`asyncio.TaskGroup` for a service whose life runs from
    ``start()`` to ``stop()`` rather than inside one ``async with`` block: no task outlives
    :meth:`close`; a task that ends with an error is reported at once (logged with the owner and
    the task's name, and passed to ``on_failure``, which may stop the service) rather than lost
    in "exception was never retrieved"; a finished task leaves the group by itself. Closing is
    safe twice, and a closed group can be used again (a service started after a stop). A task
    that is still running ``recancel_after`` seconds after its cancel is cancelled again (a cancel
    can be lost in a library), and logged.
    """

    def __init__(
        self,
        owner: str,
        *,
        on_failure: Callable[[str, BaseException], None] | None = None,
        recancel_after: float = 5.0,
    ) -> None:
        self.owner = owner
        self.recancel_after = recancel_after
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task of this group."""
        if self._closing:
            coro.close()
            raise RuntimeError(f"{self.owner}: cannot start task {name!r} while closing")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        _log.error("task %r failed", task.get_name(), exc_info=error)
        if self._on_failure is not None and not self._closing:
            self._on_failure(task.get_name(), error)

    async def close(self) -> None:
        """Cancel every task and wait until all have ended. A cancellation of the caller while
        it waits does not cut the wait short (no task may outlive the group); it is raised
        once they have ended."""
        current = asyncio.current_task()
        if current is not None and current in self._tasks:
            raise RuntimeError(
                f"{self.owner}: close() called from its own task {current.get_name()!r}, which "
                "would wait for itself: close the group from outside it (its owner's stop())"
            )
        self._closing = True
        cancelled: set[asyncio.Task[Any]] = set()
        interrupted: asyncio.CancelledError | None = None
        try:
            while self._tasks:
                tasks = list(self._tasks)
                # Each task is cancelled once: cancelling it again when the caller is
                # cancelled would cut its own clean-up short (TaskGroup cancels once, too).
                for task in tasks:
                    if task not in cancelled:
                        task.cancel()
                        cancelled.add(task)
                try:
                    # Their done callbacks report any failure.
                    _, pending = await asyncio.wait(tasks, timeout=self.recancel_after)
                except asyncio.CancelledError as exc:
                    interrupted = exc
                    continue
                # A cancel can be lost: Python 3.11's wait_for (inside nats-py's calls) swallows
                # one that lands as its inner future completes. A task still running this long
                # after its cancel is cancelled again, so close() cannot hang on it forever.
                for task in pending:
                    _log.warning(
                        "task %r still runs %g s after its cancel: cancelling it again",
                        task.get_name(),
                        self.recancel_after,
                    )
                    cancelled.discard(task)
        finally:
            self._closing = False
        if interrupted is not None:
            raise interrupted
