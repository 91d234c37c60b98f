"""H.264 High profile for aiortc peers that send video encoded elsewhere: a mosaic's WHEP
viewers get the stitcher's own libx264 packets, packetized by aiortc and never re-encoded.

Why this module exists: aiortc negotiates H.264 only as ``profile-level-id`` 42001f / 42e01f
(Constrained Baseline, what its own encoder makes), and matches an offer's profile exactly
(``aiortc.rtcpeerconnection.is_codec_compatible``). The stitcher's libx264 makes High profile
(CABAC, 8x8 transforms): answering that as Constrained Baseline would tell the browser to
prepare a decoder the stream does not fit (a hardware decoder may refuse it). Its SPS says
plain High (``profile_idc`` 100, no constraint flags); with no B-frames and progressive
pictures it also keeps every constraint of Constrained High. So the stream goes as it is to a
viewer that offers a profile whose decoders must decode it:

- Constrained High (``640c1f``): Safari; Chrome with a hardware decoder;
- High (``64001f``): Chrome with a hardware decoder;
- High 4:4:4 Predictive (``f4001f``): Chromium's software decoder, which offers only that,
  Main and the Baselines (checked with Chromium 156: no 64xxxx without a GPU). Decoders of
  that profile decode every High profile stream (H.264, Annex A).

An offer with none of them (Firefox offers only Constrained Baseline) is refused with that
reason; such a viewer plays the HLS stream.

aiortc has no API to add a codec: ``RTCRtpTransceiver.setCodecPreferences`` accepts only
codecs from its module-level table ``aiortc.codecs.CODECS``, against which
``setRemoteDescription`` also matches offers. And Chromium numbers the codecs it lists last
(f4001f among them) from 35 to 63, once 96-127 are used up, while aiortc adopts an offer's
payload type only from 96 to 127 (``aiortc.rtp.DYNAMIC_PAYLOAD_TYPES``) and otherwise answers
with its own number: Chromium then discards every packet (seen with Chromium 156: packets
received, no frame decoded). :func:`register_high_profile` fixes both in aiortc's module
state, once per process: the one place Tessera touches aiortc's internals.
:func:`high_profile_preferences` is what a sending transceiver passes to
``setCodecPreferences`` (before the offer is applied), so its answer lists only those.

The level in our entries (``1f``, 3.1, as aiortc's own and the browsers' entries) does not
bound what is sent: aiortc matches the profile only, and with ``level-asymmetry-allowed=1``
the answer's level is what *we* would receive. Browsers decode a mosaic above the level they
offer (a 1080p mosaic is level 4.0).
"""

from __future__ import annotations

from aiortc import RTCRtpCodecCapability, RTCRtpCodecParameters, rtp
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtcpFeedback

from pipeline.webrtc.sdp import h264_profile_level_ids

HIGH_PROFILE_LEVEL_IDS = ("640c1f", "64001f", "f4001f")
"""Constrained High, High, High 4:4:4 Predictive (all level 3.1): the profiles whose decoders
take the stitcher's stream, in the order preferred (the closest fit first)."""
_HIGH_PROFILES = {("64", "0c"), ("64", "00"), ("f4", "00")}
"""``(profile_idc, profile-iop)`` of those profiles, any level."""
CLOCK_RATE = 90_000


def _parameters(profile_level_id: str) -> dict[str, str | int | None]:
    return {
        "level-asymmetry-allowed": "1",
        "packetization-mode": "1",
        "profile-level-id": profile_level_id,
    }


def register_high_profile() -> None:
    """Teach aiortc to answer with the stitcher's H.264, in two edits of its module state.
    Process-wide and idempotent. The stitcher, which calls it, has no other kind of peer;
    another aiortc peer in the process (a test's viewer) lists the new codecs after those it
    had, and keeps an offer's payload numbers as RFC 3264 6.1 asks.

    1. Add the profiles of :data:`HIGH_PROFILE_LEVEL_IDS` (each with its RTX) to
       ``aiortc.codecs.CODECS``, with the next free payload types from 96 (what an aiortc
       offer uses; an answer takes the offerer's).
    2. Take an offer's payload type from 35 up, not only from 96: RFC 3551 lets more than 32
       dynamic types bind below 96, and Chromium does (35-63; with rtcp-mux an offerer leaves
       64-95 to RTCP, RFC 5761). 0-34 stay the static types aiortc knows by number.
    """
    rtp.DYNAMIC_PAYLOAD_TYPES = range(35, 128)
    video = CODECS["video"]
    present = {str(c.parameters.get("profile-level-id", "")) for c in video}
    used = {c.payloadType for c in video}
    for profile_level_id in HIGH_PROFILE_LEVEL_IDS:
        if profile_level_id in present:
            continue
        payload_type, rtx_type = [pt for pt in range(96, 128) if pt not in used][:2]
        used |= {payload_type, rtx_type}
        video += [
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=CLOCK_RATE,
                payloadType=payload_type,
                rtcpFeedback=[
                    RTCRtcpFeedback(type="nack"),
                    RTCRtcpFeedback(type="nack", parameter="pli"),
                    RTCRtcpFeedback(type="goog-remb"),
                ],
                parameters=_parameters(profile_level_id),
            ),
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=CLOCK_RATE,
                payloadType=rtx_type,
                parameters={"apt": payload_type},
            ),
        ]


def high_profile_preferences() -> list[RTCRtpCodecCapability]:
    """The codec preferences of a transceiver that sends the stitcher's stream: the H.264
    profiles of :data:`HIGH_PROFILE_LEVEL_IDS`, and RTX (retransmission of lost packets).
    Registers them first."""
    register_high_profile()
    return [
        *(
            RTCRtpCodecCapability(
                mimeType="video/H264", clockRate=CLOCK_RATE, parameters=_parameters(p)
            )
            for p in HIGH_PROFILE_LEVEL_IDS
        ),
        RTCRtpCodecCapability(mimeType="video/rtx", clockRate=CLOCK_RATE),
    ]


def offers_high_profile(offer_sdp: str) -> bool:
    """True when the offer takes one of those profiles (any level), non-interleaved. Pure."""
    return any((p[:2], p[2:4]) in _HIGH_PROFILES for p in h264_profile_level_ids(offer_sdp))


BASELINE_PROFILE_LEVEL_IDS = ("42e01f", "42001f")
"""Constrained Baseline and Baseline (level 3.1), aiortc's own entries: the profiles whose
decoders take a Constrained Baseline stream (x264's ``ultrafast`` preset, the shipped
default), which every WebRTC browser offers (Firefox offers nothing else)."""
_SPS = 7


def stream_profile_level_id(access_unit: bytes) -> str | None:
    """The ``profile-level-id`` (six hex digits) of the SPS in an Annex-B access unit, or None
    when it carries none. Pure."""
    for chunk in access_unit.split(b"\x00\x00\x01")[1:]:
        if chunk and chunk[0] & 0x1F == _SPS and len(chunk) >= 4:
            return chunk[1:4].hex()
    return None


def is_constrained_baseline(profile_level_id: str) -> bool:
    """True for a Baseline-profile stream with ``constraint_set1`` (Constrained Baseline: what
    Baseline, Main and High decoders all take). Pure."""
    return profile_level_id[:2] == "42" and bool(int(profile_level_id[2:4], 16) & 0x40)


def baseline_preferences() -> list[RTCRtpCodecCapability]:
    """Codec preferences for a Constrained Baseline stream: the Baseline profiles first (the
    exact fit), then the High ones (their decoders take it too), and RTX."""
    high = high_profile_preferences()
    return [
        *(
            RTCRtpCodecCapability(
                mimeType="video/H264", clockRate=CLOCK_RATE, parameters=_parameters(p)
            )
            for p in BASELINE_PROFILE_LEVEL_IDS
        ),
        *high,
    ]


def offers_baseline(offer_sdp: str) -> bool:
    """True when the offer takes a Baseline profile (any level, packetization mode 1). Pure."""
    return any(p[:2] == "42" for p in h264_profile_level_ids(offer_sdp))
