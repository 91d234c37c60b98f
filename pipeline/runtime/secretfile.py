"""Files only their owner may read: secrets kept in the data dir, configs that hold passwords."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def stored_secret(path: Path) -> str:
    """The secret in ``path``, made (and stored with mode 0600) on first use."""
    try:
        secret = path.read_text().strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(32)
    write_private(path, secret + "\n")
    return secret


def write_private(path: Path, data: bytes | str, *, atomic: bool = False) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` with mode 0600, making its folder if need be.

    The file is private before it holds anything, even one that was there with a wider mode.
    ``atomic``: write a temporary file beside ``path`` and rename it over ``path``, so that a
    reader sees the old content or the new, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    body = data.encode() if isinstance(data, str) else data
    if not atomic:
        _write(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), body)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _write(fd, body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(fd: int, body: bytes) -> None:
    """Make ``fd``'s file private, write ``body`` and close it."""
    with open(fd, "wb") as out:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode under O_CREAT: private first
        out.write(body)
