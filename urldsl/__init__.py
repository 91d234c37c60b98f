"""UrlDsl: one hand-typed pattern describes many streams, each with a URL and a name.

Pure code, no I/O: the ``/create?urls=...`` handler and ``python -m urldsl`` call it.

The language
============

A pattern is literal text with groups. A group is ``{v1,v2,...}``, optionally followed
right after its ``}`` by options ``[opt,opt,...]`` (case-insensitive):

``m`` (default)
    multiplicative: multiplies with every other group. The first group is the outermost
    loop, the last varies fastest: ``https://s.xyz/{MEL,SYD}[n]{1,2}[n]/m.m3u8`` gives
    MEL1, MEL2, SYD1, SYD2.
``e``
    element-wise: all ``e`` groups advance together and must be equally long; their index
    is the outermost loop. A single ``e`` group is fine.
``n``, ``nc``, ``nl``, ``npre=X``, ``npost=X``, ``norder=K``
    the value is part of the display name; upper-/lower-cased; with text before/after;
    ordered by K (lower first; parts without ``norder`` follow in pattern order). The
    name-shaping options need ``n``.
``dnr``
    do not render the value in the URL; the group still counts in names and combinations.

A stream without ``n`` groups has an empty name. Several patterns concatenate in order;
duplicates are kept (:func:`sources` gives the distinct URLs to pull).

Corner cases, decided
=====================

- Escapes ``\\{ \\} \\[ \\] \\, \\\\`` stand for the character; a backslash before anything
  else is a literal backslash. :func:`escape` makes any text literal.
- ``[`` is special only right after a group's ``}``; elsewhere ``[``, ``]`` and ``,`` are
  literal (``http://[::1]:8080/{a,b}`` works). Inside a group ``[`` and ``]`` are literal.
- Values keep their spaces. Empty values are allowed (``{,-b}`` is "" and "-b"), the empty
  group ``{}`` is an error, and so is the empty pattern.
- In an option list, whitespace at either end of an entry is dropped; empty entries and
  ``[]`` are ignored; a value runs from the first ``=`` to the entry's end, so it may
  contain ``=`` and escapes (``npre=a\\,b``). ``norder`` needs a whole number.
- Flags may repeat (``[n,n]``); a valued option may not. ``m`` with ``e``, ``nc`` with
  ``nl``, an unknown option, a flag with a value or a valued option without one is an error.
- ``dnr`` without ``n`` is allowed: ``{1,2}[dnr]URL`` shows one stream twice.
- URLs are not validated here: that is the caller's job.

Limits: the number of streams is counted before expanding and refused past
``max_streams`` (default :data:`DEFAULT_MAX_STREAMS`, applied to the total of
:func:`expand_all`) in microseconds, whatever the pattern. Errors are :class:`UrlDslError`.
"""

from __future__ import annotations

from urldsl.counting import count
from urldsl.errors import UrlDslError
from urldsl.escaping import escape
from urldsl.expansion import DEFAULT_MAX_STREAMS, expand, expand_all, expand_parsed
from urldsl.nodes import Group, Options, Pattern, Text
from urldsl.parser import parse
from urldsl.stream import Stream, sources

__all__ = [
    "DEFAULT_MAX_STREAMS",
    "Group",
    "Options",
    "Pattern",
    "Stream",
    "Text",
    "UrlDslError",
    "count",
    "escape",
    "expand",
    "expand_all",
    "expand_parsed",
    "parse",
    "sources",
]
