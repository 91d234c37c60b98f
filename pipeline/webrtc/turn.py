"""TURN for JIT sessions: a coturn server (Debian's ``coturn`` package) that Tessera starts,
and short-lived credentials for each session.

``--turn`` / ``JIT_TURN`` starts ``turnserver`` on 3478 (UDP/TCP) and 5349 (TLS, with a
self-signed certificate made in the data dir unless one is configured), with the TURN REST
API scheme: a shared secret (``<data dir>/turn-secret``, mode 0600, unless
``JIT_TURN_SECRET``) from which the gateway derives, per session, a username
``<expiry unix time>:<session id>`` and a credential ``base64(HMAC-SHA1(secret, username))``
that coturn checks without any database. Credentials expire after ``JIT_TURN_TTL`` seconds.

Peers in private ranges are denied (the relay must not become a way into the LAN), and so are
loopback peers, except on a loopback-only install, where the worker itself is on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import logging
import secrets
import shutil
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.settings import Config
from pipeline.errors import ConfigError, TesseraError
from pipeline.runtime.procs import die_with_parent, stop_process
from pipeline.runtime.secretfile import stored_secret, write_private

log = logging.getLogger("tessera.turn")

DENIED_PEERS = (
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.168.0.0-192.168.255.255",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)
"""Private, CGNAT, link-local (cloud metadata included) and unspecified peer addresses."""


def credentials(secret: str, name: str, ttl: float, now: float) -> tuple[str, str]:
    """TURN REST API credentials for ``name``, valid ``ttl`` seconds from ``now``. Pure."""
    username = f"{int(now + ttl)}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


@dataclass(frozen=True)
class TurnConfig:
    """Where clients reach the TURN server and how credentials are made."""

    host: str
    port: int
    tls_port: int
    secret: str
    ttl: float

    def ice_server(self, name: str, now: float | None = None) -> dict[str, Any]:
        """An RTCIceServer dict with fresh credentials for ``name`` (a session id)."""
        username, credential = credentials(
            self.secret, name, self.ttl, time.time() if now is None else now
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {
            "urls": [
                f"turn:{host}:{self.port}?transport=udp",
                f"turn:{host}:{self.port}?transport=tcp",
                f"turns:{host}:{self.tls_port}?transport=tcp",
            ],
            "username": username,
            "credential": credential,
        }


def turn_config(config: Config) -> TurnConfig | None:
    """Where clients reach TURN and its secret, when ``--turn`` is on (else None)."""
    if not config.turn:
        return None
    host = config.public_ip or config.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    secret = config.turn_secret or stored_secret(config.data_dir / "turn-secret")
    return TurnConfig(
        host=host,
        port=config.turn_port,
        tls_port=config.turn_tls_port,
        secret=secret,
        ttl=config.turn_ttl,
    )


def self_signed(cert: Path, key: Path, host: str) -> None:
    """A self-signed certificate for the TLS listener (clients use it for relaying only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key, pem)  # private before the key is in it


def argv(
    binary: str,
    turn: TurnConfig,
    *,
    listen: str,
    run_dir: Path,
    allow_loopback: bool,
    min_port: int,
    max_port: int,
) -> list[str]:
    """The turnserver command line. Pure."""
    args = [
        binary,
        "-n",  # no config file: everything is here
        "--listening-ip", listen,
        "--listening-port", str(turn.port),
        "--tls-listening-port", str(turn.tls_port),
        "--cert", str(run_dir / "turn.crt"),
        "--pkey", str(run_dir / "turn.key"),
        "--use-auth-secret",
        "--static-auth-secret", turn.secret,
        "--realm", "tessera",
        "--fingerprint",
        "--no-cli",
        "--no-multicast-peers",
        "--no-dtls",
        "--min-port", str(min_port),
        "--max-port", str(max_port),
        "--pidfile", str(run_dir / "turnserver.pid"),
        "--log-file", "stdout",
        "--simple-log",
    ]  # fmt: skip
    args += [f"--denied-peer-ip={r}" for r in DENIED_PEERS]
    if allow_loopback:
        args.append("--allow-loopback-peers")
    return args


STUN_MAGIC = 0x2112A442


def stun_ping(host: str, port: int, within: float) -> bool:
    """True once a STUN binding request to ``host:port`` (UDP) is answered (RFC 5389)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + within
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            transaction = secrets.token_bytes(12)
            sock.sendto(struct.pack(">HHI", 0x0001, 0, STUN_MAGIC) + transaction, (host, port))
            try:
                data, _ = sock.recvfrom(2048)
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.05)
                continue
            if len(data) >= 20 and data[8:20] == transaction:
                return True
    return False


class TurnServer:
    """A coturn process. ``start()`` returns once it listens; ``stop()`` is safe twice."""

    def __init__(
        self,
        turn: TurnConfig,
        *,
        listen: str,
        run_dir: Path,
        allow_loopback: bool,
        min_port: int = 49152,
        max_port: int = 65535,
        binary: str | None = None,
        grace: float = 3.0,
    ) -> None:
        self.turn = turn
        self.listen = listen
        self.run_dir = run_dir
        self.allow_loopback = allow_loopback
        self.min_port = min_port
        self.max_port = max_port
        self._binary = binary
        self.grace = grace
        self._proc: asyncio.subprocess.Process | None = None
        self._log: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start turnserver and wait until its UDP listener is up."""
        binary = self._binary or shutil.which("turnserver")
        if binary is None:
            raise ConfigError(
                "--turn needs coturn's turnserver: install it (apt-get install coturn)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cert, key = self.run_dir / "turn.crt", self.run_dir / "turn.key"
        if not cert.exists() or not key.exists():
            self_signed(cert, key, self.turn.host)
        command = argv(
            binary, self.turn, listen=self.listen, run_dir=self.run_dir,
            allow_loopback=self.allow_loopback, min_port=self.min_port, max_port=self.max_port,
        )  # fmt: skip
        self._proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._log = asyncio.create_task(self._read(self._proc), name="turnserver-log")
        # Ready when it answers a STUN binding request on its UDP port (its log has no
        # stable "ready" line across versions).
        answered = await asyncio.to_thread(stun_ping, self.listen, self.turn.port, 10.0)
        if not answered:
            await self.stop()
            raise TesseraError(f"turnserver did not answer on {self.listen}:{self.turn.port}")
        log.info(
            "turn server ready",
            extra={"listen": self.listen, "port": self.turn.port, "tls": self.turn.tls_port},
        )

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            log.debug("turnserver: %s", text)
            if "ERROR" in text:
                log.warning("turnserver: %s", text)

    async def stop(self) -> None:
        """Stop turnserver (SIGTERM, then SIGKILL). Safe twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_process(proc, self.grace, "turnserver")
        task, self._log = self._log, None
        if task is not None:
            await task
