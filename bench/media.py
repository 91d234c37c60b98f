"""Source media for the mosaic cases: 1280x720 25 fps H.264 clips made once with Debian's
``ffmpeg`` and cached, served over loopback HTTP as looping files, and the checks that read
pictures back (tile colours).

The clips are what a camera sends: ``testsrc2`` with temporal noise (so every frame differs,
as sensor noise makes it), 3 Mbit/s, a keyframe every 2 s, no B-frames, MP4 with the index at
the front (``+faststart``) so FFmpeg knows the duration without seeking and the grabber plays
the file again when it ends. Four variants (hue turned by 90°) so neighbouring tiles differ.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.core import CaseSkipped
from pipeline.state.mosaic import layout

CLIP_SECONDS = 10
CLIP_VARIANTS = 4
CLIP_SIZE = (1280, 720)
CLIP_FPS = 25
CLIP_BITRATE = "3M"
CLIP_GOP = 50
NOISE = 2


def require(tool: str) -> str:
    """Path of ``tool``, or CaseSkipped saying how to get it."""
    found = shutil.which(tool)
    if found is None:
        raise CaseSkipped(f"{tool} not found: `just bench` installs it (apt-get install {tool})")
    return found


def clip_args(hue: int, out: Path) -> list[str]:
    """The ffmpeg command that makes one clip."""
    w, h = CLIP_SIZE
    source = f"testsrc2=size={w}x{h}:rate={CLIP_FPS},noise=alls={NOISE}:allf=t,hue=h={hue}"
    return [
        require("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", source, "-t", str(CLIP_SECONDS),
        "-c:v", "libx264", "-preset", "veryfast", "-b:v", CLIP_BITRATE, "-maxrate", CLIP_BITRATE,
        "-bufsize", "8M", "-g", str(CLIP_GOP), "-bf", "0", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", str(out),
    ]  # fmt: skip


def clips(cache_dir: Path) -> list[Path]:
    """The clip variants, made on first use (a few seconds) and cached by their recipe."""
    recipe = hashlib.sha256(repr(clip_args(0, Path("x"))[3:]).encode()).hexdigest()[:10]
    folder = cache_dir / f"clips-{recipe}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for variant in range(CLIP_VARIANTS):
        path = folder / f"clip{variant}.mp4"
        if not path.exists():
            partial = path.with_suffix(".part.mp4")
            subprocess.run(clip_args(variant * 90, partial), check=True, timeout=300)
            partial.rename(path)
        paths.append(path)
    return paths


def tile_mean(picture: npt.NDArray[np.uint8], index: int, n: int) -> tuple[int, int, int]:
    """Mean RGB of the upper part of tile ``index`` of ``n`` (the name strip is at the bottom)."""
    height, width = picture.shape[:2]
    grid = layout(n, width, height)
    x, y = grid.origins[index]
    h = grid.tile_height * 6 // 10
    region = picture[y + 4 : y + h, x + 4 : x + grid.tile_width - 4]
    r, g, b = region.reshape(-1, 3).mean(axis=0)
    return int(r), int(g), int(b)


def near(actual: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    """Each channel within ``tolerance`` (H.264 at mosaic quality, the moving marker)."""
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))
