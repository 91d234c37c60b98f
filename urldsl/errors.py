"""The one error UrlDsl raises.

Every problem with a pattern, whether its syntax, its options, element-wise groups of
different lengths or a stream count over the cap, is a :class:`UrlDslError`. The error
tree is deliberately flat: callers (the ``/create`` handler, the CLI) only ever need to
show the message and the caret, never to tell kinds apart.

``str(error)`` is one line of the form ``<problem> at column <N>: <fix>``; ``render()``
adds the pattern and a caret under the column, which is what the CLI prints.
"""

from __future__ import annotations

__all__ = ["UrlDslError", "fail", "preview"]

# How much of a pattern the caret rendering shows either side of the column, so that an
# error in a 10 kB pattern stays readable in a terminal.
_WINDOW = 40
_PREVIEW = 24


class UrlDslError(ValueError):
    """A pattern that cannot be expanded.

    Attributes:
        message: the one-line description, also ``str(error)``.
        column: 1-based column in ``pattern`` the problem points at.
        pattern: the pattern the column refers to.
        index: 0-based position of ``pattern`` in the list given to ``expand_all`` (0 for
            ``expand``), or None when the error comes from ``parse`` or ``count``.
    """

    def __init__(self, message: str, *, column: int, pattern: str, index: int | None = None):
        super().__init__(message)
        self.message = message
        self.column = column
        self.pattern = pattern
        self.index = index

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields are not in ``args``; rebuild through a helper so the error
        # survives pickling (multiprocessing, some test runners).
        return (_rebuild, (self.message, self.column, self.pattern, self.index))

    def in_pattern(self, index: int, *, of: int) -> UrlDslError:
        """The same error, placed as pattern ``index`` (0-based) of ``of`` patterns."""
        message = self.message if of <= 1 else f"pattern {index + 1}: {self.message}"
        return UrlDslError(message, column=self.column, pattern=self.pattern, index=index)

    def caret(self) -> str:
        """The pattern (windowed around the column if long) and a ``^`` under the column."""
        text = "".join(ch if ch.isprintable() else "?" for ch in self.pattern)
        offset = max(self.column - 1, 0)
        start = max(offset - _WINDOW, 0)
        end = min(offset + _WINDOW, len(text))
        shown = text[start:end]
        lead = ""
        if start > 0:
            lead = "..."
        if end < len(text):
            shown += "..."
        return f"{lead}{shown}\n{' ' * (len(lead) + offset - start)}^"

    def render(self) -> str:
        """The message, then the caret lines: what a user reading a terminal wants."""
        return f"{self.message}\n{self.caret()}"


def _rebuild(message: str, column: int, pattern: str, index: int | None) -> UrlDslError:
    return UrlDslError(message, column=column, pattern=pattern, index=index)


def fail(pattern: str, column: int, problem: str, fix: str) -> UrlDslError:
    """Build the error for ``problem`` at ``column``, in the house one-line format."""
    return UrlDslError(f"{problem} at column {column}: {fix}", column=column, pattern=pattern)


def preview(text: str) -> str:
    """``text`` shortened and made printable, for quoting user input inside a message."""
    if len(text) > _PREVIEW:
        text = text[: _PREVIEW - 3] + "..."
    # repr() escapes newlines and control characters, keeping the message on one line.
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
