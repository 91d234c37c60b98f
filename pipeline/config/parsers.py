"""Value parsers of settings: the text of an environment variable or a flag → a typed value.

Each parser takes the raw text and returns the value, or raises :class:`ValueError` whose
message says what would be accepted. The loader (:mod:`pipeline.config.loading`) puts the name
and the text in front of that message, so a parser never needs to know which setting it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Parser = Callable[[str], Any]
"""Text in, value out; :class:`ValueError` with the reason when the text is not acceptable."""


def port(text: str) -> int:
    """A TCP/UDP port; 0 asks the system for a free one."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("not a port number (0-65535, 0 picks a free port)")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def replicas(text: str) -> int:
    """JetStream copies per stream: 1 to 5, or 0 for "as many as the cluster has, up to 3"."""
    value = int(text)
    if not 0 <= value <= 5:
        raise ValueError("must be 0 (auto: up to 3, as the cluster allows) or 1 to 5")
    return value


def crf(text: str) -> int:
    """A libx264 constant rate factor."""
    value = int(text)
    if not 0 <= value <= 51:
        raise ValueError("must be a whole number from 0 (lossless) to 51")
    return value


def dimensions(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (any case, e.g. ``1920x1080``) as (width, height); ValueError if not."""
    width, sep, height = text.strip().lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise ValueError("must be WIDTHxHEIGHT (e.g. 1920x1080)")
    return int(width), int(height)


def size_box(text: str) -> str:
    """A picture size ``WIDTHxHEIGHT`` (each 16 to 16384), or ``off`` (also ``0``, ``none``):
    normalized to ``1920x1080`` or ``off``; :func:`box` reads it back."""
    if text.strip().lower() in ("off", "0", "none", ""):
        return "off"
    try:
        width, height = dimensions(text)
    except ValueError:
        raise ValueError("must be WIDTHxHEIGHT (e.g. 1920x1080) or off") from None
    if not (16 <= width <= 16384 and 16 <= height <= 16384):
        raise ValueError("width and height must be 16 to 16384 pixels")
    return f"{width}x{height}"


def box(text: str) -> tuple[int, int] | None:
    """The (width, height) of a :func:`size_box` value; None for ``off``."""
    value = size_box(text)
    return None if value == "off" else dimensions(value)


def positive_float(text: str) -> float:
    """A number above 0 (seconds, rates)."""
    value = float(text)
    if not value > 0:
        raise ValueError("must be a number greater than 0")
    return value


def host(text: str) -> str:
    """A non-empty name or address (surrounding blanks dropped)."""
    text = text.strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def choice(*choices: str) -> Parser:
    """One of ``choices``, in any case."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    parse.__name__ = "choice"
    return parse


def optional_choice(*choices: str) -> Parser:
    """One of ``choices``, or None for an empty text."""
    required = choice(*choices)

    def parse(text: str) -> str | None:
        return required(text) if text.strip() else None

    parse.__name__ = "optional_choice"
    return parse


def optional_str(text: str) -> str | None:
    """The text without surrounding blanks; None when nothing is left."""
    text = text.strip()
    return text or None


def optional_path(text: str) -> Path | None:
    """A path (``~`` expanded); None for an empty text."""
    return Path(text).expanduser() if text.strip() else None


def path(text: str) -> Path:
    """A path, ``~`` expanded."""
    return Path(text).expanduser()


def boolean(text: str) -> bool:
    """A switch. The CLI gives its on/off flags no value: see :mod:`pipeline.config.flags`."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def key_values(text: str) -> tuple[tuple[str, str], ...]:
    """``K1=V1,K2=V2`` as pairs, in order; an empty text is no pairs."""
    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not KEY=VALUE: write K1=V1,K2=V2")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)
