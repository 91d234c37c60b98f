"""The audio routing matrix: the pure model and mixer, then a real JIT worker switching it.

The pure tests mix numpy test signals (a tone or a constant per channel) and check the output
samples; the worker test plays a 5.1 WAV with a tone per channel to an aiortc viewer over
loopback and reads which tone each ear hears from an FFT (:mod:`tests.jitmedia`).
"""

from __future__ import annotations

import fractions
import math
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from nats.aio.client import Client

from pipeline.errors import MessageError
from pipeline.messages.codec import decode_session_command, encode
from pipeline.messages.control import Play, RouteChannels, SelectChannels
from pipeline.messages.events import SessionInput
from pipeline.producers.jit.audio import FRAME_SAMPLES, RATE, Mixer, mix
from pipeline.producers.jit.channels import ChannelLayout, stereo_matrix
from pipeline.producers.jit.errors import CommandError
from pipeline.producers.jit.routing import (
    ITU_CENTRE,
    MAX_SOURCES,
    ChannelMatrix,
    check_routes,
    downmix_matrix,
    pair_matrix,
    preset_matrix,
    selection_matrix,
)
from tests.jitmedia import dominant_frequency, make_tones, make_video
from tests.test_jit_worker import (
    browser_like_jitter_buffer,  # noqa: F401 (a fixture)
    control,
    record,
    watch,
)
from tests.test_jit_worker import session as session  # noqa: F401 (a fixture)

FIVE_ONE = ("FL", "FR", "FC", "LFE", "BL", "BR")
SIX_TONES = (440, 550, 660, 1000, 770, 880)
"""Hz of channels 0-5 of the test source (FL FR FC LFE BL BR)."""


def tones(freqs: tuple[int, ...], count: int = FRAME_SAMPLES * 10) -> npt.NDArray[np.float32]:
    t = np.arange(count) / RATE
    return np.stack([0.25 * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def stereo(packed: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """Packed s16 stereo as ``(n, 2)`` floats (full scale 1.0)."""
    return packed.reshape(-1, 2).astype(np.float64) / 32767.0


def level(signal: npt.NDArray[np.float64], freq: int) -> float:
    """Amplitude of the ``freq`` component of ``signal`` (a whole number of periods)."""
    t = np.arange(len(signal)) / RATE
    return float(2 * abs(np.mean(signal * np.exp(-2j * np.pi * freq * t))))


# -- the model ------------------------------------------------------------------------------------


def test_check_routes_builds_the_matrix() -> None:
    layout = ChannelLayout((2, 6))
    matrix = check_routes([[(3, 1.0)], [(3, 0.5), (7, 2.0)]], layout)
    assert matrix.routes == (((3, 1.0),), ((3, 0.5), (7, 2.0)))
    assert matrix.outputs == 2 and matrix.sources == (3, 7)
    left, right = matrix.gains(8)
    assert left == (0, 0, 0, 1.0, 0, 0, 0, 0)
    assert right == (0, 0, 0, 0.5, 0, 0, 0, 2.0)
    # An output with no routes is silent; a 6-output matrix is as valid as a stereo one.
    assert check_routes([[], []], layout).sources == ()
    assert check_routes([[(c, 1.0)] for c in range(6)], layout, outputs=6).outputs == 6


@pytest.mark.parametrize(
    ("routes", "error"),
    [
        ([[(8, 1.0)], []], "L: channel 8 does not exist: the audio inputs have 8 channels (0-7)"),
        ([[], [(-1, 1.0)]], "R: channel -1 does not exist: the audio inputs have 8 channels (0-7)"),
        ([[(1, 1.0), (1, 0.5)], []], "L: channel 1 is routed twice: give it once"),
        ([[(1, 4.5)], []], "L: channel 1 has gain 4.5: use 0 to 4.0"),
        ([[(1, -0.5)], []], "L: channel 1 has gain -0.5: use 0 to 4.0"),
        ([[(1, math.nan)], []], "L: channel 1 has gain nan: use 0 to 4.0"),
        ([[(1, math.inf)], []], "L: channel 1 has gain inf: use 0 to 4.0"),
        ([[(1, 1.0)]], "1 output channels routed: the output has 2 (L, R)"),
        ([[], [], []], "3 output channels routed: the output has 2 (L, R)"),
    ],
)
def test_check_routes_refuses(routes: list[list[tuple[int, float]]], error: str) -> None:
    with pytest.raises(CommandError, match=f"^{re.escape(error)}$"):
        check_routes(routes, ChannelLayout((2, 6)))


def test_at_most_sixteen_source_channels() -> None:
    layout = ChannelLayout((24,))
    left = [(c, 0.1) for c in range(MAX_SOURCES)]
    assert len(check_routes([left, left], layout).sources) == MAX_SOURCES
    with pytest.raises(CommandError, match="17 source channels routed: at most 16"):
        check_routes([left, [(16, 1.0)]], layout)
    with pytest.raises(CommandError, match="no audio inputs"):
        check_routes([[], []], ChannelLayout(()))


@pytest.mark.parametrize(
    "selection", [(3,), (4, 5), (0, 1, 2), (0, 1, 2, 3, 4, 5), tuple(range(16))]
)
def test_selection_matrix_is_the_channels_rule(selection: tuple[int, ...]) -> None:
    # channels/1 keeps working exactly as before: the same gains as the old stereo rule.
    dense = selection_matrix(selection).gains(16)
    assert np.allclose(dense, stereo_matrix(selection, 16), rtol=0, atol=1e-12)


def test_presets() -> None:
    layout = ChannelLayout((2, 6, 1), names=(("FL", "FR"), FIVE_ONE, ("FC",)))
    assert layout.input_numbers == (2, 3, 4)
    assert layout.channel_inputs == (2, 2, 3, 3, 3, 3, 3, 3, 4)
    assert layout.channel_names == ("FL", "FR", *FIVE_ONE, "FC")
    assert pair_matrix(layout, 3).routes == (((2, 1.0),), ((3, 1.0),))
    assert pair_matrix(layout, 4).routes == (((8, 1.0),), ((8, 1.0),))  # mono: both ears
    itu = downmix_matrix(layout, 3)
    assert itu.routes == (
        ((2, 1.0), (4, ITU_CENTRE), (6, ITU_CENTRE)),
        ((3, 1.0), (4, ITU_CENTRE), (7, ITU_CENTRE)),
    )
    assert ITU_CENTRE == pytest.approx(0.7071, abs=1e-4)
    assert 5 not in itu.sources  # LFE dropped
    side = ChannelLayout((6,), names=(("FL", "FR", "FC", "LFE", "SL", "SR"),))
    assert downmix_matrix(side, 2).routes[0] == ((0, 1.0), (2, ITU_CENTRE), (4, ITU_CENTRE))
    assert preset_matrix("pair", layout, 2).routes == (((0, 1.0),), ((1, 1.0),))
    with pytest.raises(CommandError, match="^input 2 has no FC channel for a 5.1 downmix: its"):
        downmix_matrix(layout, 2)
    with pytest.raises(CommandError, match="channels are unnamed"):
        downmix_matrix(ChannelLayout((6,)), 2)
    with pytest.raises(CommandError, match="^input 1 is not an audio input: the audio inputs"):
        preset_matrix("downmix", layout, 1)


def test_route_channels_command_decodes() -> None:
    command = RouteChannels(routes=(((3, 1.0),), ((3, 1.0), (0, 0.5))))
    assert decode_session_command(encode(command)) == command
    text = b'{"type": "route-channels/1", "routes": [[[3, 1]], [[3, 1]]]}'
    assert decode_session_command(text) == RouteChannels(routes=(((3, 1.0),), ((3, 1.0),)))
    preset = b'{"type": "route-channels/1", "preset": "downmix", "input": 2}'
    assert decode_session_command(preset) == RouteChannels(preset="downmix", input=2)
    with pytest.raises(MessageError):
        decode_session_command(b'{"type": "route-channels/1", "preset": "surround"}')
    assert msgspec.json.decode(b'{"type": "channels/1", "channels": [4]}', type=SelectChannels)


# -- mixing ---------------------------------------------------------------------------------------


def test_route_channel_3_to_left_only() -> None:
    source = tones(SIX_TONES)
    matrix = check_routes([[(3, 1.0)], []], ChannelLayout((6,)))
    out = stereo(Mixer(matrix, 6).mix(source))
    assert np.abs(out[:, 0] - source[3]).max() < 1e-4  # s16 rounding
    assert np.abs(out[:, 1]).max() == 0
    # Gains scale, and the sum is clipped to full scale.
    loud = stereo(
        Mixer(check_routes([[(3, 2.0)], [(3, 4.0), (0, 4.0)]], ChannelLayout((6,))), 6).mix(source)
    )
    assert np.abs(loud[:, 0] - 2 * source[3]).max() < 1e-4
    assert np.abs(loud[:, 1]).max() == pytest.approx(1.0, abs=1e-4)


def test_itu_downmix_of_known_tones() -> None:
    layout = ChannelLayout((6,), names=(FIVE_ONE,))
    out = stereo(Mixer(downmix_matrix(layout, 2), 6).mix(tones(SIX_TONES)))
    left, right = out[:, 0], out[:, 1]
    # 0.25 amplitude tones: FL/FR at 1, FC and the surrounds at 0.707, LFE (1000 Hz) absent.
    for signal, want in (
        (left, {440: 1.0, 660: 0.707, 770: 0.707}),
        (right, {550: 1.0, 660: 0.707, 880: 0.707}),
    ):
        for freq in SIX_TONES:
            assert level(signal, freq) == pytest.approx(0.25 * want.get(freq, 0.0), abs=2e-3)


def test_mix_matches_the_old_stereo_mix() -> None:
    source = tones(SIX_TONES)
    for selection in ((1,), (2, 3), (0, 1, 2, 3, 4, 5)):
        old = mix(source, stereo_matrix(selection, 6))
        assert np.array_equal(Mixer(selection_matrix(selection), 6).mix(source), old)


def test_a_new_matrix_fades_in_over_one_packet() -> None:
    # Channel 0 a constant +0.5, channel 1 -0.5: switching L from one to the other without a
    # fade would jump by a full scale; with it, L walks from +0.5 to -0.5 across one packet.
    source = np.stack([np.full(FRAME_SAMPLES, 0.5), np.full(FRAME_SAMPLES, -0.5)]).astype(
        np.float32
    )
    layout = ChannelLayout((2,))
    mixer = Mixer(check_routes([[(0, 1.0)], [(0, 1.0)]], layout), 2)
    before = stereo(mixer.mix(source))
    mixer.route(check_routes([[(1, 1.0)], [(0, 1.0)]], layout))
    during = stereo(mixer.mix(source))
    after = stereo(mixer.mix(source))
    joined = np.concatenate([before[:, 0], during[:, 0], after[:, 0]])
    assert np.abs(np.diff(joined)).max() < 2 / FRAME_SAMPLES  # no step: 1/960 per sample
    assert during[-1, 0] == pytest.approx(-0.5, abs=1e-4) and after[0, 0] == pytest.approx(
        -0.5, abs=1e-4
    )
    assert np.abs(during[:, 1] - 0.5).max() < 1e-4  # the unchanged ear stays as it was
    # Nothing heard since the change (paused): the next packet is mixed with the new matrix.
    mixer.route(check_routes([[(0, 1.0)], [(0, 1.0)]], layout))
    mixer.settle()
    assert stereo(mixer.mix(source))[0, 0] == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(ValueError, match="6 output channels: the mixer has 2"):
        mixer.route(ChannelMatrix(tuple(() for _ in range(6))))


def test_mixing_cost() -> None:
    """16 channels into stereo, per 20 ms packet: far below the packet's 20 ms."""
    source = tones(tuple(300 + 100 * c for c in range(16)), FRAME_SAMPLES)
    layout = ChannelLayout((16,))
    matrix = check_routes([[(c, 0.1) for c in range(16)], [(c, 0.1) for c in range(16)]], layout)
    mixer = Mixer(matrix, 16)
    rounds = 2000
    for fading in (False, True):
        start = time.perf_counter()
        for _ in range(rounds):
            if fading:
                mixer.route(matrix)
            mixer.mix(source)
        cost = (time.perf_counter() - start) / rounds
        print(
            f"\nmix 16 ch -> stereo, {'with' if fading else 'no'} fade: {cost * 1e6:.0f} us/packet"
        )
        assert cost < 0.002  # 10 % of the packet, on a loaded 2-core machine


# -- a real worker --------------------------------------------------------------------------------


class Media:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.video = make_video(root / "v25.mp4", frames=300, rate=fractions.Fraction(25))
        self.six = make_tones(root / "six.wav", tones=SIX_TONES, seconds=12.5, rate=44100)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return Media(tmp_path_factory.mktemp("matrixmedia"))


async def test_switching_the_matrix_while_playing(nc: Client, media: Media, session: Any) -> None:
    worker = await session(SessionInput(str(media.video)), SessionInput(str(media.six)))
    assert worker.layout.counts == (6,)
    stats = worker.stats()
    assert stats.channel_names == FIVE_ONE and stats.channel_inputs == (2,) * 6
    assert stats.routes == (((0, 1.0),), ((1, 1.0),))  # the default selection, 0 and 1
    viewer, _ = await watch(nc, session, worker)
    assert (await control(nc, worker.session_id, Play())).ok

    async def hear(command: RouteChannels, left: int, right: int) -> None:
        """After ``command``, the left ear hears ``left`` Hz and the right ``right`` Hz."""
        reply = await control(nc, worker.session_id, command)
        assert reply.ok, reply.error
        assert reply.routes == worker.player.matrix.routes == worker.stats().routes
        audio = await record(viewer, 0.4)
        assert dominant_frequency(audio[:, 0]) == pytest.approx(left, abs=15)
        assert dominant_frequency(audio[:, 1]) == pytest.approx(right, abs=15)

    # Channel 3 (1000 Hz) to both ears, while playing.
    both = RouteChannels(routes=(((3, 1.0),), ((3, 1.0),)))
    await hear(both, 1000, 1000)
    # Channel 3 to the left only, channel 0 (440 Hz) to the right.
    split = RouteChannels(routes=(((3, 1.0),), ((0, 1.0),)))
    await hear(split, 1000, 440)
    # The ITU downmix: FL (440) dominates the left, FR (550) the right.
    downmix = RouteChannels(preset="downmix", input=2)
    await hear(downmix, 440, 550)
    # A refusal names the problem and leaves the routing as it was.
    bad = await control(nc, worker.session_id, RouteChannels(routes=(((6, 1.0),), ())))
    assert (
        not bad.ok
        and bad.error == "L: channel 6 does not exist: the audio inputs have 6 channels (0-5)"
    )
    assert bad.routes is not None and len(bad.routes[0]) == 3  # the downmix's
    assert bad.routes == worker.player.matrix.routes
    # channels/1 still routes a selection, and its reply shows the matrix it made.
    reply = await control(nc, worker.session_id, SelectChannels((3,)))
    assert reply.ok and reply.routes == (((3, 1.0),), ((3, 1.0),))
