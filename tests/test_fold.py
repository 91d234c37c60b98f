"""The folds are pure and total: properties over generated histories."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.messages.events import (
    Event,
    SessionEnded,
    SessionFailed,
    SessionInput,
    SessionRequested,
    SessionStarted,
    WorkerStarted,
    WorkerStopped,
)
from pipeline.state.evolve import fold
from pipeline.state.model import SessionState, WorkerState

ids = st.sampled_from(["a", "b", "c"])
at = st.floats(min_value=0, max_value=1e9)
session_events = st.one_of(
    st.builds(SessionRequested, at=at, session_id=ids, inputs=st.just((SessionInput("/v.mov"),))),
    st.builds(SessionStarted, at=at, session_id=ids, worker_id=ids),
    st.builds(SessionEnded, at=at, session_id=ids, reason=st.just("idle")),
    st.builds(SessionFailed, at=at, session_id=ids, cause=st.just("input 1: gone")),
)
worker_events = st.one_of(
    st.builds(WorkerStarted, at=at, worker_id=ids, kind=st.just("grabber"), target=ids),
    st.builds(WorkerStopped, at=at, worker_id=ids, reason=st.just("not-needed")),
)


@given(st.lists(st.one_of(session_events, worker_events), max_size=60))
def test_every_event_is_counted_once(events: list[Event]) -> None:
    states = fold(events)
    assert sum(s.version for s in states.values()) == len(events)


@given(st.lists(session_events, max_size=40))
def test_an_ended_or_failed_session_stays_so(events: list[Event]) -> None:
    for i in range(len(events)):
        before = fold(events[:i])
        after = fold(events[: i + 1])
        for key, state in before.items():
            assert isinstance(state, SessionState)
            if state.phase in ("ended", "failed"):
                later = after[key]
                assert isinstance(later, SessionState)
                assert later.phase == state.phase and later.reason == state.reason


@given(st.lists(worker_events, max_size=40))
def test_worker_phase_is_its_last_event(events: list[Event]) -> None:
    states = fold(events)
    for (_, key), state in states.items():
        assert isinstance(state, WorkerState)
        last = [e for e in events if getattr(e, "worker_id", None) == key][-1]
        assert state.phase == ("running" if isinstance(last, WorkerStarted) else "stopped")
