"""Media bombs made with PyAV: a stream whose header claims 16384x16384 pictures, and a file
with a thousand streams.

The huge-picture bomb is a real 64x64 H.264 stream (raw Annex B, a format sources may be) whose
sequence parameter set is rewritten to claim 1024x1024 macroblocks: the header says 16384x16384,
the slices are tiny. A decoder that believed it would allocate ~400 MB per picture.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import av.container
import numpy as np


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.bits = "".join(f"{b:08b}" for b in data)
        self.pos = 0

    def u(self, n: int) -> str:
        out = self.bits[self.pos : self.pos + n]
        self.pos += n
        return out

    def ue(self) -> tuple[int, str]:
        start = self.pos
        zeros = 0
        while self.bits[self.pos] == "0":
            zeros += 1
            self.pos += 1
        self.pos += 1
        value = (1 << zeros) - 1 + (int(self.u(zeros), 2) if zeros else 0)
        return value, self.bits[start : self.pos]

    def se(self) -> str:
        return self.ue()[1]


def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _patch_sps(nal: bytes, mbs: int) -> bytes:
    """A baseline-profile SPS NAL (header byte included) with its picture size replaced."""
    header, rbsp = nal[:1], _unescape(nal[1:])
    bits = _Bits(rbsp)
    out = bits.u(24)  # profile, constraints, level
    if int(out[:8], 2) != 66:
        raise ValueError("expected a baseline-profile SPS")
    out += bits.ue()[1]  # seq_parameter_set_id
    out += bits.ue()[1]  # log2_max_frame_num_minus4
    poc_type, code = bits.ue()
    out += code
    if poc_type == 0:
        out += bits.ue()[1]
    elif poc_type == 1:
        out += bits.u(1) + bits.se() + bits.se()
        cycle, code = bits.ue()
        out += code + "".join(bits.se() for _ in range(cycle))
    out += bits.ue()[1]  # max_num_ref_frames
    out += bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    bits.ue()
    bits.ue()
    out += _ue(mbs - 1) + _ue(mbs - 1)  # width and height in macroblocks
    rest = bits.bits[bits.pos :].rstrip("0")  # up to and including the rbsp stop bit
    out += rest
    out += "0" * (-len(out) % 8)
    return header + _escape(int(out, 2).to_bytes(len(out) // 8, "big"))


def _tiny_h264(out: av.container.OutputContainer, **options: str) -> av.VideoStream:
    stream = out.add_stream("libx264", rate=25)
    stream.width = stream.height = 64
    stream.pix_fmt = "yuv420p"
    stream.codec_context.options = {"preset": "ultrafast", **options}
    stream.codec_context.time_base = Fraction(1, 25)
    return stream


def huge_header_h264(claimed: int = 16384) -> bytes:
    """Raw H.264 whose SPS claims ``claimed`` x ``claimed`` pictures (64x64 slices)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        stream = _tiny_h264(out, profile="baseline")
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), "rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buf.getvalue()
    parts = data.split(b"\x00\x00\x01")
    patched = []
    for part in parts:
        if part and part[0] & 0x1F == 7:
            trailing = len(part) - len(part.rstrip(b"\x00"))  # the next start code's zero
            patched.append(_patch_sps(part.rstrip(b"\x00"), claimed // 16) + b"\x00" * trailing)
        else:
            patched.append(part)
    return b"\x00\x00\x01".join(patched)


def many_streams_mkv(count: int = 1000) -> bytes:
    """A Matroska file with one tiny video stream and ``count - 1`` silent audio streams."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        video = _tiny_h264(out)
        audio = [out.add_stream("pcm_s16le", rate=8000) for _ in range(count - 1)]
        for stream in audio:
            stream.codec_context.layout = "mono"
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), "rgb24")
        frame.pts = 0
        out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for stream in audio:
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 80), np.int16), "s16", "mono")
            samples.sample_rate = 8000
            samples.pts = 0
            out.mux(stream.encode(samples))
    return buf.getvalue()
