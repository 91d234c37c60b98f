"""What the gateway answers about a low-latency mosaic, decided from its
:class:`~pipeline.segments.llhls.LowLatencyPlaylist` (rfc8216bis-22 §6.2.5.2 and §6.2.6).

A playlist request (:func:`decide_reload`) with the delivery directives ``_HLS_msn=M`` and
perhaps ``_HLS_part=N`` is a blocking reload: answered as soon as the playlist holds segment
``M`` complete (or anything after it) or, with ``N``, part ``N`` of segment ``M`` (or any later
part). A part past the last of a complete segment ``M`` is therefore part 0 of ``M + 1``, and a
segment older than the window is answered at once. ``_HLS_part`` without ``_HLS_msn``, a value
that is not a decimal integer, ``M`` beyond the last listed segment plus two, or a part further
ahead than the Advance Part Limit (three seconds' worth of parts) is a ``400``. ``_HLS_skip``
is not asked about: the playlist offers no delta updates, so it is answered whole.

A media request (:func:`decide_media`) is served if the playlist lists or keeps it; the part a
preload hint names is waited for (the player asked for it early on purpose) until it exists or
can no longer come (its segment ended without it, or a new run began); anything else is a
``404``.

A :class:`Wait` is a condition, not a timer: the gateway keeps it with the request, checks
:meth:`Wait.over` on each new playlist state it is told of (a watch, no polling), decides
again once it is over, and gives up after :attr:`Wait.timeout` seconds (three target
durations) with a ``503``. Equal waits compare equal, so one check can serve every request
held for the same thing. Pure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipeline.segments.llhls import LowLatencyPlaylist
from pipeline.segments.uris import InitUri, PartRef, SegmentUri, parse_uri

MAX_AHEAD_SEGMENTS = 2
"""``_HLS_msn`` may be at most this far past the last listed segment."""
ADVANCE_PART_SECONDS = 3.0
"""The Advance Part Limit is three seconds' worth of parts (three parts for parts of a second
or more)."""
HOLD_TARGET_DURATIONS = 3
"""A request is held at most this many target durations."""

_DECIMAL_INTEGER = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True)
class Ready:
    """Answer now: the playlist as it is, or the media."""


@dataclass(frozen=True)
class BadRequest:
    """Answer ``400``."""

    reason: str


@dataclass(frozen=True)
class NotFound:
    """Answer ``404``: nothing has or will have this name."""


@dataclass(frozen=True)
class Serve:
    """Answer with the bytes of these stored objects, in order (one, but for a whole segment:
    its parts)."""

    uris: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    """Hold the request until :meth:`over`, then decide again; ``503`` after ``timeout`` s."""

    msn: int
    part: int | None
    """None: until segment ``msn`` is complete."""
    timeout: float
    hinted: bool = False
    """For the hinted part itself: over once it is no longer the next part (it came, or it
    never will), rather than once something after it exists."""

    def over(self, playlist: LowLatencyPlaylist) -> bool:
        """True once ``playlist`` has what this waits for, or something after it."""
        if self.hinted:
            return playlist.next_part != PartRef(self.msn, self.part or 0)
        last = playlist.last_part
        if last is None:
            # Nothing listed: everything below the next number came and went.
            return self.msn < playlist.next_msn
        if self.part is None:
            building = not playlist.segments[-1].complete
            return self.msn < last.msn or (self.msn == last.msn and not building)
        return PartRef(self.msn, self.part) <= last


READY = Ready()
NOT_FOUND = NotFound()


def hold_limit(playlist: LowLatencyPlaylist) -> float:
    """Seconds a request may be held."""
    return float(HOLD_TARGET_DURATIONS * playlist.target_duration)


def advance_part_limit(playlist: LowLatencyPlaylist) -> int:
    """How many parts past the newest one ``_HLS_part`` may ask for."""
    return max(3, math.ceil(ADVANCE_PART_SECONDS / playlist.part_target - 1e-9))


def _parts_ahead(playlist: LowLatencyPlaylist, msn: int, part: int) -> int:
    """How many parts (msn, part) is past the newest one, counting a segment not yet begun as
    holding as many parts as fit in the target duration."""
    per_segment = max(1, math.floor(playlist.target_duration / playlist.part_target + 1e-9))
    last = playlist.last_part or PartRef(playlist.next_msn - 1, per_segment - 1)
    return (msn - last.msn) * per_segment + part - last.part


def _integer(name: str, value: str) -> int | BadRequest:
    if not _DECIMAL_INTEGER.fullmatch(value):
        return BadRequest(f"{name}={value[:40]!r}: not a decimal integer")
    return int(value)


def decide_reload(
    playlist: LowLatencyPlaylist, msn: str | None, part: str | None
) -> Ready | Wait | BadRequest:
    """What to do with a playlist request whose ``_HLS_msn`` is ``msn`` and ``_HLS_part`` is
    ``part`` (the raw query values; None when absent)."""
    if msn is None:
        if part is not None:
            return BadRequest("_HLS_part without _HLS_msn")
        return READY
    m = _integer("_HLS_msn", msn)
    if isinstance(m, BadRequest):
        return m
    n = None if part is None else _integer("_HLS_part", part)
    if isinstance(n, BadRequest):
        return n
    last_msn = playlist.segments[-1].msn if playlist.segments else playlist.next_msn - 1
    if m > last_msn + MAX_AHEAD_SEGMENTS:
        return BadRequest(
            f"_HLS_msn={m}: more than {MAX_AHEAD_SEGMENTS} past the last segment, {last_msn}"
        )
    wait = Wait(m, n, hold_limit(playlist))
    if wait.over(playlist):
        return READY  # a part number past the end of an old segment included: it means later
    if n is not None and _parts_ahead(playlist, m, n) > advance_part_limit(playlist):
        return BadRequest(
            f"_HLS_msn={m}&_HLS_part={n}: more than {advance_part_limit(playlist)} parts "
            "past the last one"
        )
    return wait


def decide_media(playlist: LowLatencyPlaylist, name: str) -> Serve | Wait | NotFound:
    """What to do with a request for the media named ``name`` (relative to the playlist)."""
    uri = parse_uri(name)
    if isinstance(uri, InitUri):
        return Serve((name,)) if name in playlist.inits else NOT_FOUND
    if isinstance(uri, SegmentUri):
        segment = playlist.segment(uri.msn)
        if segment is None or not segment.complete:
            return NOT_FOUND
        return Serve(segment.part_uris())
    if isinstance(uri, PartRef):
        segment = playlist.segment(uri.msn)
        if segment is not None and uri.part < len(segment.parts):
            return Serve((name,))
        if uri == playlist.next_part:
            return Wait(uri.msn, uri.part, hold_limit(playlist), hinted=True)
    return NOT_FOUND
