"""TURN: `--turn` starts coturn with the TURN REST API secret; each session hands its clients
fresh short-lived credentials that coturn accepts (an aiortc client gathers a relay candidate
with them, and none with a forged one). Needs Debian's coturn (`.ci/run` installs it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from nats.js import JetStreamContext

from pipeline.cli.up import Stack
from pipeline.config.settings import load
from pipeline.nats.server import EmbeddedNats
from pipeline.webrtc.turn import DENIED_PEERS, TurnConfig, argv, credentials
from tests.natsenv import server_env


def test_credentials_are_the_turn_rest_api_scheme() -> None:
    username, credential = credentials("s3cret", "abc", ttl=600, now=1_000_000.4)
    assert username == "1000600:abc"
    expected = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


def test_private_peers_are_denied_and_loopback_only_when_asked() -> None:
    turn = TurnConfig("198.51.100.7", 3478, 5349, "x", 60)
    public = argv("turnserver", turn, listen="0.0.0.0", run_dir=Path("/r"),
                  allow_loopback=False, min_port=50000, max_port=50100)  # fmt: skip
    for block in DENIED_PEERS:
        assert f"--denied-peer-ip={block}" in public
    assert any("169.254" in b for b in DENIED_PEERS) and any("192.168" in b for b in DENIED_PEERS)
    assert "--allow-loopback-peers" not in public
    assert "--static-auth-secret" in public and "--use-auth-secret" in public
    local = argv("turnserver", turn, listen="127.0.0.1", run_dir=Path("/r"),
                 allow_loopback=True, min_port=50000, max_port=50100)  # fmt: skip
    assert "--allow-loopback-peers" in local
    server = turn.ice_server("sid", now=0.0)
    assert server["urls"][0] == "turn:198.51.100.7:3478?transport=udp"
    assert server["username"] == "60:sid"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def stack(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[Stack]:
    if shutil.which("turnserver") is None:
        pytest.skip("coturn's turnserver is not installed (apt-get install coturn)")
    env = {
        **server_env(nats_server),
        "TESSERA_DATA_DIR": str(tmp_path),
        "JIT_ORCHESTRATOR_PORT": "0",
        "JIT_TURN": "1",
        "JIT_TURN_PORT": str(free_port(socket.SOCK_DGRAM)),
        "JIT_TURN_TLS_PORT": str(free_port(socket.SOCK_STREAM)),
    }
    stack = Stack(load(env=env))
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


async def gathered(server: dict[str, object]) -> str:
    """The SDP of an offer after ICE gathering with ``server`` as the only ICE server."""
    urls = [u for u in server["urls"] if str(u).startswith("turn:")]  # type: ignore[attr-defined]
    ice = RTCIceServer(urls=urls, username=server["username"], credential=server["credential"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[ice]))
    try:
        pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_sessions_get_turn_credentials_that_coturn_accepts(stack: Stack) -> None:
    assert stack.gateway is not None and stack.turn is not None
    async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=20) as http:
        created = await http.post("/session", json={"inputs": [{"url": "https://x/a.mov"}]})
    assert created.status_code == 201
    session = created.json()
    servers = session["ice_servers"]
    assert len(servers) == 1
    server = servers[0]
    assert server["username"].endswith(":" + session["id"])
    assert any(u.startswith("turns:") for u in server["urls"])

    sdp = await gathered(server)
    assert "typ relay" in sdp, "no relay candidate: coturn refused the session's credentials"

    forged = dict(server, credential=base64.b64encode(b"0" * 20).decode())
    assert "typ relay" not in await gathered(forged)
