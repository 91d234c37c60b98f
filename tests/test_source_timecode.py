"""The source time code: the label of a file's first frame as the file records it.

Files made here with PyAV, each with its start time code given to FFmpeg's muxer: a 25 fps
MOV at 01:00:00:00 (a ``tmcd`` track), two 29.97 MOVs in drop-frame, an MXF at 10:00:00:00,
a Matroska with a ``TIMECODE`` tag that is no time code, and an MP4 with none. Read back with
:func:`~pipeline.producers.jit.sourcetc.read_start_timecode`; then through a real worker (real
nats-server, an aiortc viewer over loopback, as in ``tests/test_jit_worker.py``): every frame
report carries the source time code, and a ``SeekTimecode`` lands on the frame the picture
shows; and in the review page (headless Chromium, the whole stack as in ``tests/test_pages.py``),
which shows the source time code and seeks by the one typed in its seek box.

Drop-frame (SMPTE ST 12-1): the labels ``;00`` and ``;01`` are skipped at the start of every
minute *except* minutes 00, 10, 20, 30, 40 and 50, so 00:59:59;28 runs on to 01:00:00;00 (the
hour is minute 00: nothing skipped) while 01:00:59;28 runs on to 01:01:00;02.
"""

from __future__ import annotations

import fractions
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import pytest
from nats.aio.client import Client

from pipeline.messages.control import CommandReply, FrameReport, Pause, Play, Seek, SeekTimecode
from pipeline.messages.events import SessionInput, SessionOptions
from pipeline.producers.jit.sourcetc import read_start_timecode
from pipeline.producers.jit.timecode import Timecodes, frames_per_day
from pipeline.producers.jit.worker import JitWorker
from tests.jitmedia import make_video
from tests.test_jit_worker import (
    Viewer,
    browser_like_jitter_buffer,  # noqa: F401 (a fixture)
    control,
    watch,
)
from tests.test_jit_worker import session as session  # noqa: F401 (a fixture)
from tests.test_pages import Gateway, shows, until
from tests.test_pages import stack as stack  # noqa: F401 (a fixture)

if TYPE_CHECKING:
    from playwright.async_api import Page

RATE_25 = fractions.Fraction(25)
RATE_2997 = fractions.Fraction(30000, 1001)


@dataclass(frozen=True)
class Clips:
    root: Path
    mov25: Path  # 01:00:00:00, 100 frames
    df_hour: Path  # 29.97, 00:59:59;28: crosses the hour (nothing skipped)
    df_minute: Path  # 29.97, 01:00:59;28: crosses 01:01:00 (;00 and ;01 skipped)
    mxf: Path  # MPEG-2 in MXF, 10:00:00:00, 100 frames
    mkv_bad: Path  # a TIMECODE tag that is no time code
    plain: Path  # none


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    """The clips (named ``media`` for the ``session`` fixture, which serves its root)."""
    root = tmp_path_factory.mktemp("sourcetc")
    return Clips(
        root=root,
        mov25=make_video(root / "tc25.mov", frames=100, rate=RATE_25, gop=25,
                         timecode="01:00:00:00"),
        df_hour=make_video(root / "df_hour.mov", frames=60, rate=RATE_2997, gop=30,
                           timecode="00:59:59;28"),
        df_minute=make_video(root / "df_minute.mov", frames=60, rate=RATE_2997, gop=30,
                             timecode="01:00:59;28"),
        mxf=make_video(root / "tc10.mxf", frames=100, rate=RATE_25, gop=25, codec="mpeg2video",
                       timecode="10:00:00:00"),
        mkv_bad=make_video(root / "bad.mkv", frames=10, rate=RATE_25, timecode="take 3"),
        plain=make_video(root / "plain.mp4", frames=100, rate=RATE_25, gop=25),
    )  # fmt: skip


def entries(path: Path) -> Iterator[tuple[str, str]]:
    """Every ``timecode`` metadata entry of a file: where, and its text."""
    with av.open(str(path)) as container:
        for key, value in container.metadata.items():
            if key.lower() == "timecode":
                yield "container", value
        for stream in container.streams:
            for key, value in stream.metadata.items():
                if key.lower() == "timecode":
                    yield f"{stream.type} {stream.index}", value


def start_of(path: Path, rate: fractions.Fraction | None = None) -> str | None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate is not None
        return read_start_timecode(
            container, stream, rate or fractions.Fraction(stream.average_rate)
        )


# -- where FFmpeg puts it -------------------------------------------------------------------------


def test_the_muxers_write_the_time_code_where_the_reader_looks(media: Clips) -> None:
    # MOV: a tmcd track (a data stream), copied by the demuxer to the video stream using it.
    assert sorted(entries(media.mov25)) == [("data 1", "01:00:00:00"), ("video 0", "01:00:00:00")]
    assert sorted(entries(media.df_hour)) == [("data 1", "00:59:59;28"), ("video 0", "00:59:59;28")]
    # MXF: the material package's time code component is the container's.
    assert list(entries(media.mxf)) == [("container", "10:00:00:00")]
    assert list(entries(media.mkv_bad)) == [("container", "take 3")]
    assert list(entries(media.plain)) == []


def test_the_reader_finds_each_files_start(media: Clips, caplog: pytest.LogCaptureFixture) -> None:
    assert start_of(media.mov25) == "01:00:00:00"
    assert start_of(media.df_hour) == "00:59:59;28"
    assert start_of(media.df_minute) == "01:00:59;28"
    assert start_of(media.mxf) == "10:00:00:00"
    assert start_of(media.plain) is None
    # Not a time code, or not one at the rate frames are labelled at: ignored, and said.
    with caplog.at_level(logging.WARNING, logger="tessera.jit"):
        assert start_of(media.mkv_bad) is None
        assert start_of(media.df_hour, RATE_25) is None
    said = [r.getMessage() for r in caplog.records]
    assert any("ignoring the time code 'take 3' of the container" in m for m in said), said
    assert any("'00:59:59;28' of video stream 0" in m for m in said), said


# -- the labels (pure) ----------------------------------------------------------------------------


def test_labels_count_on_from_the_start() -> None:
    tc = Timecodes(RATE_25, "01:00:00:00")
    assert [tc.label(n) for n in (0, 1, 24, 25, 90_000)] == [
        "01:00:00:00", "01:00:00:01", "01:00:00:24", "01:00:01:00", "02:00:00:00",
    ]  # fmt: skip
    assert tc.frame_of("01:00:01:00") == 25
    assert Timecodes(RATE_25).label(25) == "00:00:01:00"  # no start: from 00:00:00:00


def test_drop_frame_labels_from_a_start_skip_exactly_as_st_12_1_says() -> None:
    hour = Timecodes(RATE_2997, "00:59:59;28")
    assert [hour.label(n) for n in range(5)] == [
        "00:59:59;28", "00:59:59;29", "01:00:00;00", "01:00:00;01", "01:00:00;02",
    ]  # fmt: skip
    minute = Timecodes(RATE_2997, "01:00:59;28")
    assert [minute.label(n) for n in range(5)] == [
        "01:00:59;28", "01:00:59;29", "01:01:00;02", "01:01:00;03", "01:01:00;04",
    ]  # fmt: skip
    assert minute.frame_of("01:01:00;02") == 2
    assert minute.frame_of("01:01:00:02") == 2  # read in the labels' counting, whatever typed
    with pytest.raises(ValueError, match="skips"):
        minute.frame_of("01:01:00;00")
    # 59.94 drops four labels a minute.
    assert Timecodes(fractions.Fraction(60000, 1001), "00:00:59;59").label(1) == "00:01:00;04"
    # A 29.97 file may record non-drop-frame time code: its labels stay non-drop-frame.
    ndf = Timecodes(RATE_2997, "01:00:59:28")
    assert [ndf.label(n) for n in range(3)] == ["01:00:59:28", "01:00:59:29", "01:01:00:00"]
    assert ndf.frame_of("01:01:00;00") == 2


def test_a_time_code_outside_the_video_is_refused_naming_its_labels() -> None:
    tc = Timecodes(RATE_25, "01:00:00:00")
    with pytest.raises(ValueError, match="before the start of the video, 01:00:00:00"):
        tc.frame_of("00:59:59:24", 100)
    with pytest.raises(ValueError, match=r"past the end: .* 01:00:00:00-01:00:03:24 \(frames 0-99"):
        tc.frame_of("01:00:04:00", 100)
    with pytest.raises(ValueError, match="not a timecode"):
        tc.frame_of("one o'clock", 100)
    # A video that runs past midnight is followed into the next day.
    late = Timecodes(RATE_25, "23:59:59:00")
    assert late.label(50) == "00:00:01:00"
    assert late.frame_of("00:00:01:00", 100) == 50
    with pytest.raises(ValueError, match="before the start"):
        late.frame_of("00:00:01:00", 40)
    assert frames_per_day(RATE_2997, drop_frame=True) == 2_589_408  # 24 h of 29.97 labels


def test_a_start_that_is_no_label_at_the_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="drop-frame"):
        Timecodes(RATE_25, "01:00:00;00")
    with pytest.raises(ValueError, match="out of range"):
        Timecodes(RATE_25, "01:00:00:25")
    with pytest.raises(ValueError, match="hours wrap"):
        Timecodes(RATE_25, "24:00:00:00")


# -- through a worker -----------------------------------------------------------------------------


async def shown_after(
    nc: Client, worker: JitWorker, viewer: Viewer, command: Seek | SeekTimecode
) -> tuple[FrameReport, int | None]:
    """Send ``command`` (over NATS) and return the next report and the picture's number."""
    frames, reports = len(viewer.frames), len(viewer.reports)
    reply = await control(nc, worker.session_id, command)
    assert reply.ok, reply.error
    await viewer.until(
        lambda: len(viewer.frames) > frames and len(viewer.reports) > reports,
        5,
        f"a frame after {command}",
    )
    return viewer.reports[reports][1], viewer.frames[frames][1]


async def pause(nc: Client, worker: JitWorker, viewer: Viewer) -> None:
    """Pause, and wait for the frames already sent to arrive (so the next one is a seek's)."""
    reply = await control(nc, worker.session_id, Pause())
    assert reply.ok and reply.position is not None
    last = reply.position
    await viewer.until(
        lambda: viewer.frames[-1][1] == last and viewer.reports[-1][1].frame == last,
        5,
        f"the paused frame {last}",
    )


async def refused(nc: Client, worker: JitWorker, command: SeekTimecode) -> CommandReply:
    reply = await control(nc, worker.session_id, command)
    assert not reply.ok, f"{command} was accepted"
    return reply


async def test_a_mov_sessions_frames_carry_the_source_time_code(
    nc: Client, media: Clips, session: Any
) -> None:
    worker = await session(SessionInput(str(media.mov25)))
    assert worker.stats().start_timecode == "01:00:00:00"
    viewer, _ = await watch(nc, session, worker)
    first = viewer.reports[0][1]
    assert (first.frame, first.timecode) == (0, "01:00:00:00")

    count = len(viewer.reports)
    assert (await control(nc, worker.session_id, Play())).ok
    await viewer.until(lambda: len(viewer.reports) - count >= 30, 6, "30 frames played")
    played = [r for _, r in viewer.reports[count:]]
    assert all(r.timecode == Timecodes(RATE_25, "01:00:00:00").label(r.frame) for r in played)
    assert any(r.timecode == "01:00:01:05" and r.frame == 30 for r in played)
    await pause(nc, worker, viewer)

    # Seeking by source time code lands on start + n; over the data channel too. The picture
    # says which frame it is.
    report, number = await shown_after(nc, worker, viewer, SeekTimecode("01:00:02:13"))
    assert (report.frame, report.timecode, number) == (63, "01:00:02:13", 63)
    assert (await control(nc, worker.session_id, Seek(10))).ok  # frame numbers still work
    reply = await viewer.send(SeekTimecode("1:00:03:20"))  # hours of one digit are not a label
    assert not reply.ok and "not a timecode" in reply.error
    reply = await viewer.send(SeekTimecode("01:00:03:20"))
    assert reply.ok and reply.position == 95

    before = await refused(nc, worker, SeekTimecode("00:59:59:24"))
    assert before.error == "00:59:59:24 is before the start of the video, 01:00:00:00"
    past = await refused(nc, worker, SeekTimecode("01:00:04:00"))
    assert "past the end" in past.error and "01:00:03:24 (frames 0-99)" in past.error
    assert past.position == 95  # refused: the session is where it was


async def test_drop_frame_labels_and_seeks_at_29_97(nc: Client, media: Clips, session: Any) -> None:
    worker = await session(SessionInput(str(media.df_minute)))
    assert worker.stats().start_timecode == "01:00:59;28"
    viewer, _ = await watch(nc, session, worker)
    labels = []
    for frame in range(5):
        report, number = await shown_after(nc, worker, viewer, Seek(frame))
        assert (report.frame, number) == (frame, frame)
        labels.append(report.timecode)
    assert labels == ["01:00:59;28", "01:00:59;29", "01:01:00;02", "01:01:00;03", "01:01:00;04"]

    report, number = await shown_after(nc, worker, viewer, SeekTimecode("01:01:00;02"))
    assert (report.frame, report.timecode, number) == (2, "01:01:00;02", 2)
    report, number = await shown_after(nc, worker, viewer, SeekTimecode("01:01:01:00"))
    assert (report.frame, report.timecode, number) == (30, "01:01:01;00", 30)
    skipped = await refused(nc, worker, SeekTimecode("01:01:00;01"))
    assert "a label drop-frame timecode skips" in skipped.error


async def test_drop_frame_across_the_hour_skips_nothing(
    nc: Client, media: Clips, session: Any
) -> None:
    worker = await session(SessionInput(str(media.df_hour)))
    viewer, _ = await watch(nc, session, worker)
    assert viewer.reports[0][1].timecode == "00:59:59;28"
    count = len(viewer.reports)
    assert (await control(nc, worker.session_id, Play())).ok
    await viewer.until(lambda: len(viewer.reports) - count >= 5, 6, "5 frames played")
    played = {r.frame: r.timecode for _, r in viewer.reports}
    assert [played[n] for n in range(5)] == [
        "00:59:59;28", "00:59:59;29", "01:00:00;00", "01:00:00;01", "01:00:00;02",
    ]  # fmt: skip
    await pause(nc, worker, viewer)
    report, number = await shown_after(nc, worker, viewer, SeekTimecode("01:00:00;02"))
    assert (report.frame, number) == (4, 4)


async def test_an_mxf_sessions_start_time_code(nc: Client, media: Clips, session: Any) -> None:
    worker = await session(SessionInput(str(media.mxf)))
    assert worker.stats().start_timecode == "10:00:00:00"
    viewer, _ = await watch(nc, session, worker)
    assert viewer.reports[0][1].timecode == "10:00:00:00"
    for text, frame in (("10:00:03:07", 82), ("10:00:00:04", 4), ("10:00:03:24", 99)):
        report, number = await shown_after(nc, worker, viewer, SeekTimecode(text))
        assert (report.frame, report.timecode, number) == (frame, text, frame)


async def test_without_a_time_code_labels_count_from_zero(
    nc: Client, media: Clips, session: Any
) -> None:
    worker = await session(SessionInput(str(media.plain)))
    assert worker.stats().start_timecode is None
    viewer, _ = await watch(nc, session, worker)
    assert viewer.reports[0][1].timecode == "00:00:00:00"
    report, number = await shown_after(nc, worker, viewer, SeekTimecode("00:00:01:05"))
    assert (report.frame, report.timecode, number) == (30, "00:00:01:05", 30)
    # A frame-rate override that the file's drop-frame start does not fit: no start, said.
    override = SessionOptions(frame_rate_num=25)
    other = await session(SessionInput(str(media.df_hour)), options=override)
    assert other.stats().start_timecode is None
    assert other.timecodes is not None and other.timecodes.label(25) == "00:00:01:00"


# -- the review page ------------------------------------------------------------------------------


async def test_the_review_page_shows_and_seeks_by_the_source_time_code(
    page: Page, stack: Gateway
) -> None:
    video = make_video(
        stack.config.media_root_paths[0] / "tc.mov", frames=100, rate=RATE_25, gop=25,
        timecode="01:00:00:00",
    )  # fmt: skip
    started = await stack.http.post("/session", json={"inputs": [{"url": str(video)}]})
    assert started.status_code == 201, started.text
    sid = started.json()["id"]
    await page.goto(f"{stack.url}/session/{sid}/view")
    timecode = "document.getElementById('timecode')"
    await until(
        lambda: page.evaluate(f"{timecode}.textContent === '01:00:00:00'"), 30, "frame 0's label"
    )
    await until(
        lambda: page.evaluate(f"{timecode}.title.includes('starts at 01:00:00:00')"),
        10, "the start from the session's stats",
    )  # fmt: skip
    body = (await stack.http.get(f"/session/{sid}")).json()
    assert body["stats"]["start_timecode"] == "01:00:00:00"

    await page.fill("#seek", "01:00:02:13")
    await page.press("#seek", "Enter")
    await shows(page, 63)
    assert await page.inner_text("#timecode") == "01:00:02:13"
    await page.fill("#seek", "2:20")  # completed from the right: 00:00:02:20, before the start
    await page.press("#seek", "Enter")
    said = "document.getElementById('status-line').textContent.includes('before the start')"
    await until(lambda: page.evaluate(said), 5, "the refusal under the transport")
    # Dragging the scrub bar names the source time code of the frame under it.
    await page.evaluate(
        """() => {
            const scrub = document.getElementById('scrub');
            scrub.value = '90';
            scrub.dispatchEvent(new Event('input'));
        }"""
    )
    assert await page.inner_text("#status-line") == "Frame 90 · 01:00:03:15"
    await shows(page, 90)
