"""Test media for the JIT worker, made with PyAV: every video frame shows its own number.

**The frame-number pattern**: 16 blocks in two rows of 8 across the middle of the picture,
black for 0 and white for 1 on a mid-grey ground. The first 12 bits are the frame number
(most significant first, so up to 4095), the last 4 a check: the XOR of the number's three
nibbles, XOR ``0101`` (so an all-black or all-white band is not a valid frame). A single wrong
block changes exactly one check bit, so a misread is reported as None, never as another
frame. At 320x180 a block is 32x36 pixels: H.264 at any sane quality and aiortc's VP8 (even at
its start-up bitrate) keep its centre far from the threshold.

**Audio**: WAV files where channel ``i`` is a sine of its own frequency (``TONES``), so which
channels reached a listener can be read from an FFT.
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

BITS = 16
NUMBER_BITS = 12
COLUMNS = 8
ROWS = 2
BLACK, GREY, WHITE = 16, 128, 235  # limited-range luma
CHECK_SALT = 0b0101
TONES = (300, 500, 700, 900, 1100, 1300, 1500, 1700)
"""Hz of channel 0, 1, 2, ... across the audio files of a test, in order."""


def _check(number: int) -> int:
    return (number ^ (number >> 4) ^ (number >> 8)) & 0xF ^ CHECK_SALT


def bits_of(number: int) -> list[int]:
    """The 16 pattern bits of ``number`` (0-4095)."""
    if not 0 <= number < 1 << NUMBER_BITS:
        raise ValueError(f"frame number {number} does not fit in {NUMBER_BITS} bits")
    word = number << 4 | _check(number)
    return [(word >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def _blocks(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` of each block, in bit order: the band spans 80 % of the width and
    40 % of the height, centred."""
    x0, x1 = width // 10, width - width // 10
    y0, y1 = height * 3 // 10, height - height * 3 // 10
    bw, bh = (x1 - x0) // COLUMNS, (y1 - y0) // ROWS
    return [
        (x0 + c * bw, y0 + r * bh, x0 + (c + 1) * bw, y0 + (r + 1) * bh)
        for r in range(ROWS)
        for c in range(COLUMNS)
    ]


def pattern(number: int, width: int, height: int) -> npt.NDArray[np.uint8]:
    """The luma plane (``height`` x ``width``) of frame ``number``."""
    return draw_bits(bits_of(number), width, height)


def draw_bits(bits: Sequence[int], width: int, height: int) -> npt.NDArray[np.uint8]:
    """The luma plane showing any 16 ``bits`` (a damaged pattern, in tests)."""
    luma = np.full((height, width), GREY, dtype=np.uint8)
    for bit, (x0, y0, x1, y1) in zip(bits, _blocks(width, height), strict=True):
        luma[y0:y1, x0:x1] = WHITE if bit else BLACK
    return luma


def read_frame_number(luma: npt.NDArray[np.uint8]) -> int | None:
    """The frame number a picture shows, or None when the pattern does not check out.

    ``luma`` is the picture's luma (``frame.to_ndarray(format="gray")``), any size: the
    blocks are found by proportion, and each is read by the mean of its central half.
    """
    word = 0
    for bit in read_bits(luma):
        word = word << 1 | bit
    number, check = word >> 4, word & 0xF
    return number if check == _check(number) else None


def read_bits(luma: npt.NDArray[np.uint8]) -> list[int]:
    """The 16 bits a picture's blocks show (in :func:`bits_of`'s order), whether or not they
    make a frame number: a picture composed of two patterns (an A/B wipe) is read so."""
    if luma.ndim == 3:
        luma = luma[..., 0]
    height, width = luma.shape
    bits = []
    for x0, y0, x1, y1 in _blocks(width, height):
        dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
        mean = float(luma[y0 + dy : y1 - dy, x0 + dx : x1 - dx].mean())
        bits.append(1 if mean > GREY else 0)
    return bits


def make_video(
    path: Path,
    *,
    frames: int,
    rate: fractions.Fraction,
    width: int = 320,
    height: int = 180,
    gop: int = 50,
    first_pts: int = 0,
    codec: str = "libx264",
    timecode: str | None = None,
    bframes: int = 0,
) -> Path:
    """A file (MP4, MOV, MKV, MXF or TS by ``path``'s suffix) of ``frames`` numbered frames at
    ``rate``, with a keyframe every ``gop`` frames. ``bframes``: B-frames in a row at most
    (reordering, and frames nothing refers to, as in real files), honoured by ``mpeg2video``;
    x264 through PyAV makes P-frames only whatever it is asked. ``first_pts`` (in frames) makes
    the file start at a non-zero timestamp; ``codec`` may also be ``mpeg2video`` (which
    supports the ``lowres`` decoder option, and is what FFmpeg's MXF muxer takes). ``timecode``
    is the start time code, given to the muxer as the container's ``timecode`` metadata (the
    MOV muxer writes a ``tmcd`` track of it, the MXF muxer a time code component)."""
    options = {"g": str(gop)}
    if codec == "libx264":
        options |= {
            "preset": "veryfast",
            "keyint_min": str(gop),
            "sc_threshold": "0",  # no extra keyframes at "scene cuts" (every frame is one)
            "crf": "18",
        }
    with av.open(str(path), "w") as out:
        if timecode is not None:
            out.metadata["timecode"] = timecode
        stream = out.add_stream(codec, rate=rate, options=options)
        if bframes:
            stream.codec_context.max_b_frames = bframes
        if codec != "libx264":
            stream.codec_context.gop_size = gop
            stream.codec_context.bit_rate = 4_000_000
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        time_base = 1 / rate
        chroma = np.full((height // 2, width), 128, dtype=np.uint8)
        for number in range(frames):
            yuv = np.concatenate([pattern(number, width, height), chroma])
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = number + first_pts
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def clock_frequency(seconds: float) -> int:
    """The tone of :func:`make_clock` at a media time: 400 Hz plus 100 Hz per whole second."""
    return 400 + 100 * int(seconds)


def make_clock(path: Path, *, seconds: float, rate: int = 48000) -> Path:
    """A mono WAV whose tone tells the time (:func:`clock_frequency`): what a listener hears
    says which media second is playing, so audio/video sync can be checked after a seek."""
    count = round(seconds * rate)
    t = np.arange(count) / rate
    freq = 400 + 100 * np.floor(t)
    phase = 2 * np.pi * np.cumsum(freq) / rate  # continuous phase across the steps
    return _write_wav(path, (0.25 * np.sin(phase))[None, :], rate, "mono")


def make_tones(
    path: Path, *, tones: Sequence[int], seconds: float, rate: int = 48000, layout: str = ""
) -> Path:
    """A 16-bit WAV where channel ``i`` is a sine of ``tones[i]`` Hz at -12 dBFS."""
    channels = len(tones)
    layout = layout or {1: "mono", 2: "stereo", 6: "5.1"}.get(channels, f"{channels}c")
    count = round(seconds * rate)
    t = np.arange(count) / rate
    # 0.25: -12 dBFS, far from clipping once channels are mixed or resampled.
    waves = np.stack([0.25 * np.sin(2 * np.pi * f * t) for f in tones])
    return _write_wav(path, waves, rate, layout)


def _write_wav(path: Path, waves: npt.NDArray[np.floating], rate: int, layout: str) -> Path:
    samples = np.round(waves * 32767).astype(np.int16)
    count = samples.shape[1]
    chunk = 4800
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        for start in range(0, count, chunk):
            part = np.ascontiguousarray(samples[:, start : start + chunk].T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(part, format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = fractions.Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def dominant_frequency(samples: npt.NDArray[np.floating], rate: int = 48000) -> float:
    """The frequency (Hz) of the strongest FFT bin of a mono signal (Hann-windowed)."""
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / len(samples))
