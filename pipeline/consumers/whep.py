"""The stitcher's WebRTC output: a mosaic to WHEP viewers, from the stitcher's one encode.

Signalling is request/reply on ``ctl.mosaic.<fp>``, relayed by the gateway's
``POST /play/<fp>/whep`` and ``DELETE /play/<fp>/whep/<peer>`` (so the stitcher needs no HTTP
port; only its UDP media goes direct). A
:class:`~pipeline.messages.control.SignalOffer` is answered with a
:class:`~pipeline.messages.control.SignalAnswer` (complete: aiortc gathers every candidate
first, so no trickle ICE), or with its ``error``, and ``code="full"`` when ``max_viewers``
peers are there already. The viewer is then named
:func:`~pipeline.webrtc.sdp.peer_id_of` the answer, and a
:class:`~pipeline.messages.control.SignalHangup` with that name closes it.

Media: each viewer is an aiortc peer connection with one ``sendonly`` video transceiver. Its
track hands aiortc the stitcher's own H.264 access units as ``av.Packet`` objects, which
aiortc's RTP sender only packetizes (RFC 6184, packetization-mode 1): no decode and no encode
per viewer. The stream is High profile, negotiated as such (:mod:`pipeline.webrtc.h264`).

- **Joining** starts at the next keyframe (an IDR every segment, 1 s): a P-frame without the
  picture it refers to cannot be decoded.
- **Falling behind**: a viewer's queue holds :data:`QUEUE_SECONDS` of frames. When its sender
  has not taken them (a stalled loop), the queued frames are dropped (counted in
  :attr:`MosaicWhep.dropped`) and the viewer waits for the next keyframe. :meth:`feed` never
  waits for a viewer.
- **Loss**: packets a viewer NACKs are resent from aiortc's history. A PLI cannot force a
  keyframe (there is no encoder per viewer to force), so a viewer that lost a picture waits
  for the next IDR, at most a segment away.
- **Viewers count** for the dead-man switch: while at least one is connected, a
  :class:`~pipeline.messages.heartbeats.ViewerHeartbeat` goes to ``hb.viewer.mosaic.<fp>``
  every ``heartbeat_interval``, as a playlist request does at the gateway.
- A viewer that does not connect within ``connect_timeout`` of its answer is dropped, as is
  one whose connection fails or closes.
- **Sound**: when the mosaic carries audio (``sound=True``) and the offer receives audio, the
  answer sends it too: the Opus packets the stitcher encoded once per picture
  (:mod:`~pipeline.consumers.opus`), packetized per viewer by aiortc (RFC 7587) like the
  frames, never encoded again. A viewer joins the sound at once (every Opus packet decodes
  alone); one whose sender falls :data:`QUEUE_SECONDS` behind loses what was queued.

Lifecycle: :meth:`MosaicWhep.start` subscribes; :meth:`MosaicWhep.stop` (safe twice)
unsubscribes, ends the housekeeping task, closes every peer and stops the heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import msgspec
import nats.errors
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from pipeline.consumers.encoder import EncodedFrame, EncoderSettings, H264Encoder
from pipeline.consumers.opus import RATE as SOUND_RATE
from pipeline.consumers.opus import EncodedSound
from pipeline.errors import MessageError
from pipeline.messages.codec import decode_signal_request, encode
from pipeline.messages.control import (
    CommandReply,
    SignalAnswer,
    SignalHangup,
    SignalOffer,
)
from pipeline.messages.heartbeats import ViewerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.heartbeat import Heartbeater
from pipeline.runtime.tasks import Tasks, wait_set
from pipeline.webrtc.h264 import (
    baseline_preferences,
    high_profile_preferences,
    is_constrained_baseline,
    offers_baseline,
    offers_high_profile,
    stream_profile_level_id,
)
from pipeline.webrtc.ice import ice_configuration
from pipeline.webrtc.sdp import h264_profile_level_ids, peer_id_of, receives

log = logging.getLogger("tessera.whep")

QUEUE_SECONDS = 0.5
"""Frames a viewer may have waiting for its RTP sender, in seconds of video. The sender only
packetizes and writes to a UDP socket, so it keeps up unless the event loop stalls; past this
the viewer is better served by the next keyframe than by half a second of old pictures."""
CONNECT_TIMEOUT = 30.0
"""Seconds a viewer has, after its answer, to connect (ICE and DTLS)."""
CLOSE_TIMEOUT = 5.0
"""Seconds one peer connection may take to close before it is given up (and logged)."""


class _PacketTrack(MediaStreamTrack):
    """What one viewer receives of one kind: the stitcher's encoded packets, as ``av.Packet``
    objects stamped in ``time_base`` (aiortc only packetizes them: no codec work per viewer).
    A queue of ``queue_size``; when the sender falls that far behind, what waits is dropped
    (counted in :attr:`dropped`)."""

    def __init__(self, time_base: Fraction, queue_size: int) -> None:
        super().__init__()
        self._time_base = time_base
        # None is the "ended" marker: one place more than the packets, so it always fits.
        self._queue: asyncio.Queue[EncodedFrame | EncodedSound | None] = asyncio.Queue(
            queue_size + 1
        )
        self._size = queue_size
        self.dropped = 0
        """Packets dropped because this viewer's sender was behind."""

    def _put(self, item: EncodedFrame | EncodedSound) -> bool:
        """Queue ``item``; False when the queue was full and was emptied first."""
        emptied = self._queue.qsize() >= self._size
        if emptied:
            self.dropped += self._clear()
        self._queue.put_nowait(item)
        return not emptied

    def _clear(self) -> int:
        count = 0
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                count += 1
        return count

    async def recv(self) -> av.Packet[Any]:
        """The next packet for aiortc to packetize (waits for the stitcher)."""
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        # A copy of the bytes, no codec work: fine on the loop (aiortc packetizes there too).
        packet = av.Packet(item.data)
        packet.pts = item.pts
        packet.time_base = self._time_base
        return packet

    def stop(self) -> None:
        """End the track (wakes a waiting ``recv``)."""
        if self.readyState == "live":
            self._clear()
            self._queue.put_nowait(None)
        super().stop()


class FrameTrack(_PacketTrack):
    """The video one viewer receives, stamped in ``1/fps`` (aiortc converts to the 90 kHz RTP
    clock). After a drop it waits for the next keyframe."""

    kind = "video"

    def __init__(self, fps: int, queue_size: int) -> None:
        super().__init__(Fraction(1, fps), queue_size)
        self._synced = False
        """True once a keyframe started what is queued (frames before it are not offered)."""

    def offer(self, frame: EncodedFrame) -> None:
        """Queue ``frame`` to send, or skip it: while waiting for a keyframe (joining, or after
        falling behind). Never waits."""
        if self.readyState != "live":
            return
        if self._queue.qsize() >= self._size:
            self.dropped += self._clear()
            self._synced = False
        if not self._synced:
            if not frame.keyframe:
                return
            self._synced = True
        self._put(frame)


class SoundTrack(_PacketTrack):
    """The sound one viewer receives: the stitcher's Opus packets, stamped in ``1/48000``."""

    kind = "audio"

    def __init__(self, queue_size: int) -> None:
        super().__init__(Fraction(1, SOUND_RATE), queue_size)

    def offer(self, packet: EncodedSound) -> None:
        """Queue ``packet`` to send (dropping what waits when the sender is behind)."""
        if self.readyState == "live":
            self._put(packet)


def _opus_preferences() -> list[Any]:
    """aiortc's Opus entry: the only audio codec the answer may take (the packets are Opus)."""
    codecs = RTCRtpSender.getCapabilities("audio").codecs
    return [c for c in codecs if c.mimeType.lower() == "audio/opus"]


@dataclass(eq=False)
class _Viewer:
    """One WHEP viewer: its peer connection and tracks, and where it is in its life."""

    pc: RTCPeerConnection
    track: FrameTrack
    created: float
    sound: SoundTrack | None = None
    peer_id: str = ""
    connected: bool = False
    gone: bool = False


def _encodes_baseline(settings: EncoderSettings) -> bool:
    """True if the stitcher's encoder makes Constrained Baseline with these settings (x264's
    ultrafast does; other presets make High). Read off the SPS of one tiny picture encoded with
    the same preset and rate control, once: known before the first viewer offers, and never a
    guess from the preset's name."""
    probe = H264Encoder(dataclasses.replace(settings, width=64, height=64))
    try:
        packets = probe.encode(np.zeros((96, 64), np.uint8))
    finally:
        probe.close()
    profile = stream_profile_level_id(bytes(packets[0])) if packets else None
    return profile is not None and is_constrained_baseline(profile)


class MosaicWhep:
    """A mosaic's WebRTC (WHEP) output inside its stitcher. See the module docstring.

    ``ice_servers`` are ``{"urls", "username", "credential"}`` dicts (the TURN entry, when
    Tessera runs one); none means host candidates only. ``wall`` stamps the heartbeats.
    """

    def __init__(
        self,
        *,
        nc: Client,
        fp: str,
        settings: EncoderSettings,
        max_viewers: int,
        ice_servers: Sequence[Mapping[str, object]] = (),
        heartbeat_interval: float = 1.0,
        wall: Callable[[], float] = time.time,
        connect_timeout: float = CONNECT_TIMEOUT,
        sound: bool = False,
    ) -> None:
        """``sound``: the stitcher makes Opus packets to :meth:`feed` (its mosaic has
        audio)."""
        if max_viewers < 1:
            raise ValueError(f"max_viewers={max_viewers}: a mosaic takes at least 1 viewer")
        self._nc = nc
        self.fp = fp
        self.settings = settings
        self.max_viewers = max_viewers
        self._ice = ice_configuration(ice_servers)  # a bad ICE server fails here, not later
        self._baseline = False
        """The stream is Constrained Baseline: Baseline offers (every browser's, Firefox's
        only) take it too. Learnt in :meth:`start`, off the loop, before any offer is heard."""
        self._codecs = high_profile_preferences()
        self._queue_size = max(2, round(settings.fps * QUEUE_SECONDS))
        self.sound = sound
        self._sound_queue = max(2, round(QUEUE_SECONDS / 0.02))  # 20 ms Opus packets
        self.heartbeat_interval = heartbeat_interval
        self.connect_timeout = connect_timeout
        self._wall = wall
        self._beats = Heartbeater(
            nc,
            subjects.viewer_heartbeat("mosaic", fp),
            self._viewer_beat,
            interval=heartbeat_interval,
        )
        self._beats_lock = asyncio.Lock()
        self._viewers: list[_Viewer] = []
        self._sub: Subscription | None = None
        self._tasks = Tasks(f"whep {fp}")
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._dropped = 0
        self.status = "new"
        """new, running, stopping or stopped."""

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Answer offers and hangups on ``ctl.mosaic.<fp>``. A no-op while running."""
        if self.status == "running":
            return
        if self.status != "new":
            raise RuntimeError(f"WHEP output of mosaic {self.fp} is {self.status}: make a new one")
        self.status = "running"
        try:
            # One tiny encode (a few ms of libx264): in a thread, never on the event loop.
            self._baseline = await asyncio.to_thread(_encodes_baseline, self.settings)
            if self._baseline:
                self._codecs = baseline_preferences()
            self._tasks.spawn(self._housekeeping(), name="housekeeping")
            self._sub = await self._nc.subscribe(
                subjects.mosaic_signal(self.fp), cb=self._on_signal
            )
            await self._nc.flush()
        except BaseException:
            await self.stop()  # NATS went away (or we were cancelled): undo it all
            raise
        log.info("whep output ready", extra={"fp": self.fp, "max_viewers": self.max_viewers})

    async def stop(self) -> None:
        """Unsubscribe, close every viewer, stop the heartbeats. Safe to call twice (a second
        call while the first runs waits for it)."""
        if self.status == "new":
            self.status = "stopped"
            self._stopped.set()
        if self.status in ("stopping", "stopped"):
            await self._stopped.wait()
            return
        self.status = "stopping"
        try:
            sub, self._sub = self._sub, None
            if sub is not None:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
            await self._tasks.close()
            for viewer in list(self._viewers):
                await self._close(viewer)
            async with self._beats_lock:
                await self._beats.stop()
        finally:
            self.status = "stopped"
            self._stopped.set()
        log.info("whep output stopped", extra={"fp": self.fp})

    # -- frames ---------------------------------------------------------------------------------

    def feed(self, frames: Sequence[EncodedFrame], sound: Sequence[EncodedSound] = ()) -> None:
        """Hand the frames (and Opus packets) the stitcher just encoded, in order, to every
        connected viewer. Runs on the event loop; never waits."""
        for viewer in self._viewers:
            if viewer.connected and not viewer.gone:
                for frame in frames:
                    viewer.track.offer(frame)
                if viewer.sound is not None:
                    for packet in sound:
                        viewer.sound.offer(packet)

    @property
    def viewers(self) -> int:
        """Viewers connected now."""
        return sum(1 for v in self._viewers if v.connected and not v.gone)

    @property
    def dropped(self) -> int:
        """Frames dropped in viewers' queues (their senders were behind), gone viewers too."""
        return self._dropped + sum(
            v.track.dropped + (v.sound.dropped if v.sound else 0) for v in self._viewers
        )

    def _viewer_beat(self) -> ViewerHeartbeat:
        return ViewerHeartbeat(at=self._wall(), scope="mosaic", id=self.fp)

    # -- signalling -----------------------------------------------------------------------------

    async def _on_signal(self, msg: Msg) -> None:
        reply: msgspec.Struct
        try:
            request = decode_signal_request(msg.data)
        except MessageError as exc:
            reply = SignalAnswer(error=str(exc))
        else:
            match request:
                case SignalOffer(sdp=sdp):
                    reply = await self._offer(sdp)
                case SignalHangup(peer_id=peer_id):
                    reply = await self._hangup(peer_id)
        if not msg.reply:
            return
        try:
            await msg.respond(encode(reply))
        except nats.errors.Error as exc:
            log.warning("cannot reply on %s: %s", msg.subject, exc)

    def _refusal(self, sdp: str) -> SignalAnswer | None:
        """Why this offer gets no answer, or None."""
        if self.status != "running":
            return SignalAnswer(
                error=f"the WebRTC output of mosaic {self.fp} is {self.status}",
                code="unavailable",
            )
        if len(self._viewers) >= self.max_viewers:
            return SignalAnswer(
                error=f"mosaic {self.fp} has {len(self._viewers)} WebRTC viewers, its maximum "
                f"(--mosaic-viewers): retry later, or play /play/{self.fp}/index.m3u8",
                code="full",
            )
        if not receives(sdp, "video"):
            return SignalAnswer(
                error="the offer receives no video: offer a recvonly video transceiver"
            )
        if self._baseline and offers_baseline(sdp):
            return None
        if not offers_high_profile(sdp):
            offered = ", ".join(h264_profile_level_ids(sdp)) or "no H.264"
            takes = "Baseline or High" if self._baseline else "High"
            return SignalAnswer(
                error=f"the offer takes no H.264 {takes} profile (packetization-mode=1; it "
                f"offers {offered}): the mosaic is sent as the stitcher encoded it, so use a "
                f"browser that decodes H.264 {takes} or play /play/{self.fp}/index.m3u8"
            )
        return None

    async def _offer(self, sdp: str) -> SignalAnswer:
        refused = self._refusal(sdp)
        if refused is not None:
            return refused
        pc = RTCPeerConnection(self._ice)
        viewer = _Viewer(
            pc=pc,
            track=FrameTrack(self.settings.fps, self._queue_size),
            created=time.monotonic(),
        )
        # Listed before the first await: a stop() during the answer closes it too.
        self._viewers.append(viewer)
        pc.on("connectionstatechange", lambda: self._state_changed(viewer))
        try:
            transceiver = pc.addTransceiver(viewer.track, direction="sendonly")
            # Before the offer is applied: aiortc negotiates against these, so the answer
            # lists only what the stitcher's stream is.
            transceiver.setCodecPreferences(self._codecs)
            sending = [transceiver]
            if self.sound and receives(sdp, "audio"):
                viewer.sound = SoundTrack(self._sound_queue)
                audio = pc.addTransceiver(viewer.sound, direction="sendonly")
                audio.setCodecPreferences(_opus_preferences())
                sending.append(audio)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            for other in pc.getTransceivers():
                if other not in sending:
                    other.direction = "inactive"  # a second video or audio section
            await pc.setLocalDescription(await pc.createAnswer())
            answer: str = pc.localDescription.sdp
            viewer.peer_id = peer_id_of(answer)
        except Exception as exc:  # noqa: BLE001 - an untrusted offer can fail anywhere in aiortc
            log.debug("offer refused", exc_info=True, extra={"fp": self.fp})
            await self._close(viewer)
            return SignalAnswer(error=f"cannot answer the offer: {exc or type(exc).__name__}")
        log.info("whep viewer offered", extra={"fp": self.fp, "peer": viewer.peer_id})
        return SignalAnswer(sdp=answer)

    async def _hangup(self, peer_id: str) -> CommandReply:
        for viewer in self._viewers:
            if viewer.peer_id and viewer.peer_id == peer_id:
                await self._close(viewer)
                # Before the reply: once a hangup is answered, this viewer beats no more.
                await self._keep_beats()
                return CommandReply(ok=True)
        return CommandReply(ok=False, error=f"no WebRTC viewer {peer_id!r} on mosaic {self.fp}")

    # -- viewers --------------------------------------------------------------------------------

    def _state_changed(self, viewer: _Viewer) -> None:
        state = viewer.pc.connectionState
        log.debug("whep viewer %s: %s", viewer.peer_id, state, extra={"fp": self.fp})
        if state == "connected" and not viewer.connected and not viewer.gone:
            viewer.connected = True
        elif state in ("failed", "closed"):
            viewer.gone = True
        self._wake.set()

    async def _close(self, viewer: _Viewer) -> None:
        """Close one viewer's peer connection. It stays listed until closed, and the close is
        shielded: a caller cancelled meanwhile (stop() ending the housekeeping) leaves it
        running to completion, and stop() waits for it by closing the viewer again (aiortc's
        close is idempotent: a second call waits for the first)."""
        viewer.gone = True
        viewer.track.stop()
        if viewer.sound is not None:
            viewer.sound.stop()
        try:
            await asyncio.wait_for(asyncio.shield(viewer.pc.close()), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("whep viewer %s did not close in %g s", viewer.peer_id, CLOSE_TIMEOUT)
        if viewer in self._viewers:
            self._viewers.remove(viewer)
            self._dropped += viewer.track.dropped + (viewer.sound.dropped if viewer.sound else 0)
        self._wake.set()

    async def _keep_beats(self) -> None:
        """Viewer heartbeats on while someone watches, off when nobody does."""
        async with self._beats_lock:
            if self.viewers and self.status == "running":
                await self._beats.start()
            else:
                await self._beats.stop()

    async def _housekeeping(self) -> None:
        """Drop gone and never-connected viewers; keep the viewer heartbeat while watched."""
        while True:
            await wait_set(self._wake, self.heartbeat_interval)
            self._wake.clear()
            now = time.monotonic()
            for viewer in list(self._viewers):
                late = not viewer.connected and now - viewer.created > self.connect_timeout
                if viewer.gone or late:
                    await self._close(viewer)
            await self._keep_beats()
