"""Long-GOP review masters for case 12: 1080p and UHD H.264 with a keyframe every 10 s, made
once with Debian's ``ffmpeg`` and cached.

The pictures are ``testsrc2`` with temporal noise (every frame differs, as in camera masters),
with :mod:`tests.jitmedia`'s frame-number pattern overlaid in the top-left corner (a
320x180 picture per frame, piped in raw and scaled 2x), so a reader can check it has exactly
the frame it asked for (:func:`number_in`). x264 ``veryfast``, three B-frames, no scene-cut
keyframes, MP4 with the index at the front.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.media import require
from tests.jitmedia import pattern, read_frame_number

RATE = 25
SECONDS = 12
GOP = 250
PATTERN_SIZE = (320, 180)
OVERLAY_SCALE = 2
NOISE = 6
CRF = 20


@dataclass(frozen=True)
class Master:
    """One long-GOP file and what it is."""

    label: str
    path: Path
    width: int
    height: int
    frames: int
    gop: int


def master_args(width: int, height: int, out: Path) -> list[str]:
    """The ffmpeg command that makes one master, reading the patterns on its stdin."""
    pw, ph = PATTERN_SIZE
    frames = RATE * SECONDS
    graph = (
        f"[0:v]noise=alls={NOISE}:allf=t[bg];"
        f"[1:v]scale={pw * OVERLAY_SCALE}:{ph * OVERLAY_SCALE}:flags=neighbor[num];"
        "[bg][num]overlay=x=0:y=0:shortest=1,format=yuv420p[v]"
    )
    return [
        require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={RATE}",
        "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{pw}x{ph}", "-r", str(RATE), "-i", "pipe:0",
        "-filter_complex", graph, "-map", "[v]", "-frames:v", str(frames),
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(CRF), "-g", str(GOP),
        "-keyint_min", str(GOP), "-sc_threshold", "0", "-bf", "3",
        "-movflags", "+faststart", str(out),
    ]  # fmt: skip


def master(cache_dir: Path, label: str, width: int, height: int) -> Master:
    """The master of that size, made on first use (seconds for 1080p, about a minute for UHD
    on 2 cores) and cached by its recipe."""
    args = master_args(width, height, Path("x"))
    recipe = hashlib.sha256(repr(args[1:]).encode()).hexdigest()[:10]
    folder = cache_dir / f"longgop-{recipe}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{label}.mp4"
    frames = RATE * SECONDS
    if not path.exists():
        partial = path.with_suffix(".part.mp4")
        pw, ph = PATTERN_SIZE
        numbers = b"".join(pattern(n, pw, ph).tobytes() for n in range(frames))
        subprocess.run(master_args(width, height, partial), input=numbers, check=True,
                       timeout=900)  # fmt: skip
        partial.rename(path)
    return Master(label, path, width, height, frames, GOP)


def number_in(luma: npt.NDArray[np.uint8], master_width: int | None = None) -> int | None:
    """The frame number a decoded master picture shows (None: not readable); a picture
    scaled from a master ``master_width`` wide is read where its pattern went."""
    pw, ph = PATTERN_SIZE
    scale = OVERLAY_SCALE * (luma.shape[1] / master_width if master_width else 1.0)
    return read_frame_number(luma[: round(ph * scale), : round(pw * scale)])
