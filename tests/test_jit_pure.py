"""The JIT worker's pure parts: timecodes, the playback state machine, channel routing, picture
decisions, the tone-mapping operator, SDP reading; and the picture converter on synthetic
frames (PyAV, no files, no network)."""

from __future__ import annotations

from fractions import Fraction

import av
import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.messages.codec import encode
from pipeline.messages.control import SignalHangup, SignalOffer, SignalRequest
from pipeline.messages.events import SessionOptions
from pipeline.messages.heartbeats import JitStats
from pipeline.producers.jit import picture, tonemap
from pipeline.producers.jit.channels import ChannelLayout, stereo_matrix
from pipeline.producers.jit.convert import PictureConverter
from pipeline.producers.jit.errors import CommandError, JitInputError, JitOptionsError
from pipeline.producers.jit.playback import Playback
from pipeline.producers.jit.timecode import is_drop_frame, parse_timecode, timecode
from pipeline.producers.jit.worker import playback_rate
from pipeline.webrtc import sdp
from tests.jitmedia import bits_of, draw_bits, pattern, read_frame_number

NTSC = Fraction(30000, 1001)
NTSC_60 = Fraction(60000, 1001)

# -- timecode -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "rate", "expected"),
    [
        (0, Fraction(25), "00:00:00:00"),
        (24, Fraction(25), "00:00:00:24"),
        (25, Fraction(25), "00:00:01:00"),
        (90000, Fraction(25), "01:00:00:00"),
        (25 * 86400, Fraction(25), "00:00:00:00"),  # a day wraps, as on tape
        (1439, Fraction(24000, 1001), "00:00:59:23"),  # 23.976 counts 24, non-drop
        (1440, Fraction(24000, 1001), "00:01:00:00"),
        (1799, NTSC, "00:00:59;29"),
        (1800, NTSC, "00:01:00;02"),  # ;00 and ;01 are skipped
        (1801, NTSC, "00:01:00;03"),
        (3597, NTSC, "00:01:59;29"),
        (3598, NTSC, "00:02:00;02"),
        (17981, NTSC, "00:09:59;29"),
        (17982, NTSC, "00:10:00;00"),  # every tenth minute keeps ;00
        (17983, NTSC, "00:10:00;01"),
        (19782, NTSC, "00:11:00;02"),
        (107892, NTSC, "01:00:00;00"),  # one hour of 29.97 is 107892 frames
        (3599, NTSC_60, "00:00:59;59"),
        (3600, NTSC_60, "00:01:00;04"),  # 59.94 drops four labels
        (35964, NTSC_60, "00:10:00;00"),
    ],
)
def test_timecode(frame: int, rate: Fraction, expected: str) -> None:
    assert timecode(frame, rate) == expected
    if expected != "00:00:00:00":
        assert parse_timecode(expected, rate) == frame


def test_drop_frame_only_where_defined() -> None:
    assert is_drop_frame(NTSC) and is_drop_frame(NTSC_60)
    assert not is_drop_frame(Fraction(25)) and not is_drop_frame(Fraction(24000, 1001))
    assert timecode(1800, NTSC, drop_frame=False) == "00:01:00:00"
    with pytest.raises(ValueError, match="only defined"):
        timecode(1, Fraction(25), drop_frame=True)
    with pytest.raises(ValueError, match="negative"):
        timecode(-1, Fraction(25))
    with pytest.raises(ValueError, match="skips"):
        parse_timecode("00:01:00;00", NTSC)


@settings(max_examples=300, deadline=None)
@given(
    frame=st.integers(min_value=0, max_value=2_000_000),  # under 23 h at every rate here
    rate=st.sampled_from([NTSC, NTSC_60, Fraction(25), Fraction(24000, 1001), Fraction(50)]),
)
def test_timecode_round_trips_and_increases(frame: int, rate: Fraction) -> None:
    label = timecode(frame, rate)
    assert parse_timecode(label, rate) == frame
    assert timecode(frame + 1, rate) > label  # fixed-width fields: text order is time order


# -- playback -------------------------------------------------------------------------------------


def sends(
    playback: Playback, until: float, start: float = 0.0, step: float = 0.001
) -> list[tuple[float, int]]:
    """Simulate a sender that sends whatever is due, polling every ``step`` seconds from
    ``start`` to ``until``."""
    out = []
    t = start
    while t <= until:
        due = playback.due(t)
        if due is not None and due.at <= t:
            playback.sent(due)
            out.append((t, due.frame))
        t = round(t + step, 6)
    return out


def test_a_new_session_shows_frame_zero_once_then_waits() -> None:
    playback = Playback(Fraction(25), 100)
    assert sends(playback, 1.0) == [(0.0, 0)]
    assert playback.due(5.0) is None and playback.position == 0


def test_playing_sends_every_frame_on_time() -> None:
    playback = Playback(Fraction(25), 1000)
    sends(playback, 0.0)
    playback.play(1.0)
    sent = sends(playback, 2.0)
    sent = [(t, f) for t, f in sent if t >= 1.0]
    assert [f for _, f in sent] == list(range(1, 27))
    assert all(abs(t - (1.0 + (f - 1) * 0.04)) < 0.0011 for t, f in sent)


def test_rates_below_one_slow_down_and_above_one_skip_frames() -> None:
    playback = Playback(Fraction(25), 1000)
    sends(playback, 0.0)
    playback.set_rate(0.5, 0.0)
    playback.play(0.0)
    assert [f for _, f in sends(playback, 0.999)] == list(range(1, 14))  # 12.5 fps
    playback = Playback(Fraction(25), 1000)
    sends(playback, 0.0)
    playback.set_rate(4.0, 0.0)
    playback.play(0.0)
    sent = sends(playback, 0.999)
    assert len(sent) == 25  # still 25 sends a second
    assert [f for _, f in sent][:4] == [1, 5, 9, 13]  # four frames on per send
    with pytest.raises(CommandError, match="reverse"):
        playback.set_rate(-1.0, 1.0)
    with pytest.raises(CommandError):
        playback.set_rate(float("nan"), 1.0)


def test_a_late_sender_skips_to_now_and_counts() -> None:
    playback = Playback(Fraction(25), 1000)
    sends(playback, 0.0)
    playback.play(0.0)
    first = playback.due(0.0)
    assert first is not None
    playback.sent(first)
    due = playback.due(0.1)  # 100 ms late: catch up, frame by frame
    assert due is not None and due.frame == 2 and due.at < 0.1 and not due.hurry
    due = playback.due(0.5)  # half a second late: skip to now, and say so to the reader
    assert due is not None and due.frame == 1 + 12 and due.hurry
    playback.sent(due)
    assert playback.late == 11
    due = playback.due(0.52)  # on time again
    assert due is not None and due.frame == 14 and not due.hurry


def test_seek_is_the_next_frame_playing_or_paused() -> None:
    playback = Playback(Fraction(25), 1000)
    sends(playback, 0.0)
    playback.seek(500, 1.0)
    stale = playback.due(1.0)
    assert stale is not None and (stale.frame, stale.tick) == (500, None)
    playback.seek(20, 1.001)  # a second seek while 500 decodes
    playback.sent(stale)  # computed for the old version: ignored
    assert playback.position == 20 and playback.pending == 20
    assert sends(playback, 1.1, start=1.001) == [(1.001, 20)]
    assert sends(playback, 1.9, start=1.1) == []  # paused: nothing more
    playback.play(2.0)
    assert [f for _, f in sends(playback, 2.1, start=2.0)][:3] == [21, 22, 23]
    playback.seek(7, 2.2)
    assert [f for _, f in sends(playback, 2.3, start=2.2)][:3] == [7, 8, 9]
    with pytest.raises(CommandError, match="past the end"):
        playback.seek(1000, 3.0)
    with pytest.raises(CommandError, match="negative"):
        playback.seek(-1, 3.0)
    assert playback.seeks == 3


def test_playing_from_a_seek_starts_when_its_first_picture_goes_out() -> None:
    """A seek while playing into a long GOP: its first picture takes 3 s to decode, and
    playing goes on from it then, frame by frame, not 75 frames later to catch up."""
    playback = Playback(Fraction(25), 10_000)
    sends(playback, 0.0)
    playback.play(1.0)
    sends(playback, 2.0, start=1.0)
    playback.seek(5000, 2.0)
    first = playback.due(2.0)
    assert first is not None and (first.frame, first.tick, first.at) == (5000, 0, 2.0)
    assert playback.starting and playback.media_time(3.0) is None
    late = playback.due(5.0)  # the decode took 3 s: still that frame, at once, no hurry
    assert late is not None and (late.frame, late.at, late.hurry) == (5000, 5.0, False)
    playback.sent(late, 5.0, exact=False)  # the seek proxy's picture: shown, not started
    assert playback.position == 5000 and playback.starting
    playback.sent(late, 5.01)  # the exact picture goes out at 5.01: the schedule starts
    assert not playback.starting and playback.media_time(5.51) == pytest.approx(200.5)
    after = [f for _, f in sends(playback, 6.0, start=5.01)]
    assert after[:3] == [5001, 5002, 5003] and playback.late == 0


def test_commands_while_a_seek_starts_keep_its_frame() -> None:
    playback = Playback(Fraction(25), 10_000)
    sends(playback, 0.0)
    playback.play(1.0)
    assert playback.starting and not playback.seek_starting  # play: no proxy picture first
    sends(playback, 1.2, start=1.0)
    playback.seek(5000, 2.0)
    assert playback.seek_starting
    playback.pause(3.0)  # before the seek's exact picture went out: it goes out, paused
    due = playback.due(3.0)
    assert due is not None and (due.frame, due.tick) == (5000, None)
    playback.play(4.0)
    playback.seek(6000, 4.0)
    playback.set_rate(2.0, 5.0)  # before 6000 went out: the new schedule starts from it
    due = playback.due(5.0)
    assert due is not None and (due.frame, due.tick) == (6000, 0)


def test_step_pauses_and_clamps() -> None:
    playback = Playback(Fraction(25), 10)
    sends(playback, 0.0)
    playback.play(0.0)
    sends(playback, 0.1)
    playback.step(-1, 0.11)
    assert not playback.playing and playback.position == playback.pending
    playback.step(-100, 0.2)
    assert playback.position == 0
    playback.step(+100, 0.3)
    assert playback.position == 9
    due = playback.due(0.3)
    assert due is not None and due.frame == 9


def test_playback_stops_on_the_last_frame() -> None:
    playback = Playback(Fraction(25), 10)
    sends(playback, 0.0)
    playback.play(0.0)
    sent = sends(playback, 2.0)
    assert [f for _, f in sent] == list(range(1, 10))
    assert not playback.playing and playback.position == 9
    with pytest.raises(CommandError, match="last frame"):
        playback.play(3.0)


def test_an_unknown_end_is_learnt_from_the_decoder() -> None:
    playback = Playback(Fraction(25), None)
    sends(playback, 0.0)
    playback.play(0.0)
    sends(playback, 0.2)
    playback.ended(7)
    assert playback.frame_count == 7 and playback.position == 6 and not playback.playing


def test_audio_media_time_follows_the_video_schedule() -> None:
    playback = Playback(Fraction(25), 1000)
    assert playback.media_time(0.0) is None  # paused
    playback.seek(250, 0.0)
    playback.play(10.0)
    assert playback.media_time(10.0) is None  # the sound starts with the first picture
    playback.sent(playback.due(10.0) or pytest.fail("frame 250 is due"), 10.0)
    assert playback.media_time(10.5) == pytest.approx(10.5)  # frame 250 is 10 s
    playback.set_rate(2.0, 11.0)
    assert playback.media_time(11.0) is None  # no audio at other rates


# -- channels -------------------------------------------------------------------------------------


def test_channel_layout_and_default_selection() -> None:
    layout = ChannelLayout((2, 6))
    assert layout.total == 8
    assert layout.locate(4) == (1, 2)
    assert layout.default_selection() == (0, 1)
    assert layout.default_selection(2, cho=4) == (4, 5)
    assert layout.default_selection(6, cho=4) == (4, 5, 6, 7)  # fewer than asked: all left
    assert ChannelLayout(()).default_selection() == ()
    with pytest.raises(JitOptionsError, match="cho=8"):
        layout.default_selection(cho=8)
    with pytest.raises(CommandError, match="0-7"):
        layout.check((8,))
    with pytest.raises(CommandError, match="no audio"):
        ChannelLayout(()).check((0,))


def test_stereo_matrix() -> None:
    left, right = stereo_matrix((4, 5), 8)
    assert left[4] == 1 and right[5] == 1 and sum(left) == sum(right) == 1
    left, right = stereo_matrix((3,), 8)
    assert left[3] == right[3] == 1  # mono in both ears
    left, right = stereo_matrix((0, 1, 2, 3, 4, 5), 6)
    assert left[0] == left[2] == left[4] == pytest.approx(1 / 3)
    assert right[1] == right[3] == right[5] == pytest.approx(1 / 3)
    assert stereo_matrix((), 0) == ((), ())


# -- pictures -------------------------------------------------------------------------------------


def test_output_size() -> None:
    square = Fraction(1)
    assert picture.output_size(1920, 1080, square, None, None) == (1920, 1080)
    assert picture.output_size(1920, 1080, square, 640, None) == (640, 360)
    assert picture.output_size(1920, 1080, square, None, 361) == (642, 362)  # even
    assert picture.output_size(720, 576, Fraction(16, 15), None, None) == (768, 576)
    assert picture.output_size(1440, 1080, Fraction(4, 3), 1280, None) == (1280, 720)
    assert picture.output_size(1920, 1080, square, 300, 300) == (300, 300)
    with pytest.raises(JitOptionsError, match="pixel limit"):
        picture.output_size(1920, 1080, square, 8192, None)
    with pytest.raises(JitOptionsError, match="at least 2"):
        picture.output_size(1920, 1080, square, 0, None)


def test_output_size_fits_a_big_picture_in_the_box_unless_a_size_is_asked_for() -> None:
    square, hd = Fraction(1), (1920, 1080)
    assert picture.output_size(3840, 2160, square, None, None, hd) == (1920, 1080)
    assert picture.output_size(4096, 2160, square, None, None, hd) == (1920, 1012)  # DCI 4K
    assert picture.output_size(2160, 3840, square, None, None, hd) == (608, 1080)  # portrait
    assert picture.output_size(1440, 1080, Fraction(4, 3), None, None, (1280, 720)) == (1280, 720)
    assert picture.output_size(1280, 720, square, None, None, hd) == (1280, 720)  # fits: kept
    assert picture.output_size(3840, 2160, square, None, None, None) == (3840, 2160)
    assert picture.output_size(3840, 2160, square, 3200, None, hd) == (3200, 1800)  # asked
    assert picture.output_size(3840, 2160, square, None, None, (1281, 721)) == (1280, 720)


def test_colour_decisions() -> None:
    assert picture.source_matrix(None, 2, 1080) == picture.SWS_BT709  # untagged HD
    assert picture.source_matrix(None, 2, 576) == picture.SWS_BT601  # untagged SD
    assert picture.source_matrix(None, 6, 1080) == picture.SWS_BT601  # the tag wins
    assert picture.source_matrix("BT601", 1, 1080) == picture.SWS_BT601  # the option wins
    with pytest.raises(JitOptionsError, match="bt709"):
        picture.source_matrix("xyz", 1, 1080)
    assert picture.transfer(False, picture.TRC_PQ) is None
    assert picture.transfer(True, picture.TRC_HLG) == "hlg"
    assert picture.transfer(True, 2) == "pq"
    assert picture.sample_aspect(None, None, None) == 1
    with pytest.raises(JitOptionsError):
        picture.sample_aspect(4, None, None)


def yuv_frame(
    rgb: tuple[int, int, int], matrix: int, size: tuple[int, int] = (64, 36)
) -> av.VideoFrame:
    width, height = size
    flat = np.zeros((height, width, 3), dtype=np.uint8)
    flat[:] = rgb
    return av.VideoFrame.from_ndarray(flat, format="rgb24").reformat(
        format="yuv420p", dst_colorspace=matrix, dst_color_range=picture.RANGE_MPEG
    )


def test_converter_turns_bt601_into_bt709() -> None:
    colour = (200, 60, 30)
    source = yuv_frame(colour, picture.SWS_BT601)
    options = SessionOptions(colorspace="bt601", width=32)
    converter = PictureConverter(source, options, None)
    assert (converter.width, converter.height) == (32, 18)
    out = converter.convert(source)
    expected = yuv_frame(colour, picture.SWS_BT709, (32, 18)).to_ndarray()
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2
    # Read as BT.709 (the file lies the other way), the colour would be off by far more.
    wrong = PictureConverter(source, SessionOptions(colorspace="bt709", width=32), None)
    assert np.abs(wrong.convert(source).astype(int) - expected.astype(int)).max() > 8


def test_tone_mapping() -> None:
    signal = np.linspace(0, 1, 64, dtype=np.float32)
    nits = tonemap.pq_to_nits(signal)
    assert nits[0] == 0 and nits[-1] == pytest.approx(10000, rel=1e-3)
    assert np.all(np.diff(nits) >= 0)
    grey = np.repeat(signal[:, None], 3, axis=1)
    for curve in ("pq", "hlg"):
        sdr = tonemap.tone_map(grey, curve)  # type: ignore[arg-type]
        assert sdr.dtype == np.uint8 and sdr[0].tolist() == [0, 0, 0]
        assert np.all(np.diff(sdr[:, 1].astype(int)) >= 0)  # monotonic
        assert np.all(sdr[:, 0] == sdr[:, 1])  # grey stays grey
    # PQ 203 nits (reference white, code ~0.58) lands at a bright but unclipped SDR level.
    white = tonemap.tone_map(np.full((1, 3), 0.5807, dtype=np.float32), "pq")
    assert 180 <= int(white[0, 0]) <= 245
    # The converter's tone-mapping path: a PQ-tagged frame comes out as valid yuv420p.
    frame = yuv_frame((120, 120, 120), picture.SWS_BT2020)
    frame.color_trc = picture.TRC_PQ
    converter = PictureConverter(frame, SessionOptions(bt2100_tone_mapping=True), None)
    assert converter.curve == "pq"
    out = converter.convert(frame)
    assert out.shape == (54, 64) and out.dtype == np.uint8


# -- sdp and messages -----------------------------------------------------------------------------

OFFER = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
m=video 9 UDP/TLS/RTP/SAVPF 97
a=recvonly
a=fingerprint:sha-256 85:55:5D:92:D1:D7:8E:86:37:47:09:67:26:31:58:40:3C:0C:C5:8D:D9:CB:17:D0
m=audio 0 UDP/TLS/RTP/SAVPF 96
a=recvonly
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
"""


def test_sdp_reading() -> None:
    assert sdp.media_sections(OFFER) == [
        ("video", "recvonly"),
        ("audio", "inactive"),  # port 0: rejected
        ("application", "sendrecv"),
    ]
    assert sdp.receives(OFFER, "video") and not sdp.receives(OFFER, "audio")
    assert sdp.peer_id_of(OFFER) == "85555d92d1d78e863747096726315840"
    with pytest.raises(ValueError, match="fingerprint"):
        sdp.peer_id_of("v=0\n")


def test_signalling_and_stats_messages_round_trip() -> None:
    decoder = msgspec.json.Decoder(SignalRequest)
    for message in (SignalOffer(sdp="v=0"), SignalHangup(peer_id="ab" * 16)):
        assert decoder.decode(encode(message)) == message
    stats = JitStats(position=3, rate=2.0, frames=9, frame_count=300, dropped=1)
    assert msgspec.json.decode(encode(stats), type=JitStats) == stats
    assert msgspec.json.decode(b'{"type":"jit/1","position":3}', type=JitStats).rate == 1.0


def test_frame_rate_override() -> None:
    assert playback_rate(SessionOptions(), NTSC) == NTSC
    assert playback_rate(SessionOptions(frame_rate_num=24), Fraction(25)) == 24
    assert playback_rate(SessionOptions(frame_rate_num=30000, frame_rate_den=1001), 25) == NTSC
    with pytest.raises(JitOptionsError, match="frame_rate"):
        playback_rate(SessionOptions(frame_rate_den=1001), Fraction(25))


def test_errors_carry_the_input_index() -> None:
    error = JitInputError(2, "no audio stream")
    assert str(error) == "input 2: no audio stream" and error.index == 2
    assert str(JitOptionsError("cho=9")) == "options: cho=9"


# -- the test pattern itself ---------------------------------------------------------------------


@given(number=st.integers(min_value=0, max_value=4095))
def test_pattern_reads_back_and_any_wrong_block_is_caught(number: int) -> None:
    assert read_frame_number(pattern(number, 320, 180)) == number
    assert read_frame_number(pattern(number, 1280, 720)) == number
    for flip in range(16):
        damaged = bits_of(number)
        damaged[flip] ^= 1
        assert read_frame_number(draw_bits(damaged, 320, 180)) is None
