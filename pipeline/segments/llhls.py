"""The Low-Latency HLS media playlist of a mosaic: CMAF segments made of parts (rfc8216bis-22
§4.4 and §6.2, Apple's HLS authoring specification §14).

A :class:`LowLatencyPlaylist` is a value. The stitcher tells it what exists, each call
returning a new value: :meth:`~LowLatencyPlaylist.add_part` (part ``n`` of segment ``m`` is
stored), :meth:`~LowLatencyPlaylist.complete` (segment ``m`` has all its parts),
:meth:`~LowLatencyPlaylist.restart` (a new run: a restarted stitcher or encoder) and
:meth:`~LowLatencyPlaylist.forget` (the store lost what is listed).
:meth:`~LowLatencyPlaylist.render` writes the playlist with the ``m3u8`` library;
:mod:`pipeline.segments.serving` decides from the same value what the gateway answers, and
:meth:`~LowLatencyPlaylist.to_bytes` / :meth:`~LowLatencyPlaylist.from_bytes` carry it between
them whole (the text alone cannot say which parts of older segments may still be fetched).
Names of the media: :mod:`pipeline.segments.uris`.

The rules it keeps:

- ``EXT-X-VERSION:6``, the lowest that allows ``EXT-X-MAP`` in a media playlist. The
  low-latency tags need no higher one (only a delta update's ``EXT-X-SKIP`` would, and there
  are none), and a player too old for low latency still plays the segments.
- ``EXT-X-PART-INF:PART-TARGET``: every part lasts at most that; every part but a segment's
  last and the independent ones at least 85 % of it. ``EXT-X-SERVER-CONTROL``:
  ``CAN-BLOCK-RELOAD=YES`` and ``PART-HOLD-BACK`` three part targets (the spec asks at least
  two, recommends three). No ``CAN-SKIP-UNTIL``: it would have to be at least six target
  durations, longer than the window of six one-second segments, and delta updates pay off
  only for much longer playlists; a ``_HLS_skip`` request therefore gets the whole playlist.
- A segment's first part is independent (``INDEPENDENT=YES``: it starts with the IDR frame of
  the segment's GOP), so ``EXT-X-INDEPENDENT-SEGMENTS`` holds. Parts are numbered from 0 with
  no gap; a segment's ``EXTINF`` is the sum of its parts (as written), and its URI is listed
  only once it is complete. ``EXT-X-PROGRAM-DATE-TIME`` on every segment, the wall clock of its
  first frame. Durations are written to 10 µs (``0.33334``-style, as the spec's examples):
  fine enough that parts of any frame rate add up to their segment.
- Parts are listed only for segments that end less than three target durations before the
  live edge (and the one being built); older segments are listed whole. Their parts stay
  fetchable as long as the segment does.
- ``EXT-X-PRELOAD-HINT:TYPE=PART`` names the next part, always (hls.js reloads in a loop
  without one).
- ``EXT-X-TARGETDURATION`` is at least the ceiling of every segment's duration (to the
  millisecond), and is raised, never lowered, should a segment run longer.
- The media sequence goes on across runs and is never reused: a restart closes the segment
  being built with the parts it has and the new run starts at the next number, its first
  segment after an ``EXT-X-DISCONTINUITY`` (and an ``EXT-X-MAP`` if it has an init section of
  its own). ``EXT-X-DISCONTINUITY-SEQUENCE`` counts the discontinuities that left the window.
- Segments leave the window oldest first, only while more than ``window`` complete ones are
  listed and the rest still last three target durations (§6.2.2: a live playlist must not
  get shorter than that). A segment that left stays fetchable while ``window + 1`` more leave
  after it (its duration plus the longest playlist that named it): :attr:`retired`,
  :attr:`keep_from`.

The ``m3u8`` library writes ``EXT-X-MAP`` before ``EXT-X-DISCONTINUITY`` when both start a
segment: the spec sets no order among a segment's tags, and hls.js reads either order. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import m3u8
import msgspec
from m3u8.model import PartInformation, PreloadHint, ServerControl

from pipeline.segments.uris import INIT, InitUri, PartRef, parse_uri, part_uri, segment_uri

VERSION = 6
DEFAULT_WINDOW = 6
"""Complete segments a playlist lists (at least)."""
MIN_TARGET_DURATIONS = 3
"""A live playlist lasts at least three target durations (§6.2.2)."""
PARTS_LISTED_FOR = 3
"""Target durations before the live edge within which segments list their parts."""
HOLD_BACK_PARTS = 3
"""``PART-HOLD-BACK`` in part targets."""
MIN_PART_SHARE = 0.85
"""A part that is neither independent nor its segment's last lasts at least this share of the
part target."""
_DECIMALS = 5
_LATEST_START = 253402300800.0
"""Year 10000: a program date time past it cannot be written."""


def _dp(seconds: float) -> float:
    """A duration as written in the playlist."""
    return round(seconds, _DECIMALS)


def _target(duration: float) -> int:
    """The least target duration a segment of ``duration`` seconds allows."""
    return max(1, math.ceil(round(duration, 3)))


@dataclass(frozen=True)
class Part:
    """One part of a segment."""

    duration: float
    """Seconds, as written (to 10 µs)."""
    independent: bool = False
    """Starts with a keyframe (``INDEPENDENT=YES``)."""


@dataclass(frozen=True)
class Segment:
    """A segment: complete, or the one being built (the last listed, its URI not yet)."""

    msn: int
    start: float
    """Wall clock of its first frame, Unix seconds (``EXT-X-PROGRAM-DATE-TIME``)."""
    init: str
    """Name of its init section (``EXT-X-MAP``)."""
    parts: tuple[Part, ...]
    complete: bool = False
    discontinuity: bool = False
    """The first segment of a run that follows another (``EXT-X-DISCONTINUITY``)."""

    @property
    def duration(self) -> float:
        """Seconds: the sum of its parts (its ``EXTINF`` once complete)."""
        return _dp(sum(p.duration for p in self.parts))

    @property
    def uri(self) -> str:
        return segment_uri(self.msn)

    def part_uris(self) -> tuple[str, ...]:
        return tuple(part_uri(self.msn, i) for i in range(len(self.parts)))


@dataclass(frozen=True)
class LowLatencyPlaylist:
    """What a mosaic's LL-HLS playlist lists, and what may still be fetched.

    Build one with :meth:`start`; the fields are its whole state (checked on construction,
    decoding included: a value that breaks a rule above cannot exist).
    """

    part_target: float
    """Seconds (``PART-TARGET``), as written."""
    target_duration: int = 1
    window: int = DEFAULT_WINDOW
    init: str = INIT
    """Init section of the current run: the next new segment's."""
    segments: tuple[Segment, ...] = ()
    """Listed, oldest first, consecutive; only the last may be incomplete."""
    retired: tuple[Segment, ...] = ()
    """Left the playlist and still fetchable, oldest first, consecutive."""
    discontinuity_sequence: int = 0
    next_msn: int = 0
    """Media sequence number of the next segment to begin."""
    discontinuity_next: bool = False
    """The next segment to begin starts a new run after another."""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(problem)

    @classmethod
    def start(
        cls,
        *,
        part_target: float,
        segment_duration: float,
        first_msn: int = 0,
        window: int = DEFAULT_WINDOW,
        init: str = INIT,
        after_unknown: bool = False,
    ) -> LowLatencyPlaylist:
        """An empty playlist whose first segment will be ``first_msn``.

        ``after_unknown``: earlier runs may have listed segments this value does not know of
        (their playlist was lost: a restarted nats-server's memory bucket), which players may
        still hold. To them this run is a new timeline: its first segment follows a
        discontinuity, counted from ``first_msn``, a bound on the discontinuities earlier runs
        can have reached (each is on a segment of its own, and all their numbers are below
        ``first_msn``), so the discontinuity sequence never goes back.
        """
        if not segment_duration > 0:
            raise ValueError(f"segment duration {segment_duration}: must be > 0")
        return cls(
            part_target=_dp(part_target),
            target_duration=_target(segment_duration),
            window=window,
            init=init,
            next_msn=first_msn,
            discontinuity_sequence=first_msn if after_unknown else 0,
            discontinuity_next=after_unknown,
        )

    # --- what it holds ------------------------------------------------------------------

    @property
    def media_sequence(self) -> int:
        """``EXT-X-MEDIA-SEQUENCE``: the first listed segment (the next one when none is)."""
        return self.segments[0].msn if self.segments else self.next_msn

    @property
    def last_part(self) -> PartRef | None:
        """The newest part listed (None when no segment is)."""
        if not self.segments:
            return None
        last = self.segments[-1]
        return PartRef(last.msn, len(last.parts) - 1)

    @property
    def next_part(self) -> PartRef:
        """The part to come next (what ``EXT-X-PRELOAD-HINT`` names)."""
        if self.segments and not self.segments[-1].complete:
            last = self.segments[-1]
            return PartRef(last.msn, len(last.parts))
        return PartRef(self.next_msn, 0)

    @property
    def part_hold_back(self) -> float:
        """``PART-HOLD-BACK``, seconds."""
        return _dp(HOLD_BACK_PARTS * self.part_target)

    @property
    def keep_from(self) -> int:
        """Segments (and their parts) numbered below this may be deleted from storage."""
        for group in (self.retired, self.segments):
            if group:
                return group[0].msn
        return self.next_msn

    @property
    def inits(self) -> frozenset[str]:
        """Init sections that may be fetched: the current run's and every kept segment's."""
        return frozenset({self.init, *(s.init for s in self._kept())})

    def segment(self, msn: int) -> Segment | None:
        """Segment ``msn`` if it is listed or still fetchable."""
        for group in (self.segments, self.retired):
            if group and group[0].msn <= msn <= group[-1].msn:
                return group[msn - group[0].msn]
        return None

    def _kept(self) -> Iterator[Segment]:
        yield from self.retired
        yield from self.segments

    # --- what happens -------------------------------------------------------------------

    def add_part(
        self, msn: int, index: int, duration: float, *, independent: bool, start: float
    ) -> LowLatencyPlaylist:
        """Part ``index`` of segment ``msn`` is stored: ``duration`` seconds, starting with a
        keyframe if ``independent``; ``start`` is the wall clock of its first frame (the
        segment's program date time when ``index`` is 0).

        It must be :attr:`next_part`: parts come in order, a segment begins with part 0 once
        the one before is complete, and the first part is independent.
        """
        if (msn, index) != (self.next_part.msn, self.next_part.part):
            raise ValueError(
                f"part {index} of segment {msn} is not the next part, "
                f"{self.next_part.part} of segment {self.next_part.msn}"
            )
        part = Part(_dp(duration), independent)
        if index == 0:
            segment = Segment(msn, start, self.init, (part,), discontinuity=self.discontinuity_next)
            segments = (*self.segments, segment)
        else:
            building = self.segments[-1]
            segments = (*self.segments[:-1], replace(building, parts=(*building.parts, part)))
        return replace(
            self,
            segments=segments,
            target_duration=max(self.target_duration, _target(segments[-1].duration)),
            next_msn=segments[-1].msn + 1,
            discontinuity_next=False,
        )

    def complete(self, msn: int) -> LowLatencyPlaylist:
        """Segment ``msn``, the one being built, has all its parts."""
        building = self.segments[-1] if self.segments else None
        if building is None or building.complete or building.msn != msn:
            raise ValueError(f"segment {msn} is not the segment being built")
        return self._slid((*self.segments[:-1], replace(building, complete=True)))

    def restart(self, init: str) -> LowLatencyPlaylist:
        """A new run begins (a restarted stitcher, a new encoder): the segment being built is
        complete with the parts it has, and the next one, at the next number, follows a
        discontinuity and uses init section ``init`` (a new name only if its bytes differ)."""
        segments = self.segments
        if segments and not segments[-1].complete:
            segments = (*segments[:-1], replace(segments[-1], complete=True))
        return replace(self._slid(segments), init=init, discontinuity_next=True)

    def forget(self, next_msn: int | None = None) -> LowLatencyPlaylist:
        """Everything listed or kept is gone (a store lost it, or a segment's first part could
        not be stored): list nothing, never reuse a number, and begin the next segment, at
        ``next_msn`` if given (numbers in between are never used), after a discontinuity."""
        if next_msn is not None and next_msn < self.next_msn:
            raise ValueError(f"segment {next_msn} would reuse a number below {self.next_msn}")
        left = sum(s.discontinuity for s in self.segments)
        return replace(
            self,
            segments=(),
            retired=(),
            discontinuity_sequence=self.discontinuity_sequence + left,
            discontinuity_next=True,
            next_msn=self.next_msn if next_msn is None else next_msn,
        )

    def _slid(self, segments: tuple[Segment, ...]) -> LowLatencyPlaylist:
        """``segments`` listed, after the oldest that may leave the window have left."""
        complete = [s for s in segments if s.complete]
        # Sums kept to the written precision, so that 3 x 1.0 s is 3 s, not 2.9999999999999996.
        rest = _dp(sum(s.duration for s in complete))
        floor = MIN_TARGET_DURATIONS * self.target_duration
        first = 0
        while len(complete) - first > self.window and _dp(rest - segments[first].duration) >= floor:
            rest = _dp(rest - segments[first].duration)
            first += 1
        left = segments[:first]
        # A discontinuity that leaves the window is counted in EXT-X-DISCONTINUITY-SEQUENCE, so
        # every listed segment keeps its discontinuity sequence number.
        passed = sum(s.discontinuity for s in left)
        return replace(
            self,
            segments=segments[first:],
            retired=(*self.retired, *left)[-(self.window + 1) :],
            discontinuity_sequence=self.discontinuity_sequence + passed,
        )

    # --- the playlist -------------------------------------------------------------------

    def render(self) -> str:
        """The playlist text."""
        playlist = m3u8.M3U8()
        playlist.version = VERSION
        playlist.target_duration = self.target_duration
        playlist.media_sequence = self.media_sequence
        playlist.discontinuity_sequence = self.discontinuity_sequence
        playlist.is_independent_segments = True
        playlist.server_control = ServerControl(
            can_block_reload="YES", part_hold_back=self.part_hold_back
        )
        playlist.part_inf = PartInformation(part_target=self.part_target)
        listed = self._listing_parts()
        for segment in self.segments:
            parts = None
            if segment.msn in listed:
                # The library takes parts and the init as keyword dicts, not model objects.
                parts = [
                    {
                        "uri": part_uri(segment.msn, i),
                        "duration": p.duration,
                        "independent": "YES" if p.independent else None,
                    }
                    for i, p in enumerate(segment.parts)
                ]
            playlist.segments.append(
                m3u8.Segment(
                    # A segment being built has no URI (and no EXTINF) yet: only its parts.
                    uri=segment.uri if segment.complete else None,
                    duration=segment.duration if segment.complete else None,
                    program_date_time=datetime.fromtimestamp(segment.start, UTC),
                    discontinuity=segment.discontinuity,
                    init_section={"uri": segment.init},
                    parts=parts,
                )
            )
        playlist.preload_hint = PreloadHint("PART", None, self.next_part.uri)
        return str(playlist.dumps(timespec="milliseconds", infspec="auto"))

    def _listing_parts(self) -> frozenset[int]:
        """Segments that list their parts: those ending less than three target durations
        before the live edge, and the one being built."""
        listed: set[int] = set()
        after = 0.0
        horizon = PARTS_LISTED_FOR * self.target_duration
        for segment in reversed(self.segments):
            if after >= horizon:
                break
            listed.add(segment.msn)
            after = _dp(after + segment.duration)
        return frozenset(listed)

    # --- as bytes -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state as JSON (:meth:`from_bytes` reads it back)."""
        return msgspec.json.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> LowLatencyPlaylist:
        """A state :meth:`to_bytes` wrote; ValueError if ``data`` is not one or breaks a rule."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as exc:  # ValidationError included: it is one
            raise ValueError(f"not a low-latency playlist state: {exc}") from exc

    # --- the rules ----------------------------------------------------------------------

    def _problem(self) -> str | None:
        """The first rule this state breaks, or None."""
        if not 0 < self.part_target <= self.target_duration:
            return f"part target {self.part_target}: must be > 0 and <= the target duration"
        if self.part_target != _dp(self.part_target):
            return f"part target {self.part_target}: more than {_DECIMALS} decimals"
        if self.target_duration < 1 or self.window < 1:
            return f"target duration {self.target_duration}, window {self.window}: must be >= 1"
        if self.discontinuity_sequence < 0 or self.next_msn < 0:
            return "the discontinuity sequence and media sequence numbers are >= 0"
        for name in {self.init, *(s.init for s in self._kept())}:
            if not isinstance(parse_uri(name), InitUri):
                return f"init section {name!r} is not named like one"
        if self.segments and self.next_msn != self.segments[-1].msn + 1:
            return f"next segment {self.next_msn} does not follow {self.segments[-1].msn}"
        for group, what in ((self.retired, "kept"), (self.segments, "listed")):
            for before, after in zip(group, group[1:], strict=False):
                if after.msn != before.msn + 1:
                    return f"{what} segments {before.msn} and {after.msn} are not consecutive"
        if self.retired and self.segments and self.retired[-1].msn + 1 != self.segments[0].msn:
            return "the kept segments do not lead to the listed ones"
        kept = list(self._kept())
        for before, after in zip(kept, kept[1:], strict=False):
            if after.init != before.init and not after.discontinuity:
                return f"segment {after.msn} changes init section without a discontinuity"
        for segment in self._kept():
            problem = self._segment_problem(segment)
            if problem is not None:
                return problem
        if any(not s.complete for s in (*self.retired, *self.segments[:-1])):
            return "only the last listed segment may be incomplete"
        for segment in self.segments:
            if _target(segment.duration) > self.target_duration:
                return (
                    f"segment {segment.msn} lasts {segment.duration} s, "
                    f"over the target duration {self.target_duration}"
                )
        return None

    def _segment_problem(self, segment: Segment) -> str | None:
        where = f"segment {segment.msn}"
        if segment.msn < 0:
            return f"{where}: media sequence numbers are >= 0"
        if not (math.isfinite(segment.start) and 0 <= segment.start < _LATEST_START):
            return f"{where}: start {segment.start} is not a time a playlist can carry"
        if not segment.parts:
            return f"{where} has no parts"
        if not segment.parts[0].independent:
            return f"{where} does not begin with an independent part"
        for i, part in enumerate(segment.parts):
            if part.duration != _dp(part.duration):
                return f"{where} part {i}: duration {part.duration} has over {_DECIMALS} decimals"
            if not 0 < part.duration <= self.part_target:
                return (
                    f"{where} part {i} lasts {part.duration} s: must be > 0 and "
                    f"<= the part target {self.part_target}"
                )
            short = part.duration < MIN_PART_SHARE * self.part_target
            if short and not part.independent and i < len(segment.parts) - 1:
                return (
                    f"{where} part {i} lasts {part.duration} s, under 85 % of the part target "
                    f"{self.part_target}, and is neither independent nor the last"
                )
        return None
