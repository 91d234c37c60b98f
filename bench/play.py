"""Watching a mosaic the way a player does: poll ``/play/<fp>/index.m3u8``, note when each
segment is first listed (the moment it becomes playable), fetch and decode it."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import av
import m3u8
import numpy as np
import numpy.typing as npt

from bench.stack import StackHost


@dataclass(frozen=True)
class Listed:
    """A segment as first seen in the playlist."""

    uri: str
    seq: int
    listed_mono: float
    """``time.monotonic()`` of the poll that first listed it."""
    listed_wall: float
    """``time.time()`` of the same poll."""
    start_wall: float
    """Its ``EXT-X-PROGRAM-DATE-TIME`` (wall clock of its first picture), 0 when absent."""
    duration: float


class PlaylistPoller:
    """Polls a mosaic's playlist; :meth:`poll` returns the segments listed for the first time."""

    def __init__(self, host: StackHost, fp: str) -> None:
        self.host = host
        self.fp = fp
        self.seen: dict[str, Listed] = {}

    async def poll(self) -> list[Listed]:
        text = await self.host.playlist(self.fp)
        mono, wall = time.monotonic(), time.time()
        if not text:
            return []
        playlist = m3u8.loads(text)
        first = int(playlist.media_sequence or 0)
        fresh = []
        for offset, segment in enumerate(playlist.segments):
            uri = str(segment.uri)
            if uri in self.seen:
                continue
            pdt = segment.program_date_time
            listed = Listed(
                uri=uri,
                seq=first + offset,
                listed_mono=mono,
                listed_wall=wall,
                start_wall=pdt.timestamp() if pdt is not None else 0.0,
                duration=float(segment.duration or 0.0),
            )
            self.seen[uri] = listed
            fresh.append(listed)
        return fresh


def decode(data: bytes, fmt: str = "rgb24") -> list[npt.NDArray[np.uint8]]:
    """Every picture of a segment, as ``fmt`` arrays (``rgb24``, or ``gray`` for luma)."""
    with av.open(io.BytesIO(data), mode="r") as container:
        return [
            np.asarray(frame.to_ndarray(format=fmt), dtype=np.uint8)
            for frame in container.decode(video=0)
        ]
