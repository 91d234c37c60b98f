"""The line an agent process prints on stdout once it serves, and reading it back.

An agent started as a local process (:mod:`pipeline.instances.local`) says it is ready on its
stdout: by then it is connected, subscribed and registered. Both sides use this module, so
the line's shape is written down once.
"""

from __future__ import annotations

import json

READY_PREFIX = "tessera-agent-ready "
"""How the ready line starts; JSON follows (``instance_id`` and ``status_url``)."""


def ready_line(instance_id: str, status_url: str) -> str:
    """The line an agent prints once it serves."""
    return READY_PREFIX + json.dumps({"instance_id": instance_id, "status_url": status_url})


def status_url_of(line: str) -> str | None:
    """The status URL a ready line names; None if ``line`` is not a ready line (the agent may
    print other things). ValueError naming the line if it is one but says nonsense."""
    if not line.startswith(READY_PREFIX):
        return None
    try:
        return str(json.loads(line[len(READY_PREFIX) :])["status_url"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the agent's ready line {line!r} names no status URL: {exc!r}") from exc
