"""The folds: ``evolve(state, event) -> state``, pure and total.

Every event belongs to one entity (:func:`pipeline.messages.events.entity_of`); its state is the
left fold of that entity's events in stream order, starting from ``None``. An event for an
entity whose earlier events are missing still produces a state (with defaults for what is not
known), so that a projection never stalls on a gap. ``version`` counts the events folded.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from pipeline.messages.events import (
    AlarmCleared,
    AlarmRaised,
    Event,
    InstanceLaunched,
    InstanceReady,
    InstanceTerminated,
    MosaicCreated,
    SessionEnded,
    SessionFailed,
    SessionRequested,
    SessionStarted,
    WorkerRetiled,
    WorkerStarted,
    WorkerStopped,
    entity_of,
)
from pipeline.state.model import (
    RECENT_ALARMS,
    ActiveAlarm,
    ClearedAlarm,
    InstanceState,
    MosaicState,
    SessionState,
    SourceState,
    State,
    WorkerState,
)

BUCKET_OF_ENTITY = {
    "mosaic": "mosaics",
    "source": "alarms",
    "session": "sessions",
    "instance": "instances",
    "worker": "workers",
}


def _bump(state: State, **changes: object) -> State:
    return msgspec.structs.replace(state, version=state.version + 1, **changes)


def evolve(state: State | None, event: Event) -> State:
    """The state after ``event``; ``state`` is the entity's state before it (None: new)."""
    match event:
        case MosaicCreated():
            if isinstance(state, MosaicState):
                # Created is appended once per fingerprint; a second one changes nothing.
                return _bump(state)
            return MosaicState(
                fp=event.fp,
                tiles=event.tiles,
                width=event.width,
                height=event.height,
                fps=event.fps,
                cols=event.cols,
                title=event.title,
                alarms=event.alarms,
                audio=event.audio,
                clock=event.clock,
                layout=event.layout,
                created_at=event.at,
                version=1,
            )
        case AlarmRaised():
            return _raised(_source(state, event.source), event)
        case AlarmCleared():
            return _cleared(_source(state, event.source), event)
        case SessionRequested():
            base = _session(state, event.session_id)
            return _bump(
                base,
                inputs=event.inputs,
                options=event.options,
                client=event.client,
                requested_at=event.at,
            )
        case SessionStarted():
            base = _session(state, event.session_id)
            if base.phase in ("ended", "failed"):
                return _bump(base)
            return _bump(
                base,
                phase="running",
                worker_id=event.worker_id,
                instance_id=event.instance_id,
                endpoint=event.endpoint,
                started_at=event.at,
            )
        case SessionEnded():
            base = _session(state, event.session_id)
            if base.phase in ("ended", "failed"):
                return _bump(base)
            return _bump(base, phase="ended", ended_at=event.at, reason=event.reason)
        case SessionFailed():
            base = _session(state, event.session_id)
            if base.phase in ("ended", "failed"):
                return _bump(base)
            return _bump(base, phase="failed", ended_at=event.at, reason=event.cause)
        case InstanceLaunched():
            inst = _instance(state, event.instance_id)
            return _bump(
                inst,
                provider=event.provider,
                external_id=event.external_id,
                capacity=event.capacity,
                launched_at=event.at,
            )
        case InstanceReady():
            inst = _instance(state, event.instance_id)
            if inst.phase == "terminated":
                return _bump(inst)
            return _bump(inst, phase="ready", address=event.address, ready_at=event.at)
        case InstanceTerminated():
            inst = _instance(state, event.instance_id)
            return _bump(inst, phase="terminated", terminated_at=event.at, reason=event.reason)
        case WorkerStarted():
            worker = _worker(state, event.worker_id)
            return _bump(
                worker,
                kind=event.kind,
                target=event.target,
                instance_id=event.instance_id,
                pid=event.pid,
                phase="running",
                started_at=event.at,
            )
        case WorkerRetiled():
            return _bump(_worker(state, event.worker_id))  # same process, same phase
        case WorkerStopped():
            worker = _worker(state, event.worker_id)
            return _bump(
                worker,
                phase="stopped",
                stopped_at=event.at,
                reason=event.reason,
                exit_code=event.exit_code,
            )
    raise TypeError(f"not an event: {event!r}")


def _raised(src: SourceState, event: AlarmRaised) -> State:
    # One condition per kind: a second raise of an active kind (another grabber of the URL
    # that saw another onset, a restarted grabber) changes nothing; the first onset stands.
    if any(a.kind == event.kind for a in src.active):
        return _bump(src)
    alarm = ActiveAlarm(
        kind=event.kind,
        onset=event.onset,
        onset_wall=event.onset_wall,
        raised_at=event.at,
        value=event.value,
    )
    active = tuple(sorted((*src.active, alarm), key=lambda a: a.kind))
    by_kind = {**src.raised_by_kind, event.kind: src.raised_by_kind.get(event.kind, 0) + 1}
    return _bump(
        src,
        url=event.url or src.url,
        active=active,
        raised_by_kind=by_kind,
    )


def _cleared(src: SourceState, event: AlarmCleared) -> State:
    alarm = next((a for a in src.active if a.kind == event.kind), None)
    if alarm is None:
        return _bump(src)  # cleared twice, or never raised here: nothing to end
    done = ClearedAlarm(
        kind=alarm.kind,
        onset=alarm.onset,
        onset_wall=alarm.onset_wall,
        raised_at=alarm.raised_at,
        end=event.end,
        end_wall=event.end_wall,
        value=alarm.value,
        worst=event.worst,
        reason=event.reason,
    )
    return _bump(
        src,
        active=tuple(a for a in src.active if a is not alarm),
        recent=(done, *src.recent)[:RECENT_ALARMS],
    )


def _source(state: State | None, key: str) -> SourceState:
    return state if isinstance(state, SourceState) else SourceState(source=key)


def _session(state: State | None, session_id: str) -> SessionState:
    return state if isinstance(state, SessionState) else SessionState(session_id=session_id)


def _instance(state: State | None, instance_id: str) -> InstanceState:
    return state if isinstance(state, InstanceState) else InstanceState(instance_id=instance_id)


def _worker(state: State | None, worker_id: str) -> WorkerState:
    return state if isinstance(state, WorkerState) else WorkerState(worker_id=worker_id)


def key_of(event: Event) -> tuple[str, str]:
    """The ``(bucket, key)`` of the projected state an event changes."""
    entity, entity_id = entity_of(event)
    return BUCKET_OF_ENTITY[entity], entity_id


def fold(events: Iterable[Event]) -> dict[tuple[str, str], State]:
    """The whole projection of ``events`` (in stream order), by ``(bucket, key)``."""
    states: dict[tuple[str, str], State] = {}
    for event in events:
        key = key_of(event)
        states[key] = evolve(states.get(key), event)
    return states
