"""A service's tasks as one group (:class:`pipeline.runtime.tasks.Tasks`): what
:class:`asyncio.TaskGroup` guarantees, for a service that lives from ``start()`` to ``stop()``."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from pipeline.runtime.tasks import Tasks, wait_set


async def forever() -> None:
    await asyncio.Event().wait()


async def test_close_cancels_and_awaits_every_task() -> None:
    tasks = Tasks("svc")
    cleaned: list[str] = []

    async def slow_to_end(name: str) -> None:
        try:
            await forever()
        finally:
            # Clean-up that itself awaits: close() must wait for it, not just for the cancel.
            await asyncio.sleep(0.02)
            cleaned.append(name)

    spawned = [tasks.spawn(slow_to_end(f"t{i}"), name=f"t{i}") for i in range(3)]
    await asyncio.sleep(0)
    assert len(tasks) == 3 and tasks
    await tasks.close()
    assert all(t.cancelled() for t in spawned)
    assert sorted(cleaned) == ["t0", "t1", "t2"]
    assert len(tasks) == 0 and not tasks
    await tasks.close()  # twice is fine


async def test_a_finished_task_leaves_the_group_by_itself() -> None:
    tasks = Tasks("svc")
    done = tasks.spawn(asyncio.sleep(0, result=7), name="quick")
    assert await done == 7
    await asyncio.sleep(0)
    assert not tasks


async def test_tasks_are_named_after_their_owner() -> None:
    tasks = Tasks("projector")
    task = tasks.spawn(forever(), name="fold")
    assert task.get_name() == "projector: fold"
    await tasks.close()


async def test_a_failing_task_is_reported_once_and_calls_on_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[tuple[str, BaseException]] = []
    tasks = Tasks("svc", on_failure=lambda name, error: failures.append((name, error)))
    other = tasks.spawn(forever(), name="steady")

    async def broken() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad input")

    with caplog.at_level(logging.ERROR, logger="tessera.tasks"):
        tasks.spawn(broken(), name="broken")
        await asyncio.sleep(0.05)
        assert [(name, str(error)) for name, error in failures] == [("svc: broken", "bad input")]
        assert isinstance(failures[0][1], ValueError)
        # Logged once, naming the task, with the error attached (so asyncio has nothing left
        # to report as "exception was never retrieved").
        reports = [r for r in caplog.records if r.name == "tessera.tasks"]
        assert len(reports) == 1
        assert "svc: broken" in reports[0].getMessage()
        assert reports[0].exc_info is not None and reports[0].exc_info[1] is failures[0][1]
        # The others go on; the failed one has left the group.
        assert not other.done() and len(tasks) == 1
        await tasks.close()
    assert len(failures) == 1
    assert len([r for r in caplog.records if r.name == "tessera.tasks"]) == 1


async def test_a_task_failing_while_it_is_closed_is_logged_not_passed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """on_failure may stop the service; while the service stops, that is no help."""
    failures: list[str] = []
    tasks = Tasks("svc", on_failure=lambda name, error: failures.append(name))

    async def fails_on_cancel() -> None:
        try:
            await forever()
        finally:
            raise RuntimeError("cannot clean up")

    tasks.spawn(fails_on_cancel(), name="messy")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="tessera.tasks"):
        await tasks.close()
    assert failures == []
    assert ["svc: messy" in r.getMessage() for r in caplog.records] == [True]


async def test_a_cancelled_closer_still_waits_for_the_tasks_then_is_cancelled() -> None:
    tasks = Tasks("svc")
    cleaned = asyncio.Event()
    cleaning = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await forever()
        finally:
            cleaning.set()
            await asyncio.sleep(0.1)
            cleaned.set()

    task = tasks.spawn(slow_to_end(), name="slow")
    await asyncio.sleep(0)
    closer = asyncio.create_task(tasks.close())
    await cleaning.wait()
    closer.cancel()  # e.g. a stop() under asyncio.timeout, or a second Ctrl-C
    await asyncio.sleep(0.02)
    assert not closer.done(), "close() returned before its tasks had ended"
    with pytest.raises(asyncio.CancelledError):
        await closer
    # The task's clean-up ran to its end: the closer's cancellation was not passed on to it.
    assert cleaned.is_set() and task.cancelled()
    assert not tasks


async def test_a_timeout_around_close_becomes_timeout_error_after_the_tasks_end() -> None:
    tasks = Tasks("svc")

    async def slow_to_end() -> None:
        try:
            await forever()
        finally:
            await asyncio.sleep(0.1)

    task = tasks.spawn(slow_to_end(), name="slow")
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await tasks.close()
    assert task.done()


async def test_spawn_while_closing_is_refused() -> None:
    tasks = Tasks("svc")
    refused: list[str] = []

    async def respawns() -> None:
        try:
            await forever()
        finally:
            try:
                tasks.spawn(forever(), name="late")
            except RuntimeError as exc:
                refused.append(str(exc))

    tasks.spawn(respawns(), name="respawner")
    await asyncio.sleep(0)
    await tasks.close()
    assert refused == ["svc: cannot start task 'late' while closing"]
    assert not tasks


async def test_a_refused_coroutine_is_closed_not_left_unawaited() -> None:
    tasks = Tasks("svc")

    async def slow_to_end() -> None:
        try:
            await forever()
        finally:
            await asyncio.sleep(0.05)

    async def body() -> None:
        raise AssertionError("a refused coroutine must never run")

    tasks.spawn(slow_to_end(), name="slow")
    await asyncio.sleep(0)
    closing = asyncio.create_task(tasks.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    coro = body()
    with pytest.raises(RuntimeError, match="while closing"):
        tasks.spawn(coro, name="late")
    # Closed: it never runs, and Python has no "coroutine was never awaited" to warn about.
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    await closing


async def test_a_closed_group_can_be_used_again() -> None:
    """A service started again after a stop uses the same group."""
    failures: list[str] = []
    tasks = Tasks("svc", on_failure=lambda name, error: failures.append(name))
    first = tasks.spawn(forever(), name="first life")
    await tasks.close()
    assert first.cancelled()

    async def broken() -> None:
        raise KeyError("x")

    second = tasks.spawn(forever(), name="second life")
    tasks.spawn(broken(), name="broken")
    await asyncio.sleep(0.02)
    assert failures == ["svc: broken"], "on_failure works again after a close"
    assert not second.done() and len(tasks) == 1
    await tasks.close()
    assert second.cancelled() and not tasks


async def test_closing_from_one_of_its_own_tasks_is_refused_not_a_hang() -> None:
    tasks = Tasks("svc")
    other = tasks.spawn(forever(), name="other")

    async def closes_its_group() -> None:
        await tasks.close()

    inside = tasks.spawn(closes_its_group(), name="inside")
    with pytest.raises(RuntimeError, match="would wait for itself"):
        await asyncio.wait_for(inside, 1)
    assert not other.done(), "nothing was cancelled"
    await tasks.close()


async def test_a_task_that_swallows_its_cancel_is_cancelled_again_not_waited_for_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A library can lose a cancel (Python 3.11's wait_for): close() cancels such a task again
    after ``recancel_after`` rather than hanging on it."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 1:
                    continue  # the first cancel is lost, as in the library bug
                raise

    tasks = Tasks("owner", recancel_after=0.05)
    task = tasks.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await tasks.close()
    assert task.cancelled()
    assert swallowed == 2
    assert "still runs" in caplog.text and "stubborn" in caplog.text


async def test_wait_set_never_loses_a_cancel_that_lands_as_the_event_is_set() -> None:
    """A service loop's "wake up or tick": the cancel that stop() sends just as something
    woke the loop must end it (``asyncio.wait_for`` on Python 3.11 returns instead, and the
    loop ran on until a second cancel 5 s later)."""
    event = asyncio.Event()
    ticks = 0

    async def loop() -> None:
        nonlocal ticks
        while True:
            await wait_set(event, 10.0)
            event.clear()
            ticks += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop waits
    event.set()
    task.cancel()  # in the same turn as the wake-up
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2.0)
    assert ticks == 0
    event.clear()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, None) is True
