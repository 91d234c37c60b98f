"""The controller's decision as a pure function: the original lifecycle examples, exactly."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from pipeline.messages.codec import decode_worker_spec, encode
from pipeline.messages.events import Tile
from pipeline.messages.workers import GrabberSpec, StitcherSpec, tile_sizes
from pipeline.state.model import MosaicState, SessionState
from pipeline.state.mosaic import (
    MosaicConfig,
    config_of,
    fingerprint,
    layout_of,
    outputs,
    picture_key,
    source_id,
    source_ids,
    source_key,
)
from pipeline.state.reconcile import (
    Plan,
    Running,
    SessionFact,
    SessionTiming,
    Timing,
    affinity,
    backoff,
    desired,
    grabber_id,
    jit_spec,
    plan,
    retilable,
    session_plan,
)

TIMING = Timing(idle_timeout=10.0, heartbeat_timeout=3.0, restart_backoff=1.0)


def mosaic(*names: str) -> MosaicState:
    tiles = tuple(Tile(url=f"http://cams/{n}.m3u8", name=n) for n in names)
    fp = fingerprint(MosaicConfig(tiles=tiles))
    return MosaicState(fp=fp, tiles=tiles, width=1280, height=720, fps=25)


AD = mosaic("A", "B", "C", "D")
CF = mosaic("C", "D", "E", "F")
MOSAICS = {AD.fp: AD, CF.fp: CF}
SRC = {n: source_key(f"http://cams/{n}.m3u8") for n in "ABCDEF"}
"""The source keys: a grabber works on a URL (its target), whatever its tile sizes."""


class World:
    """A provider that does exactly what it is told, on a fake clock."""

    def __init__(self) -> None:
        self.running: dict[str, Running] = {}
        self.viewers: dict[str, float] = {}
        self.beats: dict[str, float] = {}
        self.now = 0.0

    def step(self) -> Plan:
        p = plan(
            mosaics=MOSAICS,
            viewers=self.viewers,
            beats=self.beats,
            running=self.running,
            failures={},
            now=self.now,
            timing=TIMING,
        )
        for wid, _ in p.stop:
            del self.running[wid]
        for spec in p.start:
            self.running[spec.worker_id] = Running(spec, self.now)
            self.beats[spec.worker_id] = self.now
        return p

    def grabbers(self) -> set[str]:
        return {s.spec.target for s in self.running.values() if s.spec.kind == "grabber"}

    def stitchers(self) -> set[str]:
        return {s.spec.target for s in self.running.values() if s.spec.kind == "stitcher"}

    def beat_all(self) -> None:
        for wid in self.running:
            self.beats[wid] = self.now


def test_the_original_lifecycle() -> None:
    w = World()
    # Mosaic A-D watched, then C-F: one grabber per unique source, 6 not 8.
    w.viewers[AD.fp] = 0.0
    w.step()
    assert w.grabbers() == {SRC[n] for n in "ABCD"}
    w.now = 1.0
    w.viewers[CF.fp] = 1.0
    w.step()
    assert w.grabbers() == {SRC[n] for n in "ABCDEF"}
    assert len(w.grabbers()) == 6
    assert w.stitchers() == {AD.fp, CF.fp}

    # A-D goes idle (C-F keeps being watched): its stitcher and grabbers A, B stop.
    stopped: list[tuple[float, str, str]] = []
    for t in range(2, 12):
        w.now = float(t)
        w.viewers[CF.fp] = w.now
        w.beat_all()
        stopped += [(w.now, wid, why) for wid, why in w.step().stop]
    assert {when for when, _, _ in stopped} == {TIMING.idle_timeout}, "stops exactly at the timeout"
    assert {why for _, _, why in stopped} == {"not-needed"}
    assert {wid for _, wid, _ in stopped} == {
        "stitcher-" + AD.fp,
        "grabber-" + SRC["A"],
        "grabber-" + SRC["B"],
    }
    assert w.stitchers() == {CF.fp}
    assert w.grabbers() == {SRC[n] for n in "CDEF"}

    # C-F goes idle: everything stops.
    w.now = 25.0
    w.step()
    assert w.running == {}

    # Watching A-D again restarts what it needs.
    w.viewers[AD.fp] = 25.0
    p = w.step()
    assert {s.worker_id for s in p.start} == {"stitcher-" + AD.fp} | {
        "grabber-" + SRC[n] for n in "ABCD"
    }


def test_a_silent_worker_is_restarted_and_a_crashed_one_backs_off() -> None:
    w = World()
    w.viewers[AD.fp] = 0.0
    w.step()
    grabber_a = "grabber-" + SRC["A"]
    w.now = 5.0
    w.viewers[AD.fp] = 5.0
    w.beat_all()
    w.beats[grabber_a] = 1.0  # silent for 4 s > heartbeat_timeout
    p = w.step()
    assert p.stop == ((grabber_a, "heartbeat-lost"),)
    assert grabber_a not in {s.worker_id for s in p.start}, "started again on the next pass"
    p = w.step()
    assert [s.worker_id for s in p.start] == [grabber_a]

    failures = {grabber_a: (3, 10.0)}
    del w.running[grabber_a]
    blocked = plan(
        mosaics=MOSAICS, viewers={AD.fp: 11.0}, beats=w.beats, running=w.running,
        failures=failures, now=11.0, timing=TIMING,
    )  # fmt: skip
    assert grabber_a not in {s.worker_id for s in blocked.start}
    allowed = plan(
        mosaics=MOSAICS, viewers={AD.fp: 14.5}, beats=w.beats, running=w.running,
        failures=failures, now=14.5, timing=TIMING,
    )  # fmt: skip
    assert grabber_a in {s.worker_id for s in allowed.start}


def test_a_source_shared_at_two_rates_is_pulled_once_at_the_higher() -> None:
    slow = MosaicState(fp="a" * 32, tiles=AD.tiles, width=1280, height=720, fps=10)
    fast = MosaicState(fp="b" * 32, tiles=AD.tiles, width=1280, height=720, fps=30)
    p = plan(
        mosaics={slow.fp: slow, fast.fp: fast}, viewers={slow.fp: 0.0, fast.fp: 0.0}, beats={},
        running={}, failures={}, now=0.0, timing=TIMING,
    )  # fmt: skip
    grabbers = [s for s in p.start if s.kind == "grabber"]
    assert len(grabbers) == 4
    assert {s.fps for s in grabbers if isinstance(s, GrabberSpec)} == {30.0}


@given(st.integers(min_value=0, max_value=100))
def test_backoff_is_capped_and_grows(failures: int) -> None:
    assert 0 <= backoff(failures, TIMING) <= TIMING.restart_backoff_max
    assert backoff(failures + 1, TIMING) >= backoff(failures, TIMING)


def test_worker_ids_are_stable() -> None:
    spec = StitcherSpec(fp=AD.fp)
    assert spec.worker_id == f"stitcher-{AD.fp}"
    url = "http://cams/A.m3u8"
    grabber = GrabberSpec(key=SRC["A"], url=url, sizes=((640, 360), (320, 180)))
    assert (grabber.kind, grabber.target) == ("grabber", SRC["A"])
    assert grabber.worker_id == f"grabber-{SRC['A']}" == grabber_id(url)
    assert grabber.source_ids == (source_id(url, 640, 360), source_id(url, 320, 180))


def test_a_grabber_whose_spec_changed_is_retiled_and_an_equal_one_is_not() -> None:
    """Specs compare as structs: one that travelled (encoded, decoded) equals the wanted one;
    one with another rate does not, and is retiled in place (told its new spec), not stopped."""
    first = plan(
        mosaics={AD.fp: AD}, viewers={AD.fp: 0.0}, beats={}, running={}, failures={}, now=0.0,
        timing=TIMING,
    )  # fmt: skip
    grabber = next(s for s in first.start if isinstance(s, GrabberSpec))
    travelled = decode_worker_spec(encode(grabber))
    assert travelled == grabber and travelled is not grabber
    slower = msgspec.structs.replace(grabber, fps=10)
    running = {s.worker_id: Running(s, 0.0) for s in first.start}
    running[grabber.worker_id] = Running(travelled, 0.0)
    beats = {wid: 1.0 for wid in running}
    same = plan(
        mosaics={AD.fp: AD}, viewers={AD.fp: 1.0}, beats=beats, running=running, failures={},
        now=1.0, timing=TIMING,
    )  # fmt: skip
    assert same.stop == () and same.start == ()
    running[grabber.worker_id] = Running(slower, 0.0)
    changed = plan(
        mosaics={AD.fp: AD}, viewers={AD.fp: 1.0}, beats=beats, running=running, failures={},
        now=1.0, timing=TIMING,
    )  # fmt: skip
    assert changed.stop == () and changed.start == ()
    assert changed.retile == (grabber,)


def test_only_a_grabber_of_the_same_source_is_retilable() -> None:
    a = GrabberSpec(key=SRC["A"], url="http://cams/A.m3u8", sizes=((320, 180),))
    assert retilable(a, msgspec.structs.replace(a, sizes=((640, 360), (320, 180)), fps=50))
    assert not retilable(a, msgspec.structs.replace(a, url="http://cams/B.m3u8"))
    assert not retilable(a, msgspec.structs.replace(a, key=SRC["B"]))
    assert not retilable(StitcherSpec(fp="f1"), StitcherSpec(fp="f1"))


# --- sessions ---------------------------------------------------------------------------------


ST = SessionTiming(running_timeout=5.0, idle_timeout=8.0)


def splan(
    sessions: dict[str, SessionState],
    *,
    now: float,
    viewers: dict[str, float] | None = None,
    ready: dict[str, float] | None = None,
    running: dict[str, Running] | None = None,
) -> tuple[list[str], list[tuple[str, str]], list[SessionFact]]:
    p = session_plan(
        sessions=sessions, viewers=viewers or {}, ready=ready or {}, running=running or {},
        failures={}, now=now, timing=ST, restart=TIMING,
    )  # fmt: skip
    return [s.worker_id for s in p.start], list(p.stop), list(p.facts)


def test_a_session_gets_a_worker_then_starts_then_ends_when_idle() -> None:
    req = SessionState(session_id="s1", phase="requested", requested_at=0.0)
    wid = jit_spec("s1").worker_id
    assert splan({"s1": req}, now=0.5) == ([wid], [], [])
    run = {wid: Running(jit_spec("s1"), 0.5)}
    assert splan({"s1": req}, now=1.0, running=run) == ([], [], [])
    assert splan({"s1": req}, now=1.5, running=run, ready={wid: 1.2}) == (
        [], [], [SessionFact("s1", "started")]
    )  # fmt: skip
    live = SessionState(session_id="s1", phase="running", requested_at=0.0, started_at=1.5)
    assert splan({"s1": live}, now=9.0, running=run, viewers={"s1": 8.0}) == ([], [], [])
    assert splan({"s1": live}, now=16.5, running=run, viewers={"s1": 8.0}) == (
        [], [(wid, "session-ended")], [SessionFact("s1", "ended", "idle")]
    )  # fmt: skip


def test_a_session_not_running_in_time_fails_and_ended_ones_are_stopped() -> None:
    req = SessionState(session_id="s2", phase="requested", requested_at=0.0)
    wid = jit_spec("s2").worker_id
    run = {wid: Running(jit_spec("s2"), 0.0)}
    _, stop, facts = splan({"s2": req}, now=5.5, running=run)
    assert stop == [(wid, "session-failed")]
    assert facts == [SessionFact("s2", "failed", "not running within 5 s")]
    done = SessionState(session_id="s2", phase="failed", requested_at=0.0)
    assert splan({"s2": done}, now=6.0, running=run) == ([], [(wid, "session-failed")], [])
    assert splan({"s2": done}, now=6.0) == ([], [], [])


def test_mosaic_plan_leaves_jit_workers_alone() -> None:
    run = {jit_spec("s1").worker_id: Running(jit_spec("s1"), 0.0)}
    p = plan(mosaics={}, viewers={}, beats={}, running=run, failures={}, now=100.0, timing=TIMING)
    assert p.stop == () and p.start == ()


# -- mosaics that differ only in their titles share one stream -------------------------------


def titled(base: MosaicState, title: str, created_at: float, **changed: object) -> MosaicState:
    config = msgspec.structs.replace(config_of(base), title=title, **changed)
    return msgspec.structs.replace(
        base, fp=fingerprint(config), title=title, created_at=created_at, **changed
    )


def test_the_title_is_not_part_of_the_picture() -> None:
    a, b = titled(AD, "Control room", 1.0), titled(AD, "Lobby", 2.0)
    assert a.fp != b.fp and picture_key(a) == picture_key(b) == picture_key(AD)
    # What the stitcher draws or plays is: holds, sound, layout, size, tile names.
    for changed in ({"alarms": "black:4"}, {"audio": "off"}, {"layout": "focus"}, {"fps": 30}):
        assert picture_key(titled(AD, "Lobby", 2.0, **changed)) != picture_key(a), changed


def test_one_stitcher_the_earliest_ones_for_every_title() -> None:
    a, b, c = titled(AD, "Control room", 5.0), titled(AD, "Lobby", 9.0), titled(AD, "Late", 1.0)
    other = titled(AD, "Holds", 3.0, alarms="black:4")
    mosaics = {m.fp: m for m in (a, b, other)}
    assert outputs(mosaics) == {a.fp: a.fp, b.fp: a.fp, other.fp: other.fp}
    want = desired(mosaics, frozenset({b.fp}))  # only the second title is watched
    stitchers = [s.fp for s in want.values() if isinstance(s, StitcherSpec)]
    assert stitchers == [a.fp]
    assert {s.key for s in want.values() if isinstance(s, GrabberSpec)} == {SRC[n] for n in "ABCD"}
    both = desired(mosaics, frozenset({a.fp, b.fp, other.fp}))
    assert sorted(s.fp for s in both.values() if isinstance(s, StitcherSpec)) == sorted(
        [a.fp, other.fp]
    )
    # A mosaic created earlier (another gateway's, projected later) leads from then on.
    assert outputs({**mosaics, c.fp: c})[b.fp] == c.fp


# -- one grabber per URL, whatever its tile sizes ------------------------------------------------


def sized(base: MosaicState, fp: str, width: int, height: int, **changed: object) -> MosaicState:
    return msgspec.structs.replace(base, fp=fp, width=width, height=height, **changed)


def grabbers_of(want: dict[str, object]) -> dict[str, GrabberSpec]:
    return {s.key: s for s in want.values() if isinstance(s, GrabberSpec)}


def test_one_grabber_per_url_makes_every_tile_size_the_mosaics_show() -> None:
    big = sized(AD, "a" * 32, 1280, 720)  # 2x2 of A-D: 640x360 tiles
    small = sized(CF, "b" * 32, 640, 360, fps=10)  # 2x2 of C-F: 320x180 tiles
    want = grabbers_of(desired({big.fp: big, small.fp: small}, frozenset({big.fp, small.fp})))
    assert set(want) == {SRC[n] for n in "ABCDEF"}, "one grabber per URL: 6, not 8"
    assert want[SRC["A"]].sizes == ((640, 360),) and want[SRC["E"]].sizes == ((320, 180),)
    for shared in "CD":
        spec = want[SRC[shared]]
        url = f"http://cams/{shared}.m3u8"
        # Largest first (it picks the rendition), each size on the source id its stitcher reads.
        assert spec.sizes == ((640, 360), (320, 180)) and spec.fps == 25.0
        assert spec.source_ids == (source_id(url, 640, 360), source_id(url, 320, 180))
        assert spec.worker_id == grabber_id(url)
    # What the stitchers read is what the grabbers make.
    made = {sid for spec in want.values() for sid in spec.source_ids}
    assert made == set(source_ids(big)) | set(source_ids(small))


def test_a_focus_mosaic_shows_one_url_at_two_sizes_with_one_grabber() -> None:
    tiles = (AD.tiles[0], *AD.tiles[1:], AD.tiles[0])  # A large, and A again small
    focus = MosaicState(fp="c" * 32, tiles=tiles, width=1280, height=720, fps=25,
                        layout="focus")  # fmt: skip
    want = grabbers_of(desired({focus.fp: focus}, frozenset({focus.fp})))
    rects = layout_of(focus).rects
    assert len(want) == 4
    assert want[SRC["A"]].sizes == ((rects[0].w, rects[0].h), (rects[-1].w, rects[-1].h))


def test_a_size_is_dropped_when_its_mosaic_stops_and_the_grabber_is_retiled_for_it() -> None:
    """Two mosaics of C and D at two sizes: one grabber each for C and D, both sizes. When the
    smaller mosaic is no longer watched, the grabbers are retiled to the one size left (not
    stopped); A and B (only the big mosaic's) are untouched."""
    big = sized(AD, "a" * 32, 1280, 720)
    small = sized(CF, "b" * 32, 640, 360)
    mosaics = {big.fp: big, small.fp: small}
    viewers = {big.fp: 0.0, small.fp: 0.0}
    first = plan(mosaics=mosaics, viewers=viewers, beats={}, running={}, failures={}, now=0.0,
                 timing=TIMING)  # fmt: skip
    running = {s.worker_id: Running(s, 0.0) for s in first.start}
    c = grabber_id("http://cams/C.m3u8")
    spec_c = running[c].spec
    assert isinstance(spec_c, GrabberSpec) and len(spec_c.sizes) == 2
    now = TIMING.idle_timeout + 1.0
    viewers[big.fp] = now  # the small one's viewers left
    beats = {wid: now for wid in running}
    after = plan(mosaics=mosaics, viewers=viewers, beats=beats, running=running, failures={},
                 now=now, timing=TIMING)  # fmt: skip
    stops = dict(after.stop)
    assert c not in stops and grabber_id("http://cams/D.m3u8") not in stops
    retiled = {s.worker_id: s for s in after.retile}
    assert set(retiled) == {c, grabber_id("http://cams/D.m3u8")}
    spec = retiled[c]
    assert isinstance(spec, GrabberSpec) and spec.sizes == ((640, 360),)
    assert spec == msgspec.structs.replace(spec_c, sizes=((640, 360),))
    assert stops["stitcher-" + small.fp] == "not-needed"
    for gone in "EF":
        assert stops[grabber_id(f"http://cams/{gone}.m3u8")] == "not-needed"
    for kept in "AB":
        assert grabber_id(f"http://cams/{kept}.m3u8") not in stops | retiled
    assert after.start == ()


def test_affinity_keeps_a_shared_grabber_beside_both_stitchers() -> None:
    big = sized(AD, "a" * 32, 1280, 720)
    small = sized(CF, "b" * 32, 640, 360)
    near = affinity({big.fp: big, small.fp: small}, frozenset({big.fp, small.fp}))
    assert near[grabber_id("http://cams/C.m3u8")] == {"stitcher-" + big.fp,
                                                      "stitcher-" + small.fp}  # fmt: skip
    assert grabber_id("http://cams/E.m3u8") in near["stitcher-" + small.fp]


@given(st.lists(st.tuples(st.integers(1, 64), st.integers(1, 64)).map(
    lambda s: (2 * s[0], 2 * s[1])), min_size=1, max_size=6))  # fmt: skip
def test_tile_sizes_are_canonical(sizes: list[tuple[int, int]]) -> None:
    canon = tile_sizes(sizes)
    assert canon == tile_sizes(reversed(sizes)) == tile_sizes(canon)
    assert set(canon) == set(sizes) and len(canon) == len(set(sizes))
    areas = [w * h for w, h in canon]
    assert areas == sorted(areas, reverse=True)
