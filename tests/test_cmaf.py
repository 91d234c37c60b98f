"""CMAF parts from the mosaic's encode (pipeline/consumers/cmaf.py): the boxes checked with a
reader of our own (tests/isobmff.py), the pictures decoded with PyAV, and ffprobe's opinion when
it is installed."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from pipeline.consumers.cmaf import MOVFLAGS, CmafMuxer, Part, PartEncoder
from pipeline.consumers.encoder import EncoderError, EncoderSettings, H264Encoder
from tests import isobmff

W, H, FPS = 320, 180, 25
SETTINGS = EncoderSettings(W, H, FPS, preset="ultrafast")
BITS = 10
BAR = slice(H - 20, H - 4)
"""Rows of the bar that carries the frame number, one black or white block per bit."""
SQUARE = 16


def _square_x(n: int) -> int:
    return 8 + (n * 6) % (W - 2 * SQUARE)


def picture(n: int) -> npt.NDArray[np.uint8]:
    """Frame ``n`` as one yuv420p array: a grey ramp, a white square moving right, and ``n`` in
    binary along the bottom."""
    array = np.full((H * 3 // 2, W), 128, dtype=np.uint8)
    luma = array[:H]
    luma[:] = np.linspace(40, 140, W, dtype=np.uint8)
    x = _square_x(n)
    luma[64 : 64 + SQUARE, x : x + SQUARE] = 235
    block = W // BITS
    for bit in range(BITS):
        on = n >> (BITS - 1 - bit) & 1
        luma[BAR, bit * block : (bit + 1) * block] = 235 if on else 16
    return array


def frame_number(luma: npt.NDArray[Any]) -> int:
    block = W // BITS
    n = 0
    for bit in range(BITS):
        level = float(luma[BAR, bit * block + 4 : (bit + 1) * block - 4].mean())
        assert level < 60 or level > 190, f"bit {bit} is neither black nor white ({level:.0f})"
        n = n << 1 | int(level > 125)
    return n


def encode(frames: range, settings: EncoderSettings = SETTINGS) -> tuple[bytes, list[Part]]:
    """Frames ``frames`` (starting on a segment) through a PartEncoder: its init and parts."""
    encoder = PartEncoder(settings, first_index=frames.start // settings.frames_per_segment)
    assert encoder.next_pts == frames.start
    parts = [part for n in frames for part in encoder.encode(picture(n))]
    init = encoder.init
    encoder.close()
    assert init is not None
    return init, parts


def decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data), "r", format="mp4") as container:
        return list(container.decode(video=0))


@pytest.fixture(scope="module")
def three_seconds() -> tuple[bytes, list[Part]]:
    return encode(range(75))


def test_init_and_parts_keep_the_cmaf_rules(three_seconds: tuple[bytes, list[Part]]) -> None:
    init, parts = three_seconds
    assert [b.kind for b in isobmff.boxes(init)] == ["ftyp", "moov"]
    assert b"cmfc" in isobmff.one(init, "ftyp").body  # a CMAF brand
    stsz = isobmff.one(init, "moov/trak/mdia/minf/stbl/stsz").body
    assert int.from_bytes(stsz[8:12], "big") == 0  # the init describes no samples
    kind, length_size, sps, pps = isobmff.avcc(init)
    assert (kind, length_size, sps, pps) == ("avc1", 4, 1, 1)
    scale = isobmff.timescale(init)
    per_frame = scale // FPS
    assert per_frame * FPS == scale

    assert len(parts) == 15
    assert [(p.msn, p.index) for p in parts] == [(m, i) for m in range(3) for i in range(5)]
    for n, part in enumerate(parts):
        assert [b.kind for b in isobmff.boxes(part.data)] == ["moof", "mdat"]
        assert part.number == n and isobmff.sequence_number(part.data) == n + 1
        assert part.frames == 5 and part.duration == pytest.approx(0.2)
        assert part.first_pts == n * 5
        assert part.independent == (part.index == 0)
        assert part.last == (part.index == 4)
        # tfdt is absolute and each part starts where the one before ended.
        assert isobmff.decode_time(part.data) == part.first_pts * per_frame
        samples = isobmff.samples(part.data, init)
        assert len(samples) == 5
        assert sum(s.duration for s in samples) == round(0.2 * scale)
        mdat = isobmff.one(part.data, "mdat")
        assert samples[0].offset == mdat.start + mdat.header
        assert samples[-1].offset + samples[-1].size == mdat.end  # the samples fill the mdat
        assert [s.sync for s in samples] == [part.independent] + [False] * 4
        for i, sample in enumerate(samples):
            types = isobmff.nal_types(part.data[sample.offset : sample.offset + sample.size])
            if part.independent and i == 0:
                assert {7, 8, 5} <= set(types)  # SPS, PPS and the IDR slice, in band too
            else:
                assert 1 in types and 5 not in types


def test_init_and_all_parts_decode_to_every_frame(three_seconds: tuple[bytes, list[Part]]) -> None:
    init, parts = three_seconds
    frames = decode(init + b"".join(p.data for p in parts))
    assert len(frames) == 75
    assert [f.time for f in frames] == pytest.approx([n / FPS for n in range(75)])
    assert [n for n, f in enumerate(frames) if f.key_frame] == [0, 25, 50]
    for n, frame in enumerate(frames):
        luma = frame.to_ndarray()[:H]
        assert frame_number(luma) == n
        if n % 10 == 3:  # and a few whole pictures, the moving square where it was drawn
            x = _square_x(n)
            assert luma[66 : 62 + SQUARE, x + 2 : x + SQUARE - 2].min() > 200
            assert np.abs(luma.astype(np.int16) - picture(n)[:H]).mean() < 3


def test_one_segment_decodes_alone_after_the_init(three_seconds: tuple[bytes, list[Part]]) -> None:
    init, parts = three_seconds
    segment = b"".join(p.data for p in parts if p.msn == 1)
    frames = decode(init + segment)
    assert [frame_number(f.to_ndarray()[:H]) for f in frames] == list(range(25, 50))
    assert frames[0].key_frame and frames[0].time == pytest.approx(1.0)


@pytest.mark.parametrize("segment", [3, 5])
def test_a_restart_writes_the_same_init_and_carries_the_timeline_on(
    three_seconds: tuple[bytes, list[Part]], segment: int
) -> None:
    """A new stitcher (new encoder, new muxers) starting at ``segment``: right after the old
    one's last (3), or after a gap (5)."""
    init, parts = three_seconds
    start = segment * FPS
    init2, later = encode(range(start, start + 25))
    assert init2 == init
    assert [p.number for p in later] == list(range(segment * 5, segment * 5 + 5))
    assert isobmff.sequence_number(later[0].data) == segment * 5 + 1
    scale = isobmff.timescale(init)
    assert isobmff.decode_time(later[0].data) == start * scale // FPS
    if segment == 3:  # tfdt runs on exactly where the old stitcher's last part ended
        last = parts[-1].data
        end = isobmff.decode_time(last) + sum(s.duration for s in isobmff.samples(last, init))
        assert isobmff.decode_time(later[0].data) == end
    frames = decode(init + b"".join(p.data for p in [*parts, *later]))
    numbers = [frame_number(f.to_ndarray()[:H]) for f in frames]
    assert numbers == [*range(75), *range(start, start + 25)]
    times = [f.time for f in frames]
    assert times[75] == pytest.approx(segment) and times == sorted(times)


def test_parts_do_not_straddle_segments_that_they_do_not_divide() -> None:
    settings = EncoderSettings(64, 32, 24, preset="ultrafast")  # 24 frames, parts of 5
    encoder = PartEncoder(settings)
    assert encoder.muxer.frames_per_part == 5 and encoder.muxer.parts_per_segment == 5
    assert encoder.muxer.part_target == pytest.approx(5 / 24)
    parts = [p for n in range(48) for p in encoder.encode(np.full((48, 64), n, np.uint8))]
    encoder.close()
    assert [p.frames for p in parts] == [5, 5, 5, 5, 4] * 2
    assert [p.last for p in parts] == [False] * 4 + [True] + [False] * 4 + [True]
    assert [p.number for p in parts] == list(range(10))
    assert [p.first_pts for p in parts] == [0, 5, 10, 15, 20, 24, 29, 34, 39, 44]


def test_packets_in_any_time_base_make_the_same_parts() -> None:
    """The TS muxer rebases packets to 90 kHz in place; CMAF after it must not care."""
    encoder = H264Encoder(SETTINGS)
    native, rebased = CmafMuxer(SETTINGS), CmafMuxer(SETTINGS)
    parts: list[tuple[Part, Part]] = []
    for n in range(25):
        for packet in encoder.encode(picture(n)):
            copy = av.Packet(bytes(packet))
            copy.is_keyframe = packet.is_keyframe
            copy.time_base = Fraction(1, 90_000)
            copy.pts = copy.dts = n * 3600
            a, b = native.mux(packet), rebased.mux(copy)
            parts += zip(a, b, strict=True)
    encoder.close()
    assert len(parts) == 5
    assert native.init == rebased.init
    assert all(a.data == b.data and a.first_pts == b.first_pts for a, b in parts)


def test_the_muxer_refuses_what_it_cannot_make_a_part_of() -> None:
    with pytest.raises(EncoderError, match="part_duration"):
        CmafMuxer(SETTINGS, part_duration=0)
    encoder = H264Encoder(SETTINGS)
    packets = [p for n in range(3) for p in encoder.encode(picture(n))]
    encoder.close()
    muxer = CmafMuxer(SETTINGS)
    with pytest.raises(EncoderError, match="non-key frame"):
        muxer.mux(packets[1])  # a first part must start with a keyframe
    muxer = CmafMuxer(SETTINGS)
    assert muxer.mux(packets[0]) == [] and muxer.mux(packets[1]) == []
    with pytest.raises(EncoderError, match="not after"):
        muxer.mux(packets[1])
    muxer.close()
    muxer.close()
    assert muxer.init is None  # the unfinished part was dropped, and the init with it
    with pytest.raises(EncoderError, match="closed"):
        muxer.mux(packets[2])


def test_an_unfinished_part_is_dropped_on_close() -> None:
    encoder = PartEncoder(SETTINGS)
    parts = [p for n in range(8) for p in encoder.encode(picture(n))]
    encoder.close()
    encoder.close()
    assert [p.frames for p in parts] == [5]
    with pytest.raises(EncoderError, match="closed"):
        encoder.encode(picture(8))


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
def test_ffprobe_reads_the_parts_without_a_complaint(
    three_seconds: tuple[bytes, list[Part]], tmp_path: Any
) -> None:
    init, parts = three_seconds
    path = tmp_path / "all.mp4"
    path.write_bytes(init + b"".join(p.data for p in parts))
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_tag_string,nb_read_frames",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stderr == ""
    assert probe.stdout.strip() == "avc1,75"


@pytest.mark.parametrize(
    ("width", "height", "preset"), [(320, 180, "ultrafast"), (1280, 720, "veryfast")]
)
def test_muxing_a_part_costs_little_next_to_encoding_its_frames(
    width: int, height: int, preset: str
) -> None:
    """Measured, not asserted (the suite shares 2 cores): run with -s to see it."""
    settings = EncoderSettings(width, height, FPS, preset=preset)
    encoder = H264Encoder(settings)
    muxer = CmafMuxer(settings)
    base = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    encode_s = mux_s = 0.0
    parts = 0
    for n in range(50):
        base[: height // 2, :] = np.random.default_rng(n).integers(16, 235, (height // 2, width))
        began = time.perf_counter()
        packets = encoder.encode(base)
        encoded = time.perf_counter()
        for packet in packets:
            parts += len(muxer.mux(packet))
        mux_s += time.perf_counter() - encoded
        encode_s += encoded - began
    encoder.close()
    muxer.close()
    assert parts == 10
    print(
        f"\n{width}x{height} {preset}: encode {encode_s / 50 * 1000:.2f} ms/frame, "
        f"CMAF mux {mux_s / parts * 1000:.3f} ms/part ({mux_s / 50 * 1000:.3f} ms/frame), "
        f"movflags={MOVFLAGS}"
    )
