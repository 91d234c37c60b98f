"""A WebRTC viewer of a JIT session, as the gateway's viewer page is: aiortc, a recvonly video
offer with a ``control`` data channel, WHEP (``POST`` of the offer to ``whep_url`` as
``application/sdp``), frame numbers read off every decoded picture.

aiortc's receiver completes a video frame only when the first packet of the *next* one arrives,
so a paused session's single frame (the first picture, a seek's target) would never show;
browsers complete a frame at its RTP marker bit. :func:`browser_like_jitter_buffer` makes aiortc
do the same for the life of the process (the benchmark runs each case in its own event loop,
and nothing else in it receives WebRTC).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import av
import httpx
import msgspec
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from pipeline.messages.codec import encode
from pipeline.messages.control import CommandReply, FrameReport, SessionCommand

_replies = msgspec.json.Decoder(FrameReport | CommandReply)


class _MarkerJitterBuffer(JitterBuffer):
    """Completes a video frame at its marker bit (see the module docstring)."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is not None or not packet.marker or self._origin is None:
            return pli, frame
        packets = []
        for count in range(self.capacity):
            held = self._packets[(self._origin + count) % self.capacity]
            if held is None or held.timestamp != packet.timestamp:
                return pli, None  # a packet of this frame is missing
            packets.append(held)
            if held.sequence_number == packet.sequence_number:
                break
        self.remove(len(packets))
        data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
        return pli, JitterFrame(data=data, timestamp=packet.timestamp)


def browser_like_jitter_buffer() -> None:
    """Make aiortc's video receivers complete frames at the marker bit (idempotent)."""
    original = getattr(rtcrtpreceiver, "JitterBuffer")  # noqa: B009 - not exported, patched
    if getattr(original, "_bench_marker", False):
        return

    def make(capacity: int, prefetch: int = 0, is_video: bool = False) -> JitterBuffer:
        kind = _MarkerJitterBuffer if is_video else original
        return kind(capacity=capacity, prefetch=prefetch, is_video=is_video)

    make._bench_marker = True  # type: ignore[attr-defined]
    setattr(rtcrtpreceiver, "JitterBuffer", make)  # noqa: B010 - what the receiver looks up


class Viewer:
    """One viewer: ``await connect(http, whep_url)``, then frames arrive in :attr:`frames`."""

    def __init__(self, read_number: Callable[[Any], int | None]) -> None:
        self.read_number = read_number
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.channel = self.pc.createDataChannel("control")
        self.frames: list[tuple[float, int | None]] = []
        """(arrival, frame number) of every decoded picture."""
        self.reports: list[tuple[float, int]] = []
        """(arrival, frame number) of every frame report the worker sent on the channel."""
        self.replies: asyncio.Queue[CommandReply] = asyncio.Queue(maxsize=1000)
        self.changed = asyncio.Event()
        self.opened = asyncio.Event()
        self.location = ""
        self._tasks: list[asyncio.Task[None]] = []
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, message: str | bytes) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            item = _replies.decode(message)
            if isinstance(item, FrameReport):
                self.reports.append((time.monotonic(), item.frame))
                del self.reports[:-1000]
            elif not self.replies.full():
                self.replies.put_nowait(item)
        self.changed.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._tasks.append(asyncio.create_task(self._read(track), name="viewer video"))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrived = time.monotonic()
            if not isinstance(frame, av.VideoFrame):
                continue
            number = self.read_number(frame.to_ndarray(format="gray"))
            self.frames.append((arrived, number))
            del self.frames[:-1000]
            self.changed.set()

    async def connect(self, http: httpx.AsyncClient, whep_url: str) -> dict[str, float]:
        """Offer over WHEP and apply the answer; monotonic times of the steps."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offered = time.monotonic()
        got = await http.post(
            whep_url, content=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"}, timeout=30,
        )  # fmt: skip
        if got.status_code != 201:
            raise RuntimeError(f"WHEP answered {got.status_code}: {got.text[:200]}")
        answered = time.monotonic()
        self.location = got.headers.get("location", "")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=got.text, type="answer"))
        return {"offered": offered, "answered": answered}

    async def until(self, check: Callable[[], bool], within: float) -> bool:
        """Wait until ``check()`` holds (re-checked on every frame or message); False on time
        out."""
        deadline = time.monotonic() + within
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.1))
        return True

    def send(self, command: SessionCommand) -> float:
        """Send a command over the data channel; return when it was sent (monotonic)."""
        self.channel.send(encode(command).decode())
        return time.monotonic()

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
