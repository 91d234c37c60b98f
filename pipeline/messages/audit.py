"""The audit trail on stream ``AUDIT``, subject ``audit.<action>``: who created, watched and
stopped what. Written by the gateway (and by ``tessera tokens`` / ``tessera sign`` for what
they do), read by ``tessera events tail --audit`` and ``GET /api/audit``.

``who`` names the actor as the gateway knew it: ``token:<name>`` (a scoped API token),
``viewer:<name>`` (a signed play or review URL made for that viewer), ``url`` (a signed URL
without a viewer name), ``cli:<user>`` (the operator's command line) or ``anonymous`` (an open
install); ``client`` is the peer address of the request.
"""

from __future__ import annotations

from typing import Literal

import msgspec

AuditAction = Literal[
    "mosaic-create",
    "mosaic-watch",
    "session-create",
    "session-watch",
    "session-stop",
    "url-sign",
    "viewer-revoke",
    "token-create",
    "token-revoke",
]


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True, tag="audit/1"):
    """One thing someone did."""

    at: float
    """Unix seconds."""
    action: AuditAction
    who: str
    target: str
    """The mosaic fingerprint, session id, token name or viewer name acted on."""
    client: str = ""
    detail: str = ""
    """A few words more: the scopes of a new token, a URL's expiry, a WHEP transport."""


def who_matches(who: str, wanted: str) -> bool:
    """``wanted`` names ``who``: the same (``token:ops``), or its name alone (``ops``); an
    empty ``wanted`` names everyone."""
    return not wanted or who == wanted or who.partition(":")[2] == wanted
