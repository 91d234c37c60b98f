"""H.264 encoding of the mosaic into standalone MPEG-TS segments, for live HLS.

How one continuous encoder becomes per-segment files
----------------------------------------------------
One libx264 encoder runs for the stitcher's whole life, so rate control, timestamps and
picture quality are continuous. Every segment is a closed GOP of exactly
``frames_per_segment = round(fps * segment_duration)`` frames: ``keyint = min-keyint =`` that
number, ``scenecut=0`` (no extra keyframes), no B-frames and ``tune=zerolatency`` (no lookahead,
no frame delay), and the first frame of each segment is also forced to an I picture. Without a
global header, x264 writes SPS/PPS in band before every IDR frame, so each segment's first
packet carries everything a decoder needs.

Each segment is muxed by its own short-lived MPEG-TS muxer writing to an in-memory ``BytesIO``,
whose video stream is created from the encoder's parameters (``add_mux_stream``: no second
codec context). A segment therefore starts with its own PAT/PMT and an IDR frame with SPS/PPS,
and is a complete .ts file that decodes on its own. The alternative, one long-lived muxer whose
output is cut at keyframes, needs the cut to land exactly on a TS packet boundary before the
PAT/PMT that precedes the keyframe, and needs the muxer told to resend tables at each cut; a
muxer per segment gets both for free, costs one tiny header per second, and an error in one
segment cannot corrupt the next.

Timestamps are not reset per muxer: frame ``n`` of segment ``k`` has pts ``k * frames + n`` in
``1/fps`` units, so pts run on across segments (HLS players need monotonic timestamps) and a
stitcher restarted at media sequence ``k`` continues the timeline where the old one left it.

A segment is complete when its last frame's packet has been muxed (with zero delay that is on
the very frame that ends it); :meth:`SegmentEncoder.encode` then returns it. Nothing partial is
ever returned: :meth:`SegmentEncoder.close` drops an unfinished segment.

:class:`H264Encoder` is that one encoder alone (pictures in, packets out);
:class:`SegmentEncoder` muxes its packets into MPEG-TS segments, and
:class:`~pipeline.consumers.cmaf.PartEncoder` the same packets into CMAF parts.

The encoder is synchronous and CPU-bound: callers run it in a thread or executor (PyAV releases
the GIL inside libavcodec). Not thread-safe: one caller thread at a time.

Sound: when the mosaic carries audio, its AAC packets (:mod:`~pipeline.consumers.aac`) are
muxed beside the pictures as a second stream (:class:`AudioTrack`): each goes into the segment
(or CMAF part) of the video frame during which it ends, so a segment holds the AAC frames that
end within it. The audio timestamps are on the video's timeline (``1/48000`` of the same
seconds), so both run on across segments alike.

Errors: :class:`EncoderError` (a :class:`~pipeline.errors.TesseraError`) names the bad setting or
what the encoder did wrong; FFmpeg errors are translated into it.
"""

from __future__ import annotations

import collections
import contextlib
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.video.frame import PictureType

from pipeline.consumers.canvas import Planes
from pipeline.errors import TesseraError

PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
TS_TIME_BASE = Fraction(1, 90_000)
"""MPEG-TS timestamps count a 90 kHz clock."""


class EncoderError(TesseraError):
    """The encoder could not be set up, or produced something a segment cannot be made of."""


@dataclass(frozen=True)
class EncoderSettings:
    """How the mosaic is encoded. ``bitrate`` (bits/s), when set, replaces ``crf`` by a capped
    bitrate (VBV of one segment); ``threads=0`` lets x264 choose."""

    width: int
    height: int
    fps: int
    segment_duration: float = 1.0
    preset: str = "veryfast"
    crf: int = 23
    bitrate: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.width < 2 or self.height < 2 or self.width % 2 or self.height % 2:
            raise EncoderError(f"picture size {self.width}x{self.height} must be even (4:2:0)")
        if self.fps < 1:
            raise EncoderError(f"fps={self.fps}: must be at least 1")
        if not self.segment_duration > 0:
            raise EncoderError(f"segment_duration={self.segment_duration}: must be > 0")
        if self.preset not in PRESETS:
            raise EncoderError(f"preset={self.preset!r}: one of {', '.join(PRESETS)}")
        if not 0 <= self.crf <= 51:
            raise EncoderError(f"crf={self.crf}: x264 takes 0 (lossless) to 51")
        if self.bitrate is not None and self.bitrate < 1000:
            raise EncoderError(f"bitrate={self.bitrate}: bits per second, at least 1000")
        if self.threads < 0:
            raise EncoderError(f"threads={self.threads}: 0 (automatic) or more")

    @property
    def frames_per_segment(self) -> int:
        """Frames in every segment (the GOP length)."""
        return max(1, round(self.fps * self.segment_duration))

    @property
    def exact_segment_duration(self) -> float:
        """Seconds of media in every segment (``segment_duration`` rounded to whole frames)."""
        return self.frames_per_segment / self.fps

    def x264_params(self) -> str:
        """The ``x264-params`` string that makes every segment a closed GOP starting with IDR."""
        gop = self.frames_per_segment
        params = [
            f"keyint={gop}",
            f"min-keyint={gop}",
            "scenecut=0",
            "bframes=0",
            "open-gop=0",
            # Tag the matrix the canvas uses (BT.601), so players convert colours right.
            "colormatrix=smpte170m",
        ]
        if self.bitrate is not None:
            kbps = max(1, self.bitrate // 1000)
            buffer = max(1, round(kbps * self.exact_segment_duration))
            params += [f"bitrate={kbps}", f"vbv-maxrate={kbps}", f"vbv-bufsize={buffer}"]
        return ":".join(params)


@dataclass(frozen=True, eq=False)
class EncodedFrame:
    """One encoded picture as it left libx264, for outputs that send frames one by one (WHEP).

    ``data`` is an H.264 access unit in Annex-B form (start codes; an IDR frame is preceded by
    its SPS and PPS), ``pts`` counts ``1/fps`` from the mosaic's timeline start, and ``wall`` is
    the Unix time the picture was composed."""

    data: bytes
    pts: int
    keyframe: bool
    wall: float


@dataclass(frozen=True, eq=False)
class EncodedSegment:
    """A complete MPEG-TS segment: a standalone file starting with an IDR frame."""

    index: int
    """Media sequence number of the segment."""
    data: bytes
    duration: float
    """Seconds of media."""
    frames: int
    first_pts: int
    """Pts of its first frame, in ``1/fps`` units (``index * frames_per_segment``)."""


Picture = Planes | npt.NDArray[np.uint8] | av.VideoFrame
"""What the encoder takes: yuv420p planes, one ``(h * 3 / 2, w)`` yuv420p array (the layout of
:attr:`~pipeline.consumers.canvas.Canvas.array`), or any ``av.VideoFrame`` (converted)."""


@dataclass(frozen=True, eq=False)
class AudioTrack:
    """What a muxer needs to add the mosaic's AAC stream: a stream of the encoder's parameters
    to copy (no codec is opened for the copy) and the AudioSpecificConfig, which those
    parameters lack until the encoder is open. Made by :class:`~pipeline.consumers.aac.
    SoundEncoder`."""

    template: Any
    """An ``av`` audio stream with the encoder's codec, rate and layout."""
    extradata: bytes
    rate: int

    def add_to(self, container: Any) -> Any:
        """Add the AAC stream to ``container`` (an ``av`` output container); return it."""
        try:
            stream = container.add_stream_from_template(self.template)
        except (av.error.FFmpegError, ValueError) as exc:
            raise EncoderError(f"cannot add the AAC stream to the muxer: {exc}") from exc
        stream.codec_context.extradata = self.extradata
        stream.time_base = Fraction(1, self.rate)
        return stream


class AudioQueue:
    """AAC packets waiting for the video frame during which they end: a muxer takes them out
    right after that frame (:meth:`due`), so each lands in the segment or part that ends
    after it. Packets that end before the first frame muxed (the encoder's priming frame) are
    dropped."""

    def __init__(self, fps: int, rate: int) -> None:
        self._fps = fps
        self._rate = rate
        self._packets: collections.deque[av.Packet[Any]] = collections.deque()
        self._start: int | None = None
        self.dropped = 0
        """Packets dropped for ending before the first video frame."""

    def add(self, packets: list[av.Packet[Any]]) -> None:
        self._packets.extend(packets)

    def due(self, frame: int) -> list[av.Packet[Any]]:
        """The packets that end by the end of video frame ``frame`` (pts in ``1/fps``)."""
        if self._start is None:
            self._start = frame
        start = self._start * self._rate
        until = (frame + 1) * self._rate
        taken: list[av.Packet[Any]] = []
        packets = self._packets
        while packets:
            packet = packets[0]
            end = _sample_end(packet) * self._fps
            if end > until:
                break
            packets.popleft()
            if end <= start:
                self.dropped += 1
            else:
                taken.append(packet)
        return taken

    def clear(self) -> None:
        self._packets.clear()


def _sample_end(packet: av.Packet[Any]) -> int:
    """Where an AAC packet ends, in samples (its time base is ``1/rate``)."""
    if packet.pts is None:
        raise EncoderError("the AAC encoder returned a packet without pts")
    return int(packet.pts) + int(packet.duration or 0)


class _SegmentMuxer:
    """One segment's MPEG-TS muxer, writing to memory."""

    def __init__(self, settings: EncoderSettings, index: int, audio: AudioTrack | None) -> None:
        self.index = index
        self.packets = 0
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, "w", format="mpegts")
        self._stream = self._container.add_mux_stream(
            "h264", rate=settings.fps, width=settings.width, height=settings.height
        )
        self._stream.time_base = TS_TIME_BASE
        self._audio = None if audio is None else audio.add_to(self._container)

    def mux(self, packet: av.Packet[Any]) -> None:
        packet.stream = self._stream
        self._container.mux(packet)
        self.packets += 1

    def mux_audio(self, packet: av.Packet[Any]) -> None:
        # mpegts wraps each raw AAC frame in an ADTS header, from the stream's extradata.
        packet.stream = self._audio
        self._container.mux(packet)

    def finish(self) -> bytes:
        self._container.close()
        return self._buffer.getvalue()

    def abandon(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            self._container.close()


class H264Encoder:
    """The one libx264 encoder: feed it pictures at ``settings.fps``, get its packets back.

    Frame ``n`` gets pts ``n`` in ``1/fps`` units (the first is ``first_index *
    frames_per_segment``) and every segment's first frame is forced to an IDR picture. With
    ``tune=zerolatency`` each picture comes back as exactly one packet, at once. Its own class
    so that every output of the mosaic (MPEG-TS segments, CMAF parts) muxes the same packets:
    one encode, however many outputs.
    """

    def __init__(self, settings: EncoderSettings, first_index: int = 0) -> None:
        if first_index < 0:
            raise EncoderError(f"first segment index {first_index} must not be negative")
        self.settings = settings
        self._gop = settings.frames_per_segment
        self._time_base = Fraction(1, settings.fps)
        self._pts = first_index * self._gop
        self._closed = False
        self._ctx = self._open(settings)

    @property
    def frames_per_segment(self) -> int:
        """Frames in every segment."""
        return self._gop

    @property
    def next_pts(self) -> int:
        """Pts the next frame gets, in ``1/fps`` units."""
        return self._pts

    @property
    def current_index(self) -> int:
        """Media sequence number of the segment the next frame goes into."""
        return self._pts // self._gop

    @staticmethod
    def _open(settings: EncoderSettings) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = settings.width
        ctx.height = settings.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, settings.fps)
        ctx.framerate = Fraction(settings.fps, 1)
        ctx.gop_size = settings.frames_per_segment
        ctx.max_b_frames = 0
        ctx.thread_count = settings.threads
        options = {
            "preset": settings.preset,
            "tune": "zerolatency",
            "x264-params": settings.x264_params(),
        }
        if settings.bitrate is None:
            options["crf"] = str(settings.crf)
        ctx.options = options
        try:
            ctx.open()
        except av.error.FFmpegError as exc:
            raise EncoderError(f"cannot open libx264 with {options}: {exc}") from exc
        return ctx

    def _frame(self, picture: Picture) -> av.VideoFrame:
        s = self.settings
        if isinstance(picture, av.VideoFrame):
            frame = picture
            if frame.format.name != "yuv420p" or (frame.width, frame.height) != (s.width, s.height):
                frame = frame.reformat(width=s.width, height=s.height, format="yuv420p")
            return frame
        if isinstance(picture, Planes):
            array = np.concatenate([picture.y.ravel(), picture.u.ravel(), picture.v.ravel()])
            picture = array.reshape(s.height * 3 // 2, s.width)
        if picture.shape != (s.height * 3 // 2, s.width) or picture.dtype != np.uint8:
            raise EncoderError(
                f"picture of shape {picture.shape} ({picture.dtype}) is not a {s.width}x{s.height} "
                f"yuv420p array of shape {(s.height * 3 // 2, s.width)} (uint8)"
            )
        return av.VideoFrame.from_ndarray(picture, format="yuv420p")

    def encode(self, picture: Picture) -> list[av.Packet[Any]]:
        """Encode one frame; return the packets libx264 made (pts in ``1/fps`` units)."""
        if self._closed:
            raise EncoderError("encoder is closed")
        frame = self._frame(picture)
        frame.pts = self._pts
        frame.time_base = self._time_base
        if self._pts % self._gop == 0:
            frame.pict_type = PictureType.I
        else:
            frame.pict_type = PictureType.NONE
        self._pts += 1
        try:
            packets = self._ctx.encode(frame)
        except av.error.FFmpegError as exc:
            raise EncoderError(f"libx264 failed on frame pts {frame.pts}: {exc}") from exc
        return list(packets)

    def close(self) -> None:
        """Stop: drain the encoder. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(av.error.FFmpegError):
            self._ctx.encode(None)  # drain; with zerolatency there is nothing left anyway


class TsMuxer:
    """Encoded H.264 packets in (from :class:`H264Encoder`, in order), MPEG-TS segments out:
    :meth:`mux` returns each segment on the packet that completes it. With ``audio``, the AAC
    packets given to :meth:`mux_audio` go in too (see the module docstring)."""

    def __init__(self, settings: EncoderSettings, audio: AudioTrack | None = None) -> None:
        self.settings = settings
        self._gop = settings.frames_per_segment
        self._muxer: _SegmentMuxer | None = None
        self._track = audio
        self._audio = None if audio is None else AudioQueue(settings.fps, audio.rate)

    def mux_audio(self, packets: list[av.Packet[Any]]) -> None:
        """Queue AAC packets (``1/rate`` time base, in order); each is muxed after the video
        frame during which it ends."""
        if self._audio is None:
            raise EncoderError("this muxer was made without an audio track")
        self._audio.add(packets)

    def mux(self, packet: av.Packet[Any]) -> list[EncodedSegment]:
        """Mux one packet; return the segments it completed (two only when frames went
        missing inside the encoder: the open segment is closed short)."""
        if packet.pts is None:
            raise EncoderError("libx264 returned a packet without pts")
        index = packet.pts // self._gop
        done = []
        muxer = self._muxer
        if muxer is not None and muxer.index != index:
            # Only reachable if frames went missing inside the encoder: close what we have.
            done.append(self._complete(muxer))
            muxer = None
        if muxer is None:
            if not packet.is_keyframe:
                raise EncoderError(
                    f"segment {index} would start with a non-key frame (pts {packet.pts})"
                )
            muxer = self._muxer = _SegmentMuxer(self.settings, index, self._track)
        frame = packet.pts
        muxer.mux(packet)
        if self._audio is not None:
            for audio in self._audio.due(frame):
                muxer.mux_audio(audio)
        if muxer.packets == self._gop:
            done.append(self._complete(muxer))
        return done

    def _complete(self, muxer: _SegmentMuxer) -> EncodedSegment:
        self._muxer = None
        data = muxer.finish()
        return EncodedSegment(
            index=muxer.index,
            data=data,
            duration=muxer.packets / self.settings.fps,
            frames=muxer.packets,
            first_pts=muxer.index * self._gop,
        )

    def close(self) -> None:
        """Drop the unfinished segment (never publish a partial one). Safe to call twice."""
        if self._muxer is not None:
            self._muxer.abandon()
            self._muxer = None
        if self._audio is not None:
            self._audio.clear()


class SegmentEncoder:
    """Feed it frames at ``settings.fps``; it hands back each segment as it completes: an
    :class:`H264Encoder` and a :class:`TsMuxer`."""

    def __init__(self, settings: EncoderSettings, first_index: int = 0) -> None:
        self.settings = settings
        self._h264 = H264Encoder(settings, first_index)
        self._ts = TsMuxer(settings)
        self._ready: collections.deque[EncodedSegment] = collections.deque()

    @property
    def frames_per_segment(self) -> int:
        """Frames in every segment."""
        return self._h264.frames_per_segment

    @property
    def next_pts(self) -> int:
        """Pts the next frame gets, in ``1/fps`` units."""
        return self._h264.next_pts

    @property
    def current_index(self) -> int:
        """Media sequence number of the segment the next frame goes into."""
        return self._h264.current_index

    def encode(self, picture: Picture) -> EncodedSegment | None:
        """Encode one frame; return the segment this frame completed, if it completed one."""
        for packet in self._h264.encode(picture):
            self._ready.extend(self._ts.mux(packet))
        return self._ready.popleft() if self._ready else None

    def close(self) -> None:
        """Stop: drain the encoder and drop the unfinished segment (never publish a partial
        one). Safe to call twice."""
        self._h264.close()
        self._ts.close()
        self._ready.clear()
