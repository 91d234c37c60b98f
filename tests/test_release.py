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


def test_tiles_may_change_between_frames_and_done_follows_each_frames_last_tile() -> None:
    """A grabber given other tile sizes while it runs: the frames already queued go out as
    they were put, the next ones in their new sizes (a buffer grows once), and ``done`` runs
    after each frame's last tile, whatever tiles it had."""
    events: list[tuple[str, int, bytes]] = []
    finished = threading.Event()
    stopping = threading.Event()

    def emit(h: FrameHeader, p: Pixels) -> None:
        events.append((h.source_id, h.seq, bytes(p)))

    def done() -> None:
        events.append(("done", -1, b""))
        if sum(e[0] == "done" for e in events) == 4:
            finished.set()

    releaser = Releaser(emit, stopping, [6], "release-test", done=done)
    try:
        start = time.monotonic() + 0.1

        def tile(sid: str, seq: int, size: int) -> tuple[FrameHeader, bytes]:
            head = FrameHeader(source_id=sid, seq=seq, pts=0.0, wall=0.0, width=2, height=2)
            return head, bytes([seq]) * size

        frames = [
            [tile("a", 0, 6)],
            [tile("a", 1, 6), tile("b", 1, 24)],  # a second size, four times as big
            [tile("b", 2, 24)],  # the first size dropped
            [tile("c", 3, 54), tile("b", 3, 24)],  # a larger first size
        ]
        for seq, tiles in enumerate(frames):
            releaser.put(start + seq * 0.01, [h for h, _ in tiles], [p for _, p in tiles])
        assert finished.wait(10), events
    finally:
        stopping.set()
        releaser.join()
    assert [(sid, seq, len(p)) for sid, seq, p in events] == [
        ("a", 0, 6), ("done", -1, 0),
        ("a", 1, 6), ("b", 1, 24), ("done", -1, 0),
        ("b", 2, 24), ("done", -1, 0),
        ("c", 3, 54), ("b", 3, 24), ("done", -1, 0),
    ]  # fmt: skip
    assert all(p == bytes([seq]) * len(p) for sid, seq, p in events if sid != "done")
