"""The low-latency playlist of a mosaic, pure: the model and its text
(:mod:`pipeline.segments.llhls`), the names of its media (:mod:`pipeline.segments.uris`) and
what the gateway answers (:mod:`pipeline.segments.serving`).

Every playlist written here is read back twice: by this file's own reader, which checks the
LL-HLS rules line by line (part durations within the part target, parts numbered without gaps,
program date time on every segment and before its parts, the preload hint naming the next part,
the target duration covering every segment, ...), and by the ``m3u8`` library, which must see
the same thing. The property tests drive random timelines (parts, short parts, complete
segments, restarts with or without a new init section, a lost store) and check after every step
the text, the history of texts (no number or name ever reused or changed, a new run only after a
discontinuity) and the decisions against what the text says.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import m3u8
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.segments.llhls import (
    DEFAULT_WINDOW,
    LowLatencyPlaylist,
    Part,
    Segment,
)
from pipeline.segments.serving import (
    NOT_FOUND,
    READY,
    BadRequest,
    Serve,
    Wait,
    advance_part_limit,
    decide_media,
    decide_reload,
)
from pipeline.segments.uris import (
    INIT,
    InitUri,
    PartRef,
    SegmentUri,
    init_uri,
    parse_uri,
    part_uri,
    segment_uri,
)

PT = 0.2
T0 = 1_767_268_800.0
"""2026-01-01T12:00:00Z."""


def fresh(
    first: int = 0, part_target: float = PT, window: int = DEFAULT_WINDOW, init: str = INIT
) -> LowLatencyPlaylist:
    """An empty playlist of one-second segments."""
    return LowLatencyPlaylist.start(
        part_target=part_target, segment_duration=1.0, first_msn=first, window=window, init=init
    )


def add(
    pl: LowLatencyPlaylist, duration: float = PT, independent: bool | None = None
) -> LowLatencyPlaylist:
    """The next part, starting at a wall clock derived from its place."""
    ref = pl.next_part
    start = T0 + ref.msn + ref.part * pl.part_target
    first = ref.part == 0
    return pl.add_part(
        ref.msn,
        ref.part,
        duration,
        independent=first if independent is None else independent,
        start=start,
    )


def grow(pl: LowLatencyPlaylist, segments: int = 1, parts: int = 5) -> LowLatencyPlaylist:
    """``segments`` more complete segments of ``parts`` parts (finishing one being built)."""
    for _ in range(segments):
        while pl.next_part.part < parts:
            pl = add(pl)
        pl = pl.complete(pl.segments[-1].msn)
    return pl


# --- reading a playlist back --------------------------------------------------------------

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(value: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTR.findall(value)}


@dataclass
class Listed:
    """One segment as the text lists it."""

    msn: int
    init: str | None
    pdt: datetime | None = None
    discontinuity: bool = False
    parts: list[tuple[str, float, bool]] = field(default_factory=list)
    extinf: float | None = None
    uri: str | None = None

    @property
    def duration(self) -> float:
        return self.extinf if self.extinf is not None else sum(p[1] for p in self.parts)


@dataclass
class Text:
    """A playlist as read back by :func:`read`."""

    version: int
    target: int
    media_sequence: int
    discontinuity_sequence: int
    part_target: float
    hold_back: float
    hint: str
    segments: list[Listed]

    def dsn(self, index: int) -> int:
        """Discontinuity sequence number of the segment at ``index``."""
        before = sum(s.discontinuity for s in self.segments[: index + 1])
        return self.discontinuity_sequence + before

    @property
    def newest(self) -> PartRef | None:
        """The newest part listed."""
        if not self.segments:
            return None
        last = self.segments[-1]
        assert last.parts, "the newest segment lists its parts"
        return PartRef(last.msn, len(last.parts) - 1)


HEADER_TAGS = frozenset(
    {
        "#EXT-X-MEDIA-SEQUENCE",
        "#EXT-X-DISCONTINUITY-SEQUENCE",
        "#EXT-X-VERSION",
        "#EXT-X-TARGETDURATION",
        "#EXT-X-SERVER-CONTROL",
        "#EXT-X-PART-INF",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    }
)


def read(text: str) -> Text:
    """Read ``text`` line by line, asserting every LL-HLS rule a single playlist can break."""
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    head: dict[str, str] = {}
    segments: list[Listed] = []
    init: str | None = None
    current: Listed | None = None
    hint = None
    for line in lines[1:]:
        if not line:
            continue  # blank lines are allowed (the library writes one before the hint)
        tag, _, value = line.partition(":")
        if tag in HEADER_TAGS:
            assert not segments, f"{tag} after the first segment"
            assert tag not in head, f"{tag} twice"
            head[tag] = value
            continue
        if tag == "#EXT-X-PRELOAD-HINT":
            hint = attributes(value)
            continue
        assert hint is None, f"{line!r} after the preload hint"
        if current is None or current.uri is not None:
            msn = int(head.get("#EXT-X-MEDIA-SEQUENCE", "0")) + len(segments)
            current = Listed(msn, init)
            segments.append(current)
        started = bool(current.parts) or current.extinf is not None
        if tag == "#EXT-X-MAP":
            assert not started, "EXT-X-MAP after the segment's first part"
            init = current.init = attributes(value)["URI"]
        elif tag == "#EXT-X-DISCONTINUITY":
            assert not started, "EXT-X-DISCONTINUITY after the segment's first part"
            current.discontinuity = True
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            assert not started, "EXT-X-PROGRAM-DATE-TIME after the segment's first part"
            current.pdt = datetime.fromisoformat(value)
        elif tag == "#EXT-X-PART":
            a = attributes(value)
            assert set(a) <= {"DURATION", "URI", "INDEPENDENT"}
            assert current.extinf is None
            assert a["URI"] == part_uri(current.msn, len(current.parts)), "parts numbered in order"
            current.parts.append((a["URI"], float(a["DURATION"]), a.get("INDEPENDENT") == "YES"))
        elif tag == "#EXTINF":
            current.extinf = float(value.rstrip(","))
        elif not line.startswith("#"):
            assert current.extinf is not None, "a URI without EXTINF"
            current.uri = line
        else:
            raise AssertionError(f"unexpected line {line!r}")
    assert hint is not None, "no EXT-X-PRELOAD-HINT"
    assert set(hint) == {"TYPE", "URI"} and hint["TYPE"] == "PART"
    control = attributes(head["#EXT-X-SERVER-CONTROL"])
    assert control.keys() == {"CAN-BLOCK-RELOAD", "PART-HOLD-BACK"}, "no CAN-SKIP-UNTIL"
    assert control["CAN-BLOCK-RELOAD"] == "YES"
    parsed = Text(
        version=int(head["#EXT-X-VERSION"]),
        target=int(head["#EXT-X-TARGETDURATION"]),
        media_sequence=int(head.get("#EXT-X-MEDIA-SEQUENCE", "0")),
        discontinuity_sequence=int(head.get("#EXT-X-DISCONTINUITY-SEQUENCE", "0")),
        part_target=float(attributes(head["#EXT-X-PART-INF"])["PART-TARGET"]),
        hold_back=float(control["PART-HOLD-BACK"]),
        hint=hint["URI"],
        segments=segments,
    )
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in head
    check_rules(parsed)
    return parsed


def check_rules(p: Text) -> None:
    assert p.version >= 6, "EXT-X-MAP needs version 6"
    assert p.hold_back >= 3 * p.part_target - 1e-9
    horizon = 3 * p.target
    for i, s in enumerate(p.segments):
        where = f"segment {s.msn}"
        assert s.pdt is not None, f"{where} has no EXT-X-PROGRAM-DATE-TIME"
        assert s.init is not None, f"{where} has no EXT-X-MAP in force"
        complete = s.uri is not None
        assert complete or i == len(p.segments) - 1, "only the last segment may be unfinished"
        if i and s.init != p.segments[i - 1].init:
            assert s.discontinuity, f"{where}: a new init section without a discontinuity"
        if complete:
            assert s.uri == segment_uri(s.msn)
        # Target duration: at least every EXTINF rounded to the nearest integer (the spec),
        # and at least its ceiling to the millisecond (what this playlist promises).
        assert p.target >= round(s.duration) and p.target >= math.ceil(round(s.duration, 3))
        if s.parts:
            assert s.parts[0][2], f"{where} does not begin with an independent part"
            if complete:
                assert s.extinf == pytest.approx(sum(d for _, d, _ in s.parts), abs=1e-5)
            for k, (_, duration, independent) in enumerate(s.parts):
                assert 0 < duration <= p.part_target, f"{where} part {k} over the part target"
                final = k == len(s.parts) - 1
                if not (independent or final):
                    assert duration >= 0.85 * p.part_target - 1e-9, f"{where} part {k} is short"
        else:
            assert complete, "an unfinished segment lists its parts"
        # Parts are listed just for the segments ending within three target durations.
        after = round(sum(t.duration for t in p.segments[i + 1 :]), 5)
        assert bool(s.parts) == (after < horizon), f"{where}: parts listed {after} s from the edge"
    # The hint names the part after the newest one.
    newest = p.newest
    if newest is None:
        expected = part_uri(p.media_sequence, 0)
    elif p.segments[-1].uri is None:
        expected = part_uri(newest.msn, newest.part + 1)
    else:
        expected = part_uri(newest.msn + 1, 0)
    assert p.hint == expected, f"hint {p.hint}, next part {expected}"


def check_with_m3u8(text: str, p: Text) -> None:
    """The ``m3u8`` library reads the same playlist."""
    back = m3u8.loads(text)
    assert back.version == p.version
    assert back.target_duration == p.target
    assert (back.media_sequence or 0) == p.media_sequence
    assert (back.discontinuity_sequence or 0) == p.discontinuity_sequence
    assert back.part_inf.part_target == p.part_target
    assert back.server_control.can_block_reload == "YES"
    assert back.server_control.part_hold_back == p.hold_back
    assert back.server_control.can_skip_until is None
    assert back.preload_hint.hint_type == "PART" and back.preload_hint.uri == p.hint
    assert len(back.segments) == len(p.segments)
    for ours, theirs in zip(p.segments, back.segments, strict=True):
        assert [(x.uri, x.duration, x.independent == "YES") for x in theirs.parts] == ours.parts
        if ours.uri is not None:
            assert (theirs.uri, theirs.duration) == (ours.uri, ours.extinf)
            assert theirs.discontinuity == ours.discontinuity
            assert theirs.init_section.uri == ours.init
            assert theirs.program_date_time == ours.pdt
        else:
            # m3u8 drops the program date time of a segment without a URI; its first part
            # carries it.
            assert theirs.uri is None and theirs.parts[0].program_date_time == ours.pdt


@dataclass
class Seen:
    """What a player learnt of one segment."""

    pdt: datetime | None
    init: str | None
    discontinuity: bool
    dsn: int
    extinf: float | None
    parts: list[tuple[str, float, bool]]


@dataclass
class History:
    """Every playlist a player could have seen, in order: what it may rely on across them."""

    media_sequence: int = -1
    discontinuity_sequence: int = -1
    seen: dict[int, Seen] = field(default_factory=dict)
    newest: PartRef | None = None
    dsn_max: int = -1

    def see(self, p: Text) -> None:
        assert p.media_sequence >= self.media_sequence, "the media sequence went back"
        assert p.discontinuity_sequence >= self.discontinuity_sequence
        self.media_sequence = p.media_sequence
        self.discontinuity_sequence = p.discontinuity_sequence
        for i, s in enumerate(p.segments):
            old = self.seen.get(s.msn)
            if old is None:
                # A new segment never goes back in discontinuity sequence, and one after a
                # discontinuity is in a sequence of its own.
                assert p.dsn(i) >= self.dsn_max + s.discontinuity, f"segment {s.msn}: dsn"
                self.dsn_max = p.dsn(i)
                self.seen[s.msn] = Seen(s.pdt, s.init, s.discontinuity, p.dsn(i), s.extinf, s.parts)
                continue
            # A number, once published, always names the same media.
            where = f"segment {s.msn}"
            assert (s.pdt, s.init, s.discontinuity) == (old.pdt, old.init, old.discontinuity), where
            assert p.dsn(i) == old.dsn, f"{where} changed its discontinuity sequence number"
            if old.extinf is not None:
                assert s.extinf == old.extinf, f"{where} changed its duration"
                assert not s.parts or s.parts == old.parts, f"{where} changed its parts"
            elif s.parts:
                assert s.parts[: len(old.parts)] == old.parts, f"{where} changed its parts"
            old.extinf = s.extinf
            old.parts = s.parts or old.parts
        newest = p.newest
        if newest is not None:
            assert self.newest is None or newest >= self.newest, "the newest part went back"
            self.newest = newest


def render(pl: LowLatencyPlaylist) -> Text:
    text = pl.render()
    p = read(text)
    check_with_m3u8(text, p)
    return p


# --- names --------------------------------------------------------------------------------


def test_names_are_written_and_read_back_in_one_form_only() -> None:
    assert (init_uri(), init_uri(7), segment_uri(12), part_uri(12, 3)) == (
        "init.mp4",
        "init-7.mp4",
        "12.m4s",
        "12.3.m4s",
    )
    assert parse_uri("init.mp4") == InitUri(None)
    assert parse_uri("init-7.mp4") == InitUri(7)
    assert parse_uri("12.m4s") == SegmentUri(12)
    assert parse_uri("12.3.m4s") == PartRef(12, 3)
    assert parse_uri("0.0.m4s") == PartRef(0, 0)
    for alias in ("012.m4s", "12.03.m4s", "init-07.mp4", "+1.m4s", "1 .m4s", "1.m4s\n", "-1.m4s",
                  "1.ts", "1.2.3.m4s", "init-.mp4", "x.m4s", "", "1_000.m4s", "１.m4s",
                  "123456789012345678901.m4s"):  # fmt: skip
        assert parse_uri(alias) is None, alias
    with pytest.raises(ValueError):
        part_uri(-1, 0)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_every_name_reads_back_as_what_it_names(msn: int, part: int) -> None:
    assert parse_uri(part_uri(msn, part)) == PartRef(msn, part)
    assert parse_uri(segment_uri(msn)) == SegmentUri(msn)
    assert parse_uri(init_uri(msn)) == InitUri(msn)


@given(st.text(max_size=30))
def test_a_name_is_read_back_only_if_written_so(name: str) -> None:
    uri = parse_uri(name)
    assert uri is None or uri.uri == name


def test_parts_order_by_segment_then_part() -> None:
    assert PartRef(3, 9) < PartRef(4, 0) < PartRef(4, 1)


# --- the playlist -------------------------------------------------------------------------


def test_an_empty_playlist_is_low_latency_from_the_start() -> None:
    pl = fresh(first=40)
    text = pl.render()
    assert text.splitlines()[:7] == [
        "#EXTM3U",
        "#EXT-X-MEDIA-SEQUENCE:40",
        "#EXT-X-VERSION:6",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6",
        "#EXT-X-PART-INF:PART-TARGET=0.2",
    ]
    assert render(pl).hint == "40.0.m4s"


def test_the_playlist_text() -> None:
    """The whole text once: a run, a restart mid-segment with an init of its own, a segment
    being built."""
    pl = grow(fresh(first=7), 2)
    pl = add(add(pl))  # two parts of segment 9...
    pl = pl.restart(init_uri(10))  # ...and the stitcher restarts
    pl = add(add(pl, independent=True), duration=0.17)
    assert pl.render() == "\n".join(
        [
            "#EXTM3U",
            "#EXT-X-MEDIA-SEQUENCE:7",
            "#EXT-X-VERSION:6",
            "#EXT-X-INDEPENDENT-SEGMENTS",
            "#EXT-X-TARGETDURATION:1",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6",
            "#EXT-X-PART-INF:PART-TARGET=0.2",
            '#EXT-X-MAP:URI="init.mp4"',
            "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T12:00:07.000+00:00",
            '#EXT-X-PART:DURATION=0.2,URI="7.0.m4s",INDEPENDENT=YES',
            '#EXT-X-PART:DURATION=0.2,URI="7.1.m4s"',
            '#EXT-X-PART:DURATION=0.2,URI="7.2.m4s"',
            '#EXT-X-PART:DURATION=0.2,URI="7.3.m4s"',
            '#EXT-X-PART:DURATION=0.2,URI="7.4.m4s"',
            "#EXTINF:1,",
            "7.m4s",
            "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T12:00:08.000+00:00",
            '#EXT-X-PART:DURATION=0.2,URI="8.0.m4s",INDEPENDENT=YES',
            '#EXT-X-PART:DURATION=0.2,URI="8.1.m4s"',
            '#EXT-X-PART:DURATION=0.2,URI="8.2.m4s"',
            '#EXT-X-PART:DURATION=0.2,URI="8.3.m4s"',
            '#EXT-X-PART:DURATION=0.2,URI="8.4.m4s"',
            "#EXTINF:1,",
            "8.m4s",
            "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T12:00:09.000+00:00",
            '#EXT-X-PART:DURATION=0.2,URI="9.0.m4s",INDEPENDENT=YES',
            '#EXT-X-PART:DURATION=0.2,URI="9.1.m4s"',
            "#EXTINF:0.4,",
            "9.m4s",
            '#EXT-X-MAP:URI="init-10.mp4"',
            "#EXT-X-DISCONTINUITY",
            "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T12:00:10.000+00:00",
            '#EXT-X-PART:DURATION=0.2,URI="10.0.m4s",INDEPENDENT=YES',
            '#EXT-X-PART:DURATION=0.17,URI="10.1.m4s"',
            "",
            '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="10.2.m4s"',
            "",
        ]
    )
    render(pl)


def test_parts_are_listed_for_the_last_three_target_durations_only() -> None:
    pl = grow(fresh(), 8)
    p = render(pl)
    assert [s.msn for s in p.segments if s.parts] == [5, 6, 7]
    pl = add(pl)
    p = render(pl)
    assert [s.msn for s in p.segments if s.parts] == [5, 6, 7, 8]
    # The parts of a segment listed whole, or gone from the playlist, can still be fetched.
    assert decide_media(pl, "3.4.m4s") == Serve(("3.4.m4s",))
    assert decide_media(pl, "0.0.m4s") == Serve(("0.0.m4s",))


def test_the_window_keeps_six_segments_and_three_target_durations() -> None:
    pl = grow(fresh(), 20)
    assert [s.msn for s in pl.segments] == list(range(14, 20))
    assert [s.msn for s in pl.retired] == list(range(7, 14))
    assert pl.keep_from == 7
    # Short segments (a restart after one part each) stay until three seconds are listed.
    for _ in range(4):
        pl = add(pl).restart(INIT)
    p = render(pl)
    assert sum(s.duration for s in p.segments) >= 3 * p.target
    assert len(p.segments) == 7
    assert fresh(window=1).window == 1
    with pytest.raises(ValueError):
        fresh(window=0)


def test_a_restart_closes_the_segment_being_built_and_continues_after_a_discontinuity() -> None:
    history = History()
    pl = grow(fresh(first=100), 3)
    pl = add(add(add(pl)))
    history.see(render(pl))
    pl = pl.restart(INIT)  # same init bytes: same name, no new EXT-X-MAP
    p = render(pl)
    history.see(p)
    closed = p.segments[-1]
    assert (closed.msn, closed.extinf, closed.uri) == (103, 0.6, "103.m4s")
    assert p.hint == "104.0.m4s"
    pl = add(pl)
    p = render(pl)
    history.see(p)
    assert p.segments[-1].msn == 104 and p.segments[-1].discontinuity
    assert p.segments[-1].init == "init.mp4"
    assert pl.render().count("#EXT-X-MAP") == 1
    # A restart between segments closes nothing.
    pl = grow(pl, 1).restart(init_uri(105))
    assert pl.segments[-1].msn == 104 and pl.next_part == PartRef(105, 0)
    p = render(add(pl))
    history.see(p)
    assert p.segments[-1].discontinuity and p.segments[-1].init == "init-105.mp4"


def test_the_discontinuity_sequence_counts_discontinuities_that_left() -> None:
    history = History()
    pl = grow(fresh(), 2).restart(INIT)
    pl = grow(pl, 1).restart(INIT)
    for _ in range(12):
        pl = grow(pl, 1)
        p = render(pl)
        history.see(p)
    assert p.discontinuity_sequence == 2
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:2" in pl.render()


def test_forgetting_keeps_the_numbers_going() -> None:
    history = History()
    pl = grow(fresh(first=5), 3).restart(INIT)
    pl = add(grow(pl, 1))
    history.see(render(pl))
    pl = pl.forget()
    p = render(pl)
    history.see(p)
    assert (p.segments, p.media_sequence, p.hint, p.discontinuity_sequence) == (
        [],
        10,
        "10.0.m4s",
        1,
    )
    assert pl.keep_from == 10 and decide_media(pl, "8.m4s") == NOT_FOUND
    pl = add(pl)
    p = render(pl)
    history.see(p)
    assert p.segments[0].discontinuity and p.dsn(0) == 2
    # A segment whose first part was lost: the numbers jump past it, never back.
    pl = pl.forget(next_msn=13)
    assert render(pl).hint == "13.0.m4s" and pl.keep_from == 13
    with pytest.raises(ValueError, match="reuse"):
        pl.forget(next_msn=12)


def test_the_target_duration_is_raised_for_a_long_segment_and_never_lowered() -> None:
    pl = grow(fresh(), 1, parts=7)  # 1.4 s
    assert pl.target_duration == 2
    pl = grow(pl, 10)
    assert pl.target_duration == 2
    assert render(pl).target == 2


def test_what_the_stitcher_may_not_say() -> None:
    pl = add(fresh(first=3))
    calls: list[Callable[[], object]] = [
        lambda: pl.add_part(3, 2, PT, independent=False, start=T0),  # skips part 1
        lambda: pl.add_part(4, 0, PT, independent=True, start=T0),  # segment 3 is not complete
        lambda: add(pl, duration=0.21),  # over the part target
        lambda: add(pl, duration=0.0),
        lambda: add(pl, duration=float("nan")),
        lambda: add(add(pl, duration=0.1)),  # a short part that is not the last
        lambda: pl.complete(2),
        lambda: pl.complete(3).complete(3),
        lambda: add(pl.complete(3), independent=False),  # a segment starts with a keyframe
        lambda: add(fresh(), independent=False),
        lambda: fresh().complete(0),
        lambda: pl.restart("init-x.mp4"),
        lambda: fresh(init="../init.mp4"),
        lambda: fresh().add_part(0, 0, PT, independent=True, start=float("inf")),
        lambda: fresh(part_target=0),
        lambda: fresh(part_target=1.5),
        lambda: LowLatencyPlaylist.start(part_target=PT, segment_duration=0),
    ]
    for bad in calls:
        with pytest.raises(ValueError):
            bad()
    # A short part is fine when independent, or as its segment's last.
    add(add(pl, duration=0.1, independent=True))
    add(pl, duration=0.1).complete(3)
    add(pl, duration=0.1).restart(INIT)


def test_durations_are_written_to_ten_microseconds() -> None:
    """Five frames at 24 fps: 0.208333... s; the part target is the same number as written."""
    target = 5 / 24
    pl = fresh(part_target=target)
    for _ in range(4):
        pl = add(pl, duration=target)
    pl = add(pl, duration=4 / 24).complete(0)  # a 24-frame segment: 4 parts of 5, one of 4
    p = render(pl)
    assert p.part_target == 0.20833 and p.hold_back == 0.62499
    assert p.segments[0].extinf == 0.99999  # 4 x 0.20833 + 0.16667: the parts as written
    assert "PART-TARGET=0.20833" in pl.render()


def test_the_state_travels_as_bytes() -> None:
    pl = add(grow(fresh(first=9), 9).restart(init_uri(18)))
    data = pl.to_bytes()
    assert LowLatencyPlaylist.from_bytes(data) == pl
    assert LowLatencyPlaylist.from_bytes(data).render() == pl.render()
    for bad in (b"", b"{", b"[]", b'{"part_target": 0.2, "next_msn": -1}',
                data.replace(b'"independent":true', b'"independent":false'),
                data.replace(b'"complete":true', b'"complete":false', 1),
                data.replace(b'"msn":12', b'"msn":13'),
                data.replace(b'"complete":false,"discontinuity":true',  # init-18.mp4 with no
                             b'"complete":false,"discontinuity":false'),  # discontinuity
                b'{"part_target": 1e999}'):  # fmt: skip
        with pytest.raises(ValueError):
            LowLatencyPlaylist.from_bytes(bad)


# --- blocking reload ----------------------------------------------------------------------


def edge() -> LowLatencyPlaylist:
    """Segments 10..19 complete (14..19 listed), segment 20 being built with parts 0 and 1."""
    return add(add(grow(fresh(first=10), 10)))


def test_a_plain_request_is_answered_at_once() -> None:
    assert decide_reload(edge(), None, None) is READY


def test_a_request_for_what_exists_is_answered_at_once() -> None:
    pl = edge()
    for msn, part in (("20", "1"), ("20", "0"), ("19", None), ("19", "4"), ("19", "99"),
                      ("3", None), ("3", "0"), ("0", None), ("15", "2")):  # fmt: skip
        assert decide_reload(pl, msn, part) is READY, (msn, part)


def test_a_request_for_what_comes_next_waits_for_it() -> None:
    pl = edge()
    assert decide_reload(pl, "20", "2") == Wait(20, 2, 3.0)
    assert decide_reload(pl, "20", None) == Wait(20, None, 3.0)
    assert decide_reload(pl, "21", "0") == Wait(21, 0, 3.0)
    assert decide_reload(pl, "22", "4") == Wait(22, 4, 3.0)
    wait = decide_reload(pl, "20", "3")
    assert isinstance(wait, Wait)
    pl = add(pl)
    assert not wait.over(pl)
    pl = add(pl)
    assert wait.over(pl) and decide_reload(pl, "20", "3") is READY


def test_a_part_past_the_end_of_a_complete_segment_is_the_next_segments_first() -> None:
    pl = edge()
    wait = decide_reload(pl, "20", "4")
    assert isinstance(wait, Wait)
    pl = add(add(pl)).complete(20)  # segment 20 ends with 4 parts: there is no part 20.4
    assert decide_reload(pl, "20", "4") == wait and not wait.over(pl)
    assert decide_reload(pl, "20", None) is READY
    pl = add(pl)
    assert wait.over(pl) and decide_reload(pl, "20", "4") is READY


def test_a_request_waiting_through_a_restart_is_answered_by_the_new_run() -> None:
    pl = edge()
    wait = decide_reload(pl, "20", "2")
    assert isinstance(wait, Wait)
    pl = pl.restart(init_uri(21))  # 20 closed with two parts
    assert not wait.over(pl)
    assert wait.over(add(pl))


def test_bad_requests() -> None:
    pl = edge()
    assert not isinstance(decide_reload(pl, "22", "0"), BadRequest)  # two past the last: fine
    for msn, part in (
        (None, "1"),  # _HLS_part without _HLS_msn
        ("23", None),  # more than two past the last segment
        ("23", "0"),
        ("-1", None),
        ("20", "-1"),
        ("1.5", None),
        ("20", "1.0"),
        ("", None),
        ("20", ""),
        ("abc", None),
        ("+20", None),
        (" 20", None),
        ("2_0", None),
        ("２０", None),
        ("1" * 21, None),
        ("20", "19"),  # more than 15 parts ahead
        ("21", "16"),
    ):
        assert isinstance(decide_reload(pl, msn, part), BadRequest), (msn, part)
    assert advance_part_limit(pl) == 15
    assert decide_reload(pl, "20", "16") == Wait(20, 16, 3.0)  # 15 ahead: allowed
    assert advance_part_limit(fresh(part_target=1.0)) == 3


def test_an_empty_playlist_waits_for_its_first_part() -> None:
    pl = fresh(first=40)
    assert decide_reload(pl, "40", "0") == Wait(40, 0, 3.0)
    assert decide_reload(pl, "39", None) is READY
    assert decide_reload(pl, "41", None) == Wait(41, None, 3.0)
    assert isinstance(decide_reload(pl, "42", None), BadRequest)
    assert decide_media(pl, "40.0.m4s") == Wait(40, 0, 3.0, hinted=True)


# --- media --------------------------------------------------------------------------------


def test_what_media_may_be_served() -> None:
    pl = edge().restart(init_uri(21))
    pl = add(pl)
    assert decide_media(pl, "21.0.m4s") == Serve(("21.0.m4s",))
    assert decide_media(pl, "20.m4s") == Serve(("20.0.m4s", "20.1.m4s"))  # closed by a restart
    assert decide_media(pl, "init.mp4") == Serve(("init.mp4",))
    assert decide_media(pl, "init-21.mp4") == Serve(("init-21.mp4",))
    assert decide_media(pl, "21.1.m4s") == Wait(21, 1, 3.0, hinted=True)  # the hint's part
    for name in ("21.m4s", "21.2.m4s", "20.2.m4s", "22.0.m4s", "init-20.mp4", "index.m3u8",
                 "021.0.m4s", "9.m4s", "9.0.m4s", "1.m4s"):  # fmt: skip
        assert decide_media(pl, name) == NOT_FOUND, name
    # Segment 14 left the playlist at the restart, and is kept with the four before it.
    assert [s.msn for s in pl.retired] == [10, 11, 12, 13, 14]
    assert decide_media(pl, "10.m4s") == Serve(tuple(part_uri(10, i) for i in range(5)))
    assert decide_media(pl, "14.4.m4s") == Serve(("14.4.m4s",))


def test_a_hinted_part_that_never_comes_is_not_found_once_that_is_known() -> None:
    pl = add(edge())
    wait = decide_media(pl, "20.3.m4s")
    assert isinstance(wait, Wait)
    assert not wait.over(pl) and wait.over(add(pl))  # it came
    for gone in (pl.complete(20), pl.restart(INIT), pl.forget()):  # it never will
        assert wait.over(gone) and decide_media(gone, "20.3.m4s") == NOT_FOUND


# --- properties ---------------------------------------------------------------------------

PART_TARGETS = st.sampled_from([0.2, 5 / 24, 1 / 6, 0.25, 0.5, 1.0])
STEPS = st.lists(st.tuples(st.integers(0, 99), st.integers(0, 14)), min_size=10, max_size=60)
"""What a stitcher tells the playlist: mostly parts, now and then a short or independent one,
a segment completed early, a restart (same or new init section), rarely a lost store."""


def step(pl: LowLatencyPlaylist, dice: int, x: int, longest: int) -> LowLatencyPlaylist:
    """One thing a stitcher may tell the playlist (segments of at most ``longest`` parts);
    ``x`` says how long a part is, or whether a restart brings a new init section. (Integers
    rather than floats: a failing timeline shrinks in seconds, not minutes.)"""
    building = pl.segments[-1] if pl.segments and not pl.segments[-1].complete else None
    if dice < 82:
        if building is not None and len(building.parts) >= longest:
            pl = pl.complete(building.msn)
        ref = pl.next_part
        share = 0.86 + 0.01 * x if dice < 70 else 0.05 + 0.0675 * x
        pl = pl.add_part(
            ref.msn,
            ref.part,
            share * pl.part_target,
            independent=ref.part == 0 or 70 <= dice < 75,
            start=T0 + ref.msn % 10**6 + ref.part * pl.part_target,
        )
        return pl.complete(ref.msn) if dice >= 75 else pl  # a short part ends its segment
    if dice < 90:
        return pl if building is None else pl.complete(building.msn)
    if dice < 98:
        return pl.restart(init_uri(pl.next_msn) if x > 7 else pl.init)
    return pl.forget()


def reached(p: Text, msn: int, part: int | None) -> bool:
    """From the text alone: does the playlist hold what a blocking reload asks for?"""
    newest = p.newest
    if newest is None:
        return msn < p.media_sequence
    if part is None:
        return any(s.msn >= msn and s.uri for s in p.segments) or newest.msn > msn
    return PartRef(msn, part) <= newest


def too_far(p: Text, msn: int, part: int) -> bool:
    """From the text alone: is part ``part`` of ``msn`` past the Advance Part Limit (three
    seconds of parts), counting a segment not begun as a target duration of parts?"""
    per = math.floor(p.target / p.part_target + 1e-9)
    newest = p.newest or PartRef(p.media_sequence - 1, per - 1)
    ahead = (msn - newest.msn) * per + part - newest.part
    return ahead > max(3, math.ceil(3 / p.part_target - 1e-9))


# Shrinking a failing timeline can take minutes: let Hypothesis report it rather than be cut
# short by the suite's 300 s timeout (it stops shrinking by itself after 300 s).
@pytest.mark.timeout(600)
@settings(max_examples=100, deadline=None)
@given(
    part_target=PART_TARGETS,
    window=st.integers(1, 8),
    first=st.integers(0, 10**12),
    longest=st.integers(1, 9),
    steps=STEPS,
    asks=st.lists(
        st.tuples(st.integers(-4, 4), st.one_of(st.none(), st.integers(0, 30))), max_size=4
    ),
)
def test_any_timeline_keeps_the_rules(
    part_target: float,
    window: int,
    first: int,
    longest: int,
    steps: list[tuple[int, int]],
    asks: list[tuple[int, int | None]],
) -> None:
    pl = LowLatencyPlaylist.start(
        part_target=part_target, segment_duration=1.0, first_msn=first, window=window
    )
    history = History()
    runs: set[int] = set()
    """Segments that begin a run after another: the only ones after a discontinuity."""
    waits: list[Wait] = []
    left: list[int] = []
    """Segments that left the playlist, in order (since the store was last lost)."""
    listed: list[int] = []
    held: Wait | None = None
    for i, (dice, x) in enumerate(steps):
        before = pl
        pl = step(pl, dice, x, longest)
        if dice >= 90:
            runs.add(pl.next_msn)
        text = pl.render()
        p = read(text)
        if i % 8 == 0 or i == len(steps) - 1:
            check_with_m3u8(text, p)  # now and then: the library is the slow part of a step
        history.see(p)
        assert LowLatencyPlaylist.from_bytes(pl.to_bytes()) == pl
        # A segment that left stays fetchable while `window + 1` more leave after it.
        now = [s.msn for s in p.segments]
        leaving = [] if dice >= 98 else [m for m in listed if m not in now]
        left = [] if dice >= 98 else left + leaving
        listed = now
        for m in left[-(window + 1) :]:
            assert isinstance(decide_media(pl, segment_uri(m)), Serve), f"segment {m} left"
        for m in left[: -(window + 1)]:
            assert decide_media(pl, segment_uri(m)) == NOT_FOUND, f"segment {m} kept"
        for s in p.segments:
            assert s.discontinuity == (s.msn in runs), f"segment {s.msn}"
        if 90 <= dice < 98 and before.segments and not before.segments[-1].complete:
            closed = pl.segment(before.segments[-1].msn)
            assert closed is not None and closed.complete
            assert closed.parts == before.segments[-1].parts
        # The window: no more than `window` complete segments unless fewer would not last
        # three target durations.
        complete = [s for s in p.segments if s.uri]
        if len(complete) > window:
            assert round(sum(s.duration for s in complete[1:]), 5) < 3 * p.target
        if leaving:
            assert len(complete) >= window, "a segment left a window that was not full"
        # Everything the playlist names can be fetched; the hinted part is waited for.
        for s in p.segments:
            kept = pl.segment(s.msn)
            assert kept is not None
            assert s.init is not None and decide_media(pl, s.init) == Serve((s.init,))
            if s.uri:
                assert decide_media(pl, s.uri) == Serve(kept.part_uris())
                if s.parts:
                    assert kept.part_uris() == tuple(uri for uri, _, _ in s.parts)
            for uri, _, _ in s.parts:
                assert decide_media(pl, uri) == Serve((uri,))
        hint = parse_uri(p.hint)
        assert isinstance(hint, PartRef)
        if held is not None:  # the request for the last hinted part ends when the hint moves
            assert held.over(pl) == (part_uri(held.msn, held.part or 0) != p.hint)
        held = Wait(hint.msn, hint.part, 3.0 * p.target, True)
        assert decide_media(pl, p.hint) == held
        assert decide_media(pl, part_uri(hint.msn, hint.part + 1)) == NOT_FOUND
        assert decide_media(pl, segment_uri(hint.msn)) == NOT_FOUND
        if pl.keep_from:
            assert decide_media(pl, segment_uri(pl.keep_from - 1)) == NOT_FOUND
        # Blocking reloads, judged against the text.
        last = p.segments[-1].msn if p.segments else p.media_sequence - 1
        for offset, part in asks:
            msn = last + offset
            if msn < 0:
                continue
            answer = decide_reload(pl, str(msn), None if part is None else str(part))
            if msn > last + 2:
                assert isinstance(answer, BadRequest), (msn, part)
            elif reached(p, msn, part):
                assert answer is READY, (msn, part)
            elif part is not None and too_far(p, msn, part):
                assert isinstance(answer, BadRequest), (msn, part)
            else:
                assert answer == Wait(msn, part, 3.0 * p.target), (msn, part)
                waits.append(answer)
        # A held request is let go exactly when the playlist holds what it waits for.
        for wait in waits:
            assert wait.over(pl) == reached(p, wait.msn, wait.part)
        waits = [w for w in waits if not w.over(pl)]


@given(st.text(max_size=12), st.one_of(st.none(), st.text(max_size=12)))
def test_any_query_gets_an_answer(msn: str, part: str | None) -> None:
    pl = edge()
    answer = decide_reload(pl, msn, part)
    numbers = re.fullmatch(r"[0-9]+", msn) and (part is None or re.fullmatch(r"[0-9]+", part))
    assert isinstance(answer, BadRequest) or numbers


@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_valid_state_or_a_value_error(data: bytes) -> None:
    try:
        pl = LowLatencyPlaylist.from_bytes(data)
    except ValueError:
        return
    read(pl.render())


@given(
    part_target=st.sampled_from([0.2, 0.5]),
    target=st.integers(1, 3),
    init=st.sampled_from(["init.mp4", "init-3.mp4", "init-03.mp4"]),
    segments=st.lists(
        st.builds(
            Segment,
            msn=st.integers(0, 4),
            start=st.floats(T0, T0 + 10),
            init=st.sampled_from(["init.mp4", "init-1.mp4"]),
            parts=st.lists(
                st.builds(Part, st.sampled_from([0.1, 0.2, 0.5]), st.booleans()), max_size=4
            ).map(tuple),
            complete=st.booleans(),
            discontinuity=st.booleans(),
        ),
        max_size=3,
    ),
    next_msn=st.integers(0, 5),
)
def test_a_state_that_can_be_built_renders_a_valid_playlist(
    part_target: float, target: int, init: str, segments: list[Segment], next_msn: int
) -> None:
    try:
        pl = LowLatencyPlaylist(
            part_target=part_target,
            target_duration=target,
            init=init,
            segments=tuple(segments),
            next_msn=next_msn,
        )
    except ValueError:
        return
    read(pl.render())
