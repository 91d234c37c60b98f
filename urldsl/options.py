"""Parsing a group's option list, the ``[...]`` right after its ``}``.

Rules (see the package docstring for the whole language):

- Entries are separated by ``,``; whitespace at either end of an entry is dropped, so
  ``[ n , npre=PRI- ]`` is ``n`` and ``npre=PRI-``. Empty entries (``[n,,e]``, ``[n,]``,
  ``[]``) are ignored.
- Names are case-insensitive. A valued option splits at its first ``=``: the rest, spaces
  and further ``=`` included, is the value (``npre=a=b`` prefixes ``a=b``); escapes work
  there (``npre=a\\,b`` prefixes ``a,b``).
- ``norder`` takes a whole number (optional sign, up to 9 digits).
- Flags may repeat harmlessly (``[n,n]``); a valued option may appear once.
- ``m`` with ``e`` and ``nc`` with ``nl`` are contradictions, hence errors.
- ``nc``, ``nl``, ``npre``, ``npost`` and ``norder`` shape the name, so they need ``n``;
  without it they would silently do nothing, which is refused.
- ``dnr`` without ``n`` is allowed: the group still multiplies, so ``{1,2}[dnr]URL``
  is the way to show one stream twice.
- An unescaped ``{`` or ``}`` before the closing ``]`` means the ``]`` was forgotten.
"""

from __future__ import annotations

import re
from typing import TypeVar

from urldsl.errors import fail, preview
from urldsl.escaping import unescape_at
from urldsl.nodes import Case, Mode, Options

__all__ = ["parse_options"]

_STOP = re.compile(r"[\\,\]{}]")
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,9}")
_FLAGS = frozenset({"m", "e", "n", "nc", "nl", "dnr"})
_VALUED = frozenset({"npre", "npost", "norder"})
_NAME_SHAPING = ("npre", "npost", "norder")
_Choice = TypeVar("_Choice", bound=str)
_VALID = "valid options are m, e, n, nc, nl, dnr, npre=TEXT, npost=TEXT, norder=K"


def parse_options(pattern: str, start: int) -> tuple[Options, int]:
    """Parse the option list whose ``[`` is at ``pattern[start]``.

    Returns the options and the index just after the closing ``]``.
    """
    entries: list[tuple[str, int]] = []
    pieces: list[str] = []
    entry_start = index = start + 1
    while True:
        found = _STOP.search(pattern, index)
        if found is None or found.group() in "{}":
            raise fail(
                pattern,
                start + 1,
                "unclosed '['",
                "add ']' to close the options (a literal '[' right after a group is '\\[')",
            )
        stop = found.start()
        pieces.append(pattern[index:stop])
        if found.group() == "\\":
            char, index = unescape_at(pattern, stop)
            pieces.append(char)
            continue
        entries.append(("".join(pieces), entry_start))
        pieces = []
        index = entry_start = stop + 1
        if found.group() == "]":
            return _build(pattern, entries), index


def _build(pattern: str, entries: list[tuple[str, int]]) -> Options:
    mode: tuple[Mode, int] | None = None
    case: tuple[Case, int] | None = None
    named = False
    rendered = True
    valued: dict[str, tuple[str, int]] = {}
    for raw, entry_start in entries:
        entry = raw.strip()
        if not entry:
            continue
        # Leading whitespace is never produced by an escape, so it is as long in the
        # decoded entry as in the pattern: the column is exact.
        column = entry_start + 1 + len(raw) - len(raw.lstrip())
        key, has_value, value = entry.partition("=")
        name = key.strip().lower()
        if name in _FLAGS:
            if has_value:
                raise fail(
                    pattern,
                    column,
                    f"option '{name}' takes no value",
                    f"write just '{name}'",
                )
            if name in ("m", "e"):
                mode = _one_of(pattern, mode, (_mode(name), column), "'m' and 'e'", _MODE_FIX)
            elif name in ("nc", "nl"):
                case = _one_of(pattern, case, (_case(name), column), "'nc' and 'nl'", _CASE_FIX)
            elif name == "n":
                named = True
            else:
                rendered = False
        elif name in _VALUED:
            if not has_value:
                example = "norder=1" if name == "norder" else f"{name}=TEXT"
                raise fail(pattern, column, f"option '{name}' needs a value", f"write {example}")
            if name in valued:
                raise fail(
                    pattern,
                    column,
                    f"option '{name}' given twice (first at column {valued[name][1]})",
                    "keep one of them",
                )
            valued[name] = (value, column)
        else:
            hint = ""
            if ":" in entry or "." in entry or "/" in entry:
                hint = "; a literal '[' right after a group is written '\\['"
            raise fail(pattern, column, f"unknown option '{preview(entry)}'", _VALID + hint)

    if not named:
        shaping = [(valued[option][1], option) for option in _NAME_SHAPING if option in valued]
        if case is not None:
            shaping.append((case[1], "nc" if case[0] == "upper" else "nl"))
        if shaping:
            at, option = min(shaping)
            raise fail(
                pattern,
                at,
                f"option '{option}' shapes the display name but the group is not in it",
                "add 'n' to the options",
            )

    order: int | None = None
    if "norder" in valued:
        text, column = valued["norder"]
        if _WHOLE_NUMBER.fullmatch(text.strip()) is None:
            raise fail(
                pattern,
                column,
                f"norder is not a whole number ('{preview(text)}')",
                "write one of at most 9 digits, e.g. norder=1",
            )
        order = int(text)
    return Options(
        mode=mode[0] if mode else "m",
        named=named,
        case=case[0] if case else None,
        prefix=valued.get("npre", ("", 0))[0],
        suffix=valued.get("npost", ("", 0))[0],
        order=order,
        rendered=rendered,
    )


_MODE_FIX = "a group is either multiplicative (m) or element-wise (e); keep one"
_CASE_FIX = "a name part is either upper-cased (nc) or lower-cased (nl); keep one"


def _mode(name: str) -> Mode:
    return "e" if name == "e" else "m"


def _case(name: str) -> Case:
    return "upper" if name == "nc" else "lower"


def _one_of(
    pattern: str,
    current: tuple[_Choice, int] | None,
    new: tuple[_Choice, int],
    both: str,
    fix: str,
) -> tuple[_Choice, int]:
    """Record one of two exclusive choices; the same choice twice is harmless."""
    if current is not None and current[0] != new[0]:
        raise fail(pattern, new[1], f"{both} both given", fix)
    return current or new
