"""The A/B reader: what an A/B compare session's player reads instead of one video.

``read(n)`` returns A's frame ``n`` and the frame of B locked to it
(:func:`~pipeline.producers.jit.compare.frame_of_b`) composed into one picture by the settings
in force (:mod:`~pipeline.producers.jit.compare`). Seek, step, play and rate need nothing
more: they move A's frame number, and B follows it in the same read, so the two can never
drift apart.

It runs in A's video thread and asks B's own media thread for B's frame at the same time
(:meth:`~pipeline.producers.jit.threads.MediaThread.call`): decoding is most of a read, so a
seek costs what the slower of the two seeks costs, not their sum. Each reader is only ever
used in its own thread, its converter too: the size a picture is converted to (half the
picture side by side, the whole for a wipe) is set there, before the read, from a snapshot of
the settings taken when the read starts. A video that is not shown (``show: "A"`` or ``"B"``)
is not decoded: toggling to it costs one read of it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
from collections.abc import Callable
from fractions import Fraction

from pipeline.messages.control import CompareState
from pipeline.producers.jit import compare
from pipeline.producers.jit.decoder import Picture, VideoReader
from pipeline.producers.jit.errors import ReadError
from pipeline.producers.jit.threads import MediaThread
from pipeline.state.layouts import Rect

log = logging.getLogger("tessera.jit.compare")


def _read(
    video: VideoReader,
    n: int,
    size: Rect,
    stop: Callable[[], bool] | None = None,
    hurry: bool = False,
) -> Picture | None:
    """Frame ``n`` of ``video`` converted to ``size`` (in the video's own thread)."""
    video.converter.width, video.converter.height = size.w, size.h
    return video.read(n, stop, hurry)


class ABReader:
    """Videos A and B read frame-locked and composed; see the module docstring.

    ``settings`` may be replaced (whole, from the event loop) at any time: each read takes
    it once. Made before the readers are read (their converters' sizes are taken as the
    videos' own); the readers stay their threads' to close.
    """

    def __init__(
        self, a: VideoReader, b: VideoReader, b_thread: MediaThread, settings: CompareState
    ) -> None:
        self.a = a
        self.b = b
        self.settings = settings
        self._b_thread = b_thread
        self.time_base = a.time_base
        self.size = (a.converter.width, a.converter.height)
        """The picture's size: what a session of A alone would send."""
        self._aspect_a = Fraction(*self.size)
        self._aspect_b = Fraction(b.converter.width, b.converter.height)
        self._b_end = b.frame_count
        self.b_errors = 0
        """Frames of B that could not be read (drawn black)."""
        """B's exclusive end: its frame count, or learnt from a read that found no frame
        (so that a B of unknown length is not searched to its end at every frame past it)."""

    def frame_of_b(self, n: int, settings: CompareState | None = None) -> int:
        """B's frame beside A's frame ``n`` (with ``settings``, by default those in force)."""
        offset = (settings or self.settings).offset
        return compare.frame_of_b(n, self.a.rate, self.b.rate, offset)

    def _collect_b(
        self, pending: concurrent.futures.Future[Picture | None] | None, m: int, *, failing: bool
    ) -> Picture | None:
        """B's picture, once its read is done (waited for even when A failed, so that B's
        thread is never left mid-read). A frame of B that cannot be read is drawn black, as
        a missing one is: B's trouble never stops A (``b_errors`` counts them). While A's own
        error is on its way out, B's result or error does not replace it."""
        if pending is None:
            return None
        try:
            b = pending.result()
        except ReadError as exc:
            self.b_errors += 1
            log.warning("video B: frame %d cannot be read, drawn black: %s", m, exc)
            return None
        except BaseException:
            if failing:
                return None
            raise
        if b is None:
            self._b_end = m if self._b_end is None else min(self._b_end, m)
        return b

    def read(
        self, n: int, stop: Callable[[], bool] | None = None, hurry: bool = False
    ) -> Picture | None:
        """A's frame ``n`` with B's beside it, composed; None when A has no frame ``n``.
        ``stop`` calls both reads off (:class:`~.decoder.ReadInterrupted`); ``hurry`` is
        passed to both (:meth:`~.decoder.VideoReader.read`)."""
        settings = self.settings
        where = compare.layout(settings, self.size, self._aspect_a, self._aspect_b)
        m = self.frame_of_b(n, settings)
        pending: concurrent.futures.Future[Picture | None] | None = None
        end = self._b_end
        if where.b is not None and m >= 0 and (end is None or m < end):
            pending = self._b_thread.call(_read, self.b, m, where.b, stop, hurry)
        a: Picture | None = None
        try:
            # A is read when shown, and when its end is not known yet (only a read finds it).
            if where.a is not None or self.a.frame_count is None:
                a = _read(self.a, n, where.a or Rect(0, 0, *self.size), stop, hurry)
                if a is None:
                    return None
                frame, pts = a.frame, a.pts
            elif n < self.a.frame_count:
                frame, pts = n, self.a.pts_of(n)
            else:
                return None
        finally:
            b = self._collect_b(pending, m, failing=sys.exc_info()[1] is not None)
        shown_a = a.data if a is not None and where.a is not None else None
        data = compare.compose(where, shown_a, None if b is None else b.data)
        return Picture(frame=frame, pts=pts, data=data, frame_b=None if b is None else m)
