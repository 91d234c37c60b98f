"""The media tracks a viewer's peer connection sends: fed by the session's player.

There is one session clock (the player) and one track pair per viewer: the player hands each
track what to send, and the track's ``recv()`` (called by aiortc's RTP sender, which then
encodes in an executor) waits for it. The tracks only stamp timestamps:

- video: the 90 kHz pts the player stamped on the picture
  (:class:`~pipeline.producers.jit.rtpclock.VideoClock`: one clock for the session, so a
  picture's frame report can name its timestamp to every viewer);
- audio: 48 kHz pts counting the samples sent (20 ms frames, never paused: silence is sent).

Each track has a small queue; when a viewer's encoder falls behind, the oldest item is
dropped and counted (a late picture is worth less than the current one).
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Generic, TypeVar

import av
import numpy as np
import numpy.typing as npt
from aiortc import AudioStreamTrack, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from pipeline.producers.jit.audio import audio_frame
from pipeline.producers.jit.convert import Yuv, to_frame
from pipeline.producers.jit.rtpclock import VIDEO_CLOCK

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
        self._queue: DropOldestQueue[tuple[Yuv, int]] = DropOldestQueue(VIDEO_QUEUE)

    @property
    def dropped(self) -> int:
        """Pictures dropped because this viewer's encoder was behind."""
        return self._queue.dropped

    def offer(self, data: Yuv, pts: int) -> None:
        """Send picture ``data`` stamped ``pts`` (90 kHz, from the session's clock: greater
        than the pts of every picture offered before)."""
        if self.readyState == "live":
            self._queue.put((data, pts))

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
        data, pts = item
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
