"""The names of a CMAF mosaic's media: each relative to its playlist, and the object key after
``<fp>/``.

- ``init.mp4`` or ``init-<run>.mp4``: an init section (``EXT-X-MAP``); a run that needs one of
  its own (new bytes after a restart) names it after itself;
- ``<msn>.<part>.m4s``: part ``part`` of segment ``msn`` (``EXT-X-PART``), counted from 0;
- ``<msn>.m4s``: the whole segment ``msn`` (``EXTINF``): its parts' bytes, in order.

Numbers are decimal without leading zeros, and :func:`parse_uri` reads back only what the
writers here write: ``07.m4s`` is not ``7.m4s``. So each piece of media has one name, which
players and HTTP caches may keep as immutable, and a name the gateway does not know is a 404
rather than an alias. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEGMENT_SUFFIX = ".m4s"
INIT = "init.mp4"
"""The init section's name when runs share one (same settings, same bytes)."""

_NUMBER = r"(0|[1-9][0-9]{0,19})"
"""A decimal-integer as HLS writes it (below 2**64), in its one canonical form."""
_INIT_RE = re.compile(rf"init(?:-{_NUMBER})?\.mp4")
_SEGMENT_RE = re.compile(rf"{_NUMBER}\.m4s")
_PART_RE = re.compile(rf"{_NUMBER}\.{_NUMBER}\.m4s")


def _checked(what: str, n: int) -> int:
    if n < 0:
        raise ValueError(f"{what} {n}: must be >= 0")
    return n


def init_uri(run: int | None = None) -> str:
    """``init.mp4``, or ``init-<run>.mp4`` for an init section of run ``run`` only."""
    return INIT if run is None else f"init-{_checked('run', run)}.mp4"


def segment_uri(msn: int) -> str:
    """``<msn>.m4s``: the whole segment."""
    return f"{_checked('media sequence number', msn)}{SEGMENT_SUFFIX}"


def part_uri(msn: int, part: int) -> str:
    """``<msn>.<part>.m4s``: one part of segment ``msn``."""
    return f"{_checked('media sequence number', msn)}.{_checked('part', part)}{SEGMENT_SUFFIX}"


@dataclass(frozen=True)
class InitUri:
    """An init section's name; ``run`` None for the shared ``init.mp4``."""

    run: int | None = None

    @property
    def uri(self) -> str:
        return init_uri(self.run)


@dataclass(frozen=True)
class SegmentUri:
    """A whole segment's name."""

    msn: int

    @property
    def uri(self) -> str:
        return segment_uri(self.msn)


@dataclass(frozen=True, order=True)
class PartRef:
    """Part ``part`` of segment ``msn``; ordered as they are made (by segment, then part)."""

    msn: int
    part: int

    @property
    def uri(self) -> str:
        return part_uri(self.msn, self.part)


def parse_uri(name: str) -> InitUri | SegmentUri | PartRef | None:
    """What ``name`` names, or None if no writer here writes it."""
    if match := _PART_RE.fullmatch(name):
        return PartRef(int(match[1]), int(match[2]))
    if match := _SEGMENT_RE.fullmatch(name):
        return SegmentUri(int(match[1]))
    if match := _INIT_RE.fullmatch(name):
        return InitUri(None if match[1] is None else int(match[1]))
    return None
