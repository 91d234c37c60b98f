"""Which rendition of an HLS master playlist a grabber decodes: pure, no I/O.

A master playlist (``#EXT-X-STREAM-INF``) offers the same stream at several sizes. FFmpeg's HLS
demuxer, given the master, decodes the biggest and may fetch several; a grabber only needs a
picture that fills its tile. :func:`parse_master` reads the master into :class:`Variant` values
and :func:`choose` picks one, by these rules in this order:

1. **A picture.** A variant whose ``CODECS`` name a video codec this FFmpeg cannot decode (see
   :data:`VIDEO_DECODERS`: e.g. ``hvc1`` without an HEVC decoder), or only audio and subtitle
   codecs, is never chosen.
2. **Known before unknown.** Variants whose ``CODECS`` name a video codec FFmpeg decodes come
   first; variants without ``CODECS``, or whose video codec is a string not in the table, are
   kept but considered only when no known one is left.
3. **The smallest that fills the tile.** By ``RESOLUTION``: a variant fills a ``w x h`` tile
   when its width >= ``w`` and its height >= ``h``; the smallest such picture (by area) wins,
   and when none fills the tile, the largest. Variants without ``RESOLUTION`` are considered
   only when no variant has one, and then the highest ``BANDWIDTH`` wins (what FFmpeg would
   have decoded, but fetched alone).
4. **Ties.** Between pictures of the same size, one with its audio muxed in (no separate audio
   rendition to fetch) wins, then the lower ``BANDWIDTH`` when filling the tile (nothing more
   is needed) or the higher one when none fills it (the best of what there is); then the
   earlier in the playlist.

A grabber is per (URL, tile size), so another tile size gets its own grabber and its own choice:
moving up or down a rendition when a tile changes size needs nothing here. Each connection
reads the master again and chooses again (a live master may change).

Audio: the chosen variant's own stream is opened (its media playlist), so audio muxed into its
segments plays as before. An audio rendition of its own (``EXT-X-MEDIA:TYPE=AUDIO`` with a
``URI``, named by the variant's ``AUDIO`` group) is **not fetched yet**: such a variant is
chosen only when no equally good variant carries muxed audio, and then the grabber has no sound.

Errors: :class:`MasterPlaylistError` (a :class:`~pipeline.errors.TesseraError`): a master that
cannot be read, or that offers no rendition this FFmpeg can decode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import m3u8

from pipeline.errors import TesseraError


class MasterPlaylistError(TesseraError):
    """A master playlist that cannot be read, or offers no rendition the grabber can use."""


VIDEO_DECODERS: dict[str, tuple[str, ...]] = {
    "avc1": ("h264",),
    "avc3": ("h264",),
    "hvc1": ("hevc",),
    "hev1": ("hevc",),
    # FFmpeg's own "av1" decoder only drives hardware decoders: a software one is needed.
    "av01": ("libdav1d", "libaom-av1"),
    "vp09": ("vp9", "libvpx-vp9"),
    "vp08": ("vp8", "libvpx"),
    "mp4v": ("mpeg4",),
}
"""RFC 6381 sample entry (a ``CODECS`` entry up to its first dot) → FFmpeg decoders, any of which
decodes it."""

NOT_VIDEO = frozenset({"mp4a", "ac-3", "ec-3", "ac-4", "opus", "flac", "alac", "stpp", "wvtt"})
"""Sample entries of audio and subtitle codecs (lower case): no picture, never a reason to skip
or to distrust a variant."""

AUDIO = frozenset({"mp4a", "ac-3", "ec-3", "ac-4", "opus", "flac", "alac"})

KNOWN, UNKNOWN = 0, 1
"""Ranks of a variant's video codec (rule 2): the lower, the better."""


@dataclass(frozen=True)
class Variant:
    """One ``#EXT-X-STREAM-INF`` entry of a master playlist."""

    uri: str
    """Its media playlist, absolute (resolved against the master's URL)."""
    width: int | None
    """Picture size from ``RESOLUTION`` (None: not given, or not a usable size)."""
    height: int | None
    bandwidth: int
    """``BANDWIDTH``, bits per second (0 if not usable)."""
    codecs: tuple[str, ...] = ()
    """``CODECS`` entries as written (e.g. ``avc1.64001f``, ``mp4a.40.2``); empty: not given."""
    frame_rate: float | None = None
    audio_group: str | None = None
    """``AUDIO``: the group of ``EXT-X-MEDIA`` audio renditions it plays with."""
    separate_audio: bool = False
    """Its audio group names a rendition with a ``URI`` (fetched apart: not done yet)."""
    muxed_audio: bool = False
    """Its own segments carry audio (``CODECS`` lists an audio codec, or its audio group has a
    rendition without a ``URI``, which means "in the variant's stream")."""

    @property
    def area(self) -> int:
        """Pixels of a picture (0 when the size is not known)."""
        return (self.width or 0) * (self.height or 0)

    def fills(self, tile_w: int, tile_h: int) -> bool:
        """Whether its picture is at least ``tile_w x tile_h`` (False when not known)."""
        return self.area > 0 and (self.width or 0) >= tile_w and (self.height or 0) >= tile_h

    def describe(self) -> str:
        """One line for stats and logs, e.g. ``1280x720 2.5 Mbit/s avc1.64001f,mp4a.40.2``
        (never the URI: it may carry a token)."""
        parts = [f"{self.width}x{self.height}" if self.area else "size unknown"]
        if self.bandwidth > 0:
            parts.append(f"{self.bandwidth / 1e6:.3g} Mbit/s")
        if self.codecs:
            parts.append(",".join(self.codecs))
        if self.separate_audio and not self.muxed_audio:
            parts.append("(separate audio not fetched)")
        return " ".join(parts)


def is_master(text: str) -> bool:
    """Whether playlist ``text`` is a master playlist (it lists variant streams)."""
    return any(line.lstrip().startswith("#EXT-X-STREAM-INF") for line in text.splitlines())


def sample_entry(codec: str) -> str:
    """The sample entry of one ``CODECS`` entry, lower case: ``avc1.64001f`` → ``avc1``."""
    return codec.strip().split(".", 1)[0].lower()


def parse_master(text: str, url: str) -> list[Variant]:
    """The variants of master playlist ``text`` fetched from ``url`` (relative URIs are
    resolved against it), in playlist order. I-frame playlists are not variants.

    Raises :class:`MasterPlaylistError` when ``m3u8`` cannot read it (a malformed attribute).
    """
    try:
        playlist = m3u8.loads(text, uri=url)
        entries = [(p, p.absolute_uri) for p in playlist.playlists]
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        # m3u8 converts attributes as it reads them: int("abc"), "1280" without "x", a URI
        # that is not one, a required BANDWIDTH missing.
        raise MasterPlaylistError(f"unreadable master playlist: {exc!r}") from exc
    # Audio groups: whether each has a rendition fetched apart (URI) or in the variant (none).
    with_uri: set[str] = set()
    without_uri: set[str] = set()
    for media in playlist.media:
        if (media.type or "").upper() != "AUDIO" or media.group_id is None:
            continue
        (with_uri if media.uri else without_uri).add(media.group_id)
    variants: list[Variant] = []
    for entry, uri in entries:
        info = entry.stream_info
        width, height = _size(info.resolution)
        codecs = tuple(c.strip() for c in (info.codecs or "").split(",") if c.strip())
        group = info.audio or None
        muxed = any(sample_entry(c) in AUDIO for c in codecs) or group in without_uri
        variants.append(
            Variant(
                uri=str(uri),
                width=width,
                height=height,
                bandwidth=_positive(info.bandwidth),
                codecs=codecs,
                frame_rate=float(info.frame_rate) if info.frame_rate else None,
                audio_group=group,
                separate_audio=group in with_uri,
                muxed_audio=muxed,
            )
        )
    return variants


def _size(resolution: object) -> tuple[int | None, int | None]:
    if isinstance(resolution, tuple) and len(resolution) == 2:
        width, height = resolution
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            return width, height
    return None, None


def _positive(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def codec_rank(variant: Variant, can_decode: Callable[[str], bool]) -> int | None:
    """:data:`KNOWN` or :data:`UNKNOWN` (rule 2), or None: never chosen (rule 1).

    ``can_decode(name)`` says whether FFmpeg has the decoder ``name`` (e.g. ``h264``).
    """
    if not variant.codecs:
        return UNKNOWN
    entries = [sample_entry(c) for c in variant.codecs]
    video = [e for e in entries if e not in NOT_VIDEO]
    if not video:
        return None  # audio or subtitles only: no picture
    known = [e for e in video if e in VIDEO_DECODERS]
    if any(not any(can_decode(name) for name in VIDEO_DECODERS[e]) for e in known):
        return None
    return KNOWN if known else UNKNOWN


def choose(
    variants: Iterable[Variant],
    tile_w: int,
    tile_h: int,
    *,
    can_decode: Callable[[str], bool] = lambda name: True,
) -> Variant:
    """The variant a grabber of a ``tile_w x tile_h`` tile decodes (module docstring: the rules).

    ``can_decode(name)``: whether this FFmpeg has decoder ``name`` (the default says yes to all;
    the opener asks PyAV). Raises :class:`MasterPlaylistError` when no variant can be decoded.
    """
    ranked: list[tuple[int, Variant]] = []
    skipped: list[Variant] = []
    for variant in variants:
        rank = codec_rank(variant, can_decode)
        if rank is None:
            skipped.append(variant)
        else:
            ranked.append((rank, variant))
    if not ranked:
        if not skipped:
            raise MasterPlaylistError("the master playlist lists no variant stream")
        codecs = sorted({",".join(v.codecs) for v in skipped})
        raise MasterPlaylistError(
            f"no variant with a video codec this FFmpeg decodes (CODECS: {'; '.join(codecs)})"
        )
    best = min(rank for rank, _ in ranked)
    pool = [v for rank, v in ranked if rank == best]
    sized = [v for v in pool if v.area]
    if not sized:
        return max(pool, key=lambda v: (v.bandwidth, v.muxed_audio))
    filling = [v for v in sized if v.fills(tile_w, tile_h)]
    if filling:
        # min() and max() keep the first of equals: playlist order breaks the last ties.
        return min(filling, key=lambda v: (v.area, not v.muxed_audio, v.bandwidth))
    return max(sized, key=lambda v: (v.area, v.muxed_audio, v.bandwidth))
