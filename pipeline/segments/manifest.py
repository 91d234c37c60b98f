"""What a mosaic's key in KV ``manifests`` holds: the live playlist the gateway serves.

Two forms, told apart by their first byte:

- MPEG-TS mosaics (``TESSERA_HLS_FORMAT=ts``): the playlist text itself (``#EXTM3U...``), as
  :mod:`pipeline.segments.playlist` writes it.
- CMAF mosaics (the default): a :class:`LiveManifest` as JSON (``{...}``): the rendered
  Low-Latency HLS playlist, the :class:`~pipeline.segments.llhls.LowLatencyPlaylist` it was
  rendered from (the gateway decides blocking reloads and which parts exist from it), and the
  bytes of every init section that may still be fetched (under a kilobyte each: carrying them
  here means a player's first request needs no second look-up, and they live exactly as long
  as the playlist naming them).

Either form tells a restarted stitcher where to go on (:func:`next_sequence`). Pure.
"""

from __future__ import annotations

import msgspec

from pipeline.segments import playlist as ts_playlist
from pipeline.segments.llhls import LowLatencyPlaylist


class LiveManifest(msgspec.Struct, frozen=True, kw_only=True):
    """A CMAF mosaic's live state, as the stitcher stores it after every part."""

    playlist: str
    """The playlist text, rendered from ``state``."""
    state: LowLatencyPlaylist
    inits: dict[str, bytes]
    """Init section name -> its bytes, for every name in ``state.inits``."""


_decoder = msgspec.json.Decoder(LiveManifest)


def is_cmaf(value: bytes) -> bool:
    """True if ``value`` is a :class:`LiveManifest` (else it is a TS playlist's text)."""
    return value[:1] == b"{"


def encode(manifest: LiveManifest) -> bytes:
    return msgspec.json.encode(manifest)


def decode(value: bytes) -> LiveManifest:
    """The manifest in ``value``; ValueError when it is not one (or breaks a playlist rule)."""
    try:
        manifest = _decoder.decode(value)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ValueError(f"not a live manifest: {exc}") from exc
    missing = manifest.state.inits - set(manifest.inits)
    if missing:
        raise ValueError(f"live manifest lacks the bytes of init section {sorted(missing)[0]}")
    return manifest


def make(state: LowLatencyPlaylist, inits: dict[str, bytes]) -> LiveManifest:
    """The manifest of ``state``, with the bytes of the init sections it still names (from
    ``inits``, which may hold more)."""
    return LiveManifest(
        playlist=state.render(), state=state, inits={n: inits[n] for n in sorted(state.inits)}
    )


def next_sequence(value: bytes) -> int:
    """The media sequence number a restarted stitcher begins at, after what ``value`` (either
    form) lists or began; ValueError if it is neither form."""
    if is_cmaf(value):
        # A segment being built counts as begun: its number is never reused either.
        return decode(value).state.next_msn
    return ts_playlist.next_sequence(value.decode("utf-8", errors="replace"))
