"""The audio meter (pipeline/producers/levels.py) on audio made here with numpy and PyAV: peak
and RMS per channel against the theory of a sine, loudness against the EBU Tech 3341 test
cases that can be made from sines, silence, every sample format, changes of layout mid-stream,
frames without timestamps, and real AAC decoded by FFmpeg."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.errors import TesseraError
from pipeline.producers.levels import FLOOR_DB, AudioMeter, LevelsError, Reading, combine

RATE = 48000
SINE_RMS = 20 * math.log10(math.sqrt(2))  # 3.0103 dB: a sine's RMS is its peak / sqrt(2)
LEVEL_TOL = 0.1  # dB, peak and RMS against the theory
LOUDNESS_TOL = 0.1  # LU: EBU Tech 3341's tolerance for M and S


def tone(
    levels: Sequence[float | None],
    seconds: float,
    *,
    layout: str | None = None,
    rate: int = RATE,
    fmt: str = "fltp",
    freq: float = 1000.0,
    frame_size: int = 1024,
    start: int = 0,
    pts: bool = True,
) -> Iterator[av.AudioFrame]:
    """Frames of a sine with the given peak level per channel (dBFS; None: silence), from
    sample ``start``, ``frame_size`` samples each."""
    channels = len(levels)
    layout = layout or {1: "mono", 2: "stereo", 6: "5.1"}.get(channels, f"{channels} channels")
    amplitude = np.array([0.0 if db is None else 10 ** (db / 20) for db in levels])[:, None]
    fmt_ = av.AudioFormat(fmt)
    total = round(seconds * rate)
    for s in range(start, start + total, frame_size):
        n = min(frame_size, start + total - s)
        t = np.arange(s, s + n) / rate
        x = amplitude * np.sin(2 * np.pi * freq * t)  # channels x samples, in [-1, 1]
        yield make_frame(x, fmt_, layout, rate, s if pts else None)


def make_frame(
    x: np.ndarray, fmt: av.AudioFormat, layout: str, rate: int, pts: int | None
) -> av.AudioFrame:
    base = fmt.name.rstrip("p")
    if base == "u8":
        data = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8)
    elif base in ("s16", "s32"):
        bits = 16 if base == "s16" else 32
        full = 2.0 ** (bits - 1)
        data = np.clip(np.round(x * full), -full, full - 1).astype(f"int{bits}")
    else:
        data = x.astype(np.float32 if base == "flt" else np.float64)
    if not fmt.is_planar:
        data = data.T.reshape(1, -1)  # interleaved
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt.name, layout=layout)
    frame.sample_rate = rate
    if pts is not None:
        frame.pts = pts
        frame.time_base = Fraction(1, rate)
    return frame


def feed(meter: AudioMeter, frames: Iterator[av.AudioFrame]) -> list[Reading]:
    readings: list[Reading] = []
    for frame in frames:
        readings += meter.feed(frame)
    return readings


# -- peak and RMS ----------------------------------------------------------------------------------


def test_sine_left_silence_right() -> None:
    readings = feed(AudioMeter(), tone([-20.0, None], 2.0))
    assert len(readings) == 20  # 100 ms windows
    assert [round(r.t, 6) for r in readings] == [round(0.1 * (i + 1), 6) for i in range(20)]
    for r in readings:
        assert (r.channels, r.layout, r.samples) == (2, "stereo", 4800)
        assert r.peak_db[0] == pytest.approx(-20.0, abs=LEVEL_TOL)
        assert r.rms_db[0] == pytest.approx(-20.0 - SINE_RMS, abs=LEVEL_TOL)
        assert r.peak_db[1] == r.rms_db[1] == FLOOR_DB


def test_six_channels_one_loud() -> None:
    # 5.1 (FL FR FC LFE BL BR): the centre at -6 dBFS, the rest digital silence.
    readings = feed(AudioMeter(), tone([None, None, -6.0, None, None, None], 1.0))
    assert readings and all(r.channels == 6 and r.layout == "5.1" for r in readings)
    for r in readings:
        assert r.peak_db[2] == pytest.approx(-6.0, abs=LEVEL_TOL)
        assert r.rms_db[2] == pytest.approx(-6.0 - SINE_RMS, abs=LEVEL_TOL)
        others = r.peak_db[:2] + r.peak_db[3:] + r.rms_db[:2] + r.rms_db[3:]
        assert set(others) == {FLOOR_DB}


def test_readings_combined_are_the_reading_of_their_whole_time() -> None:
    # What a grabber sends per tick: its 100 ms readings combined. Two at a time, they read as
    # a meter with 200 ms windows reads the same samples (levels that change between windows
    # and within one).
    def signal() -> Iterator[av.AudioFrame]:
        yield from tone([-20.0, None], 0.35)
        yield from tone([-6.0, -30.0], 0.45, start=round(0.35 * RATE))
        yield from tone([None, -12.0], 0.4, start=round(0.8 * RATE))

    short = feed(AudioMeter(), signal())
    long = feed(AudioMeter(window=0.2), signal())
    assert len(short) == 12 and len(long) == 6
    for i, whole in enumerate(long):
        both = combine(short[2 * i : 2 * i + 2])
        assert both.t == pytest.approx(whole.t)
        assert both.samples == whole.samples == 9600
        assert both.peak_db == pytest.approx(whole.peak_db, abs=0.01)
        assert both.rms_db == pytest.approx(whole.rms_db, abs=0.01)
        assert both.short_term_lufs == short[2 * i + 1].short_term_lufs
        assert both.momentary_lufs == short[2 * i + 1].momentary_lufs
    # A window of tone and one of silence: the tone's peak, half its power.
    silence = feed(AudioMeter(), tone([None, None], 0.1))[0]
    tone_then_silence = combine([short[1], silence])
    assert tone_then_silence.peak_db[0] == pytest.approx(-20.0, abs=LEVEL_TOL)
    assert tone_then_silence.rms_db[0] == pytest.approx(-20.0 - SINE_RMS - 3.0103, abs=LEVEL_TOL)
    assert combine(short[3:4]) is short[3]
    with pytest.raises(ValueError):
        combine([])


def test_combined_readings_keep_to_the_newest_layout() -> None:
    stereo = feed(AudioMeter(), tone([-10.0, -10.0], 0.1))[0]
    mono = feed(AudioMeter(), tone([-30.0], 0.1))[0]
    both = combine([stereo, mono])
    assert (both.channels, both.layout, both.samples) == (1, "mono", 4800)
    assert both.peak_db == mono.peak_db and both.rms_db == pytest.approx(mono.rms_db)


def test_silence_reads_the_floor() -> None:
    readings = feed(AudioMeter(), tone([None, None], 4.0))
    assert len(readings) == 40
    for r in readings:
        assert r.peak_db == r.rms_db == (FLOOR_DB, FLOOR_DB)
        assert r.momentary_lufs in (None, FLOOR_DB)
        assert r.short_term_lufs in (None, FLOOR_DB)
    assert readings[-1].momentary_lufs == readings[-1].short_term_lufs == FLOOR_DB


@pytest.mark.parametrize(
    "fmt", ["u8", "s16", "s32", "flt", "dbl", "u8p", "s16p", "s32p", "fltp", "dblp"]
)
@pytest.mark.parametrize("rate", [32000, 44100, 48000])
def test_every_sample_format_and_rate(fmt: str, rate: int) -> None:
    readings = feed(AudioMeter(), tone([-6.0, -12.0], 1.0, rate=rate, fmt=fmt))
    assert len(readings) == 10
    # 8-bit samples are only good to about 0.1 dB at -12 dBFS; a 1 kHz sine at 44.1 kHz has no
    # sample on its crest (the nearest is within cos(pi * 1000 / 44100): -0.02 dB).
    tol = 0.15 if fmt.startswith("u8") else LEVEL_TOL
    for r in readings:
        assert r.peak_db[0] == pytest.approx(-6.0, abs=tol)
        assert r.peak_db[1] == pytest.approx(-12.0, abs=tol)
        assert r.rms_db[0] == pytest.approx(-6.0 - SINE_RMS, abs=tol)
        assert r.rms_db[1] == pytest.approx(-12.0 - SINE_RMS, abs=tol)


def test_thirty_two_channels() -> None:
    levels: list[float | None] = [None] * 32
    levels[20] = -10.0
    readings = feed(AudioMeter(), tone(levels, 1.0, fmt="flt", layout="32 channels"))
    last = readings[-1]
    assert last.channels == 32
    assert last.peak_db[20] == pytest.approx(-10.0, abs=LEVEL_TOL)
    assert set(last.peak_db[:20] + last.peak_db[21:]) == {FLOOR_DB}
    # Channels of an unknown layout weigh 1.0: one sine at -10 dBFS is -13.01 LUFS.
    assert last.momentary_lufs == pytest.approx(-10.0 - SINE_RMS, abs=LOUDNESS_TOL)


def test_windows_across_frames_of_any_size() -> None:
    # 1000-sample frames: windows of 4800 samples end inside frames; each reading is placed at
    # the sample that ends it.
    readings = feed(AudioMeter(window=0.1), tone([-3.0], 1.0, frame_size=1000, start=48000))
    assert [r.samples for r in readings] == [4800] * 10
    assert [round(r.t, 6) for r in readings] == [round(1.0 + 0.1 * (i + 1), 6) for i in range(10)]
    readings = feed(AudioMeter(window=0.5), tone([-3.0], 1.0, frame_size=4096))
    assert [r.samples for r in readings] == [24000, 24000]


def test_frames_without_pts_are_counted() -> None:
    meter = AudioMeter()
    readings = feed(meter, tone([-20.0, -20.0], 1.0, pts=False))
    assert [round(r.t, 6) for r in readings] == [round(0.1 * (i + 1), 6) for i in range(10)]
    # Then frames with timestamps: their own time wins.
    readings = feed(meter, tone([-20.0, -20.0], 0.5, start=10 * RATE))
    assert round(readings[0].t, 6) == 10.1


def test_a_jump_in_source_time() -> None:
    # A looping file starts again at 0 in the middle of a window: the reading is placed at
    # the time of its last sample, in the new pass.
    meter = AudioMeter()
    readings = feed(meter, tone([-20.0], 0.55, frame_size=2400, start=5 * RATE))
    readings += feed(meter, tone([-20.0], 0.2, frame_size=2400))
    assert [round(r.t, 6) for r in readings] == [5.1, 5.2, 5.3, 5.4, 5.5, 0.05, 0.15]


def test_long_windows() -> None:
    readings = feed(AudioMeter(window=10.0), tone([-20.0], 21.0, frame_size=512))
    assert [(round(r.t, 6), r.samples) for r in readings] == [(10.0, 480000), (20.0, 480000)]
    assert readings[-1].short_term_lufs == pytest.approx(-20.0 - SINE_RMS, abs=LOUDNESS_TOL)


def test_the_callers_frame_is_left_as_it_was() -> None:
    frame = next(tone([-20.0, -20.0], 0.1, start=4096))
    AudioMeter().feed(frame)
    assert (frame.pts, frame.time_base) == (4096, Fraction(1, RATE))


# -- loudness (EBU R128) ---------------------------------------------------------------------------
# BS.1770: L = -0.691 + 10 log10(sum of G_i z_i), z_i the mean square of channel i after the
# K-weighting, G = 1.0 (L, R, C), 1.41 (surround), 0 (LFE). The K-weighting's gain at 1 kHz is
# about +0.69 dB, which the -0.691 cancels: a 1 kHz sine of peak A dBFS on both channels of a
# stereo pair has z = A^2/2 each, so L = 10 log10(2 * A^2/2) = A LUFS.


def loudness(readings: list[Reading]) -> tuple[list[float | None], list[float | None]]:
    return [r.momentary_lufs for r in readings], [r.short_term_lufs for r in readings]


@pytest.mark.parametrize(("level", "case"), [(-23.0, 1), (-33.0, 2), (-20.0, 0)])
def test_stereo_sine_tech3341_cases_1_and_2(level: float, case: int) -> None:
    # Tech 3341 case 1 (2): a 1 kHz stereo sine at -23 (-33) dBFS reads M = S = -23 (-33) LUFS.
    readings = feed(AudioMeter(), tone([level, level], 4.0))
    momentary, short_term = loudness(readings)
    # None until the filter heard 400 ms (3 s), then the value at once.
    assert momentary[:3] == [None] * 3
    assert short_term[:29] == [None] * 29
    for m in momentary[3:]:
        assert m == pytest.approx(level, abs=LOUDNESS_TOL)
    for s in short_term[29:]:
        assert s == pytest.approx(level, abs=LOUDNESS_TOL)


@pytest.mark.parametrize("layout", ["5.0", "5.0(side)", "5.1", "5.1(side)"])
def test_five_channels_tech3341_case_6(layout: str) -> None:
    # Case 6: L, R at -28 dBFS, C at -24, Ls, Rs at -30 (and a silent LFE in the 5.1 variant)
    # read -23 LUFS: (2 * 10^-2.8 + 10^-2.4 + 2 * 1.41 * 10^-3) / 2 = 10^-2.30.
    order = av.AudioLayout(layout).channels
    by_name = {"FL": -28.0, "FR": -28.0, "FC": -24.0, "BL": -30.0, "BR": -30.0}
    by_name |= {"SL": -30.0, "SR": -30.0}
    levels = [by_name.get(c.name) for c in order]
    readings = feed(AudioMeter(), tone(levels, 3.5, layout=layout))
    momentary, short_term = loudness(readings)
    assert momentary[-1] == pytest.approx(-23.0, abs=LOUDNESS_TOL)
    assert short_term[-1] == pytest.approx(-23.0, abs=LOUDNESS_TOL)


def alternating(a: float, b: float, seconds_a: float, seconds_b: float, times: int) -> np.ndarray:
    """A 1 kHz sine's amplitude, sample by sample: ``seconds_a`` at ``a`` dBFS, then
    ``seconds_b`` at ``b`` dBFS, ``times`` times."""
    one = np.concatenate(
        [
            np.full(round(seconds_a * RATE), 10 ** (a / 20)),
            np.full(round(seconds_b * RATE), 10 ** (b / 20)),
        ]
    )
    return np.tile(one, times)


def frames_of(amplitude: np.ndarray, frame_size: int = 1024) -> Iterator[av.AudioFrame]:
    fmt = av.AudioFormat("fltp")
    for s in range(0, len(amplitude), frame_size):
        a = amplitude[s : s + frame_size]
        x = a * np.sin(2 * np.pi * 1000.0 * np.arange(s, s + len(a)) / RATE)
        yield make_frame(np.vstack([x, x]), fmt, "stereo", RATE, s)


def test_momentary_tech3341_case_12() -> None:
    # 0.18 s at -20 dBFS and 0.22 s at -30 dBFS, 25 times: every 400 ms holds one of each, so
    # M stays at 10 log10((0.18 * 10^-2 + 0.22 * 10^-3) / 0.4) = -22.97 LUFS.
    readings = feed(AudioMeter(), frames_of(alternating(-20.0, -30.0, 0.18, 0.22, 25)))
    momentary = [m for m in loudness(readings)[0] if m is not None]
    assert len(momentary) > 90
    for m in momentary:
        assert m == pytest.approx(-23.0, abs=LOUDNESS_TOL)


def test_short_term_tech3341_case_9() -> None:
    # 1.34 s at -20 dBFS and 1.66 s at -30 dBFS (20 times in the standard; 3 here): every 3 s
    # holds one of each, so S stays at 10 log10((1.34 * 10^-2 + 1.66 * 10^-3) / 3) = -22.99.
    readings = feed(AudioMeter(), frames_of(alternating(-20.0, -30.0, 1.34, 1.66, 3)))
    short_term = [s for s in loudness(readings)[1] if s is not None]
    assert len(short_term) > 50
    for s in short_term:
        assert s == pytest.approx(-23.0, abs=LOUDNESS_TOL)


def test_loudness_at_another_rate() -> None:
    # 44.1 kHz is resampled to 48 kHz for ebur128.
    readings = feed(AudioMeter(), tone([-23.0, -23.0], 3.5, rate=44100))
    momentary, short_term = loudness(readings)
    assert momentary[-1] == pytest.approx(-23.0, abs=LOUDNESS_TOL)
    assert short_term[-1] == pytest.approx(-23.0, abs=LOUDNESS_TOL)


# -- changes mid-stream and real decoded audio -----------------------------------------------------


def test_layout_rate_and_format_changes_mid_stream() -> None:
    meter = AudioMeter()
    readings = feed(meter, tone([-20.0, -20.0], 1.05))  # ends 50 ms into a window
    readings += feed(meter, tone([None] * 2 + [-10.0] + [None] * 3, 1.0, start=50400))
    readings += feed(meter, tone([-6.0], 1.0, rate=44100, fmt="s16", start=2 * 44100 + 2205))
    assert meter.changes == 2
    layouts = [r.layout for r in readings]
    assert layouts == ["stereo"] * 11 + ["5.1"] * 10 + ["mono"] * 10
    # The stereo part's last window was cut short by the change: 50 ms, read at its end.
    cut = readings[10]
    assert cut.samples == 2400 and round(cut.t, 6) == 1.05
    assert cut.peak_db[0] == pytest.approx(-20.0, abs=LEVEL_TOL)
    five = readings[11:21]
    assert [round(r.t, 6) for r in five] == [round(1.05 + 0.1 * (i + 1), 6) for i in range(10)]
    assert all(r.peak_db[2] == pytest.approx(-10.0, abs=LEVEL_TOL) for r in five)
    # A new graph: loudness starts again, then measures the new layout (one centre sine at
    # -10 dBFS: -13.01 LUFS).
    assert five[0].momentary_lufs is None
    assert five[-1].momentary_lufs == pytest.approx(-10.0 - SINE_RMS, abs=LOUDNESS_TOL)
    mono = readings[21:]
    assert all(r.samples == 4410 for r in mono)
    assert round(mono[0].t, 6) == 2.15
    assert all(r.peak_db[0] == pytest.approx(-6.0, abs=LEVEL_TOL) for r in mono)


def aac_round_trip(level: float, seconds: float) -> list[av.AudioFrame]:
    """A stereo sine encoded to AAC (ADTS) by PyAV and decoded again: fltp frames of 1024."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=RATE, layout="stereo")
        stream.bit_rate = 192_000
        for frame in tone([level, level], seconds):
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as source:
        return list(source.decode(source.streams.audio[0]))


def test_aac_decoded_by_ffmpeg() -> None:
    frames = aac_round_trip(-20.0, 4.0)
    assert frames[0].format.name == "fltp" and frames[0].samples == 1024
    readings: list[Reading] = []
    meter = AudioMeter()
    for frame in frames:
        readings += meter.feed(frame)
    assert len(readings) >= 39
    times = [r.t for r in readings]
    assert times == sorted(times)
    steady = readings[5:-5]  # away from the codec's priming and flush
    for r in steady:
        for ch in range(2):
            assert r.peak_db[ch] == pytest.approx(-20.0, abs=0.3)  # a lossy codec's peaks
            assert r.rms_db[ch] == pytest.approx(-20.0 - SINE_RMS, abs=0.1)
    assert steady[-1].momentary_lufs == pytest.approx(-20.0, abs=0.3)
    assert steady[-1].short_term_lufs == pytest.approx(-20.0, abs=0.3)


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [0.0, -1.0, 0.001, 60.0])
def test_bad_window(window: float) -> None:
    with pytest.raises(LevelsError, match="window") as info:
        AudioMeter(window=window)
    assert isinstance(info.value, TesseraError)
    assert "\n" not in str(info.value)


def test_too_many_channels() -> None:
    frame = av.AudioFrame(format="flt", layout="33 channels", samples=16)
    frame.sample_rate = RATE
    with pytest.raises(LevelsError, match="33 channels"):
        AudioMeter().feed(frame)


def test_empty_frame_is_nothing() -> None:
    frame = av.AudioFrame(format="fltp", layout="stereo", samples=0)
    frame.sample_rate = RATE
    assert AudioMeter().feed(frame) == []


def test_eight_planar_channels_go_through_the_resampler() -> None:
    # PyAV cannot make or read planar frames of 8 channels plane by plane: FFmpeg makes one
    # here from packed floats (as a 7.1 AAC decoder hands them on), and the meter packs it again.
    x = np.zeros((RATE, 8), dtype=np.float32)
    x[:, 2] = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(RATE) / RATE)  # FC at -6.02 dBFS
    packed = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="7.1")
    packed.sample_rate = RATE
    packed.pts = 0
    planar = av.AudioResampler(format="fltp", layout="7.1", rate=RATE).resample(packed)
    assert planar[0].format.name == "fltp"
    readings = feed(AudioMeter(), iter(planar))
    assert len(readings) == 10
    last = readings[-1]
    assert last.peak_db[2] == pytest.approx(-6.02, abs=LEVEL_TOL)
    assert set(last.peak_db[:2] + last.peak_db[3:]) == {FLOOR_DB}
    assert last.momentary_lufs == pytest.approx(-6.02 - SINE_RMS, abs=LOUDNESS_TOL)


# -- against FFmpeg's ebur128 ------------------------------------------------------------------
# The meter K-weights each 100 ms block in the frequency domain (see levels.py); FFmpeg's
# ebur128 filter runs the BS.1770 biquads sample by sample. They agree wherever the energy is
# above the 38 Hz high-pass.


def ebur128_reference(x: np.ndarray) -> list[tuple[float, float]]:
    """(momentary, short-term) after each 100 ms block of stereo ``x`` (2 x samples, 48 kHz),
    by FFmpeg's ebur128 filter."""
    graph = av.filter.Graph()
    src = graph.add_abuffer(
        sample_rate=RATE, format="fltp", layout="stereo", channels=2, time_base=Fraction(1, RATE)
    )
    to_dbl = graph.add("aformat", "sample_fmts=dbl")
    meter = graph.add("ebur128", "metadata=1")
    sink = graph.add("abuffersink")
    src.link_to(to_dbl)
    to_dbl.link_to(meter)
    meter.link_to(sink)
    graph.configure()
    values: list[tuple[float, float]] = []
    for frame in frames_of_samples(x):
        src.push(frame)
        while True:
            try:
                out = sink.pull()
            except (BlockingIOError, av.EOFError):
                break
            meta = out.metadata
            values.append((float(meta["lavfi.r128.M"]), float(meta["lavfi.r128.S"])))
    return values


def frames_of_samples(x: np.ndarray, frame_size: int = 1024) -> Iterator[av.AudioFrame]:
    fmt = av.AudioFormat("fltp")
    for s in range(0, x.shape[1], frame_size):
        yield make_frame(x[:, s : s + frame_size], fmt, "stereo", RATE, s)


def programme_signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(6 * RATE) / RATE
    gate = (np.sin(2 * np.pi * 0.7 * t) > 0).astype(np.float64)
    speechy = rng.normal(0, 0.2, (2, len(t))) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t))
    return {
        "30 Hz sine": np.vstack([0.5 * np.sin(2 * np.pi * 30 * t)] * 2),
        "100 Hz sine": np.vstack([0.5 * np.sin(2 * np.pi * 100 * t)] * 2),
        "8 kHz sine": np.vstack([0.3 * np.sin(2 * np.pi * 8000 * t)] * 2),
        "white noise": rng.normal(0, 0.1, (2, len(t))),
        "gated noise": rng.normal(0, 0.1, (2, len(t))) * gate,
        "modulated noise": speechy,
    }


SIGNALS = [*programme_signals(), "aac tone"]


@pytest.mark.parametrize("name", SIGNALS)
def test_loudness_matches_ffmpegs_ebur128(name: str) -> None:
    if name == "aac tone":
        x = np.concatenate([f.to_ndarray() for f in aac_round_trip(-18.0, 6.0)], axis=1)
    else:
        x = programme_signals()[name]
    x = x.astype(np.float32)
    readings = feed(AudioMeter(), frames_of_samples(x))
    reference = ebur128_reference(x)
    compared = 0
    for reading, (m_ref, s_ref) in zip(readings, reference, strict=False):
        # Where both measure programme (after 400 ms / 3 s; above -45 LUFS, below which a
        # gate's edges are all there is, and ebur128's filters ring on into the silence).
        if reading.momentary_lufs is not None and m_ref > -45:
            assert reading.momentary_lufs == pytest.approx(m_ref, abs=0.1), name
            compared += 1
        if reading.short_term_lufs is not None and s_ref > -45:
            assert reading.short_term_lufs == pytest.approx(s_ref, abs=0.1), name
    assert compared >= 20
