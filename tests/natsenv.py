"""How tests point a stack at the session's nats-server: its URL and its role passwords."""

from __future__ import annotations

from pathlib import Path

from pipeline.nats.server import EmbeddedNats


def users_file(store_dir: Path) -> Path:
    """Where the session's server keeps its role passwords (next to its store)."""
    return store_dir.parent / "nats-users.json"


def server_env(server: EmbeddedNats) -> dict[str, str]:
    """Settings for a stack (or agent) on ``server``: each component connects as its role."""
    return {"NATS_URL": server.url, "TESSERA_NATS_USERS": str(users_file(server.store_dir))}
