"""Parsing a pattern into :class:`~urldsl.nodes.Pattern`, validating it completely.

Parsing is linear in the pattern's length: the scanner jumps between special characters
with compiled regular expressions and slices the text in between, so even a group of a
thousand values costs a few microseconds (the cap check relies on that).

Structure:

- Outside groups only ``\\``, ``{`` and ``}`` are special; ``[``, ``]`` and ``,`` are
  literal, so ``http://[::1]:8080/{a,b}`` needs no escaping. A ``}`` without ``{`` is an
  error.
- Inside ``{...}``, ``,`` separates values and ``[``/``]`` are literal. Values keep their
  spaces. An empty value is allowed when there is a comma (``{,-backup}`` is an optional
  suffix) but ``{}`` is an error. A ``{`` inside a group is an error: groups do not nest.
- A ``[`` right after a group's ``}`` opens its option list (:mod:`urldsl.options`).
- After parsing, element-wise groups must all have the same number of values.
"""

from __future__ import annotations

import re

from urldsl.errors import UrlDslError, fail, preview
from urldsl.escaping import unescape_at
from urldsl.nodes import DEFAULT_OPTIONS, Group, Options, Pattern, Text
from urldsl.options import parse_options

__all__ = ["parse"]

_TEXT_STOP = re.compile(r"[\\{}]")
_VALUE_STOP = re.compile(r"[\\,{}]")


def parse(pattern: str) -> Pattern:
    """Parse and validate ``pattern``.

    Raises:
        UrlDslError: the pattern is malformed; the message names the problem and column.
    """
    if not pattern:
        raise fail(pattern, 1, "empty pattern", "give a URL, e.g. https://host/{a,b}/index.m3u8")
    parts: list[Text | Group] = []
    pieces: list[str] = []
    text_start = index = 0
    end = len(pattern)
    while index < end:
        found = _TEXT_STOP.search(pattern, index)
        stop = end if found is None else found.start()
        pieces.append(pattern[index:stop])
        if found is None:
            break
        char = found.group()
        if char == "\\":
            decoded, index = unescape_at(pattern, stop)
            pieces.append(decoded)
        elif char == "}":
            raise fail(
                pattern, stop + 1, "'}' without '{'", "remove it or write a literal '}' as '\\}'"
            )
        else:
            _flush(parts, pieces, text_start)
            pieces = []
            group, index = _group(pattern, stop)
            parts.append(group)
            text_start = index
    _flush(parts, pieces, text_start)
    parsed = Pattern(source=pattern, parts=tuple(parts))
    _check_element_wise(parsed)
    return parsed


def _flush(parts: list[Text | Group], pieces: list[str], start: int) -> None:
    text = "".join(pieces)
    if text:
        parts.append(Text(text=text, column=start + 1))


def _group(pattern: str, start: int) -> tuple[Group, int]:
    """Parse the group whose ``{`` is at ``pattern[start]``, with its options if any."""
    close = pattern.find("}", start + 1)
    body = pattern[start + 1 : close] if close >= 0 else ""
    if close >= 0 and "\\" not in body and "{" not in body:
        # Fast path, no escapes: str.find, "in" and one split run at C speed, which is
        # what keeps refusing {0,...,999}{0,...,999} in microseconds.
        if not body:
            raise fail(
                pattern, start + 1, "empty group '{}'", "put at least one value in it, e.g. {a,b}"
            )
        values = body.split(",")
    else:
        values, close = _escaped_values(pattern, start)
    after = close + 1
    options: Options = DEFAULT_OPTIONS
    if after < len(pattern) and pattern[after] == "[":
        options, after = parse_options(pattern, after)
    group = Group(
        values=tuple(values), options=options, column=start + 1, source=pattern[start : close + 1]
    )
    return group, after


def _escaped_values(pattern: str, start: int) -> tuple[list[str], int]:
    """Slow path for a group with escapes (or a missing ``}``): values and the ``}`` index."""
    values: list[str] = []
    pieces: list[str] = []
    index = start + 1
    while True:
        found = _VALUE_STOP.search(pattern, index)
        if found is None:
            raise fail(pattern, start + 1, "unclosed '{'", "add '}' to close the group")
        stop = found.start()
        pieces.append(pattern[index:stop])
        char = found.group()
        if char == "\\":
            decoded, index = unescape_at(pattern, stop)
            pieces.append(decoded)
            continue
        if char == "{":
            raise fail(
                pattern,
                stop + 1,
                f"'{{' inside the group opened at column {start + 1}",
                "groups do not nest: close the group with '}' first, or write '\\{'",
            )
        values.append("".join(pieces))
        pieces = []
        index = stop + 1
        if char == "}":
            return values, stop


def _check_element_wise(pattern: Pattern) -> None:
    element_wise = [group for group in pattern.groups if group.options.mode == "e"]
    if not element_wise:
        return
    first = element_wise[0]
    for group in element_wise[1:]:
        if len(group.values) != len(first.values):
            raise UrlDslError(
                f"element-wise groups differ in length: {preview(first.source)} at column"
                f" {first.column} has {len(first.values)} values, {preview(group.source)}"
                f" at column {group.column} has {len(group.values)}: give every [e] group"
                " the same number of values",
                column=group.column,
                pattern=pattern.source,
            )
