"""Viewers: one aiortc peer connection each, answered from a WHEP offer.

A viewer's offer (relayed by the gateway) must receive video; it may receive audio and carry
a data channel labelled ``control``. The answer is complete (aiortc gathers every ICE candidate
before it returns, so no trickle ICE is needed: WHEP's simple case). The worker's side only
sends: every transceiver is ``sendonly`` (or ``inactive`` when there is nothing to send), so a
viewer that offers to send media is answered with "don't".

A viewer is named by :func:`~pipeline.webrtc.sdp.peer_id_of` its answer. It counts as
connected from the peer connection's ``connected`` state until ``failed`` or ``closed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from pipeline.producers.jit.errors import SignalError
from pipeline.producers.jit.tracks import SessionAudioTrack, SessionVideoTrack
from pipeline.webrtc.sdp import peer_id_of, receives

log = logging.getLogger("tessera.jit")

CONTROL_LABEL = "control"
"""Label of the data channel that carries commands, replies and frame reports."""


class Peer:
    """One viewer: its peer connection, its tracks and its control channel."""

    def __init__(self, pc: RTCPeerConnection, *, audio: bool) -> None:
        self.pc = pc
        self._video = SessionVideoTrack()
        self._audio = SessionAudioTrack() if audio else None
        self.peer_id = ""
        self.created = time.monotonic()
        self.channel: RTCDataChannel | None = None
        self.connected = False
        self.gone = False

    @property
    def video(self) -> SessionVideoTrack:
        """The video track sent to this viewer."""
        return self._video

    @property
    def audio(self) -> SessionAudioTrack | None:
        """The audio track sent to this viewer (None when its offer receives no audio)."""
        return self._audio

    @property
    def state(self) -> str:
        """The peer connection's state (new, connecting, connected, failed, closed)."""
        return str(self.pc.connectionState)

    def send_text(self, text: str) -> None:
        """Send ``text`` on the control channel, if it is open (else it is not sent)."""
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)

    async def answer(self, offer_sdp: str) -> str:
        """Accept ``offer_sdp`` and return the answer SDP; SignalError when it cannot be."""
        if not receives(offer_sdp, "video"):
            raise SignalError("the offer receives no video: offer a recvonly video transceiver")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            self.pc.addTrack(self._video)
            if self._audio is not None:
                self.pc.addTrack(self._audio)
            for transceiver in self.pc.getTransceivers():
                has_track = transceiver.sender.track is not None
                transceiver.direction = "sendonly" if has_track else "inactive"
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:  # noqa: BLE001 - an untrusted offer can fail anywhere in aiortc
            log.debug("offer refused", exc_info=True)
            raise SignalError(f"cannot answer the offer: {exc or type(exc).__name__}") from exc
        answer = self.pc.localDescription.sdp
        self.peer_id = peer_id_of(answer)
        return answer

    def watch(
        self,
        on_state: Callable[[Peer], None],
        on_channel: Callable[[Peer], None],
        on_message: Callable[[Peer, str | bytes], None],
    ) -> None:
        """Call ``on_state(peer)`` on connection state changes, ``on_channel(peer)`` when the
        control channel opens, and ``on_message(peer, m)`` for each message on it."""

        def state_changed() -> None:
            on_state(self)

        def channel_opened(channel: RTCDataChannel) -> None:
            if channel.label != CONTROL_LABEL:
                log.debug("ignoring data channel %r", channel.label)
                return
            self.channel = channel

            def message(data: str | bytes) -> None:
                on_message(self, data)

            channel.on("message", message)
            on_channel(self)

        self.pc.on("connectionstatechange", state_changed)
        self.pc.on("datachannel", channel_opened)

    async def close(self) -> None:
        """End the tracks and close the peer connection. Safe to call twice."""
        self.gone = True
        self._video.stop()
        if self._audio is not None:
            self._audio.stop()
        await self.pc.close()
