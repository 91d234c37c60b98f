"""The release thread of a paced grabber (:class:`~pipeline.producers.release.Releaser`): frames
go out in order, each tile as it was put; the decode thread's ``idle`` work runs when it is
ahead by :data:`~pipeline.producers.release.AHEAD` frames and is about to wait."""

from __future__ import annotations

import threading
import time

from pipeline.messages.frames import FrameHeader
from pipeline.producers.release import AHEAD, Pixels, Releaser


def header(seq: int) -> FrameHeader:
    return FrameHeader(source_id="s", seq=seq, pts=seq / 25, wall=0.0, width=2, height=2)


def release(
    frames: int, step: float, idle: list[tuple[int, int]] | None = None
) -> list[tuple[int, bytes]]:
    """Put ``frames`` frames due ``step`` s apart through a releaser; what it emitted, in
    order. ``idle``: gets (frames queued, thread) each time the idle hook ran."""
    out: list[tuple[int, bytes]] = []
    done = threading.Event()
    stopping = threading.Event()

    def emit(h: FrameHeader, p: Pixels) -> None:
        out.append((h.seq, bytes(p)))
        if len(out) == frames:
            done.set()

    def hook() -> None:
        assert idle is not None
        idle.append((releaser.queued, threading.get_ident()))

    releaser = Releaser(emit, stopping, [6], "release-test", idle=None if idle is None else hook)
    try:
        start = time.monotonic() + 0.2
        for seq in range(frames):
            releaser.put(start + seq * step, [header(seq)], [bytes([seq % 256]) * 6])
        assert done.wait(10), f"{len(out)} of {frames} frames out"
    finally:
        stopping.set()
        releaser.join()
    return out


def test_idle_runs_when_ahead_and_frames_keep_their_order() -> None:
    idle: list[tuple[int, int]] = []
    out = release(AHEAD + 10, 0.01, idle)
    assert [seq for seq, _ in out] == list(range(AHEAD + 10))
    assert all(pixels == bytes([seq % 256]) * 6 for seq, pixels in out)
    # Run by the thread that puts (the decode thread), when it is AHEAD frames ahead and
    # would sleep: work that can wait runs then.
    assert idle and {thread for _, thread in idle} == {threading.get_ident()}
    assert all(queued >= AHEAD - 1 for queued, _ in idle), idle


def test_no_idle_hook_is_fine() -> None:
    out = release(AHEAD + 2, 0.002)
    assert [seq for seq, _ in out] == list(range(AHEAD + 2))
