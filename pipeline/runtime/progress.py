"""A small progress line on stderr for long CLI work (a bar on a terminal, a line every few
seconds otherwise, so logs of non-interactive runs stay short)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(done, total)`` redraws; ``close()`` ends the line."""

    def __init__(self, label: str, stream: TextIO | None = None, every: float = 2.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self._last = 0.0
        self._shown = False

    def update(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        now = time.monotonic()
        final = done >= total
        if not self.tty and not final and now - self._last < self.every:
            return
        self._last = now
        share = done / total if total else 1.0
        if self.tty:
            width = 30
            filled = round(width * share)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done:,}/{total:,} ({share:.0%})")
        else:
            self.stream.write(f"{self.label}: {done:,}/{total:,} ({share:.0%})\n")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """Finish the progress line."""
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
