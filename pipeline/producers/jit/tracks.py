"""The media tracks a viewer's peer connection sends: fed by the session's player.

There is one session clock (the player) and one track pair per viewer: the player hands each
track what to send, and the track's ``recv()`` (called by aiortc's RTP sender, which then
encodes in an executor) waits for it. The tracks only stamp timestamps:

- video: 90 kHz pts from the player's schedule, so consecutive frames of a 25 fps file are
  3600 apart and of a 29.97 one 3003 (the receiver's jitter buffer and lip sync read them);
  a paused session sends nothing, and the next frame's pts tells the wall time that passed;
- audio: 48 kHz pts counting the samples sent (20 ms frames, never paused: silence is sent).

Each track has a small queue; when a viewer's encoder falls behind, the oldest item is
dropped and counted (a late picture is worth less than the current one).
"""

from __future__ import annotations

import asyncio
import fractions
from fractions import Fraction
from typing import Generic, TypeVar

import av
import numpy as np
import numpy.typing as npt
from aiortc import AudioStreamTrack, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from pipeline.producers.jit.audio import audio_frame
from pipeline.producers.jit.convert import Yuv, to_frame

VIDEO_CLOCK = 90000
"""RTP clock rate of video (RFC 3551): pts are in 1/90000 s."""
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
VIDEO_QUEUE = 5
"""Pictures a video track may hold: 200 ms at 25 fps, enough to ride out a stalled encoder or
event loop without dropping, few enough that a slow viewer is not seconds behind. A seek or
step empties the queue, so it never delays a seek."""
AUDIO_QUEUE = 10
"""Audio frames a track may hold: 200 ms, beyond which the viewer is too slow to be in sync."""


T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded queue that drops its oldest item when full (counted), and can be closed."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(size)
        self.dropped = 0

    def put(self, item: T) -> None:
        """Queue ``item``; drop the oldest one if the queue is full."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def close(self) -> None:
        """Wake the reader with "no more items"."""
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def clear(self) -> None:
        """Drop every queued item (not counted: they are stale, not late)."""
        while not self._queue.empty():
            self._queue.get_nowait()

    async def get(self) -> T | None:
        """The next item, or None once closed."""
        return await self._queue.get()


class SessionVideoTrack(VideoStreamTrack):
    """The video a viewer receives: pictures the player offers, stamped at 90 kHz."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._queue: DropOldestQueue[tuple[Yuv, float, Fraction]] = DropOldestQueue(VIDEO_QUEUE)
        self._origin: float | None = None
        self._last_pts = -1

    @property
    def dropped(self) -> int:
        """Pictures dropped because this viewer's encoder was behind."""
        return self._queue.dropped

    def offer(self, data: Yuv, anchor: float, offset: Fraction = Fraction(0)) -> None:
        """Send picture ``data``, scheduled ``offset`` (exact) seconds after the monotonic
        time ``anchor``."""
        if self.readyState == "live":
            self._queue.put((data, anchor, offset))

    def flush(self) -> None:
        """Forget pictures not yet taken by the encoder (a seek made them stale)."""
        if self.readyState == "live":
            self._queue.clear()

    async def recv(self) -> av.VideoFrame:
        """The next picture (waits while the session is paused)."""
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        data, anchor, offset = item
        if self._origin is None:
            self._origin = anchor
        # The anchor is rounded once and the exact offset once, so frames of one schedule are
        # exactly 90000/fps apart (3600 at 25 fps, 3003 at 29.97); max() keeps pts strictly
        # increasing when two pictures share a time (a seek right after a frame).
        base = round((anchor - self._origin) * VIDEO_CLOCK)
        pts = max(self._last_pts + 1, base + round(offset * VIDEO_CLOCK))
        self._last_pts = pts
        # A copy of the picture into a new frame (memcpy-cheap): each encoder owns its frame.
        frame = to_frame(data)
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def stop(self) -> None:
        """End the track (wakes a waiting ``recv``)."""
        if self.readyState == "live":
            self._queue.close()
        super().stop()


class SessionAudioTrack(AudioStreamTrack):
    """The audio a viewer receives: 20 ms 48 kHz s16 stereo frames the player offers."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: DropOldestQueue[npt.NDArray[np.int16]] = DropOldestQueue(AUDIO_QUEUE)
        self._samples = 0

    @property
    def dropped(self) -> int:
        """Audio frames dropped because this viewer's encoder was behind."""
        return self._queue.dropped

    def offer(self, packed: npt.NDArray[np.int16]) -> None:
        """Send packed s16 stereo samples (``(1, 2 * n)``)."""
        if self.readyState == "live":
            self._queue.put(packed)

    async def recv(self) -> av.AudioFrame:
        """The next audio frame (the player sends silence while paused)."""
        if self.readyState != "live":
            raise MediaStreamError
        packed = await self._queue.get()
        if packed is None:
            raise MediaStreamError
        frame = audio_frame(packed, self._samples)
        self._samples += packed.shape[1] // 2
        return frame

    def stop(self) -> None:
        """End the track (wakes a waiting ``recv``)."""
        if self.readyState == "live":
            self._queue.close()
        super().stop()
