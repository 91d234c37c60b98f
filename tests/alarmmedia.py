"""Media made here with PyAV for the alarm tests: moving pictures with sound, with black,
frozen and silent stretches at known source times.

The picture is a diagonal ramp that moves a few pixels a frame with a bright square
travelling across it (every picture differs from the last by far more than the freeze level,
as real content does), encoded as H.264; the sound is a 1 kHz sine per channel at a given peak
level (AAC). A script of :class:`Span` s says when the picture is black, when it freezes
(the same picture repeated) and when a channel is silent.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

RATE = 48000
WIDTH, HEIGHT = 320, 180


@dataclass(frozen=True)
class Span:
    """From ``start`` to ``end`` seconds (source time), ``what`` happens: ``black``,
    ``freeze`` or ``silence``."""

    what: str
    start: float
    end: float

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end


def moving_picture(i: int, width: int = WIDTH, height: int = HEIGHT) -> npt.NDArray[np.uint8]:
    """Picture ``i`` of the moving content, as a yuv420p ``(h*3/2, w)`` array."""
    yy, xx = np.mgrid[0:height, 0:width]
    y = 40 + ((xx + yy + 3 * i) % 160)
    side = height // 4
    x0 = (7 * i) % max(1, width - side)
    y[height // 3 : height // 3 + side, x0 : x0 + side] = 230
    u = np.full((height // 2, width // 2), 110, dtype=np.uint8)
    v = np.full((height // 2, width // 2), 150, dtype=np.uint8)
    return np.concatenate([y.astype(np.uint8).ravel(), u.ravel(), v.ravel()]).reshape(
        height * 3 // 2, width
    )


def black_picture(width: int = WIDTH, height: int = HEIGHT) -> npt.NDArray[np.uint8]:
    y = np.full((height, width), 16, dtype=np.uint8)
    c = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    return np.concatenate([y.ravel(), c.ravel(), c.ravel()]).reshape(height * 3 // 2, width)


def scripted_clip(
    seconds: float,
    spans: Sequence[Span] = (),
    *,
    levels: Sequence[float | None] = (-20.0, -20.0),
    layout: str = "stereo",
    fps: int = 25,
    audio: bool = True,
) -> bytes:
    """An MPEG-TS clip of ``seconds``: moving pictures and, if ``audio``, a 1 kHz sine per
    channel at ``levels`` (peak dBFS; None: silent), with the ``spans`` applied."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vctx = vs.codec_context
        vctx.width, vctx.height, vctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vctx.time_base = Fraction(1, fps)
        # A keyframe a second and a fixed quality: a repeated picture encodes as skipped
        # macroblocks, so a freeze decodes as the same picture exactly.
        vctx.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps), "crf": "20"}
        actx = None
        if audio:
            aud = out.add_stream("aac", rate=RATE, layout=layout)
            actx = aud.codec_context
            actx.bit_rate = 96_000 * len(levels)
            amplitude = np.array([0.0 if db is None else 10 ** (db / 20) for db in levels])
        frozen: npt.NDArray[np.uint8] | None = None
        audio_pts = 0
        total = round(seconds * RATE)
        for i in range(round(seconds * fps)):
            t = i / fps
            if any(s.what == "black" and s.covers(t) for s in spans):
                pixels, frozen = black_picture(), None
            elif any(s.what == "freeze" and s.covers(t) for s in spans):
                if frozen is None:
                    frozen = moving_picture(i)
                pixels = frozen
            else:
                pixels, frozen = moving_picture(i), None
            frame = av.VideoFrame.from_ndarray(pixels, format="yuv420p")
            frame.pts = i
            frame.time_base = vctx.time_base
            out.mux(vs.encode(frame))
            if actx is None:
                continue
            while audio_pts < min(total, (i + 1) * RATE // fps):
                n = min(1024, total - audio_pts)
                ts = np.arange(audio_pts, audio_pts + n) / RATE
                quiet = np.array(
                    [any(s.what == "silence" and s.covers(x) for s in spans) for x in ts[::64]]
                ).repeat(64)[:n]
                wave = np.sin(2 * np.pi * 1000.0 * ts) * (~quiet)
                x = (amplitude[:, None] * wave[None, :]).astype(np.float32)
                aframe = av.AudioFrame.from_ndarray(x, format="fltp", layout=layout)
                aframe.sample_rate = RATE
                aframe.pts = audio_pts
                aframe.time_base = Fraction(1, RATE)
                out.mux(aud.encode(aframe))
                audio_pts += n
        out.mux(vs.encode(None))
        if actx is not None:
            out.mux(aud.encode(None))
    return buf.getvalue()
