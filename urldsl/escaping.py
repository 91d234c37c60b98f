"""Backslash escapes: ``\\{ \\} \\[ \\] \\, \\\\`` stand for the character itself.

A backslash before any other character (or at the very end) is kept as a literal
backslash: there is only one sensible reading, so the language forgives it rather than
refusing a URL that happens to contain one.
"""

from __future__ import annotations

import re

__all__ = ["ESCAPABLE", "escape", "unescape_at"]

ESCAPABLE = frozenset("\\{}[],")

_NEEDS_ESCAPE = re.compile(r"([\\{}\[\],])")


def escape(text: str) -> str:
    """Return a pattern fragment that stands for ``text`` literally.

    Usable as literal text, as one value inside ``{...}`` and inside an option value:
    ``expand(escape(url)) == [Stream(url=url, name="")]`` for any non-empty ``url``.
    """
    return _NEEDS_ESCAPE.sub(r"\\\1", text)


def unescape_at(pattern: str, index: int) -> tuple[str, int]:
    """Decode the backslash at ``pattern[index]``: the character it stands for and the
    index just after the sequence."""
    following = index + 1
    if following < len(pattern) and pattern[following] in ESCAPABLE:
        return pattern[following], following + 1
    return "\\", following
