"""The live HLS media playlist of a mosaic: a sliding window of segments (RFC 8216).

A :class:`PlaylistWindow` is a value: :meth:`PlaylistWindow.push` returns a new window and the
segments that left it, :meth:`PlaylistWindow.render` the playlist text (built with the ``m3u8``
library, never by string formatting). The rules it keeps, with their RFC 8216 sections:

- ``EXT-X-VERSION:3``: the lowest version that allows decimal ``EXTINF`` durations (§7).
- ``EXT-X-TARGETDURATION`` is at least the ceiling of every ``EXTINF`` listed (§4.3.3.1 asks
  only for the rounded value; the ceiling is stricter and what players assume). It never
  decreases; with the stitcher's fixed-length segments it never changes either (§6.2.1).
- A segment's media sequence number is the number in its URI (``<seq>.ts``, relative to the
  playlist): the window only holds consecutive numbers, and a gap (a segment that could not be
  stored) starts a new run, so ``EXT-X-MEDIA-SEQUENCE`` is always the first URI's number and
  only ever grows, by the number of segments removed (§6.2.2).
- Segments leave the window oldest first, only while more than ``size`` are listed and the rest
  still last at least three target durations (§6.2.2: a live playlist must not get shorter).
- ``EXT-X-PROGRAM-DATE-TIME`` on every segment (wall clock of its first frame: players and
  probes measure latency with it) and ``EXT-X-INDEPENDENT-SEGMENTS`` (every segment starts
  with an IDR frame, so a player can start or switch at any of them).

A removed segment must stay fetchable for a while (§6.2.2: its duration plus the longest
playlist that named it); :attr:`PlaylistWindow.keep_from` says which ones may go.
Pure: ``m3u8`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

import m3u8

VERSION = 3
DEFAULT_WINDOW = 6
MIN_TARGET_DURATIONS = 3
"""A live playlist lasts at least three target durations (RFC 8216 §6.2.2)."""

SEGMENT_SUFFIX = ".ts"


def segment_uri(seq: int) -> str:
    """URI of segment ``seq`` relative to the playlist (and the object key after ``<fp>/``)."""
    return f"{seq}{SEGMENT_SUFFIX}"


def _extinf(duration: float) -> float:
    """The duration as written in the playlist (milliseconds are what ``EXTINF`` carries)."""
    return round(duration, 3)


def _target(duration: float) -> int:
    return max(1, math.ceil(duration))


@dataclass(frozen=True)
class SegmentEntry:
    """One listed segment."""

    seq: int
    duration: float
    """Seconds of media."""
    start: float
    """Wall-clock time of its first frame, Unix seconds (``EXT-X-PROGRAM-DATE-TIME``)."""

    @property
    def uri(self) -> str:
        """Relative URI, ``<seq>.ts``."""
        return segment_uri(self.seq)


@dataclass(frozen=True)
class PlaylistWindow:
    """The segments a live playlist currently lists.

    ``size`` is the number of segments kept (at least; more while fewer would not last three
    target durations); ``target_duration`` the initial ``EXT-X-TARGETDURATION`` in seconds
    (raised, never lowered, if a longer segment arrives).
    """

    size: int = DEFAULT_WINDOW
    target_duration: int = 1
    entries: tuple[SegmentEntry, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"a playlist window holds at least 1 segment, not {self.size}")
        if self.target_duration < 1:
            raise ValueError(f"target duration must be at least 1 s, not {self.target_duration}")

    @classmethod
    def for_segments(cls, segment_duration: float, size: int = DEFAULT_WINDOW) -> PlaylistWindow:
        """An empty window for segments of ``segment_duration`` seconds."""
        return cls(size=size, target_duration=_target(_extinf(segment_duration)))

    @property
    def media_sequence(self) -> int:
        """``EXT-X-MEDIA-SEQUENCE``: the number of the first listed segment (0 when empty)."""
        return self.entries[0].seq if self.entries else 0

    @property
    def next_seq(self) -> int | None:
        """The number the next segment must have to continue this run (None when empty)."""
        return self.entries[-1].seq + 1 if self.entries else None

    @property
    def keep_from(self) -> int:
        """Segments numbered below this may be deleted from storage.

        A segment that left the playlist stays available for its own duration plus that of the
        longest playlist that named it (RFC 8216 §6.2.2): with equal segments, as many segments
        as the window lists, plus one.
        """
        if not self.entries:
            return 0
        return max(0, self.media_sequence - len(self.entries) - 1)

    @property
    def duration(self) -> float:
        """Seconds of media listed."""
        return sum(e.duration for e in self.entries)

    def restart(self) -> PlaylistWindow:
        """An empty window of the same shape: the next segment starts a new run (for when the
        listed segments were lost, e.g. with a restarted server's memory store)."""
        return PlaylistWindow(self.size, self.target_duration, ())

    def push(self, entry: SegmentEntry) -> tuple[PlaylistWindow, tuple[SegmentEntry, ...]]:
        """Append ``entry``; return the new window and the entries that left it, oldest first.

        ``entry.seq`` must be above every listed one; when it is not the next number (segments
        were lost), every listed entry leaves and a new run starts with ``entry``.
        """
        if not entry.duration > 0:
            raise ValueError(f"segment {entry.seq} has duration {entry.duration}: must be > 0")
        entry = SegmentEntry(entry.seq, _extinf(entry.duration), entry.start)
        entries = self.entries
        removed: tuple[SegmentEntry, ...] = ()
        if entries and entry.seq <= entries[-1].seq:
            raise ValueError(
                f"segment {entry.seq} does not follow segment {entries[-1].seq}: "
                "media sequence numbers only grow"
            )
        if entries and entry.seq != entries[-1].seq + 1:
            removed, entries = entries, ()
        entries = (*entries, entry)
        target = max(self.target_duration, _target(entry.duration))
        floor = MIN_TARGET_DURATIONS * target
        first = 0
        rest = sum(e.duration for e in entries)
        while len(entries) - first > self.size and rest - entries[first].duration >= floor:
            rest -= entries[first].duration
            first += 1
        removed = (*removed, *entries[:first])
        window = PlaylistWindow(self.size, target, entries[first:])
        return window, removed

    def render(self) -> str:
        """The playlist text (an empty live playlist when nothing is listed yet)."""
        playlist = _live_playlist(self.target_duration)
        playlist.media_sequence = self.media_sequence
        for e in self.entries:
            playlist.segments.append(
                m3u8.Segment(
                    uri=e.uri,
                    duration=e.duration,
                    program_date_time=datetime.fromtimestamp(e.start, UTC),
                )
            )
        return str(playlist.dumps(timespec="milliseconds", infspec="milliseconds"))


def _live_playlist(target_duration: int) -> m3u8.M3U8:
    playlist = m3u8.M3U8()
    playlist.version = VERSION
    playlist.target_duration = target_duration
    playlist.is_independent_segments = True
    # No EXT-X-PLAYLIST-TYPE and no EXT-X-ENDLIST: a live playlist that players reload.
    return playlist


def empty_playlist(target_duration: float) -> str:
    """A valid live playlist with no segments yet (the gateway serves it for a cold mosaic;
    players reload it until segments appear)."""
    if not target_duration > 0:
        raise ValueError(f"target duration must be > 0, not {target_duration}")
    return str(_live_playlist(_target(_extinf(target_duration))).dumps())


def continuation(text: str) -> str:
    """An empty live playlist that continues ``text``: its target duration, no segments, and
    the media sequence of the segment that would come next.

    What the gateway serves for a mosaic whose playlist is gone (a restarted nats-server's
    memory bucket, or the TTL) until a stitcher writes a new one: it names nothing that could
    be missing, and a player reloading it never sees the media sequence go back (RFC 8216
    §6.2.2), as it would with :func:`empty_playlist`'s 0.
    """
    target = m3u8.loads(text).target_duration
    playlist = _live_playlist(_target(float(target or 1)))
    playlist.media_sequence = next_sequence(text)
    return str(playlist.dumps())


def next_sequence(text: str) -> int:
    """The media sequence number after the last segment ``text`` lists (0 for none).

    A restarted stitcher continues from here, so that the playlist a player reloads never goes
    back in media sequence (RFC 8216 §6.2.2).
    """
    playlist = m3u8.loads(text)
    first = int(playlist.media_sequence or 0)
    after = first + len(playlist.segments)
    for segment in playlist.segments:
        stem = PurePosixPath(str(segment.uri or "")).stem
        if stem.isdigit():
            after = max(after, int(stem) + 1)
    return after
