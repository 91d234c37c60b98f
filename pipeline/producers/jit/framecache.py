"""Decoded pictures around the playhead, bounded in bytes: what makes stepping backwards
through a long GOP cheap.

A decoder can only start at a keyframe, so stepping back from frame ``n`` to ``n - 1`` when
``n - 1`` is not at hand means decoding from the keyframe before it. The reader keeps what that
decode produced (the frames just before ``n``), so the next steps back are hits; only when the
window is used up does it decode from the keyframe again. Which frames stay: when the bytes run
out, the frame farthest from the playhead goes (the playhead is the frame last asked for),
where a frame on the side the playhead came from counts :data:`BEHIND_WEIGHT` times as far:
a run backwards keeps mostly the frames it is about to need (and a few it just showed, for a
step back the other way), a run forwards the frames ahead.

Sizing (:func:`frames_for`): the cache holds ``budget // picture bytes`` pictures, at least
:data:`MIN_FRAMES`. A backward run needs a fresh decode from the keyframe once every
``frames - 1`` steps, so the share of steps back that wait for a decode is ``1 / (frames -
1)``: 20 frames keep it near 5 % (the p95 of a step is then a hit), 80 frames near 1 %.

Pure: no PyAV; the items are anything with a byte size given on insertion.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

MIN_FRAMES = 4
"""Pictures kept whatever their size: the last few around the playhead."""
BEHIND_WEIGHT = 4
"""How much farther a frame on the side the playhead came from counts: with 40 frames, a
backward run keeps 32 ahead of it and 8 behind."""


def frames_for(picture_bytes: int, budget: int) -> int:
    """How many pictures of ``picture_bytes`` a ``budget`` of bytes holds (at least
    :data:`MIN_FRAMES`, whatever the budget)."""
    if picture_bytes <= 0:
        raise ValueError(f"picture_bytes={picture_bytes}: a picture has at least one byte")
    return max(MIN_FRAMES, budget // picture_bytes)


def backward_refill_share(frames: int) -> float:
    """The share of single steps backwards that need a decode from the keyframe, with
    ``frames`` pictures cached (each decode leaves ``frames - 1`` hits behind it)."""
    return 1.0 if frames <= 1 else 1.0 / (frames - 1)


class FrameCache(Generic[T]):
    """Pictures by frame number, within ``budget`` bytes (but always the last
    :data:`MIN_FRAMES` put, however big)."""

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"budget={budget}: a cache cannot hold fewer than 0 bytes")
        self.budget = budget
        self.playhead = 0
        """The frame the farthest-first eviction measures from."""
        self.direction = 1
        """+1 when the playhead last moved forwards, -1 backwards."""
        self.bytes = 0
        self.peak_bytes = 0
        """The most bytes held after a put (what the bound is checked against)."""
        self.evicted = 0
        self._items: dict[int, tuple[T, int]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, frame: object) -> bool:
        return frame in self._items

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._items))

    def move_to(self, frame: int) -> None:
        """The playhead is at ``frame`` now (its direction follows the move)."""
        if frame != self.playhead:
            self.direction = 1 if frame > self.playhead else -1
        self.playhead = frame

    def get(self, frame: int) -> T | None:
        """The picture of ``frame``, or None."""
        found = self._items.get(frame)
        return None if found is None else found[0]

    def put(self, frame: int, item: T, size: int) -> None:
        """Keep ``item`` (``size`` bytes) as frame ``frame``, then drop the pictures farthest
        from the playhead until the cache fits its budget again."""
        old = self._items.pop(frame, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[frame] = (item, size)
        self.bytes += size
        while self.bytes > self.budget and len(self._items) > MIN_FRAMES:
            self._drop(self._farthest())
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def _farthest(self) -> int:
        # The farthest is at one end: compare the two ends' weighted distances.
        lo, hi = min(self._items), max(self._items)
        below, above = self.playhead - lo, hi - self.playhead
        if self.direction > 0:
            below *= BEHIND_WEIGHT
        else:
            above *= BEHIND_WEIGHT
        return lo if below >= above else hi

    def _drop(self, frame: int) -> None:
        _, size = self._items.pop(frame)
        self.bytes -= size
        self.evicted += 1

    def clear(self) -> None:
        """Drop every picture."""
        self._items.clear()
        self.bytes = 0
