"""A secret kept in a file of the data dir: made on first use, then read back."""

from __future__ import annotations

import secrets
from pathlib import Path


def stored_secret(path: Path) -> str:
    """The secret in ``path``, made (and stored with mode 0600) on first use."""
    try:
        secret = path.read_text().strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret
