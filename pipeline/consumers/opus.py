"""The mosaic's sound for WebRTC viewers: the samples the AAC encoder took for each picture
(:attr:`~pipeline.consumers.aac.SoundEncoder.last`), encoded once more, to Opus (libopus, 20 ms
packets), in the stitcher's executor thread. Every viewer's RTP sender only packetizes these
packets, as it does the H.264 frames: one encode, however many viewers. The stitcher asks for
it only while a WebRTC viewer is connected.

The packets' pts are on the same timeline as the AAC track's (48 kHz samples of the video's
seconds), so in a WebRTC viewer the sound is as far from the pictures as in HLS.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error

from pipeline.consumers.encoder import EncoderError
from pipeline.consumers.playout import Samples

RATE = 48_000
"""Opus's clock in WebRTC (RFC 7587), and the mosaic's sound's."""
BITRATE = 96_000


@dataclass(frozen=True, eq=False)
class EncodedSound:
    """One Opus packet: 20 ms of stereo."""

    data: bytes
    pts: int
    """In ``1/48000`` s, on the video's timeline."""


class OpusEncoder:
    """Planar 48 kHz stereo samples in, whenever and however many, Opus packets out."""

    def __init__(self, bitrate: int = BITRATE) -> None:
        self.bitrate = bitrate
        self._ctx = self._open(bitrate)
        self._next: int | None = None
        self._closed = False

    @staticmethod
    def _open(bitrate: int) -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = RATE
        ctx.layout = "stereo"
        ctx.format = "flt"
        ctx.bit_rate = bitrate
        ctx.time_base = Fraction(1, RATE)
        ctx.options = {"application": "audio"}  # music and speech alike, not voip's filtering
        try:
            ctx.open()
        except av.error.FFmpegError as exc:
            raise EncoderError(f"cannot open libopus: {exc}") from exc
        return ctx

    def encode(self, pts: int, samples: Samples) -> tuple[EncodedSound, ...]:
        """Encode ``samples`` (``(2, n)`` float32) that start at ``pts``; return the packets
        made. A ``pts`` that does not follow on from the last call starts the encoder anew."""
        if self._closed:
            raise EncoderError("opus encoder is closed")
        if self._next is not None and pts != self._next:
            self._reopen()
        self._next = pts + samples.shape[1]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = pts
        frame.time_base = Fraction(1, RATE)
        try:
            packets = self._ctx.encode(frame)
        except av.error.FFmpegError as exc:
            raise EncoderError(f"libopus failed at sample {pts}: {exc}") from exc
        return tuple(EncodedSound(bytes(p), int(p.pts or 0)) for p in packets)

    def _reopen(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            self._ctx.encode(None)
        self._ctx = self._open(self.bitrate)

    def close(self) -> None:
        """Release the encoder. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(av.error.FFmpegError):
            self._ctx.encode(None)
