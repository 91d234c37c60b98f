"""The parsed form of a pattern: literal text and groups, with columns for errors.

These are plain frozen values; :func:`urldsl.parse` builds them and guarantees their
invariants (every group has at least one value, every element-wise group has the same
number of values, option combinations are valid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Case", "Group", "Mode", "Options", "Pattern", "Text", "DEFAULT_OPTIONS"]

Mode = Literal["m", "e"]
Case = Literal["upper", "lower"]


@dataclass(frozen=True, slots=True)
class Options:
    """What a group's ``[...]`` said; the defaults are a group without options.

    Attributes:
        mode: ``"m"`` multiplies with the other groups, ``"e"`` advances with the other
            element-wise groups.
        named: the value is part of the stream's display name (``n``).
        case: ``"upper"`` (``nc``) or ``"lower"`` (``nl``) applied to the value in the name.
        prefix: text before the value in the name (``npre=``).
        suffix: text after the value in the name (``npost=``).
        order: position of this part in the name (``norder=``); None keeps pattern order,
            after every part that has one.
        rendered: the value appears in the URL; False for ``dnr``.
    """

    mode: Mode = "m"
    named: bool = False
    case: Case | None = None
    prefix: str = ""
    suffix: str = ""
    order: int | None = None
    rendered: bool = True


DEFAULT_OPTIONS = Options()


@dataclass(frozen=True, slots=True)
class Text:
    """Literal text, escapes already decoded; ``column`` is where it starts (1-based)."""

    text: str
    column: int


@dataclass(frozen=True, slots=True)
class Group:
    """A ``{v1,v2,...}`` group and its options.

    Attributes:
        values: the decoded values, in order; never empty.
        options: the parsed ``[...]``, or the defaults.
        column: 1-based column of the opening ``{``.
        source: the group's raw text from ``{`` to ``}``, for quoting in messages.
    """

    values: tuple[str, ...]
    options: Options
    column: int
    source: str


@dataclass(frozen=True, slots=True)
class Pattern:
    """A whole parsed pattern: its source and its parts in order."""

    source: str
    parts: tuple[Text | Group, ...]

    @property
    def groups(self) -> tuple[Group, ...]:
        """The groups, in pattern order."""
        return tuple(part for part in self.parts if isinstance(part, Group))
