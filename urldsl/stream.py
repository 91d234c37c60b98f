"""The result of expansion: a stream's URL and its display name."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

__all__ = ["Stream", "sources"]


class Stream(msgspec.Struct, frozen=True, kw_only=True):
    """One tile of a mosaic.

    Attributes:
        url: where to pull the stream from.
        name: the display name built from the ``n`` groups; empty when there are none
            (the tile then shows a short form of the URL).
    """

    url: str
    name: str


def sources(streams: Iterable[Stream]) -> list[str]:
    """The distinct URLs of ``streams``, in first-seen order.

    Expansion keeps duplicates (a user may want a tile twice); a source is pulled once.
    """
    return list(dict.fromkeys(stream.url for stream in streams))
