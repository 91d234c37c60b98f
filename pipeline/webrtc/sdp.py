"""What the worker reads in SDP offers and answers, without a WebRTC stack. Pure.

- :func:`peer_id_of`: the name of a viewer's peer connection, from the worker's answer: the
  first 32 hex digits of its DTLS certificate's SHA-256 fingerprint. Every peer connection of
  the worker has its own certificate, so the id is unique per viewer and stable; the gateway
  computes it from the answer it relays (the WHEP resource URL of that viewer) and sends it
  back in a :class:`~pipeline.messages.control.SignalHangup` on DELETE.
- :func:`receives`: whether an offer asks to receive a kind of media.
- :func:`h264_profile_level_ids`: the H.264 profiles an offer can take, non-interleaved
  (``packetization-mode=1``, the one aiortc sends).
"""

from __future__ import annotations

import re

_FINGERPRINT_RE = re.compile(r"^a=fingerprint:sha-256 ([0-9A-Fa-f:]+)\s*$", re.MULTILINE)
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_RTPMAP_RE = re.compile(r"^a=rtpmap:(\d+) H264/90000\s*$", re.MULTILINE | re.IGNORECASE)
_FMTP_RE = re.compile(r"^a=fmtp:(\d+) (.*?)\s*$", re.MULTILINE)
PEER_ID_LENGTH = 32


def peer_id_of(answer_sdp: str) -> str:
    """The viewer id of an SDP answer; ValueError when it has no SHA-256 fingerprint."""
    match = _FINGERPRINT_RE.search(answer_sdp)
    if match is None:
        raise ValueError("the SDP has no a=fingerprint:sha-256 line")
    return match.group(1).replace(":", "").lower()[:PEER_ID_LENGTH]


def media_sections(sdp: str) -> list[tuple[str, str]]:
    """``(kind, direction)`` of each m= section, in order (a rejected one, port 0, is
    ``inactive``; a section without a direction attribute inherits the session's, by default
    ``sendrecv``)."""
    session_direction = "sendrecv"
    sections: list[tuple[str, str]] = []
    kind: str | None = None
    direction = ""
    rejected = False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if kind is not None:
                sections.append((kind, "inactive" if rejected else direction))
            fields = line[2:].split()
            kind = fields[0] if fields else ""
            rejected = len(fields) > 1 and fields[1] == "0"
            direction = session_direction
        elif line.startswith("a=") and line[2:] in _DIRECTIONS:
            if kind is None:
                session_direction = line[2:]
            else:
                direction = line[2:]
    if kind is not None:
        sections.append((kind, "inactive" if rejected else direction))
    return sections


def receives(offer_sdp: str, kind: str) -> bool:
    """True when the offer has a ``kind`` section in which the offerer receives."""
    return any(k == kind and d in ("recvonly", "sendrecv") for k, d in media_sections(offer_sdp))


def h264_profile_level_ids(sdp: str) -> list[str]:
    """The ``profile-level-id`` (six hex digits, lower case) of every H.264 payload type in
    ``sdp`` with ``packetization-mode=1``, in the order listed; entries without a
    profile-level-id or in another packetization mode are left out."""
    h264 = set(_RTPMAP_RE.findall(sdp))
    found: list[str] = []
    for payload_type, params in _FMTP_RE.findall(sdp):
        if payload_type not in h264:
            continue
        fields = dict(item.strip().partition("=")[::2] for item in params.split(";") if "=" in item)
        profile = fields.get("profile-level-id", "").lower()
        if fields.get("packetization-mode") == "1" and re.fullmatch(r"[0-9a-f]{6}", profile):
            found.append(profile)
    return found
