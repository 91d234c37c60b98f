"""Alarm state, pure: the fold of alarm events per source (one active alarm per kind, the
last cleared kept), and a mosaic's alarms derived from it with its own holds."""

from __future__ import annotations

from pipeline.messages.events import AlarmCleared, AlarmRaised, Tile
from pipeline.monitoring.alarms import AlarmKind
from pipeline.state.alarms import mosaic_alarms
from pipeline.state.evolve import fold
from pipeline.state.model import RECENT_ALARMS, MosaicState, SourceState
from pipeline.state.mosaic import source_key

URL_A, URL_B = "http://cam/a.m3u8", "http://cam/b.m3u8"
A, B = source_key(URL_A), source_key(URL_B)


def raised(key: str, kind: str, onset_wall: float, at: float | None = None) -> AlarmRaised:
    return AlarmRaised(at=at or onset_wall + 0.5, source=key, kind=kind, onset=onset_wall - 100,
                       onset_wall=onset_wall, value=1.0)  # fmt: skip


def cleared(key: str, kind: str, end_wall: float) -> AlarmCleared:
    return AlarmCleared(at=end_wall, source=key, kind=kind, onset=0.0, end=end_wall - 100,
                        end_wall=end_wall, worst=1.0)  # fmt: skip


def sources(*events: AlarmRaised | AlarmCleared) -> dict[str, SourceState]:
    states = fold(events)
    return {key: s for (bucket, key), s in states.items() if isinstance(s, SourceState)}


def test_one_active_alarm_per_kind_and_the_first_onset_stands() -> None:
    state = sources(raised(A, "black", 10.0), raised(A, "black", 11.0), raised(A, "silence", 12.0))[
        A
    ]
    assert [(a.kind, a.onset_wall) for a in state.active] == [("black", 10.0), ("silence", 12.0)]
    assert state.raised == 2
    state = sources(raised(A, "black", 10.0), cleared(A, "black", 14.0), cleared(A, "black", 15.0))[
        A
    ]
    assert state.active == () and [c.end_wall for c in state.recent] == [14.0]


def test_recent_is_bounded_newest_first() -> None:
    events: list[AlarmRaised | AlarmCleared] = []
    for k in range(RECENT_ALARMS + 5):
        events += [raised(A, "freeze", 10.0 * k), cleared(A, "freeze", 10.0 * k + 3)]
    recent = sources(*events)[A].recent
    assert len(recent) == RECENT_ALARMS and recent[0].end_wall == 10.0 * (RECENT_ALARMS + 4) + 3


def mosaic(alarms: str = "") -> MosaicState:
    return MosaicState(fp="f" * 32, tiles=(Tile(URL_A, "cam A"), Tile(URL_B), Tile(URL_A)),
                       width=1280, height=720, fps=25, alarms=alarms)  # fmt: skip


def test_a_mosaic_shows_an_alarm_once_it_lasted_its_hold_on_every_tile_of_the_url() -> None:
    state = sources(raised(A, "black", 100.0))
    early = mosaic_alarms(mosaic(), state, now=101.0)
    assert early.active == () and early.next_due == 102.0  # black's default hold: 2 s
    due = mosaic_alarms(mosaic(), state, now=102.0)
    assert [(a.tile, a.kind, a.name) for a in due.active] == [
        (0, AlarmKind.BLACK, "cam A"), (2, AlarmKind.BLACK, "")
    ]  # fmt: skip
    assert due.tile_kinds(3) == ((AlarmKind.BLACK,), (), (AlarmKind.BLACK,))
    quick = mosaic_alarms(mosaic("black:0.5"), state, now=101.0)
    assert len(quick.active) == 2  # another mosaic, another hold: the same source state
    assert mosaic_alarms(mosaic("off"), state, now=500.0).active == ()


def test_a_condition_shorter_than_the_hold_never_shows_not_even_as_recent() -> None:
    state = sources(raised(B, "freeze", 100.0), cleared(B, "freeze", 101.5))
    assert mosaic_alarms(mosaic(), state, now=200.0).recent == ()
    longer = sources(raised(B, "freeze", 100.0), cleared(B, "freeze", 103.0))
    recent = mosaic_alarms(mosaic(), longer, now=200.0).recent
    assert [(a.tile, a.kind, a.end_wall) for a in recent] == [(1, AlarmKind.FREEZE, 103.0)]


def test_an_unknown_kind_from_a_newer_tessera_is_not_shown() -> None:
    state = sources(raised(B, "colour-bars", 100.0))
    assert mosaic_alarms(mosaic(), state, now=1000.0).active == ()
