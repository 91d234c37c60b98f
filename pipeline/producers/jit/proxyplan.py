"""What a session's seek proxy builds next, and what it drops to stay within its bound. Pure.

A seek into a long GOP decodes from the keyframe before it: up to a GOP (250 frames: seconds
at 1080p, more at UHD) before the picture exists. The proxy (:mod:`.proxy`) is the same video
made again as intra-only JPEG pictures (at the output size up to 1080p's pixels), one file
per *chunk* of
:data:`CHUNK_SECONDS`, so that any frame of it is one small decode away. It is built in the
background, and what is near the playhead is built first:

- the chunk holding the playhead, then the ones after it (a review mostly goes forwards), then
  the ones before it, nearest first, a chunk behind counting :data:`BEHIND_COST` times as far
  as one ahead (building backwards costs a seek per chunk; building on from the chunk just
  made costs none, so that is preferred when it is at most one chunk farther than the best);
- within a byte bound: a chunk is started only when its estimated size fits, after dropping
  chunks farther from the playhead than it (farthest first); when that cannot make room, the
  builder waits for the playhead to move. A file whose proxy does not fit is so covered
  around the playhead, and seeks elsewhere decode as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

CHUNK_SECONDS = 10
"""Seconds of video per proxy chunk (a file each): what one build step makes before it looks
at the playhead again, and what is dropped at once."""
BEHIND_COST = 2
"""How much farther a chunk behind the playhead counts than one ahead of it."""
MAX_PIXELS = 1920 * 1080
"""The proxy is the output picture itself up to this many pixels (a 1920x1080 JPEG decodes in
about 5 ms), and scaled down to fit above, keeping its shape (an output of 3840x2160 or
2560x1440 has a 1920x1080 proxy, scaled back up in about 15 ms). At the output size the
proxy's picture is the picture the session sends but for the JPEG's loss (43 dB luma PSNR at
:data:`QUALITY` on bench case 12's noisy 1080p file); at half the size each side it was 34.6
dB, visibly soft, for a quarter of the disk (measured: 190 against 40 MiB a minute of that
file at q 3; camera footage makes smaller JPEGs)."""
MIN_SIDE = 16
QUALITY = 3
"""JPEG quantiser (FFmpeg's ``-q:v``, 2 best to 31). At 3 the proxy's picture is near the exact
one (43.2 dB luma PSNR on case 12's 1080p file; 45.0 at 2 for 1.7 times the bytes, 41.4 at 5
for 0.55 times), and encoding a 1080p picture takes about 11 ms of the builder's nice CPU."""


def chunk_frames(rate: Fraction) -> int:
    """Frames per chunk at ``rate`` frames per second."""
    return max(1, math.ceil(rate * CHUNK_SECONDS))


def chunk_count(frame_count: int, per_chunk: int) -> int:
    """Chunks of ``per_chunk`` frames a video of ``frame_count`` frames has."""
    return max(0, -(-frame_count // per_chunk))


def proxy_size(width: int, height: int) -> tuple[int, int]:
    """The (even) size of the proxy of ``width`` x ``height`` output pictures."""

    factor = min(1.0, math.sqrt(MAX_PIXELS / (width * height))) if width * height else 1.0

    def side(value: int) -> int:
        return max(MIN_SIDE, math.floor(value * factor + 1e-9) // 2 * 2)

    return side(width), side(height)


def cost(chunk: int, playhead: int) -> int:
    """How far ``chunk`` is from the chunk holding the playhead, for building order."""
    ahead = chunk - playhead
    return ahead if ahead >= 0 else -ahead * BEHIND_COST - 1


@dataclass(frozen=True)
class Step:
    """What the builder does next: drop ``evict`` (chunk numbers), then build ``build``
    (None: nothing to do until the playhead moves or a chunk is dropped)."""

    build: int | None
    evict: tuple[int, ...] = ()


def next_step(
    built: Mapping[int, int],
    chunks: int,
    playhead: int,
    previous: int | None,
    budget: int,
    estimate: int,
) -> Step:
    """The next build step.

    ``built`` maps each chunk on disk to its bytes, ``chunks`` is how many the video has,
    ``playhead`` the chunk the playhead is in, ``previous`` the chunk built last (building
    on from it needs no seek), ``budget`` the bound in bytes and ``estimate`` the bytes a
    chunk is expected to take (0 while unknown: the first chunk is always tried).
    """
    todo = [k for k in range(chunks) if k not in built]
    if not todo:
        return Step(None)
    best = min(todo, key=lambda k: (cost(k, playhead), k < playhead))
    follow = None if previous is None else previous + 1
    if follow is not None and follow in todo and follow not in built:
        if cost(follow, playhead) <= cost(best, playhead) + 1:
            best = follow
    used = sum(built.values())
    if used + estimate <= budget:
        return Step(best)
    evict: list[int] = []
    for k in sorted(built, key=lambda k: cost(k, playhead), reverse=True):
        if cost(k, playhead) <= cost(best, playhead):
            break  # never drop a chunk nearer than the one it would make room for
        evict.append(k)
        used -= built[k]
        if used + estimate <= budget:
            return Step(best, tuple(evict))
    return Step(None)  # no room even so: keep what is there
