"""The session's 90 kHz video clock (``pipeline/producers/jit/rtpclock.py``): stamps grow, sit on
the 100 µs grid, keep a schedule's spacing and the wall time a pause took; aiortc's encoders
put them in RTP unchanged; and a frame report carries one (or, from an older worker, none).

The same mapping checked end to end: in aiortc (``tests/test_jit_worker.py``,
``pictures_match_their_reports``) and in Chromium (``tests/test_frameid_browser.py``)."""

from __future__ import annotations

from fractions import Fraction

import av
import msgspec
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.messages.codec import encode
from pipeline.messages.control import FrameReport
from pipeline.producers.jit.rtpclock import RTP_MODULUS, STEP, VideoClock, rtp_of
from pipeline.producers.jit.tracks import VIDEO_TIME_BASE

RATES = [Fraction(25), Fraction(30000, 1001), Fraction(24000, 1001), Fraction(50), Fraction(30)]


@pytest.mark.parametrize("rate", RATES, ids=str)
def test_a_schedule_keeps_its_spacing_on_the_grid(rate: Fraction) -> None:
    clock = VideoClock()
    assert clock.stamp(1000.0) == 0  # the session's first picture, a one-shot
    anchor = 1000.5
    stamps = [clock.stamp(anchor, k / rate) for k in range(300)]
    exact = [round(0.5 * 90000 + k * 90000 / rate) for k in range(300)]
    assert all(s % STEP == 0 for s in stamps)
    # Within half a step of the exact time, so two frames are within one step of theirs.
    assert max(abs(s - e) for s, e in zip(stamps, exact, strict=True)) <= STEP / 2
    if (90000 / rate) % STEP == 0:  # 25, 50 fps: exactly 90000/fps apart
        assert {b - a for a, b in zip(stamps, stamps[1:], strict=False)} == {90000 / rate}


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=5, allow_nan=False),
            st.integers(min_value=0, max_value=100),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_stamps_grow_on_the_grid_and_tell_the_wall_time(times: list[tuple[float, int]]) -> None:
    """Any sequence of schedules (a wait, then a tick of a new one at 25 fps): each stamp is
    a multiple of the step, greater than the last, and at least the wall time passed."""
    clock = VideoClock()
    origin = 100.0 + times[0][0]  # the first picture's anchor is the clock's 0
    now = 100.0
    last = -1
    for wait, tick in times:
        now += wait
        stamp = clock.stamp(now, Fraction(tick, 25))
        assert stamp % STEP == 0 and stamp > last
        assert stamp >= (now - origin + tick / 25) * 90000 - STEP / 2
        last = stamp


@pytest.mark.parametrize("codec", ["video/VP8", "video/H264"])
def test_aiortc_sends_a_stamp_as_it_is(codec: str) -> None:
    """What the page reads back is the stamp: aiortc's VP8 path goes through microseconds and
    truncates on the way back (a stamp off the grid comes out a tick lower), H.264 does not."""
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=codec, clockRate=90000, payloadType=96))
    clock = VideoClock()
    rng = np.random.default_rng(19)
    now = 0.0
    for _ in range(60):
        now += float(rng.uniform(0.001, 2.0))
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = clock.stamp(now)
        frame.time_base = VIDEO_TIME_BASE
        stamp = frame.pts
        _, timestamp = encoder.encode(frame)
        assert timestamp == stamp


def test_a_report_carries_the_stamp_modulo_2_to_the_32() -> None:
    assert rtp_of(RTP_MODULUS + 18) == 18 and rtp_of(9) == 9
    report = FrameReport(frame=3, timecode="00:00:00:03", pts=0.12, playing=False, rtp=rtp_of(9))
    assert msgspec.json.decode(encode(report), type=FrameReport) == report
    # From a worker that does not say: None.
    fields = {"frame": 3, "timecode": "00:00:00:03", "pts": 0.12, "playing": False}
    older = msgspec.json.encode({"type": "frame-report/1", **fields})
    assert msgspec.json.decode(older, type=FrameReport).rtp is None
