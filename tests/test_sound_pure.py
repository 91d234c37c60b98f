"""The mosaic's sound without NATS: the playout buffer and the clock offset (pure), the choice of
tile, where AAC packets go, and the AAC encode with the renderer and both muxers, decoded with
PyAV (the tone's frequency by FFT, the track's length, where the sound starts against the
pictures)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.consumers.aac import FRAME, LEAD, MARGIN, RATE, AudioChunk
from pipeline.consumers.compositor import WAITING
from pipeline.consumers.encoder import AudioQueue, EncoderSettings
from pipeline.consumers.playout import ClockOffset, Playout, frame_position, position
from pipeline.consumers.render import MosaicRenderer, RenderedPart, RenderedSegment
from pipeline.consumers.sound import AudioChoice
from pipeline.messages.audio import AudioHeader
from pipeline.messages.events import Tile
from tests import isobmff

FPS = 25
T0 = 1_800_000_000.0
"""A wall-clock start, Unix seconds."""


def ramp(start: int, count: int, channels: int = 2) -> npt.NDArray[np.float32]:
    """Samples that say where they are: sample ``i`` of the stream is ``i`` (exact in float32
    up to 2**24)."""
    values = np.arange(start, start + count, dtype=np.float32)
    return np.tile(values, (channels, 1))


# --- the playout buffer ------------------------------------------------------------------------


def test_frame_positions_give_each_second_exactly_its_samples() -> None:
    for fps in (7, 24, 25, 30, 50, 60):
        counts = [
            frame_position(n + 1, fps, RATE) - frame_position(n, fps, RATE) for n in range(fps)
        ]
        assert sum(counts) == RATE and max(counts) - min(counts) <= 1
    assert frame_position(1, 25, RATE) == 1920
    assert position(T0 + 0.5, RATE) == round(T0 * RATE) + 24_000


@settings(max_examples=60, deadline=None)
@given(
    jitter=st.lists(st.integers(-1400, 1400), min_size=60, max_size=60),
    pull_jitter=st.lists(st.integers(-1400, 1400), min_size=40, max_size=40),
)
def test_chunks_that_jitter_within_the_slack_play_back_exactly_after_the_delay(
    jitter: list[int], pull_jitter: list[int]
) -> None:
    """Chunks of 1024 samples stamped up to ±29 ms off, pulls of 1920 made up to ±29 ms off:
    what comes out is what went in, sample for sample, a fixed delay later."""
    slack = 2880  # 60 ms
    buffer = Playout(channels=2, slack=slack, capacity=RATE)
    delay = 4000
    pushed = 0
    out = []
    for tick in range(40):
        now = tick * 1920
        while pushed < now + 1920 and pushed // 1024 < len(jitter):
            buffer.push(pushed + jitter[pushed // 1024], ramp(pushed, 1024))
            pushed += 1024
        out.append(buffer.pull(now - delay + pull_jitter[tick], 1920))
    got = np.concatenate(out, axis=1)[0]
    # Where the first pull started, counted in the stream's samples.
    start = -delay + pull_jitter[0] - 1920 - jitter[0]
    expected = np.arange(start, start + got.size, dtype=np.float32)
    silence = (expected < 0) | (expected >= pushed)  # before the first chunk, after the last
    expected[silence] = 0
    assert np.array_equal(got, expected)
    assert buffer.late == 0 and buffer.jumps == 0 and buffer.overflow == 0
    assert buffer.silent == int(silence.sum())


def test_a_chunk_that_comes_after_its_time_is_dropped_and_silence_takes_its_place() -> None:
    buffer = Playout(channels=1, slack=100, capacity=RATE)
    buffer.push(0, ramp(0, 1000, 1))
    assert np.array_equal(buffer.pull(1000, 1000)[0], np.arange(1000))
    got = buffer.pull(2000, 1000)[0]  # nothing came for 1000..2000
    assert not got.any() and buffer.silent == 1000
    buffer.push(1000, ramp(1000, 1500, 1))  # late: half of it is in the past already
    got = buffer.pull(3000, 1000)[0]
    assert np.array_equal(got[:500], np.arange(2000, 2500)) and not got[500:].any()
    assert buffer.late == 1000 and buffer.jumps == 0 and buffer.queued == 0


def test_a_run_far_from_the_last_one_starts_anew_with_silence_between() -> None:
    buffer = Playout(channels=1, slack=100, capacity=RATE)
    buffer.push(0, ramp(0, 500, 1))
    buffer.push(800, ramp(10_000, 500, 1))  # 300 samples after the first run ended
    assert buffer.jumps == 1
    got = buffer.pull(1300, 1300)[0]
    assert np.array_equal(got[:500], np.arange(500))
    assert not got[500:800].any()
    assert np.array_equal(got[800:], np.arange(10_000, 10_500))


def test_a_run_that_goes_back_in_time_replaces_what_was_queued() -> None:
    buffer = Playout(channels=1, slack=100, capacity=RATE)
    buffer.push(1000, ramp(0, 1000, 1))
    buffer.push(500, ramp(5000, 1000, 1))  # the sender's clock stepped back
    assert buffer.overflow == 1000 and buffer.queued == 1000
    assert np.array_equal(buffer.pull(1500, 1000)[0], np.arange(5000, 6000))


def test_pulls_follow_on_until_they_are_off_by_more_than_the_slack() -> None:
    buffer = Playout(channels=1, slack=100, capacity=10 * RATE)
    buffer.push(0, ramp(0, 20_000, 1))
    first = buffer.pull(1000, 1000)[0]
    late = buffer.pull(2090, 1000)[0]  # made 90 late: follows on
    assert np.array_equal(first, np.arange(1000)) and np.array_equal(late, np.arange(1000, 2000))
    skipped = buffer.pull(4000, 1000)[0]  # a tick skipped: jumps to where the clock says
    assert np.array_equal(skipped, np.arange(3000, 4000)) and buffer.jumps == 1
    assert buffer.late == 1000  # what the skipped tick would have played


def test_at_most_capacity_samples_wait() -> None:
    buffer = Playout(channels=1, slack=0, capacity=2000)
    for n in range(5):
        buffer.push(n * 1000, ramp(n * 1000, 1000, 1))
    assert buffer.queued == 2000 and buffer.overflow == 3000
    assert np.array_equal(buffer.pull(5000, 2000)[0], np.arange(3000, 5000))
    with pytest.raises(ValueError, match="shape"):
        buffer.push(0, np.zeros((2, 10), np.float32))


def test_the_clock_offset_is_the_fastest_transit_lately() -> None:
    offset = ClockOffset(window=10.0)
    assert offset.offset == 0.0
    # The sender's clock is 2 s behind ours; transit 1 ms, one message held up 300 ms.
    for n, transit in enumerate([0.001, 0.001, 0.3, 0.002, 0.001]):
        sent = 100.0 + n * 0.02
        got = offset.note(sent + 2.0 + transit, sent)
    assert got == pytest.approx(2.001)
    # Its clock steps 50 ms forward: the old minimum goes after one or two windows.
    for n in range(40):
        sent = 200.0 + n
        offset.note(sent + 1.95 + 0.001, sent)
    assert offset.offset == pytest.approx(1.951)
    offset.reset()
    assert offset.offset == 0.0


# --- the choice of tile --------------------------------------------------------------------------


def test_a_chosen_tile_is_carried_whatever_it_sends() -> None:
    choice = AudioChoice(["a", "b", "a"], 1)
    assert choice.carried == "b" and choice.wanted == {"b"}
    choice.heard("a", 0.0)
    assert not choice.update(100.0) and choice.carried == "b"
    with pytest.raises(ValueError, match="tile 3"):
        AudioChoice(["a", "b", "a"], 3)


def test_the_default_carries_the_first_tile_with_audio_in_tile_order() -> None:
    choice = AudioChoice(["a", "b", "c", "b"], -1, settle=0.5, lost_after=3.0)
    assert choice.carried is None and choice.wanted == {"a", "b", "c"}
    choice.heard("c", 0.0)  # the third tile speaks first...
    choice.heard("b", 0.1)  # ...and the second just after
    assert not choice.update(0.4)  # nobody heard long enough
    for t in (0.3, 0.5, 0.6):
        choice.heard("c", t)
        choice.heard("b", t)
    assert choice.update(0.6) and choice.carried == "b"  # 0.5 s of b: the first tile with audio
    assert choice.wanted == {"a", "b"}  # c is not needed; a is watched in case it starts

    # The first tile starts sending: it takes over once heard for the settle time.
    for t in (1.0, 1.2, 1.4):
        choice.heard("a", t)
        choice.heard("b", t)
        assert not choice.update(t)
    choice.heard("a", 1.5)
    assert choice.update(1.5) and choice.carried == "a" and choice.wanted == {"a"}

    # Its audio stops: after lost_after, the next tile with audio (b, still sending).
    for t in (2.0, 3.0, 4.0, 4.6):
        choice.heard("b", t)
    assert not choice.update(4.5)
    assert choice.update(4.6) and choice.carried == "b"

    # Everything stops: silence, every tile watched again.
    assert choice.update(8.0) and choice.carried is None and choice.wanted == {"a", "b", "c"}
    assert not choice.sending("b", 8.0)


# --- where AAC packets go ------------------------------------------------------------------------


def packet(pts: int) -> av.Packet:
    p = av.Packet(b"\0")
    p.pts = p.dts = pts
    p.duration = FRAME
    p.time_base = Fraction(1, RATE)
    return p


def test_aac_packets_wait_for_the_video_frame_during_which_they_end() -> None:
    queue = AudioQueue(FPS, RATE)
    queue.add([packet(pts) for pts in range(-1024, 8000, 1024)])
    # Frame 0 ends at 1920: the priming packet (ends at 0) is dropped, the next (ends 1024) due.
    assert [p.pts for p in queue.due(0)] == [0] and queue.dropped == 1
    assert [p.pts for p in queue.due(1)] == [1024, 2048]  # ends 2048, 3072 <= 3840
    assert [p.pts for p in queue.due(2)] == [3072, 4096]  # ends 4096, 5120 <= 5760
    assert queue.due(2) == []


# --- encoding: the renderer, the AAC encoder and both muxers -------------------------------------


def tone_chunks(
    freq: float, rate: int, layout: str, *, seconds: float, start: float = T0, gain: float = 0.3
) -> Iterator[AudioChunk]:
    """A tone as a grabber sends it: 1024-sample chunks of s16, on the first channels (front
    left, front right, and the centre when there is one), each stamped with its first sample's
    wall time."""
    channels = av.AudioLayout(layout).nb_channels
    total = int(seconds * rate)
    for seq, first in enumerate(range(0, total, 1024)):
        t = (first + np.arange(1024)) / rate
        wave = np.round(gain * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        pcm = np.zeros((1024, channels), np.int16)
        pcm[:, : min(channels, 3)] = wave[:, None]
        wall = start + first / rate
        header = AudioHeader(source_id=f"tone{freq:g}", seq=seq, pts=first / rate, wall=wall,
                             rate=rate, channels=channels, layout=layout, samples=1024)  # fmt: skip
        yield AudioChunk(header, pcm.tobytes(), wall + 0.002)


def render(
    hls_format: str, chunks: list[AudioChunk], frames: int, *, first_index: int = 2
) -> tuple[MosaicRenderer, list[RenderedPart | RenderedSegment]]:
    """A one-tile mosaic of ``frames`` pictures made on time from ``T0``, each taking the
    chunks whose time has come."""
    settings_ = EncoderSettings(160, 90, FPS, preset="ultrafast")
    renderer = MosaicRenderer(
        [Tile("test://a", "a")], settings_, first_index=first_index,
        hls_format=hls_format, audio=True,  # type: ignore[arg-type]
    )  # fmt: skip
    outputs: list[RenderedPart | RenderedSegment] = []
    pending = list(chunks)
    for n in range(frames):
        wall = T0 + n / FPS
        due = [c for c in pending if c.arrival <= wall]
        pending = pending[len(due) :]
        outputs += renderer.render([WAITING], wall, due).outputs
    renderer.close()
    return renderer, outputs


def decode_audio(data: bytes, container: str) -> tuple[float, npt.NDArray[np.float32]]:
    """The first audio frame's time and all the samples of the left channel."""
    with av.open(io.BytesIO(data), "r", format=container) as media:
        assert [s.type for s in media.streams] == ["video", "audio"]
        audio = media.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == RATE
        assert audio.codec_context.layout.name == "stereo"
        frames = list(media.decode(audio=0))
    return float(frames[0].time or 0.0), np.concatenate([f.to_ndarray()[0] for f in frames])


def peak_hz(samples: npt.NDArray[np.float32]) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * RATE / samples.size)


def tone_amplitude(samples: npt.NDArray[np.float32], hz: float) -> float:
    """Amplitude of the ``hz`` sine in ``samples`` (Hann-windowed spectrum at its bin): a
    click or a few milliseconds of silence (a chunk late on a busy machine, rung by the AAC
    coder) barely move it, where they move the sample peak."""
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * window))
    k = int(round(hz * samples.size / RATE))
    return float(2 * spectrum[k - 1 : k + 2].max() / window.sum())


def onset(samples: npt.NDArray[np.float32], level: float = 0.05) -> int:
    """Index of the first sample whose 5 ms RMS reaches ``level``."""
    window = 240
    power = np.convolve(samples.astype(np.float64) ** 2, np.ones(window) / window, "same")
    return int(np.flatnonzero(np.sqrt(power) >= level)[0])


EXPECTED_LAG = MARGIN + 1 / FPS + LEAD / RATE
"""Seconds from when a sample was live to its place on the pictures' timeline."""


@pytest.mark.parametrize(("hls_format", "container"), [("cmaf", "mp4"), ("ts", "mpegts")])
def test_a_51_source_at_441_khz_comes_out_as_continuous_stereo_aac_in_step_with_the_video(
    hls_format: str, container: str
) -> None:
    chunks = list(tone_chunks(880, 44_100, "5.1(side)", seconds=3.0, start=T0 + 0.5))
    renderer, outputs = render(hls_format, chunks, 100)
    assert renderer.sound is not None and renderer.sound.bad == 0
    if hls_format == "cmaf":
        parts = [o for o in outputs if isinstance(o, RenderedPart)]
        init = parts[0].init
        data = init + b"".join(p.part.data for p in parts)
        # Two tracks in the init: H.264 and AAC (mp4a, with its AudioSpecificConfig).
        handlers = [b.body[8:12] for b in isobmff.find(init, "moov/trak/mdia/hdlr")]
        assert handlers == [b"vide", b"soun"]
        assert b"mp4a" in init and b"esds" in init
        # Each part holds the AAC frames that end within it: 9 or 10 of 1024 samples a 0.2 s.
        assert all(p.part.audio_frames in (9, 10) for p in parts[1:])
        for rendered in parts[3:6]:
            part = rendered.part
            start, end = part.first_pts / FPS, (part.first_pts + part.frames) / FPS
            with av.open(io.BytesIO(init + part.data), "r", format="mp4") as media:
                ends = [p.pts + p.duration for p in media.demux(audio=0) if p.pts is not None]
            assert ends and all(start * RATE < e <= end * RATE for e in ends), (start, end, ends)
    else:
        data = b"".join(o.segment.data for o in outputs if isinstance(o, RenderedSegment))
    first, samples = decode_audio(data, container)
    # On the video's timeline (segment 2 starts at 2.0 s), continuous to the last whole frame.
    assert first == pytest.approx(2.0)
    assert samples.size == pytest.approx(4.0 * RATE, abs=FRAME)
    # The tone, downmixed: front left plus the centre at -3 dB.
    sound = samples[onset(samples) + RATE // 10 :]
    assert peak_hz(sound[: RATE // 2]) == pytest.approx(880, abs=3)
    assert float(np.sqrt(np.mean(sound**2))) == pytest.approx(0.3 * (1 + 2**-0.5) / 2**0.5, rel=0.1)
    # It started 0.5 s in (wall), and lands EXPECTED_LAG later on the timeline (+ transit).
    lands = onset(samples) / RATE
    assert lands == pytest.approx(0.5 + EXPECTED_LAG + 0.002, abs=0.004)
    assert renderer.sound.playout.late == 0 and renderer.sound.playout.jumps == 0


def test_a_renderer_without_sound_makes_what_it_made_before() -> None:
    settings_ = EncoderSettings(160, 90, FPS, preset="ultrafast")
    renderer = MosaicRenderer([Tile("test://a", "a")], settings_, hls_format="cmaf")
    assert renderer.sound is None
    parts = [o for n in range(10) for o in renderer.render([WAITING], T0 + n / FPS).outputs]
    renderer.close()
    assert isinstance(parts[0], RenderedPart)
    assert [b.body[8:12] for b in isobmff.find(parts[0].init, "moov/trak/mdia/hdlr")] == [b"vide"]
    assert all(isinstance(p, RenderedPart) and p.part.audio_frames == 0 for p in parts)


def test_a_restarted_stitcher_writes_the_same_init_and_carries_the_sound_timeline_on() -> None:
    chunks = list(tone_chunks(440, 48_000, "stereo", seconds=2.0))
    _, first = render("cmaf", chunks, 25, first_index=2)
    _, later = render("cmaf", chunks, 25, first_index=7)
    assert isinstance(first[0], RenderedPart) and isinstance(later[0], RenderedPart)
    assert first[0].init == later[0].init  # a player holding the init needs no other
    with av.open(io.BytesIO(later[0].init + later[0].part.data), "r", format="mp4") as media:
        audio = [p for p in media.demux(audio=0) if p.pts is not None]
    assert audio[0].pts + audio[0].duration > 7 * RATE  # on the timeline of segment 7


def test_the_sound_costs_little_next_to_the_pictures() -> None:
    """Measured, not asserted (the suite shares 2 cores): run with -s to see it. CPU seconds of
    the renderer's thread per second of mosaic, 1280x720 of four moving tiles at veryfast, with
    and without a 5.1 44.1 kHz source's sound (a tone in noise: harder for AAC than speech)."""
    from pipeline.consumers.compositor import TileKind, TileView
    from pipeline.messages.frames import FrameHeader
    from pipeline.state.layouts import layout

    seconds, width, height = 2, 1280, 720
    grid = layout(4, width, height)
    tw, th = grid.rects[0].size
    yy, xx = np.mgrid[0 : th * 3 // 2, 0:tw]
    noise = np.random.default_rng(1).normal(0, 6, xx.shape)
    base = (60 + 80 * np.sin(xx / 37) * np.cos(yy / 23) + noise).clip(16, 235).astype(np.uint8)

    def views(n: int) -> list[TileView]:
        return [
            TileView(TileKind.LIVE, n + 1,
                     FrameHeader(source_id=f"s{i}", seq=n, pts=n / FPS, wall=T0 + n / FPS,
                                 width=tw, height=th),
                     np.roll(base, 3 * n + 7 * i, axis=1).tobytes())
            for i in range(4)
        ]  # fmt: skip

    sound = list(tone_chunks(880, 44_100, "5.1", seconds=seconds + 1))
    pictures = [views(n) for n in range(seconds * FPS)]
    costs = {}
    for audio in (False, True):
        renderer = MosaicRenderer(
            [Tile(f"test://{i}", str(i)) for i in range(4)],
            EncoderSettings(width, height, FPS, preset="veryfast"),
            hls_format="cmaf",
            audio=audio,
        )
        pending = list(sound)
        spent = sound_spent = 0.0
        for n, picture in enumerate(pictures):
            wall = T0 + n / FPS
            due = [c for c in pending if c.arrival <= wall] if audio else []
            pending = pending[len(due) :]
            began = time.thread_time()
            renderer.render(picture, wall, due)
            spent += time.thread_time() - began
            sound_spent += renderer.last_audio_ms / 1000
        renderer.close()
        costs[audio] = (spent / seconds * 1000, sound_spent / seconds * 1000)
    (video, _), (both, encode) = costs[False], costs[True]
    print(
        f"\nvideo path {video:.0f} ms CPU/s; with sound {both:.0f} ms CPU/s: the sound's "
        f"resample + AAC {encode:.1f} ms/s, all of it {both - video:+.1f} ms/s "
        f"({100 * (both - video) / video:+.1f}%)"
    )
