"""CMAF (fragmented MP4) for Low-Latency HLS, cut from the mosaic's one H.264 encode.

What comes out
--------------
An *init section* (``ftyp`` + ``moov``: the track and its SPS/PPS, no samples) and, every
``round(fps * 0.2)`` frames, a *part* (``moof`` + ``mdat``) whose bytes exist as soon as its
last frame is encoded. Parts never straddle a segment: a segment (one GOP, starting with the
IDR frame the encoder forces there) is its parts concatenated, and its first part is the
*independent* one. ``tfdt`` carries each part's absolute decode time (the packets' pts), so any
run of parts, even across a stitcher restart, plays after the one init section.

Why a short-lived muxer per part
--------------------------------
FFmpeg's mp4 muxer writes a fragment only when told to flush (``av_write_frame(NULL)``, which
PyAV does not offer) or when the *next* packet arrives: a long-lived muxer would hand each part
out one frame (40 ms) late. Closing a muxer flushes at once, so each part gets a muxer of its
own, opened on the part's first packet and closed on its last (0.15-1.5 ms a part, 1-5% of
encoding its frames), writing to a write-only sink, as the MPEG-TS path does per segment. Every
such muxer writes ``ftyp + moov + moof + mdat``: the part is the bytes from ``moof`` on, and the
first part's ``ftyp + moov`` is the init section. That muxer sees the keyframe first, so its
``avcC`` holds the SPS/PPS; muxers of later non-key parts see no parameter sets and write a
``moov`` without them, which is why their heads are thrown away and only keyframe parts' heads
are compared with the init section. The init depends only on the settings (``bitexact`` keeps
FFmpeg's version out of it), not on the frame the encoder starts at, so a restarted stitcher
writes the same bytes.

The packets keep the Annex-B start codes libx264 writes; with a stream made by
``add_mux_stream`` (no ``avcC`` of its own) the mp4 muxer rewrites them length-prefixed, as
MP4 requires. (A stream copied from an mp4 *demuxer*'s would claim ``avcC`` and pass Annex-B
through unconverted: players choke on that, so do not build the stream that way.)

Sound
-----
With an :class:`~pipeline.consumers.encoder.AudioTrack`, every part muxer has a second stream,
AAC: the init section declares both tracks (``avc1`` and ``mp4a``), and each part's ``moof``
carries one ``traf`` per track. Parts are still cut on video frames; an AAC frame (1024 samples,
21.3 ms at 48 kHz) goes into the part during whose video frames it *ends*
(:class:`~pipeline.consumers.encoder.AudioQueue`), so a part holds the AAC frames that end
within it. Every AAC frame is a sync sample, so the part that starts with a
keyframe is still independent. The copied stream opens no codec, and its parameters are the
settings' alone, so the init stays the same bytes across parts and restarts.

Not thread-safe: one caller thread at a time, like the encoder whose packets it takes.
"""

from __future__ import annotations

import contextlib
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error

from pipeline.consumers.encoder import (
    AudioQueue,
    AudioTrack,
    EncoderError,
    EncoderSettings,
    H264Encoder,
    Picture,
)

PART_DURATION = 0.2
"""Seconds of media a part aims at (LL-HLS suggests 0.2-1 s; shorter is lower latency)."""

MOVFLAGS = "+".join(
    (
        "cmaf",  # CMAF brands, and with frag_discont: tfdt from the packets, not from zero
        "empty_moov",  # the moov describes no samples: it is the init section
        "default_base_moof",  # data offsets count from each moof: parts are self-contained
        "frag_custom",  # no fragment until the muxer is flushed, here by closing it
        "frag_discont",  # the first fragment may start anywhere on the timeline
        "skip_trailer",  # no mfra index at close: the part ends with its mdat
    )
)
"""The mp4 muxer's ``movflags`` for one part."""


@dataclass(frozen=True, eq=False)
class Part:
    """One CMAF part: ``moof`` + ``mdat``, playable after the init section and earlier parts."""

    msn: int
    """Media sequence number of the segment it belongs to."""
    index: int
    """Its place in that segment, from 0 (``EXT-X-PART`` order)."""
    number: int
    """Part number across segments: ``msn * parts_per_segment + index``. The ``mfhd`` sequence
    number is ``number + 1`` (it counts from 1)."""
    data: bytes
    frames: int
    duration: float
    """Seconds of media."""
    independent: bool
    """Starts with a keyframe (and carries SPS/PPS): ``INDEPENDENT=YES``."""
    first_pts: int
    """Pts of its first frame, in ``1/fps`` units."""
    last: bool
    """The final part of its segment: the segment is complete with it."""
    audio_frames: int = 0
    """AAC frames in it (0 without an audio track)."""


class _Sink:
    """Where a part's muxer writes: memory, append only. Having no ``seek`` tells FFmpeg the
    output is a stream, so no byte is ever rewritten after it is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)


def top_level_boxes(data: bytes | bytearray) -> list[tuple[str, int, int]]:
    """``(type, start, end)`` of each top-level ISO BMFF box in ``data``."""
    boxes = []
    offset = 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise EncoderError(f"truncated box header at byte {offset} of {len(data)}")
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if offset + 16 > len(data):
                raise EncoderError(f"truncated box header at byte {offset} of {len(data)}")
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:  # the box runs to the end
            size = len(data) - offset
        if size < header or offset + size > len(data):
            raise EncoderError(f"box {kind!r} at byte {offset} has a bad size {size}")
        boxes.append((kind.decode("latin-1"), offset, offset + size))
        offset += size
    return boxes


class _PartMuxer:
    """One part's mp4 muxer."""

    def __init__(self, settings: EncoderSettings, number: int, audio: AudioTrack | None) -> None:
        self.number = number
        self.frames = 0
        self._sink = _Sink()
        options = {
            "movflags": MOVFLAGS,
            # mfhd's sequence number: parts count on across muxers, as CMAF requires.
            "fragment_index": str(number + 1),
            # No encoder-version udta in the init: it stays the same across FFmpeg builds.
            "fflags": "+bitexact",
        }
        try:
            self._container = av.open(self._sink, "w", format="mp4", options=options)
            self._stream = self._container.add_mux_stream(
                "h264", rate=settings.fps, width=settings.width, height=settings.height
            )
        except av.error.FFmpegError as exc:
            raise EncoderError(f"cannot open the mp4 muxer for part {number}: {exc}") from exc
        self._stream.time_base = Fraction(1, settings.fps)
        self._audio = None if audio is None else audio.add_to(self._container)
        self.audio_frames = 0

    def mux(self, packet: av.Packet[Any]) -> None:
        self._mux(packet, self._stream, "")
        self.frames += 1

    def mux_audio(self, packet: av.Packet[Any]) -> None:
        self._mux(packet, self._audio, "audio in ")
        self.audio_frames += 1

    def _mux(self, packet: av.Packet[Any], stream: Any, what: str) -> None:
        packet.stream = stream
        try:
            self._container.mux(packet)
        except av.error.FFmpegError as exc:
            raise EncoderError(f"mp4 muxer failed on {what}part {self.number}: {exc}") from exc

    def finish(self) -> tuple[bytes, bytes]:
        """Close the muxer; return its ``ftyp + moov`` and the part (``moof + mdat``)."""
        try:
            self._container.close()
        except av.error.FFmpegError as exc:
            raise EncoderError(f"mp4 muxer failed closing part {self.number}: {exc}") from exc
        data = bytes(self._sink.data)
        boxes = top_level_boxes(data)
        kinds = [kind for kind, _, _ in boxes]
        if kinds != ["ftyp", "moov", "moof", "mdat"]:
            raise EncoderError(f"mp4 muxer wrote boxes {kinds} for part {self.number}")
        moof = boxes[2][1]
        return data[:moof], data[moof:]

    def abandon(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            self._container.close()


@dataclass
class _Open:
    """The part being muxed and what is known of it so far."""

    muxer: _PartMuxer
    msn: int
    index: int
    first_pts: int
    independent: bool


class CmafMuxer:
    """Encoded H.264 packets in (from :class:`~pipeline.consumers.encoder.H264Encoder`, in
    order), CMAF parts out: :meth:`mux` returns each part on the packet that completes it, and
    :attr:`init` is the init section once the first part is out.

    A packet handed to :meth:`mux` is the muxer's: its timestamps are rewritten (as any muxer
    does). Feeding the same packets to another muxer too works in either order: the frame
    number is read from the pts in whatever time base the packet has by then.

    With ``audio``, the AAC packets given to :meth:`mux_audio` go into the parts too (see the
    module docstring).
    """

    def __init__(
        self,
        settings: EncoderSettings,
        part_duration: float = PART_DURATION,
        audio: AudioTrack | None = None,
    ) -> None:
        if not part_duration > 0:
            raise EncoderError(f"part_duration={part_duration}: must be > 0")
        self.settings = settings
        self._track = audio
        self._audio = None if audio is None else AudioQueue(settings.fps, audio.rate)
        self._gop = settings.frames_per_segment
        self._part_frames = min(self._gop, max(1, round(settings.fps * part_duration)))
        self._parts_per_segment = math.ceil(self._gop / self._part_frames)
        self._time_base = Fraction(1, settings.fps)
        self._init: bytes | None = None
        self._open: _Open | None = None
        self._last_pts: int | None = None
        self._closed = False

    @property
    def init(self) -> bytes | None:
        """The init section (``ftyp`` + ``moov``); None until the first part is complete."""
        return self._init

    @property
    def frames_per_part(self) -> int:
        """Frames in every part but perhaps a segment's last (shorter when it does not divide
        the segment)."""
        return self._part_frames

    @property
    def parts_per_segment(self) -> int:
        return self._parts_per_segment

    @property
    def part_target(self) -> float:
        """Seconds of the longest part: LL-HLS's ``PART-TARGET``."""
        return self._part_frames / self.settings.fps

    def mux_audio(self, packets: list[av.Packet[Any]]) -> None:
        """Queue AAC packets (``1/rate`` time base, in order); each goes into the part during
        whose video frames it ends, when that frame is muxed."""
        if self._audio is None:
            raise EncoderError("this muxer was made without an audio track")
        self._audio.add(packets)

    def _frame_number(self, packet: av.Packet[Any]) -> int:
        if packet.pts is None or not packet.time_base:
            raise EncoderError("a packet without pts or time base cannot be placed in a part")
        if packet.dts is not None and packet.dts != packet.pts:
            raise EncoderError(f"packet dts {packet.dts} != pts {packet.pts}: B-frames?")
        frames = packet.pts * packet.time_base / self._time_base
        if frames.denominator != 1:
            raise EncoderError(f"packet pts {packet.pts} x {packet.time_base} is not on a frame")
        return int(frames)

    def mux(self, packet: av.Packet[Any]) -> list[Part]:
        """Mux one packet; return the parts it completed: usually none or one, two only when
        frames went missing (the open part is closed short, and the new one may be complete
        at once)."""
        if self._closed:
            raise EncoderError("CMAF muxer is closed")
        pts = self._frame_number(packet)
        if self._last_pts is not None and pts <= self._last_pts:
            raise EncoderError(f"packet pts {pts} is not after the last one ({self._last_pts})")
        msn, offset = divmod(pts, self._gop)
        index = offset // self._part_frames
        done: list[Part] = []
        current = self._open
        if current is not None and (current.msn, current.index) != (msn, index):
            # Only reachable if frames went missing upstream: close what we have.
            done.append(self._complete(current))
            current = None
        if current is None:
            if not packet.is_keyframe and (index == 0 or self._init is None):
                raise EncoderError(f"segment {msn} part {index} would start with a non-key frame")
            number = msn * self._parts_per_segment + index
            current = self._open = _Open(
                _PartMuxer(self.settings, number, self._track), msn, index, pts, packet.is_keyframe
            )
        # Whatever time base the packet came in, it goes in as whole frames of one frame each:
        # the mp4 muxer needs each sample's duration, and libx264 leaves it at zero.
        packet.time_base = self._time_base
        packet.pts = packet.dts = pts
        packet.duration = 1
        current.muxer.mux(packet)
        self._last_pts = pts
        if self._audio is not None:
            for audio in self._audio.due(pts):
                current.muxer.mux_audio(audio)
        if offset + 1 == min(self._gop, (index + 1) * self._part_frames):
            done.append(self._complete(current))
        return done

    def _complete(self, current: _Open) -> Part:
        self._open = None
        head, data = current.muxer.finish()
        if self._init is None:
            self._init = head  # mux() saw to it that the first part starts with a keyframe
        elif current.independent and head != self._init:
            # Players read the parameter sets once, from the init: new ones need a new init
            # (and a discontinuity), which a running encoder never makes.
            raise EncoderError(f"segment {current.msn}: SPS/PPS differ from the init section's")
        frames = current.muxer.frames
        return Part(
            msn=current.msn,
            index=current.index,
            number=current.muxer.number,
            data=data,
            frames=frames,
            duration=frames / self.settings.fps,
            independent=current.independent,
            first_pts=current.first_pts,
            last=current.index == self._parts_per_segment - 1,
            audio_frames=current.muxer.audio_frames,
        )

    def close(self) -> None:
        """Stop: drop the unfinished part (never publish a partial one). Safe to call twice."""
        self._closed = True
        if self._open is not None:
            self._open.muxer.abandon()
            self._open = None
        if self._audio is not None:
            self._audio.clear()


class PartEncoder:
    """Feed it frames at ``settings.fps``; it hands back each CMAF part as it completes. The
    counterpart of :class:`~pipeline.consumers.encoder.SegmentEncoder` for LL-HLS: the same
    encoder, its packets muxed into parts instead of MPEG-TS segments."""

    def __init__(
        self, settings: EncoderSettings, first_index: int = 0, part_duration: float = PART_DURATION
    ) -> None:
        self.settings = settings
        self.muxer = CmafMuxer(settings, part_duration)  # first: it checks part_duration
        self.h264 = H264Encoder(settings, first_index)

    @property
    def init(self) -> bytes | None:
        """The init section; None until the first part is complete."""
        return self.muxer.init

    @property
    def current_index(self) -> int:
        """Media sequence number of the segment the next frame goes into."""
        return self.h264.current_index

    @property
    def next_pts(self) -> int:
        """Pts the next frame gets, in ``1/fps`` units."""
        return self.h264.next_pts

    def encode(self, picture: Picture) -> list[Part]:
        """Encode one frame; return the parts it completed (with zero delay, the part that
        this frame ends, if it ends one)."""
        return [part for packet in self.h264.encode(picture) for part in self.muxer.mux(packet)]

    def close(self) -> None:
        """Stop: drain the encoder, drop the unfinished part. Safe to call twice."""
        self.h264.close()
        self.muxer.close()
