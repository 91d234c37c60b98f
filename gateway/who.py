"""Who a request comes from, as the audit trail names them (:mod:`pipeline.messages.audit`).

The guard sets ``request.state.token_name`` when a scoped API token authorized the request; the
signed-URL check sets ``request.state.viewer`` (``""`` for a signed URL without a viewer name)
when a signed play or review URL did. Neither: ``anonymous`` (an open install).
"""

from __future__ import annotations

from starlette.requests import Request


def who(request: Request) -> str:
    """``token:<name>``, ``viewer:<name>``, ``url`` or ``anonymous``."""
    token = getattr(request.state, "token_name", None)
    if token:
        return f"token:{token}"
    viewer = getattr(request.state, "viewer", None)
    if viewer is not None:
        return f"viewer:{viewer}" if viewer else "url"
    return "anonymous"
