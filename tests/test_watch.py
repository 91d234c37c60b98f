"""A source's alarm conditions (pipeline/monitoring/watch.py): scripted observations, and real
media made here with PyAV decoded, scaled and metered the way a grabber does (without its
pacing, so minutes of content take seconds): each condition is raised once with its onset and
cleared at its end, one cause gives one alarm, and two minutes of ordinary moving pictures with
sound raise nothing."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from pipeline.monitoring.alarms import AlarmKind
from pipeline.monitoring.watch import Change, Cleared, PictureProbe, Raised, SourceWatch
from pipeline.producers.levels import AudioMeter
from pipeline.producers.scale import TileScaler
from tests.alarmmedia import Span, scripted_clip

WALL0 = 1_000_000.0  # the wall clock of the scripted runs: source time + WALL0
FPS = 25


def feed_pictures(watch: SourceWatch, probe: PictureProbe, pictures: list[np.ndarray],
                  t0: float = 0.0) -> list[Change]:  # fmt: skip
    changes: list[Change] = []
    for i, y in enumerate(pictures):
        t = t0 + i / FPS
        dark, diff, since = probe.measure(t, y)
        changes += watch.picture(t, t + WALL0, dark, diff, since)
        changes += watch.tick(t + WALL0)
    return changes


def moving(i: int) -> np.ndarray:
    return ((np.arange(90 * 160).reshape(90, 160) + 7 * i) % 200 + 30).astype(np.uint8)


def test_black_is_raised_at_its_onset_and_cleared_at_its_end() -> None:
    watch, probe = SourceWatch(), PictureProbe()
    watch.start(WALL0)
    black = np.full((90, 160), 16, np.uint8)
    pictures = [moving(i) if not 50 <= i < 100 else black for i in range(150)]
    changes = feed_pictures(watch, probe, pictures)
    assert changes == [
        Raised(AlarmKind.BLACK, 2.0, 2.0 + WALL0, 1.0),
        Cleared(AlarmKind.BLACK, 2.0, 4.0, 4.0 + WALL0, 1.0),
    ]  # a black picture is still too, but only black is raised: one cause, one alarm


def test_freeze_onset_is_the_first_picture_of_the_still_run() -> None:
    watch, probe = SourceWatch(), PictureProbe()
    watch.start(WALL0)
    pictures = [moving(min(i, 40)) if i < 120 else moving(i) for i in range(160)]
    changes = feed_pictures(watch, probe, pictures)
    assert [type(c) for c in changes] == [Raised, Cleared]
    raised, cleared = changes
    assert raised.kind is AlarmKind.FREEZE and raised.onset == pytest.approx(40 / FPS)
    assert cleared.end == pytest.approx(120 / FPS)


def test_a_stretch_shorter_than_the_debounce_raises_nothing() -> None:
    watch, probe = SourceWatch(), PictureProbe()
    watch.start(WALL0)
    black = np.full((90, 160), 16, np.uint8)
    pictures = [black if 50 <= i < 60 else moving(i) for i in range(100)]  # 0.4 s
    assert feed_pictures(watch, probe, pictures) == []


def test_lost_counts_from_the_last_picture_and_ends_picture_conditions() -> None:
    watch, probe = SourceWatch(), PictureProbe()
    watch.start(WALL0)
    black = np.full((90, 160), 16, np.uint8)
    changes = feed_pictures(watch, probe, [black] * 50)  # black from 0 to 2 s
    assert changes == [Raised(AlarmKind.BLACK, 0.0, WALL0, 1.0)]
    last = 49 / FPS
    changes = []
    for k in range(1, 20):  # no pictures for the next 1.9 s
        changes += watch.tick(WALL0 + last + k * 0.1)
    kinds = [(type(c).__name__, c.kind) for c in changes]
    assert kinds == [("Cleared", AlarmKind.BLACK), ("Raised", AlarmKind.LOST)]
    assert changes[0].end == pytest.approx(last)
    lost = changes[1]
    assert isinstance(lost, Raised) and lost.onset_wall == pytest.approx(WALL0 + last)
    assert lost.onset == pytest.approx(last)
    back = watch.picture(3.0, WALL0 + 3.0, 0.0, 1.0, 3.0)
    assert [(type(c), c.kind) for c in back] == [(Cleared, AlarmKind.LOST)]


def test_silence_and_loudness_are_one_alarm_and_no_audio_needs_expected_audio() -> None:
    watch = SourceWatch()
    watch.start(WALL0)
    changes: list[Change] = []
    for k in range(60):  # 6 s of readings: loud, then silent from 2 s, back at 4 s
        t = 0.1 * (k + 1)
        silent = 2.0 <= t - 0.1 < 4.0
        peaks = (-120.0, -120.0) if silent else (-20.0, -20.0)
        lufs = -70.0 if silent else -20.0
        changes += watch.picture(t, WALL0 + t, 0.0, 1.0, t)
        changes += watch.audio(t, WALL0 + t, peaks, lufs)
    assert [(type(c), c.kind) for c in changes] == [
        (Raised, AlarmKind.SILENCE),
        (Cleared, AlarmKind.SILENCE),
    ]
    assert changes[0].onset == pytest.approx(2.0)  # the first silent window began then
    # Readings stop while pictures go on: no-audio (the source has had audio).
    more: list[Change] = []
    for k in range(1, 15):
        t = 6.0 + 0.1 * k
        more += watch.picture(t, WALL0 + t, 0.0, 1.0, t)
        more += watch.tick(WALL0 + t)
    assert [(type(c), c.kind) for c in more] == [(Raised, AlarmKind.NO_AUDIO)]
    assert more[0].onset_wall == pytest.approx(WALL0 + 6.0)
    fresh = SourceWatch()  # never had audio: readings never expected
    fresh.start(WALL0)
    assert not any(
        fresh.picture(t, WALL0 + t, 0.0, 1.0, t) + fresh.tick(WALL0 + t)
        for t in np.arange(0.0, 3.0, 0.04)
    )


def run_media(data: bytes, tile: tuple[int, int] = (160, 90)) -> list[Change]:
    """Decode ``data`` as a grabber does (first video and audio stream, tile scaling, the
    meter), unpaced, feeding a SourceWatch on a wall clock of source time + WALL0."""
    watch, probe = SourceWatch(), PictureProbe()
    watch.start(WALL0)
    scaler = TileScaler(*tile)
    meter = AudioMeter()
    changes: list[Change] = []
    with av.open(io.BytesIO(data)) as container:
        streams = [container.streams.video[0], *container.streams.audio[:1]]
        for packet in container.demux(streams):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    t = float(frame.time or 0.0)
                    y = np.frombuffer(scaler.scale(frame), np.uint8, count=tile[0] * tile[1])
                    dark, diff, since = probe.measure(t, y.reshape(tile[1], tile[0]))
                    changes += watch.picture(t, t + WALL0, dark, diff, since)
                    changes += watch.tick(t + WALL0)
                else:
                    for r in meter.feed(frame):
                        changes += watch.audio(r.t, r.t + WALL0, r.peak_db, r.short_term_lufs)
    return changes


def onsets(changes: list[Change], cls: type) -> dict[AlarmKind, float]:
    return {c.kind: (c.onset if cls is Raised else c.end) for c in changes if type(c) is cls}


def test_decoded_media_raises_each_condition_with_its_onset_and_end() -> None:
    spans = [Span("black", 3.0, 6.0), Span("freeze", 8.0, 11.0), Span("silence", 12.0, 15.0)]
    changes = run_media(scripted_clip(17.0, spans))
    assert [(type(c).__name__, c.kind.value) for c in changes] == [
        ("Raised", "black"), ("Cleared", "black"),
        ("Raised", "freeze"), ("Cleared", "freeze"),
        ("Raised", "silence"), ("Cleared", "silence"),
    ]  # fmt: skip
    raised, ended = onsets(changes, Raised), onsets(changes, Cleared)
    frame = 1 / FPS
    assert raised[AlarmKind.BLACK] == pytest.approx(3.0, abs=frame)
    assert ended[AlarmKind.BLACK] == pytest.approx(6.0, abs=frame)
    assert raised[AlarmKind.FREEZE] == pytest.approx(8.0, abs=frame)
    assert ended[AlarmKind.FREEZE] == pytest.approx(11.0, abs=frame)
    # Readings are 100 ms windows, and AAC smears an edge over a frame (21 ms) or two.
    assert raised[AlarmKind.SILENCE] == pytest.approx(12.0, abs=0.15)
    assert ended[AlarmKind.SILENCE] == pytest.approx(15.0, abs=0.15)


def test_six_channels_one_loud_is_loudness() -> None:
    levels = (-40.0, -40.0, 0.0, None, -40.0, -40.0)  # centre at full scale: too loud
    changes = run_media(scripted_clip(8.0, levels=levels, layout="5.1"))
    assert [(type(c).__name__, c.kind.value) for c in changes] == [("Raised", "loudness")]
    # Short-term loudness is known once 3 s were heard; it was out of range from the start.
    assert changes[0].onset == pytest.approx(3.0, abs=0.15)


def test_two_minutes_of_ordinary_content_raise_nothing() -> None:
    """The false-alarm test: moving pictures and sound for 2 minutes, no alarm at all."""
    assert run_media(scripted_clip(120.0)) == []
