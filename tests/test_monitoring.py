"""Monitoring, the pure part: the ``alarms=`` language and its canonical form, the picture
measurements on numpy pictures, and each detector on synthetic sequences with known onsets,
plus a false-alarm property (moving content and normal sound raise nothing)."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import TesseraError
from pipeline.monitoring import (
    DEFAULT_HOLDS,
    AlarmKind,
    AlarmSettings,
    AlarmSyntaxError,
    ConditionDetector,
    Derived,
    Ended,
    Started,
    Transition,
    canonical,
    parse_alarms,
)
from pipeline.monitoring.detect import (
    ABSENCE_GAP,
    DEBOUNCE,
    StillReference,
    black_fraction,
    is_absent,
    is_black,
    is_loudness_out,
    is_silent,
    is_still,
    picture_difference,
)

# No example database: the suite must not write files into the checkout.
_PROPERTY = settings(database=None, deadline=None, max_examples=150)

OFF = AlarmSettings.off()
DEFAULTS = AlarmSettings()

# --- the alarms= language ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", DEFAULTS),
        ("   ", DEFAULTS),
        ("default", DEFAULTS),
        ("DEFAULT", DEFAULTS),
        ("off", OFF),
        (
            "black:2,freeze:5,silence:10",
            AlarmSettings(black=2.0, freeze=5.0, silence=10.0),
        ),
        ("black", DEFAULTS),
        ("black:3", AlarmSettings(black=3.0)),
        ("black:2.5", AlarmSettings(black=2.5)),
        ("black:.5", AlarmSettings(black=0.5)),
        ("black:5.", AlarmSettings(black=5.0)),
        ("black:2.125", AlarmSettings(black=2.125)),
        ("black:7s", AlarmSettings(black=7.0)),
        ("black:7S", AlarmSettings(black=7.0)),
        ("black:600", AlarmSettings(black=600.0)),
        ("black:0.5", AlarmSettings(black=0.5)),
        ("-freeze", AlarmSettings(freeze=None)),
        ("default,-freeze", AlarmSettings(freeze=None)),
        ("off,black", OFF.with_hold(AlarmKind.BLACK, 2.0)),
        (
            "off,lost:7,no-audio",
            OFF.with_hold(AlarmKind.LOST, 7.0).with_hold(AlarmKind.NO_AUDIO, 5),
        ),
        ("no-audio:9", AlarmSettings(no_audio=9.0)),
        ("-no-audio", AlarmSettings(no_audio=None)),
        ("loudness:30,-lost", AlarmSettings(loudness=30.0, lost=None)),
        (" Black : 3 , - Lost ", AlarmSettings(black=3.0, lost=None)),
        ("SILENCE:10", AlarmSettings(silence=10.0)),
    ],
)
def test_parse(text: str, expected: AlarmSettings) -> None:
    assert parse_alarms(text) == expected


@pytest.mark.parametrize(
    ("text", "position", "says"),
    [
        ("blak", 0, "unknown alarm kind 'blak' at column 1: did you mean 'black'?"),
        ("black,zebra", 6, "unknown alarm kind 'zebra' at column 7: use one of black, freeze"),
        ("black,", 5, "empty entry at column 6"),
        (",black", 0, "empty entry at column 1"),
        ("black,,freeze", 6, "empty entry at column 7"),
        ("black, ,freeze", 7, "empty entry at column 8"),
        (",", 0, "empty entry at column 1"),
        ("black:", 5, "missing seconds after 'black:' at column 6"),
        ("black:  ", 5, "missing seconds"),
        ("black:0.1", 6, "black hold 0.1 s is out of range at column 7: use 0.5 to 600 seconds"),
        ("black:601", 6, "out of range"),
        ("black:0", 6, "out of range"),
        ("black:2.1234", 6, "'2.1234' has more than 3 decimals at column 7"),
        ("black:x", 6, "'x' is not a number of seconds at column 7"),
        ("black:1e3", 6, "not a number"),
        ("black:nan", 6, "not a number"),
        ("black:inf", 6, "not a number"),
        ("black:-2", 6, "not a number"),
        ("black:2 5", 6, "not a number"),
        ("black:٣", 6, "not a number"),
        ("black:.", 6, "not a number"),
        ("-black:2", 6, "'-black' takes no seconds at column 7"),
        ("black,off", 6, "'off' after other entries at column 7: put 'off' first"),
        ("black,default", 6, "'default' after other entries"),
        ("-off", 0, "'-off' is not a kind"),
        ("off:5", 3, "'off' takes no seconds at column 4"),
        ("black,Black", 6, "'black' named twice at column 7: name each kind once"),
        ("black 2", 6, "unexpected '2' after 'black' at column 7"),
        ("-", 0, "missing alarm kind at column 1"),
        (":5", 0, "missing alarm kind at column 1"),
        ("freeze,-", 7, "missing alarm kind at column 8"),
    ],
)
def test_errors(text: str, position: int, says: str) -> None:
    with pytest.raises(AlarmSyntaxError) as caught:
        parse_alarms(text)
    error = caught.value
    assert error.position == position
    assert error.column == position + 1
    assert says in str(error)
    assert "\n" not in str(error)
    assert error.text == text


def test_error_is_a_tessera_error_with_a_caret() -> None:
    with pytest.raises(TesseraError) as caught:
        parse_alarms("black:2,frezee:5")
    error = caught.value
    assert isinstance(error, AlarmSyntaxError)
    assert error.caret() == "black:2,frezee:5\n        ^"
    assert error.render() == f"{error}\n{error.caret()}"
    again = pickle.loads(pickle.dumps(error))
    assert (again.message, again.position, again.text) == (error.message, 8, error.text)


def test_caret_windows_a_long_text() -> None:
    text = "black:2," + " " * 100 + "blak" + " " * 100
    with pytest.raises(AlarmSyntaxError) as caught:
        parse_alarms(text)
    shown, caret = caught.value.caret().split("\n")
    assert shown.startswith("...") and shown.endswith("...") and len(shown) < 100
    assert shown[caret.index("^") :].startswith("blak")


def test_settings_refuse_holds_they_cannot_name() -> None:
    for bad in (0.4, 601.0, 2.0004, float("nan")):
        with pytest.raises(ValueError):
            AlarmSettings(black=bad)


def test_defaults() -> None:
    assert DEFAULTS.hold(AlarmKind.BLACK) == 2
    assert DEFAULTS.hold(AlarmKind.FREEZE) == 2
    assert DEFAULTS.hold(AlarmKind.SILENCE) == 2
    assert DEFAULTS.hold(AlarmKind.LOUDNESS) == 5
    assert DEFAULTS.hold(AlarmKind.NO_AUDIO) == 5
    assert DEFAULTS.hold(AlarmKind.LOST) == 5
    assert [kind.value for kind in AlarmKind] == [
        "black",
        "freeze",
        "silence",
        "loudness",
        "no-audio",
        "lost",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("default", ""),
        ("black:2,freeze:2.0,silence", ""),
        ("off", "off"),
        ("black:2,freeze:5,silence:10", "freeze:5,silence:10"),
        ("silence:10,freeze:5", "freeze:5,silence:10"),
        ("-freeze", "-freeze"),
        ("off,black", "off,black"),
        ("off,lost:7,black:3", "off,black:3,lost:7"),
        ("black:2.500", "black:2.5"),
        ("black:.5s", "black:0.5"),
    ],
)
def test_canonical(text: str, expected: str) -> None:
    assert canonical(parse_alarms(text)) == expected


_HOLD = st.one_of(
    st.none(),
    st.sampled_from([0.5, 2.0, 5.0, 600.0]),
    st.integers(500, 600_000).map(lambda ms: ms / 1000),
)
_SETTINGS = st.builds(
    AlarmSettings,
    black=_HOLD,
    freeze=_HOLD,
    silence=_HOLD,
    loudness=_HOLD,
    no_audio=_HOLD,
    lost=_HOLD,
)


@_PROPERTY
@given(_SETTINGS)
def test_canonical_round_trips(x: AlarmSettings) -> None:
    text = canonical(x)
    assert parse_alarms(text) == x
    assert (text == "") == (x == DEFAULTS)


def _typed(x: AlarmSettings, kind: AlarmKind, style: int) -> str:
    """One way a person could write ``kind``'s hold in ``x``."""
    hold = x.hold(kind)
    name = kind.value.upper() if style & 1 else kind.value
    if hold is None:
        return f"-{name}" if style & 2 else f" - {name} "
    if hold == DEFAULT_HOLDS[kind] and style & 4:
        return name
    number = f"{hold:.3f}" if style & 2 else repr(hold)
    return f"{name}:{number}s" if style & 8 else f"{name} : {number}"


@_PROPERTY
@given(_SETTINGS, st.permutations(list(AlarmKind)), st.lists(st.integers(0, 15), min_size=6))
def test_canonical_ignores_order_and_spelling(
    x: AlarmSettings, order: list[AlarmKind], styles: list[int]
) -> None:
    typed = ",".join(_typed(x, kind, style) for kind, style in zip(order, styles, strict=False))
    assert parse_alarms(typed) == x
    assert canonical(parse_alarms(typed)) == canonical(x)
    # Starting from everything off, naming only the kinds that are on, gives the same.
    on = [kind for kind in order if x.hold(kind) is not None]
    assert canonical(parse_alarms(",".join(["off"] + [_typed(x, k, 0) for k in on]))) == (
        canonical(x)
    )


_ALPHABET = st.sampled_from(list("blackfreezsilno-audiotdf:,.0123456789 s\t%é"))


@_PROPERTY
@given(st.one_of(st.text(_ALPHABET, max_size=40), st.text(max_size=20)))
def test_errors_point_inside_the_input(text: str) -> None:
    try:
        result = parse_alarms(text)
    except AlarmSyntaxError as error:
        assert 0 <= error.position < len(text)
        assert error.text == text
        assert f"at column {error.position + 1}:" in str(error)
        assert "\n" not in str(error)
    else:
        assert isinstance(result, AlarmSettings)


# --- measurements on pictures ----------------------------------------------------------------

H, W = 36, 64


def _black(full_range: bool = False) -> np.ndarray:
    return np.full((H, W), 0 if full_range else 16, np.uint8)


def _texture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(16, 236, (H, W), dtype=np.uint8)


def test_black_fraction_of_a_black_frame() -> None:
    assert black_fraction(_black()) == 1.0
    assert black_fraction(_black(full_range=True), full_range=True) == 1.0
    assert is_black(black_fraction(_black()))


def test_black_fraction_levels_match_blackdetect() -> None:
    # Limited range: 16 + 0.10 * 219 = 37.9, truncated: 37 is dark, 38 is not.
    assert black_fraction(np.full((H, W), 37, np.uint8)) == 1.0
    assert black_fraction(np.full((H, W), 38, np.uint8)) == 0.0
    # Full range: 0.10 * 255 = 25.5, truncated: 25 is dark, 26 is not.
    assert black_fraction(np.full((H, W), 25, np.uint8), full_range=True) == 1.0
    assert black_fraction(np.full((H, W), 26, np.uint8), full_range=True) == 0.0


def test_black_fraction_of_a_noisy_frame() -> None:
    fraction = black_fraction(_texture(1))
    assert fraction < 0.2
    assert not is_black(fraction)


def test_two_percent_bright_is_black_three_is_not() -> None:
    picture = np.full((100, 100), 16, np.uint8)
    picture[:, 10:12] = 200  # 2 % of the columns, also 2 % of the decimated view's columns
    assert black_fraction(picture) == pytest.approx(0.98)
    assert is_black(black_fraction(picture))
    picture[:, 20:22] = 200
    assert black_fraction(picture) == pytest.approx(0.96)
    assert not is_black(black_fraction(picture))
    # Read in full, the same: the decimation does not change the answer here.
    assert black_fraction(picture, step=1) == pytest.approx(0.96)


def test_black_fraction_of_odd_and_empty_pictures() -> None:
    assert black_fraction(np.full((3, 5), 16, np.uint8)) == 1.0
    assert black_fraction(np.zeros((0, 4), np.uint8)) == 0.0


def test_picture_difference() -> None:
    a = _texture(2)
    assert picture_difference(a, a) == 0.0
    assert is_still(picture_difference(a, a.copy()))
    assert picture_difference(np.zeros((H, W), np.uint8), np.full((H, W), 255, np.uint8)) == 1.0
    assert not is_still(picture_difference(a, _texture(3)))
    # One level up everywhere is 1/255 of the range: far above -60 dB (0.001), not still.
    assert picture_difference(a, a + 1) == pytest.approx(1 / 255)
    assert not is_still(picture_difference(a, a + 1))
    # A few pixels' noise (encoder flicker) stays still.
    flicker = a.copy()
    flicker[0, 0:4] += 1
    assert is_still(picture_difference(a, flicker))
    with pytest.raises(ValueError, match="different sizes"):
        picture_difference(a, a[:10])


def test_still_reference_keeps_the_first_picture_of_a_still_run() -> None:
    ref = StillReference()
    a = _texture(4)
    assert ref.difference(0.0, a) == 1.0 and ref.since == 0.0
    assert ref.difference(0.04, a) == 0.0 and ref.since == 0.0
    # A slow fade: each step tiny, but measured from the reference it adds up.
    faded = a.copy()
    faded[:2] += 1
    assert is_still(picture_difference(a, faded))
    for k in range(1, 40):
        step = a.copy()
        step[: 2 * k] += 1
        ref.difference(0.04 * (k + 1), step)
    assert ref.since is not None and ref.since > 0.04
    ref.reset()
    assert ref.since is None


# --- detectors on synthetic sequences --------------------------------------------------------

FPS = 25


def _frames(seconds: float) -> Iterator[tuple[int, float]]:
    for n in range(round(seconds * FPS)):
        yield n, n / FPS


def _moving(n: int) -> np.ndarray:
    """Moving content: a texture sliding 3 pixels a frame."""
    return np.roll(_texture(7), 3 * n, axis=1)


def _run(
    detector: ConditionDetector, seq: Iterator[tuple[float, bool, float]]
) -> list[tuple[float, Transition]]:
    out = []
    for t, bad, value in seq:
        transition = detector.observe(t, bad, value)
        if transition is not None:
            out.append((t, transition))
    return out


def test_black_at_a_known_time() -> None:
    # Black from frame 50 (2.00 s) to frame 150 (6.00 s, the first bright frame again).
    detector = ConditionDetector(AlarmKind.BLACK)
    seen: list[tuple[float, Transition]] = []
    for n, t in _frames(8):
        picture = _black() if 50 <= n < 150 else _moving(n)
        fraction = black_fraction(picture)
        transition = detector.observe(t, is_black(fraction), fraction)
        if transition is not None:
            seen.append((t, transition))
    assert seen == [
        (2.52, Started(AlarmKind.BLACK, 2.0, 1.0)),  # the first frame 0.5 s after the onset
        (6.0, Ended(AlarmKind.BLACK, 2.0, 6.0, 1.0)),
    ]
    assert not detector.active


def test_started_exactly_at_the_debounce() -> None:
    # At 50 fps the debounce ends on a frame: frame 100 (2.0 s) + 25 frames = 2.5 s.
    detector = ConditionDetector(AlarmKind.BLACK)
    started = [
        (n, tr) for n in range(200) if (tr := detector.observe(n / 50, n >= 100, 1.0)) is not None
    ]
    assert started == [(125, Started(AlarmKind.BLACK, 2.0, 1.0))]
    assert detector.active and detector.onset == 2.0


def test_freeze_at_a_known_time() -> None:
    # The picture of frame 50 (2.00 s) repeats until frame 125; frame 125 moves again.
    detector = ConditionDetector(AlarmKind.FREEZE)
    ref = StillReference()
    seen = []
    for n, t in _frames(8):
        picture = _moving(50) if 50 <= n < 125 else _moving(n)
        diff = ref.difference(t, picture)
        transition = detector.observe(t, is_still(diff), diff, since=ref.since)
        if transition is not None:
            seen.append((t, transition))
    assert seen == [
        (2.52, Started(AlarmKind.FREEZE, 2.0, 0.0)),  # onset: the frozen picture's first frame
        (5.0, Ended(AlarmKind.FREEZE, 2.0, 5.0, 0.0)),
    ]


def test_silence_on_six_channels() -> None:
    # Blocks of 1024 samples at 48 kHz; all six channels quiet from block 150 (3.2 s) to 300.
    block = 1024 / 48_000
    detector = ConditionDetector(AlarmKind.SILENCE)
    seen = []
    for n in range(400):
        t = n * block
        peaks = [-80.0] * 6 if 150 <= n < 300 else [-20.0, -80.0, -80.0, -80.0, -80.0, -3.0]
        if 200 <= n < 210:
            peaks = [-65.0] * 6  # still silence, but louder: the worst is the quietest
        transition = detector.observe(t, is_silent(peaks), max(peaks))
        if transition is not None:
            seen.append((n, transition))
    onset = 150 * block
    assert seen == [
        (174, Started(AlarmKind.SILENCE, onset, -80.0)),  # 24 blocks = 0.512 s
        (300, Ended(AlarmKind.SILENCE, onset, 300 * block, -80.0)),
    ]


def test_one_loud_channel_is_not_silence() -> None:
    assert is_silent([-80.0] * 6)
    assert is_silent([-60.0] * 2)
    assert not is_silent([-80.0] * 5 + [-59.9])
    assert not is_silent([])


def test_loudness_out_of_range() -> None:
    # Short-term loudness every 100 ms: -23 LUFS, then too loud from 10.0 s to 14.0 s.
    detector = ConditionDetector(AlarmKind.LOUDNESS)
    seen = []
    for k in range(200):
        t = k / 10
        lufs = -23.0
        if 100 <= k < 140:
            lufs = -3.0 if k == 120 else -6.0
        transition = detector.observe(t, is_loudness_out(lufs), lufs)
        if transition is not None:
            seen.append((t, transition))
    assert seen == [
        (10.5, Started(AlarmKind.LOUDNESS, 10.0, -6.0)),
        (14.0, Ended(AlarmKind.LOUDNESS, 10.0, 14.0, -3.0)),
    ]
    assert is_loudness_out(-40.0) and is_loudness_out(float("-inf"))
    assert not is_loudness_out(-36.0) and not is_loudness_out(-9.0)


def test_no_audio_where_audio_was_expected() -> None:
    # Audio blocks every 0.1 s until 4.0 s, none until 8.0 s; the grabber ticks every 0.1 s.
    detector = ConditionDetector(AlarmKind.NO_AUDIO)
    last: float | None = None
    seen = []
    for k in range(120):
        t = k / 10
        if t <= 4.0 or t >= 8.0:
            last = t
        absent = is_absent(t, last)
        gap = round(t - last if last is not None else t, 6)
        transition = detector.observe(t, absent, gap, since=last)
        if transition is not None:
            seen.append((t, transition))
    assert seen == [
        (4.5, Started(AlarmKind.NO_AUDIO, 4.0, 0.3)),
        (8.0, Ended(AlarmKind.NO_AUDIO, 4.0, 8.0, 3.9)),
    ]
    assert not is_absent(1.0, 1.0 - ABSENCE_GAP)
    assert is_absent(1.0, None)


def test_a_blip_shorter_than_the_debounce_raises_nothing() -> None:
    detector = ConditionDetector(AlarmKind.BLACK)
    # Black for 12 frames (0.48 s), twice.
    seq = ((t, 50 <= n < 62 or 100 <= n < 112, 1.0) for n, t in _frames(6))
    assert _run(detector, seq) == []
    assert not detector.active and detector.onset is None


def test_time_going_back_ends_the_condition_and_starts_over() -> None:
    detector = ConditionDetector(AlarmKind.BLACK)
    assert detector.observe(10.0, True, 1.0) is None
    assert detector.observe(10.6, True, 1.0) == Started(AlarmKind.BLACK, 10.0, 1.0)
    assert detector.observe(11.0, True, 1.0) is None
    # A new stream from 0: the old condition ends where its timeline stopped.
    assert detector.observe(0.0, True, 1.0) == Ended(AlarmKind.BLACK, 10.0, 11.0, 1.0)
    assert detector.onset == 0.0 and not detector.active
    assert detector.observe(0.4, True, 1.0) is None
    assert detector.observe(0.5, True, 1.0) == Started(AlarmKind.BLACK, 0.0, 1.0)
    # Back again, to good content: it ends and nothing new begins.
    assert detector.observe(0.2, False, 0.0) == Ended(AlarmKind.BLACK, 0.0, 0.5, 1.0)
    assert detector.observe(0.3, False, 0.0) is None


def test_time_going_back_before_the_debounce_raises_nothing() -> None:
    detector = ConditionDetector(AlarmKind.FREEZE)
    assert detector.observe(5.0, True, 0.0) is None
    assert detector.observe(5.3, True, 0.0) is None
    assert detector.observe(1.0, True, 0.0) is None  # a restart: the run begins again at 1.0
    assert detector.observe(1.4, True, 0.0) is None
    assert detector.observe(1.5, True, 0.0) == Started(AlarmKind.FREEZE, 1.0, 0.0)


def test_equal_times_are_not_going_back() -> None:
    detector = ConditionDetector(AlarmKind.BLACK)
    detector.observe(1.0, True, 1.0)
    assert detector.observe(1.0, True, 1.0) is None
    assert detector.observe(1.5, True, 1.0) == Started(AlarmKind.BLACK, 1.0, 1.0)


def test_close_ends_a_started_condition() -> None:
    detector = ConditionDetector(AlarmKind.SILENCE)
    assert detector.close() is None
    detector.observe(1.0, True, -70.0)
    detector.observe(2.0, True, -90.0)
    assert detector.close() == Ended(AlarmKind.SILENCE, 1.0, 2.0, -90.0)
    assert detector.close() is None
    detector.observe(0.0, True, -70.0)
    assert detector.close() is None  # never started


def test_since_is_never_later_than_now() -> None:
    detector = ConditionDetector(AlarmKind.LOST)
    detector.observe(3.0, True, 0.0, since=9.0)
    assert detector.onset == 3.0


def test_debounce_must_be_positive() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            ConditionDetector(AlarmKind.BLACK, debounce=bad)
    assert ConditionDetector(AlarmKind.BLACK).debounce == DEBOUNCE


# --- per-mosaic alarms ------------------------------------------------------------------------


def test_derived_holds_per_mosaic() -> None:
    quick = Derived(parse_alarms("black:2"))
    slow = Derived(parse_alarms("black:10"))
    muted = Derived(parse_alarms("-black"))
    onset = 100.0
    assert quick.due(AlarmKind.BLACK, onset) == 102.0
    assert muted.due(AlarmKind.BLACK, onset) is None
    assert not quick.shows(AlarmKind.BLACK, onset, 101.99)
    assert quick.shows(AlarmKind.BLACK, onset, 102.0)
    assert not slow.shows(AlarmKind.BLACK, onset, 105.0)
    assert slow.shows(AlarmKind.BLACK, onset, 110.0)
    assert not muted.shows(AlarmKind.BLACK, onset, 1e9)
    # Ended at 106: the quick mosaic showed it until then, the slow one never.
    assert quick.shows(AlarmKind.BLACK, onset, 105.9, end=106.0)
    assert not quick.shows(AlarmKind.BLACK, onset, 106.0, end=106.0)
    assert quick.raised(AlarmKind.BLACK, onset, 106.0)
    assert not slow.raised(AlarmKind.BLACK, onset, 106.0)
    assert not slow.shows(AlarmKind.BLACK, onset, 107.0, end=106.0)
    assert not muted.raised(AlarmKind.BLACK, onset, 1e9)
    # Frame times are not exact in binary: 2 s after 2.0 at 25 fps is frame 100.
    assert quick.shows(AlarmKind.BLACK, 50 / FPS, 100 / FPS)


# --- false alarms -----------------------------------------------------------------------------


def _watch(
    seconds: float,
    picture_at: Callable[[int], np.ndarray],
    peaks_at: Callable[[int], list[float]],
    lufs_at: Callable[[int], float],
) -> list[Transition]:
    """Every transition of every picture and audio detector over ``seconds`` of content."""
    black = ConditionDetector(AlarmKind.BLACK)
    freeze = ConditionDetector(AlarmKind.FREEZE)
    silence = ConditionDetector(AlarmKind.SILENCE)
    loudness = ConditionDetector(AlarmKind.LOUDNESS)
    ref = StillReference()
    out: list[Transition | None] = []
    for n, t in _frames(seconds):
        picture = picture_at(n)
        fraction = black_fraction(picture)
        out.append(black.observe(t, is_black(fraction), fraction))
        diff = ref.difference(t, picture)
        out.append(freeze.observe(t, is_still(diff), diff, since=ref.since))
        peaks = peaks_at(n)
        out.append(silence.observe(t, is_silent(peaks), max(peaks)))
        lufs = lufs_at(n)
        out.append(loudness.observe(t, is_loudness_out(lufs), lufs))
    return [x for x in out if x is not None]


def test_two_minutes_of_moving_content_raise_nothing() -> None:
    rng = np.random.default_rng(11)
    peaks = rng.uniform(-40.0, -1.0, (120 * FPS, 2))
    lufs = rng.uniform(-30.0, -14.0, 120 * FPS)
    assert _watch(120, _moving, lambda n: list(peaks[n]), lambda n: float(lufs[n])) == []


@_PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    speed=st.integers(1, 5),
    level=st.integers(0, 120),
    spread=st.integers(24, 100),
)
def test_random_moving_content_raises_nothing(
    seed: int, speed: int, level: int, spread: int
) -> None:
    rng = np.random.default_rng(seed)
    # A dim or bright texture (never a flat picture) that slides ``speed`` pixels a frame.
    texture = rng.integers(16 + level, 16 + level + spread, (H, W), dtype=np.uint8)
    peaks = rng.uniform(-50.0, 0.0, (3 * FPS, 6))
    lufs = rng.uniform(-35.0, -10.0, 3 * FPS)
    transitions = _watch(
        3,
        lambda n: np.roll(texture, speed * n, axis=1),
        lambda n: list(peaks[n]),
        lambda n: float(lufs[n]),
    )
    assert transitions == []
