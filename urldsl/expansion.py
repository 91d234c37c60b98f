"""Expanding patterns into streams, after checking the count against a cap.

Loop order: the element-wise index is the outermost loop; multiplicative groups vary
inside it in pattern order, the first outermost and the last fastest. So
``{a,b,c}[e]{-a,-b}[m]{1,2,3}[e]`` gives a-a1, a-b1, b-a2, b-b2, c-a3, c-b3.

Names: the parts of ``n`` groups, each ``npre + value (cased) + npost``, joined without a
separator; parts with ``norder`` come first, lowest first (ties in pattern order), then
the others in pattern order. ``nc``/``nl`` change the value only, never ``npre``/``npost``.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import product

from urldsl.counting import count, describe, first_over
from urldsl.errors import UrlDslError
from urldsl.nodes import Group, Pattern
from urldsl.parser import parse
from urldsl.stream import Stream

__all__ = ["DEFAULT_MAX_STREAMS", "expand", "expand_all", "expand_parsed"]

DEFAULT_MAX_STREAMS = 64
"""Streams per mosaic unless the caller says otherwise: an 8 x 8 grid."""

_FIX = "split it or raise the cap (max_streams)"


def expand(pattern: str, *, max_streams: int = DEFAULT_MAX_STREAMS) -> list[Stream]:
    """Expand one pattern into its streams, in order.

    Raises:
        UrlDslError: the pattern is malformed or makes more than ``max_streams`` streams.
        ValueError: ``max_streams`` is below 1 (a programming error, not user input).
    """
    return expand_all([pattern], max_streams=max_streams)


def expand_all(patterns: Iterable[str], *, max_streams: int = DEFAULT_MAX_STREAMS) -> list[Stream]:
    """Expand several patterns (the repeated ``urls`` parameter) and concatenate them.

    Every pattern is parsed first, so a syntax error is reported even when an earlier
    pattern is over the cap. The cap applies to the total; duplicates are kept.

    Raises:
        UrlDslError: a pattern is malformed, or the total passes ``max_streams``; when
            there are several patterns the message starts with ``pattern N:`` and
            ``index`` says which.
        ValueError: ``max_streams`` is below 1.
    """
    if max_streams < 1:
        raise ValueError(f"max_streams must be at least 1, got {max_streams}")
    sources = list(patterns)
    parsed: list[Pattern] = []
    for index, source in enumerate(sources):
        try:
            parsed.append(parse(source))
        except UrlDslError as error:
            raise error.in_pattern(index, of=len(sources)) from None
    _check_cap(parsed, max_streams)
    streams: list[Stream] = []
    for pattern in parsed:
        streams.extend(expand_parsed(pattern))
    return streams


def _check_cap(parsed: list[Pattern], max_streams: int) -> None:
    total = 0
    for index, pattern in enumerate(parsed):
        column = first_over(pattern, max_streams - total)
        if column is None:
            total += count(pattern)
            continue
        if first_over(pattern, max_streams) is not None:
            error = UrlDslError(
                f"pattern expands to more than {max_streams} streams"
                f" ({describe(count(pattern))}; the group at column {column} passes the cap):"
                f" {_FIX}",
                column=column,
                pattern=pattern.source,
            )
        else:
            everything = sum(count(each) for each in parsed)
            error = UrlDslError(
                f"patterns expand to more than {max_streams} streams in total"
                f" ({describe(everything)}; this one passes the cap at column 1):"
                " split them across mosaics or raise the cap (max_streams)",
                column=1,
                pattern=pattern.source,
            )
        raise error.in_pattern(index, of=len(parsed))


def expand_parsed(pattern: Pattern) -> list[Stream]:
    """Expand an already parsed pattern, with no cap: check :func:`count` first."""
    groups = pattern.groups
    element_wise = [group for group in groups if group.options.mode == "e"]
    multiplicative = [group for group in groups if group.options.mode == "m"]
    # Axis 0 is the element-wise index (a single step when there is none); axis k + 1 is
    # the k-th multiplicative group. product() varies the last axis fastest.
    axis_of: dict[int, int] = {id(group): 0 for group in element_wise}
    axis_of.update({id(group): k + 1 for k, group in enumerate(multiplicative)})
    axes = [range(len(element_wise[0].values) if element_wise else 1)]
    axes.extend(range(len(group.values)) for group in multiplicative)

    url_parts: list[str | tuple[int, tuple[str, ...]]] = []
    for part in pattern.parts:
        if isinstance(part, Group):
            if part.options.rendered:
                url_parts.append((axis_of[id(part)], part.values))
        else:
            url_parts.append(part.text)
    name_parts = [(axis_of[id(group)], _name_pieces(group)) for group in _name_order(groups)]

    streams: list[Stream] = []
    for choice in product(*axes):
        url = "".join(
            part if isinstance(part, str) else part[1][choice[part[0]]] for part in url_parts
        )
        name = "".join(pieces[choice[axis]] for axis, pieces in name_parts)
        streams.append(Stream(url=url, name=name))
    return streams


def _name_order(groups: tuple[Group, ...]) -> list[Group]:
    named = [group for group in groups if group.options.named]
    # sorted() is stable, so equal keys keep pattern order.
    return sorted(
        named,
        key=lambda group: (0, group.options.order) if group.options.order is not None else (1, 0),
    )


def _name_pieces(group: Group) -> tuple[str, ...]:
    options = group.options
    values = group.values
    if options.case == "upper":
        values = tuple(value.upper() for value in values)
    elif options.case == "lower":
        values = tuple(value.lower() for value in values)
    return tuple(f"{options.prefix}{value}{options.suffix}" for value in values)
