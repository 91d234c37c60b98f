"""The step grace (pure): how long a step forward waits for its exact picture before the seek
proxy's picture is sent."""

from __future__ import annotations

from pipeline.producers.jit.grace import PROXY_GRACE, RECENT, StepGrace


def test_steps_that_decode_in_time_keep_their_grace() -> None:
    steps = StepGrace()
    assert steps.grace == PROXY_GRACE
    for wait in (0.018, 0.024, 0.021, 0.026, 0.019):  # 1080p, one frame each
        steps.waited(wait)
        assert steps.grace == PROXY_GRACE


def test_frame_threads_quick_then_slow_steps_send_the_proxy_at_once() -> None:
    """UHD with two frame threads: every other step finds its frame almost decoded. Judging by
    the last step alone waited the grace on every other step (bench case 12's 26 ms steps)."""
    steps = StepGrace()
    steps.waited(0.095)
    graces = []
    for wait in (0.005, 0.093, 0.004, 0.101, 0.005):
        graces.append(steps.grace)
        steps.waited(wait)
    assert graces == [0.0] * 5


def test_quick_steps_bring_the_grace_back() -> None:
    steps = StepGrace()
    steps.waited(0.2)
    for _ in range(RECENT - 1):
        steps.waited(0.01)
        assert steps.grace == 0.0
    steps.waited(0.01)
    assert steps.grace == PROXY_GRACE
