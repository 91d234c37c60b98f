"""A/B compare (issue 19 part 1): two videos frame-locked and composed into one picture.

Pure parts first (the frame lock, the layout, composing pictures, the settings, the request),
then the reader on real files, then sessions over real WebRTC (a real nats-server, aiortc
viewers reading the frame numbers off both halves of every picture: :mod:`tests.jitmedia`).

Files: 640x360 H.264 with B-frames, so that each half of a side-by-side picture is 320x180, the
size the frame-number pattern is made to survive VP8 at. A: 300 frames at 25 fps, a keyframe
every 50; B: 200 frames at 25 fps, every 25, in a MOV (it ends before A does); a 50 fps and a
4:3 B for the reader.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway.session_request import RequestError, parse
from pipeline.messages.codec import decode_reply, decode_session_command, encode
from pipeline.messages.control import (
    CommandReply,
    Compare,
    CompareState,
    FrameReport,
    Play,
    Seek,
    SelectChannels,
    SessionCommand,
    SetRate,
    Step,
)
from pipeline.messages.events import SessionInput, SessionOptions
from pipeline.messages.heartbeats import JitStats
from pipeline.producers.jit import compare
from pipeline.producers.jit.abreader import ABReader
from pipeline.producers.jit.compare import Layout
from pipeline.producers.jit.decoder import Picture, VideoReader
from pipeline.producers.jit.errors import CommandError, JitInputError, ReadError
from pipeline.producers.jit.inputs import InputAccess, open_input
from pipeline.producers.jit.playback import Playback
from pipeline.producers.jit.threads import MediaThread
from pipeline.producers.jit.worker import JitWorker
from pipeline.sources.policy import SourcePolicy
from pipeline.state.layouts import Rect
from tests import test_jit_worker
from tests.jitmedia import (
    TONES,
    bits_of,
    make_tones,
    make_video,
    read_bits,
    read_frame_number,
)
from tests.test_jit_worker import FAST, RATE_25, Viewer, control, jit_threads

# The worker tests' fixtures: a started session, and aiortc completing frames as browsers do.
session = test_jit_worker.session
browser_like_jitter_buffer = test_jit_worker.browser_like_jitter_buffer

W, H = 640, 360
"""The files' size, and so the pictures' (a session of A alone would send 640x360)."""
HALF_BAND = (slice(90, 270), slice(0, 320)), (slice(90, 270), slice(320, 640))
"""Where A's and B's pictures are side by side: each 320x180, centred in its half."""

# -- the frame lock ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "rate_a", "rate_b", "offset", "expected"),
    [
        (0, Fraction(25), Fraction(25), 0, 0),
        (10, Fraction(25), Fraction(25), 3, 13),
        (10, Fraction(25), Fraction(25), -12, -2),  # before B's start: black
        (10, Fraction(25), Fraction(50), 0, 20),
        (11, Fraction(50), Fraction(25), 0, 6),  # 5.5 rounds up: B's frame at 0.22 s is 6
        (24, Fraction(25), Fraction(24), 1, 24),  # 23.04 → 23, plus 1
        (1000, Fraction(30000, 1001), Fraction(30), 0, 1001),  # 29.97 drifts a frame in 1000
    ],
)
def test_b_is_the_frame_nearest_in_time_plus_the_offset(
    n: int, rate_a: Fraction, rate_b: Fraction, offset: int, expected: int
) -> None:
    assert compare.frame_of_b(n, rate_a, rate_b, offset) == expected


# -- the layout -------------------------------------------------------------------------------


def test_layouts() -> None:
    wide, four_three = Fraction(16, 9), Fraction(4, 3)
    state = CompareState()
    assert compare.layout(state, (W, H), wide, wide) == Layout(
        W, H, Rect(0, 90, 320, 180), Rect(320, 90, 320, 180), "paste"
    )
    # A 4:3 B fills its half's width and is centred in height.
    assert compare.layout(state, (W, H), wide, four_three).b == Rect(320, 60, 320, 240)
    wipe = compare.layout(CompareState(mode="wipe", split=0.3), (W, H), wide, four_three)
    assert (wipe.a, wipe.b, wipe.kind, wipe.split) == (
        Rect(0, 0, W, H), Rect(80, 0, 480, 360), "wipe", 192
    )  # fmt: skip
    assert compare.layout(CompareState(mode="wipe", split=1.0), (W, H), wide, wide).split == W
    diff = compare.layout(CompareState(mode="difference"), (W, H), wide, wide)
    assert diff.kind == "difference" and diff.a == diff.b == Rect(0, 0, W, H)
    # The A/B toggle shows one video on the whole picture, whatever the mode.
    only_b = compare.layout(CompareState(mode="wipe", show="B"), (W, H), wide, four_three)
    assert (only_b.a, only_b.b, only_b.kind) == (None, Rect(80, 0, 480, 360), "paste")
    only_a = compare.layout(CompareState(show="A"), (W, H), wide, wide)
    assert (only_a.a, only_a.b) == (Rect(0, 0, W, H), None)
    # An odd half (1278 / 2 = 639) is cut to even sizes; what is left stays black.
    odd = compare.layout(state, (1278, 720), wide, wide)
    assert odd.a == Rect(0, 180, 638, 358) and odd.b == Rect(640, 180, 638, 358)


@given(
    st.fractions(min_value=Fraction(1, 10), max_value=Fraction(10)),
    st.integers(1, 960).map(lambda v: 2 * v),
    st.integers(1, 540).map(lambda v: 2 * v),
)
def test_a_fitted_picture_is_even_inside_the_box_and_keeps_its_aspect(
    aspect: Fraction, width: int, height: int
) -> None:
    w, h = compare.fit(aspect, width, height)
    assert w % 2 == 0 and h % 2 == 0 and 2 <= w <= width and 2 <= h <= height
    assert w == width or h == height
    # Within the rounding to even pixels (when the picture is not squashed to 2 pixels).
    if min(w, h) > 2:
        assert abs(Fraction(w, h) - aspect) <= aspect * 2 / min(w, h)


# -- composing --------------------------------------------------------------------------------


def yuv(y: int, u: int, v: int, width: int, height: int) -> npt.NDArray[np.uint8]:
    data = np.empty((height * 3 // 2, width), dtype=np.uint8)
    py, pu, pv = compare.planes(data, width, height)
    py[:], pu[:], pv[:] = y, u, v
    return data


def test_side_by_side_places_each_picture_in_its_half_on_black() -> None:
    where = compare.layout(CompareState(), (16, 12), Fraction(16, 9), Fraction(4, 3))
    assert where.a == Rect(0, 4, 8, 4) and where.b == Rect(8, 2, 8, 6)
    out = compare.compose(where, yuv(100, 90, 80, 8, 4), yuv(200, 170, 160, 8, 6))
    y, u, v = compare.planes(out, 16, 12)
    assert (y[4:8, :8] == 100).all() and (y[2:8, 8:] == 200).all()
    assert (u[2:4, :4] == 90).all() and (v[1:4, 4:] == 160).all()
    assert (y[:4, :8] == compare.BLACK).all() and (y[8:, :] == compare.BLACK).all()
    assert (u[:2, :4] == compare.NEUTRAL).all()
    # B has no frame: its half is black.
    missing = compare.compose(where, yuv(100, 90, 80, 8, 4), None)
    assert (compare.planes(missing, 16, 12)[0][:, 8:] == compare.BLACK).all()


def test_a_wipe_takes_columns_left_of_the_split_from_a() -> None:
    where = compare.layout(CompareState(mode="wipe", split=0.25), (16, 8), Fraction(2), Fraction(2))
    a, b = yuv(50, 60, 70, 16, 8), yuv(150, 160, 170, 16, 8)
    y, u, v = compare.planes(compare.compose(where, a, b), 16, 8)
    assert (y[:, :4] == 50).all() and (y[:, 4:] == 150).all()
    assert (u[:, :2] == 60).all() and (u[:, 2:] == 160).all() and (v[:, 2:] == 170).all()
    whole_a = compare.layout(
        CompareState(mode="wipe", split=1.0), (16, 8), Fraction(2), Fraction(2)
    )
    assert (compare.compose(whole_a, a, b) == a).all()


def test_the_difference_is_black_where_equal_and_bright_where_not() -> None:
    where = compare.layout(CompareState(mode="difference"), (8, 4), Fraction(2), Fraction(2))
    a = yuv(100, 128, 128, 8, 4)
    same = compare.compose(where, a, a.copy())
    y, u, v = compare.planes(same, 8, 4)
    assert (y == compare.BLACK).all() and (u == compare.NEUTRAL).all() and (v == 128).all()
    b = a.copy()
    by, bu, _ = compare.planes(b, 8, 4)
    by[0, 0] = 110  # luma differs by 10 in one pixel
    bu[1, 3] = 70  # chroma differs by 58 in the block at rows 2-3, columns 6-7
    y = compare.planes(compare.compose(where, a, b), 8, 4)[0]
    assert y[0, 0] == compare.BLACK + compare.DIFFERENCE_GAIN * 10
    assert (y[2:4, 6:8] == 235).all()  # 58 x 4 is past white: white
    assert (y == compare.BLACK).sum() == 32 - 5


def test_settings_change_field_by_field_and_refuse_bad_values() -> None:
    state = compare.initial(SessionOptions(compare="wipe", compare_offset=-4))
    assert state == CompareState(mode="wipe", offset=-4)
    assert compare.initial(SessionOptions()) is None
    moved = compare.updated(state, Compare(split=0.75))
    assert moved == CompareState(mode="wipe", offset=-4, split=0.75)
    assert compare.updated(moved, Compare(show="B", offset=2)).show == "B"
    for bad, said in [
        (Compare(split=1.5), "split 1.5 is not from 0"),
        (Compare(split=float("nan")), "split nan"),
        (Compare(offset=10**7), "beyond ±1000000 frames"),
    ]:
        with pytest.raises(CommandError, match=said):
            compare.updated(state, bad)


def test_a_redraw_sends_the_current_frame_again_and_makes_older_pictures_stale() -> None:
    playback = Playback(Fraction(25), 100)
    playback.sent(playback.due(0.0) or pytest.fail("frame 0 is due"))
    assert playback.due(0.1) is None
    version = playback.version
    playback.redraw()
    due = playback.due(0.2)
    assert due is not None and due.frame == 0 and due.version == version + 1
    playback.play(0.3)
    version = playback.version
    playback.redraw()  # playing: the schedule goes on, only the version changes
    assert playback.playing and playback.version == version + 1


def test_messages_round_trip() -> None:
    command = Compare(mode="difference", split=0.2, offset=-3, show="A")
    assert decode_session_command(encode(command)) == command
    assert decode_session_command(b'{"type": "compare/1", "offset": 4}') == Compare(offset=4)
    reply = CommandReply(ok=True, position=3, compare=CompareState(mode="wipe", split=0.4))
    assert decode_reply(encode(reply)) == reply
    report = FrameReport(frame=5, timecode="00:00:00:05", pts=0.2, playing=False, frame_b=9)
    assert msgspec.json.decode(encode(report), type=FrameReport) == report
    stats = JitStats(compare=CompareState(offset=2), frame_count_b=200)
    assert msgspec.json.decode(encode(stats), type=JitStats) == stats
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type": "compare/1", "mode": "blend"}', type=Compare)


# -- the request ------------------------------------------------------------------------------

A_B = b'"inputs": [{"url": "https://x/a.mov"}, {"url": "https://x/b.mov"}'


def test_a_compare_request() -> None:
    body = b"{" + A_B + b', {"url": "https://x/a.wav"}], "compare": "wipe", "compare_offset": -2}'
    inputs, options = parse(body)
    assert [i.url for i in inputs] == ["https://x/a.mov", "https://x/b.mov", "https://x/a.wav"]
    assert (options.compare, options.compare_offset) == ("wipe", -2)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"inputs": [{"url": "https://x/a.mov"}], "compare": "wipe"}', "compare: give two"),
        (b"{" + A_B + b'], "compare": "blend"}', "compare: "),
        (b"{" + A_B + b'], "compare_offset": 3}', "compare_offset: only with compare"),
        (b"{" + A_B + b'], "compare": "wipe", "compare_offset": 2000000}', "compare_offset:"),
        (
            b'{"inputs": [{"url": "https://x/a.mov"}, {"url": "https://x/b.wav", '
            b'"channel_count": 2}], "compare": "difference"}',
            "the second input is video B",
        ),
    ],
)
def test_bad_compare_requests_say_which_field(body: bytes, reason: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse(body)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


# -- the reader, on files ----------------------------------------------------------------------


@dataclass
class Files:
    root: Path
    a: Path
    b: Path
    b50: Path
    b43: Path
    stereo: Path


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("abmedia")
    return Files(
        root=root,
        a=make_video(root / "a.mp4", frames=300, rate=RATE_25, width=W, height=H),
        b=make_video(root / "b.mov", frames=200, rate=RATE_25, width=W, height=H, gop=25),
        b50=make_video(root / "b50.mkv", frames=120, rate=Fraction(50), width=W, height=H),
        b43=make_video(root / "b43.mp4", frames=60, rate=RATE_25, width=480, height=360),
        stereo=make_tones(root / "stereo.wav", tones=TONES[:2], seconds=12.5),
    )


@pytest.fixture
def media(files: Files) -> Files:
    """What the ``session`` fixture of :mod:`tests.test_jit_worker` takes its media root from."""
    return files


def halves(luma: npt.NDArray[np.uint8]) -> tuple[int | None, int | None]:
    """The frame numbers of a side-by-side picture's left (A) and right (B) halves."""
    return read_frame_number(luma[HALF_BAND[0]]), read_frame_number(luma[HALF_BAND[1]])


@contextlib.asynccontextmanager
async def readers(
    files: Files, b_path: Path
) -> AsyncIterator[tuple[VideoReader, VideoReader, list[MediaThread]]]:
    """Readers of ``files.a`` and ``b_path``, each opened (and closed) in its media thread as a
    compare session's are; the threads end with them."""
    access = InputAccess(SourcePolicy.local(), media_roots=(files.root,))
    threads = [MediaThread("jit-video-test"), MediaThread("jit-video-b-test")]

    def opened(path: Path, index: int) -> VideoReader:
        return VideoReader(open_input(str(path), index, access), SessionOptions(), index=index)

    try:
        a = await threads[0].run(opened, files.a, 1)
        b = await threads[1].run(opened, b_path, 2)
        try:
            yield a, b, threads
        finally:
            await threads[0].run(a.close)
            await threads[1].run(b.close)
    finally:
        await threads[0].close()
        await threads[1].close()


async def test_the_reader_locks_b_of_another_rate_and_shape(files: Files) -> None:
    for path, check in ((files.b50, _fifty), (files.b43, _four_three)):
        async with readers(files, path) as (a, b, threads):
            await check(ABReader(a, b, threads[1], CompareState()), threads[0])
    assert not jit_threads()


async def test_a_frame_of_b_that_cannot_be_read_is_drawn_black_and_a_plays_on(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with readers(files, files.a) as (a, b, threads):
        real = b.read

        def broken(
            n: int, stop: Callable[[], bool] | None = None, hurry: bool = False
        ) -> Picture | None:
            if n == 9:
                raise ReadError("input 2: corrupt data at frame 9")
            return real(n, stop, hurry)

        monkeypatch.setattr(b, "read", broken)
        reader = ABReader(a, b, threads[1], CompareState())
        for n in (8, 9, 10):
            picture = await threads[0].run(reader.read, n)
            assert picture is not None and picture.frame == n
            luma = picture.data[:H]
            if n == 9:
                assert halves(luma)[0] == 9 and picture.frame_b is None
                assert luma[HALF_BAND[1]].max() == compare.BLACK
            else:
                assert halves(luma) == (n, n) and picture.frame_b == n
        assert reader.b_errors == 1
    assert not jit_threads()


async def _fifty(reader: ABReader, thread: MediaThread) -> None:
    """B at 50 fps beside A at 25: B's frames 2n; past B's 120 frames, black."""
    for n in (0, 7, 30, 59, 60, 61, 12):
        picture = await thread.run(reader.read, n)
        assert picture is not None and picture.frame == n
        luma = picture.data[:H]
        b = 2 * n if 2 * n < 120 else None
        assert halves(luma) == (n, b) and picture.frame_b == b, n
        if b is None:
            assert luma[HALF_BAND[1]].max() == compare.BLACK


async def _four_three(reader: ABReader, thread: MediaThread) -> None:
    """A 4:3 B fills its half's width, centred in height; the wipe fits it to the picture."""
    reader.settings = CompareState(offset=5)
    picture = await thread.run(reader.read, 20)
    assert picture is not None
    luma = picture.data[:H]
    assert read_frame_number(luma[60:300, 320:640]) == 25
    assert luma[:60, 320:].max() == compare.BLACK == luma[300:, 320:].max()
    reader.settings = CompareState(show="B", offset=5)
    picture = await thread.run(reader.read, 55)
    assert picture is not None and picture.frame_b is None  # B has 60 frames: 60 is past them
    assert picture.data[:H].max() == compare.BLACK
    picture = await thread.run(reader.read, 50)
    assert picture is not None and picture.frame_b == 55
    assert read_frame_number(picture.data[:H][:, 80:560]) == 55


# -- sessions over WebRTC ----------------------------------------------------------------------


class ABViewer(Viewer):
    """A viewer of a compare session. Side by side: each picture's frame number is its left
    half's (A), and :attr:`b_numbers` has its right half's (B) at the same index; ``whole``:
    the whole picture's number. With ``keep``, :attr:`lumas` keeps every picture."""

    def __init__(self, *, whole: bool = False, keep: bool = False) -> None:
        super().__init__(read_number=self._numbers_of)
        self.whole = whole
        self.keep = keep
        self.b_numbers: list[int | None] = []
        self.lumas: list[npt.NDArray[np.uint8]] = []

    def _numbers_of(self, luma: npt.NDArray[np.uint8]) -> int | None:
        if self.keep:
            self.lumas.append(luma)
        a, b = (read_frame_number(luma), None) if self.whole else halves(luma)
        self.b_numbers.append(b)
        return a

    def pairs(self, since: int = 0) -> list[tuple[int | None, int | None]]:
        return list(zip(self.numbers(since), self.b_numbers[since:], strict=True))

    async def after(self, send: Callable[[], Any], what: str) -> tuple[int, FrameReport]:
        """Send a command (``send()``), wait for the picture and report it brings; return
        the picture's index and the report."""
        frames, reports = len(self.frames), len(self.reports)
        reply = await send()
        assert reply.ok, reply.error
        await self.until(lambda: len(self.frames) > frames and len(self.reports) > reports, 5, what)
        return frames, self.reports[reports][1]


async def watch_ab(nc: Client, session: Any, worker: JitWorker, **kw: bool) -> ABViewer:
    """A connected viewer (``ABViewer(**kw)``) with its first picture and report."""
    viewer = ABViewer(**kw)
    session.viewers.append(viewer)
    await viewer.connect(nc, worker.session_id)
    await viewer.until(lambda: bool(viewer.frames and viewer.reports), 10, "a first picture")
    return viewer


def ab(offset: int = 0, mode: Any = "side-by-side") -> SessionOptions:
    return SessionOptions(compare=mode, compare_offset=offset)


async def test_side_by_side_is_frame_locked_through_seeks_steps_play_and_offset_changes(
    nc: Client, files: Files, session: Any
) -> None:
    worker = await session(
        SessionInput(str(files.a)), SessionInput(str(files.b)), SessionInput(str(files.stereo)),
        options=ab(offset=3),
    )  # fmt: skip
    assert worker.layout.channel_inputs == (3, 3)  # the audio input is the third
    viewer = await watch_ab(nc, session, worker)
    assert viewer.pairs() == [(0, 3)] and viewer.reports[0][1].frame_b == 3
    stats = worker.stats()
    assert stats.compare == CompareState(offset=3) and stats.frame_count_b == 200

    async def shows(command: SessionCommand, a: int, b: int | None, *, channel: bool) -> None:
        async def send() -> CommandReply:
            if channel:
                return await viewer.send(command)
            return await control(nc, worker.session_id, command)

        index, report = await viewer.after(send, f"A {a} beside B {b}")
        assert viewer.pairs(index)[0] == (a, b), command
        assert (report.frame, report.frame_b) == (a, b)

    rng = random.Random(19)
    for target in [*rng.sample(range(196), 8), 0, 196]:
        await shows(Seek(target), target, target + 3, channel=target % 2 == 0)
    await shows(Seek(100), 100, 103, channel=False)
    for delta, a in ((1, 101), (-1, 100), (-1, 99), (10, 109), (-10, 99), (-50, 49)):
        await shows(Step(delta), a, a + 3, channel=True)
    # Past B's end (200 frames) its half is black, and A goes on.
    await shows(Seek(250), 250, None, channel=False)

    # Playing: every picture is a locked pair, also after the offset changes while playing.
    assert (await control(nc, worker.session_id, Seek(20))).ok
    start, reports = len(viewer.frames), len(viewer.reports)
    assert (await viewer.send(Play())).ok
    await viewer.until(lambda: len(viewer.frames) - start >= 25, 10, "a second of pictures")
    changed = await viewer.send(Compare(offset=-5))
    assert changed.ok and changed.compare == CompareState(offset=-5)
    await viewer.until(
        lambda: (
            any(r.frame_b == r.frame - 5 for _, r in viewer.reports[reports:])
            and len(viewer.frames) - start >= 60
        ),
        10,
        "pictures with the new offset",
    )
    played = viewer.pairs(start)
    readable = [(a, b) for a, b in played if a is not None and b is not None]
    assert len(readable) >= 0.95 * len(played), played
    offsets = [b - a for a, b in readable]
    switch = offsets.index(-5)
    assert offsets[:switch] == [3] * switch and offsets[switch:] == [-5] * (len(offsets) - switch)
    assert [a for a, _ in readable] == sorted({a for a, _ in readable})  # in order
    seen = [r.frame_b - r.frame for _, r in viewer.reports[reports:] if r.frame_b is not None]
    turn = seen.index(-5)
    assert seen[:turn] == [3] * turn and set(seen[turn:]) == {-5}
    assert worker.stats().compare == CompareState(offset=-5)
    # Rate and channels act on the session as a whole: at 2x every other frame of A is sent,
    # each beside its own frame of B; the audio is the third input's.
    assert (await viewer.send(SetRate(2.0))).ok
    reports = len(viewer.reports)
    await viewer.until(lambda: len(viewer.reports) - reports >= 20, 10, "20 frames at 2x")
    fast = [(r.frame, r.frame_b) for _, r in viewer.reports[reports + 2 :]]
    assert all(b == a - 5 for a, b in fast), fast
    assert any(a2 - a1 == 2 for (a1, _), (a2, _) in zip(fast, fast[1:], strict=False)), fast
    routed = await viewer.send(SelectChannels((1,)))
    assert routed.ok and routed.routes == (((1, 1.0),), ((1, 1.0),))


def expected_bits(a: int, b: int, split: float) -> list[int]:
    """The bits a wipe of A's frame ``a`` and B's ``b`` shows, at ``split`` on a block edge."""
    edge = round(split * W)
    left = W // 10
    width = (W - 2 * left) // 8
    bits_a, bits_b = bits_of(a), bits_of(b)
    return [bits_a[i] if left + (i % 8 + 1) * width <= edge else bits_b[i] for i in range(16)]


async def test_a_wipe_moves_its_split_and_the_toggle_shows_a_or_b(
    nc: Client, files: Files, session: Any
) -> None:
    worker = await session(
        SessionInput(str(files.a)), SessionInput(str(files.b)), options=ab(offset=7, mode="wipe")
    )
    viewer = await watch_ab(nc, session, worker, whole=True, keep=True)

    async def picture(command: SessionCommand) -> tuple[npt.NDArray[np.uint8], FrameReport]:
        index, report = await viewer.after(
            lambda: control(nc, worker.session_id, command), f"the picture after {command}"
        )
        return viewer.lumas[index], report

    # 40 and 47 share their first row; the second row's halves tell A from B.
    luma, report = await picture(Seek(40))
    assert (report.frame, report.frame_b) == (40, 47)
    assert read_bits(luma) == expected_bits(40, 47, 0.5) != bits_of(40)
    for split in (0.2, 0.8, 0.5):
        luma, report = await picture(Compare(split=split))
        assert read_bits(luma) == expected_bits(40, 47, split), split
        assert report.frame == 40  # the same frame, drawn again
    luma, _ = await picture(Compare(split=1.0))
    assert read_frame_number(luma) == 40
    luma, _ = await picture(Compare(split=0.0))
    assert read_frame_number(luma) == 47
    # The toggle: one video on the whole picture, then both again (the split kept).
    luma, report = await picture(Compare(show="A", split=0.5))
    assert read_frame_number(luma) == 40 and report.frame_b is None
    luma, report = await picture(Compare(show="B"))
    assert read_frame_number(luma) == 47 and report.frame_b == 47
    luma, _ = await picture(Step(1))
    assert read_frame_number(luma) == 48  # B follows a step while shown alone
    luma, _ = await picture(Compare(show="both"))
    assert read_bits(luma) == expected_bits(41, 48, 0.5)
    luma, _ = await picture(Compare(mode="side-by-side"))
    assert halves(luma) == (41, 48)
    bad = await control(nc, worker.session_id, Compare(split=2.0))
    assert not bad.ok and "split 2.0" in bad.error
    assert bad.compare == CompareState(mode="side-by-side", split=0.5, offset=7)


async def test_the_difference_of_identical_videos_is_black(
    nc: Client, files: Files, session: Any
) -> None:
    worker = await session(
        SessionInput(str(files.a)), SessionInput(str(files.a)), options=ab(mode="difference")
    )
    viewer = await watch_ab(nc, session, worker, whole=True, keep=True)

    async def luma_after(command: SessionCommand) -> npt.NDArray[np.uint8]:
        index, _ = await viewer.after(lambda: control(nc, worker.session_id, command), "a picture")
        return viewer.lumas[index]

    for command in (Seek(123), Step(-1)):
        luma = await luma_after(command)
        assert float(luma.mean()) < compare.BLACK + 3 and int(luma.max()) < 48, command
    # One frame apart, the blocks that differ are white.
    luma = await luma_after(Compare(offset=1))
    assert int(luma.max()) > 200


async def test_a_session_of_one_video_refuses_compare(
    nc: Client, files: Files, session: Any
) -> None:
    worker = await session(SessionInput(str(files.a)))
    reply = await control(nc, worker.session_id, Compare(mode="wipe"))
    assert not reply.ok and "not an A/B compare session" in reply.error
    assert reply.compare is None and worker.stats().compare is None


BAD_PAIRS: list[tuple[str, Callable[[Files], tuple[SessionInput, ...]], str]] = [
    ("no B", lambda f: (SessionInput(str(f.a)),), "input 2: missing: an A/B compare needs"),
    (
        "B has no video",
        lambda f: (SessionInput(str(f.a)), SessionInput(str(f.stereo))),
        "input 2: no video stream",
    ),
    (
        "B is missing",
        lambda f: (SessionInput(str(f.a)), SessionInput(str(f.root / "nope.mov"))),
        "input 2: cannot open: no such file",
    ),
]


@pytest.mark.parametrize(("case", "inputs", "cause"), BAD_PAIRS, ids=[c[0] for c in BAD_PAIRS])
async def test_a_bad_b_fails_the_session_with_a_one_line_cause(
    nc: Client,
    js: JetStreamContext,
    files: Files,
    case: str,
    inputs: Callable[[Files], tuple[SessionInput, ...]],
    cause: str,
) -> None:
    worker = JitWorker(
        nc=nc, js=js, session_id=f"ab-{random.randrange(1 << 30)}", inputs=inputs(files),
        options=ab(), worker_id="jit-ab", policy=SourcePolicy.local(),
        media_roots=(files.root,), **FAST,
    )  # fmt: skip
    with pytest.raises(JitInputError) as raised:
        await worker.start()
    assert str(raised.value).startswith(cause), str(raised.value)
    assert not jit_threads()
