"""ICE for Tessera's aiortc peers (JIT viewers, a mosaic's WHEP viewers): which servers a
server-side peer gathers candidates with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiortc import RTCConfiguration, RTCIceServer


def ice_configuration(servers: Sequence[Mapping[str, object]]) -> RTCConfiguration:
    """aiortc's configuration from ``{"urls": ..., "username": ..., "credential": ...}``
    dicts. No servers means host candidates only: aiortc would otherwise use a public
    Google STUN server, which a server-side worker must not contact unasked."""
    ice = []
    for server in servers:
        urls = server.get("urls")
        if not isinstance(urls, str | list):
            raise ValueError(f"ICE server {dict(server)!r} needs urls (a string or a list)")
        username = server.get("username")
        credential = server.get("credential")
        ice.append(
            RTCIceServer(
                urls=urls,
                username=None if username is None else str(username),
                credential=None if credential is None else str(credential),
            )
        )
    return RTCConfiguration(iceServers=ice)
