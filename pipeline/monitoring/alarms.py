"""Alarm kinds, a mosaic's alarm settings, and the ``alarms=`` language of ``/create``.

A grabber raises *conditions* (a picture black, frozen, ...) with fixed detection levels
(:mod:`pipeline.monitoring.detect`); a mosaic shows an *alarm* once a condition has lasted its
*hold*. The holds are the mosaic's own: they come from the ``alarms=`` query value, and their
canonical form (:func:`canonical`) is part of the mosaic's fingerprint.

Kinds and default holds (seconds)
=================================

============  =====  ===============================================================
kind          hold   condition
============  =====  ===============================================================
``black``     2      the picture is black (FFmpeg blackdetect's ``d=2``)
``freeze``    2      the picture does not change (freezedetect's ``d=2``)
``silence``   2      every channel at or below -60 dBFS (silencedetect's ``d=2``)
``loudness``  5      EBU R128 short-term loudness outside [-36, -9] LUFS
``no-audio``  5      the source has an audio stream, but no samples arrive
``lost``      5      no pictures at all: the dead-source tile (``--dead-source-timeout``)
============  =====  ===============================================================

The language
============

::

    alarms   := "" | base | [base ","] item ("," item)*
    base     := "default" | "off"
    item     := kind [":" seconds] | "-" kind
    seconds  := digits ["." digits] ["s"]        (at most 3 decimals; 0.5 to 600)

- ``""`` and ``default`` are the defaults; ``off`` turns every kind off.
- A base, if given, comes first; the items then change it: ``off,black`` is black alone at its
  default hold, ``default,-freeze`` (or just ``-freeze``) every default but freeze.
- ``kind`` turns the kind on at its default hold, ``kind:S`` at ``S`` seconds (``black:2``,
  ``silence:10``, ``freeze:2.5``, ``lost:7s``), ``-kind`` turns it off.
- Kinds and base words are case-insensitive; spaces around entries, ``:`` and ``-`` are
  ignored. Each kind may be named once.

Errors
======

Every problem is an :class:`AlarmSyntaxError` (a :class:`~pipeline.errors.TesseraError`):
``str(error)`` is one line, ``<problem> at column <N>: <fix>``; ``error.position`` is the
0-based index in the text it points at (always inside the text), and ``caret()`` shows the
text with a ``^`` under it, as UrlDsl errors do.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, fields, replace
from enum import StrEnum

from pipeline.errors import TesseraError

__all__ = [
    "DEFAULT_HOLDS",
    "MAX_HOLD",
    "MIN_HOLD",
    "AlarmKind",
    "AlarmSettings",
    "AlarmSyntaxError",
    "canonical",
    "parse_alarms",
]


class AlarmKind(StrEnum):
    """What can be wrong with a tile; the value is the name in ``alarms=`` and in events."""

    BLACK = "black"
    FREEZE = "freeze"
    SILENCE = "silence"
    LOUDNESS = "loudness"
    NO_AUDIO = "no-audio"
    LOST = "lost"


MIN_HOLD = 0.5
"""Shortest hold: the conditions' debounce (:data:`pipeline.monitoring.detect.DEBOUNCE`)."""
MAX_HOLD = 600.0
"""Longest hold: ten minutes."""

DEFAULT_HOLDS: dict[AlarmKind, float] = {
    AlarmKind.BLACK: 2.0,
    AlarmKind.FREEZE: 2.0,
    AlarmKind.SILENCE: 2.0,
    AlarmKind.LOUDNESS: 5.0,
    AlarmKind.NO_AUDIO: 5.0,
    # The dead-source timeout's default (pipeline/config/settings.py): the tile and the alarm
    # agree unless a mosaic asks otherwise.
    AlarmKind.LOST: 5.0,
}
"""Each kind's hold when ``alarms=`` does not name it."""


def _field(kind: AlarmKind) -> str:
    return kind.value.replace("-", "_")


@dataclass(frozen=True)
class AlarmSettings:
    """One mosaic's holds: per kind, the seconds a condition must last before the mosaic shows
    its alarm, or None for off. ``AlarmSettings()`` is the defaults."""

    black: float | None = DEFAULT_HOLDS[AlarmKind.BLACK]
    freeze: float | None = DEFAULT_HOLDS[AlarmKind.FREEZE]
    silence: float | None = DEFAULT_HOLDS[AlarmKind.SILENCE]
    loudness: float | None = DEFAULT_HOLDS[AlarmKind.LOUDNESS]
    no_audio: float | None = DEFAULT_HOLDS[AlarmKind.NO_AUDIO]
    lost: float | None = DEFAULT_HOLDS[AlarmKind.LOST]

    def __post_init__(self) -> None:
        for f in fields(self):
            hold = getattr(self, f.name)
            if hold is None:
                continue
            if not MIN_HOLD <= hold <= MAX_HOLD:
                raise ValueError(f"{f.name} hold {hold!r} s: use {MIN_HOLD:g} to {MAX_HOLD:g}")
            # Whole milliseconds, so that the canonical text names exactly this value.
            if round(hold * 1000) / 1000 != hold:
                raise ValueError(f"{f.name} hold {hold!r} s: use whole milliseconds")

    @classmethod
    def off(cls) -> AlarmSettings:
        """Every kind off."""
        return cls(**{_field(kind): None for kind in AlarmKind})

    def hold(self, kind: AlarmKind) -> float | None:
        """The hold of ``kind`` in seconds, or None when it is off."""
        hold: float | None = getattr(self, _field(kind))
        return hold

    def with_hold(self, kind: AlarmKind, hold: float | None) -> AlarmSettings:
        """These settings with ``kind`` held for ``hold`` seconds (None: off)."""
        return replace(self, **{_field(kind): hold})


class AlarmSyntaxError(TesseraError):
    """An ``alarms=`` value that cannot be read.

    Attributes:
        message: the one-line description, also ``str(error)``.
        position: 0-based index in ``text`` of the character the problem is at.
        text: the value the position refers to.
    """

    def __init__(self, message: str, *, position: int, text: str) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.text = text

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.message, self.position, self.text))

    @property
    def column(self) -> int:
        """1-based column, as the message says it."""
        return self.position + 1

    def caret(self) -> str:
        """The text (windowed around the position if long) and a ``^`` under the position."""
        shown = "".join(ch if ch.isprintable() else "?" for ch in self.text)
        start = max(self.position - _WINDOW, 0)
        end = min(self.position + _WINDOW, len(shown))
        lead = "..." if start > 0 else ""
        tail = "..." if end < len(shown) else ""
        return f"{lead}{shown[start:end]}{tail}\n{' ' * (len(lead) + self.position - start)}^"

    def render(self) -> str:
        """The message, then the caret lines."""
        return f"{self.message}\n{self.caret()}"


def _rebuild(message: str, position: int, text: str) -> AlarmSyntaxError:
    return AlarmSyntaxError(message, position=position, text=text)


# How much of the text a caret shows either side of the position.
_WINDOW = 40
_KINDS = ", ".join(kind.value for kind in AlarmKind)
_BASES = ("default", "off")
_SECONDS = re.compile(r"(\d+)(?:\.(\d*))?s?|\.(\d+)s?", re.IGNORECASE | re.ASCII)
_MAX_DECIMALS = 3


def parse_alarms(text: str) -> AlarmSettings:
    """The settings ``text`` (an ``alarms=`` value) describes; see the module docstring."""
    settings = AlarmSettings()
    named: set[AlarmKind] = set()
    start = 0
    for number, entry in enumerate(text.split(",")):
        end = start + len(entry)
        settings = _entry(text, start, end, number, settings, named)
        start = end + 1
    return settings


def _fail(text: str, position: int, problem: str, fix: str) -> AlarmSyntaxError:
    # Every position names a character of the text; the end of a non-empty text is its last.
    position = max(0, min(position, len(text) - 1))
    return AlarmSyntaxError(
        f"{problem} at column {position + 1}: {fix}", position=position, text=text
    )


def _quote(word: str) -> str:
    word = word if len(word) <= 24 else word[:21] + "..."
    return repr(word)


def _skip(text: str, i: int, end: int) -> int:
    while i < end and text[i].isspace():
        i += 1
    return i


def _word(text: str, i: int, end: int) -> int:
    while i < end and not text[i].isspace() and text[i] != ":":
        i += 1
    return i


def _entry(
    text: str,
    start: int,
    end: int,
    number: int,
    settings: AlarmSettings,
    named: set[AlarmKind],
) -> AlarmSettings:
    i = _skip(text, start, end)
    if i == end:
        if number == 0 and end == len(text):
            return settings  # the whole text is empty or spaces: the defaults
        comma = end if end < len(text) else start - 1
        raise _fail(text, comma, "empty entry", "remove the extra ','")
    off_at = i if text[i] == "-" else None
    if off_at is not None:
        i = _skip(text, i + 1, end)
    word_at = i
    i = _word(text, i, end)
    word = text[word_at:i].lower()
    if not word:
        where = word_at if word_at < end else (off_at if off_at is not None else start)
        raise _fail(text, where, "missing alarm kind", f"name one of {_KINDS}")
    if word in _BASES:
        if off_at is not None:
            raise _fail(text, off_at, f"'-{word}' is not a kind", f"write {word!r} alone, first")
        if number != 0:
            fix = f"put {word!r} first, or leave it out"
            raise _fail(text, word_at, f"{word!r} after other entries", fix)
        i = _skip(text, i, end)
        if i < end:
            raise _fail(text, i, f"{word!r} takes no seconds", f"write {word!r} alone")
        return AlarmSettings() if word == "default" else AlarmSettings.off()
    try:
        kind = AlarmKind(word)
    except ValueError:
        close = difflib.get_close_matches(word, [k.value for k in AlarmKind], n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"use one of {_KINDS}"
        raise _fail(text, word_at, f"unknown alarm kind {_quote(word)}", fix) from None
    if kind in named:
        raise _fail(text, word_at, f"{kind.value!r} named twice", "name each kind once")
    named.add(kind)
    i = _skip(text, i, end)
    if i == end:
        hold = None if off_at is not None else DEFAULT_HOLDS[kind]
        return settings.with_hold(kind, hold)
    if text[i] != ":":
        raise _fail(
            text,
            i,
            f"unexpected {_quote(text[i:end].rstrip())} after {kind.value!r}",
            "separate entries with ',' and give seconds after ':'",
        )
    colon = i
    if off_at is not None:
        raise _fail(text, colon, f"'-{kind.value}' takes no seconds", f"write '-{kind.value}'")
    seconds_at = _skip(text, colon + 1, end)
    seconds_end = end
    while seconds_end > seconds_at and text[seconds_end - 1].isspace():
        seconds_end -= 1
    seconds = text[seconds_at:seconds_end]
    if not seconds:
        raise _fail(
            text, colon, f"missing seconds after '{kind.value}:'", f"write e.g. {kind.value}:2"
        )
    return settings.with_hold(kind, _seconds(text, seconds_at, seconds, kind))


def _seconds(text: str, at: int, seconds: str, kind: AlarmKind) -> float:
    match = _SECONDS.fullmatch(seconds)
    if not match:
        raise _fail(
            text,
            at,
            f"{_quote(seconds)} is not a number of seconds",
            f"write e.g. {kind.value}:2 or {kind.value}:2.5",
        )
    decimals = match.group(2) or match.group(3) or ""
    if len(decimals) > _MAX_DECIMALS:
        raise _fail(
            text, at, f"{_quote(seconds)} has more than {_MAX_DECIMALS} decimals", "round it"
        )
    value = float(seconds.rstrip("sS"))
    if not MIN_HOLD <= value <= MAX_HOLD:
        raise _fail(
            text,
            at,
            f"{kind.value} hold {value:g} s is out of range",
            f"use {MIN_HOLD:g} to {MAX_HOLD:g} seconds",
        )
    return value


def _format(hold: float) -> str:
    return f"{hold:.3f}".rstrip("0").rstrip(".")


def canonical(settings: AlarmSettings) -> str:
    """One text for ``settings``, whatever was typed, for the mosaic fingerprint.

    ``""`` for the defaults; otherwise the shorter of two forms (the first on a tie), kinds in
    :class:`AlarmKind` order: the kinds that differ from their default
    (``freeze:5,-silence``), or ``off`` then the kinds that are on (``off,black,lost:7``).
    :func:`parse_alarms` reads it back to equal settings."""
    changes = []
    ons = ["off"]
    for kind in AlarmKind:
        hold = settings.hold(kind)
        if hold is not None:
            ons.append(
                kind.value if hold == DEFAULT_HOLDS[kind] else f"{kind.value}:{_format(hold)}"
            )
        if hold != DEFAULT_HOLDS[kind]:
            changes.append(f"-{kind.value}" if hold is None else f"{kind.value}:{_format(hold)}")
    by_change, from_off = ",".join(changes), ",".join(ons)
    return by_change if len(by_change) <= len(from_off) else from_off
