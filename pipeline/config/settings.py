"""Tessera's settings: :class:`Config`, one typed object, built once, from defaults <
environment < flags.

Every setting is declared exactly once, as a field of :class:`Config` made by
:func:`~pipeline.config.declare.setting`, which names its environment variable, its
command-line flag, its parser and its help text. The CLI builds its flags from these
declarations, ``tessera config`` prints them, and ``docs/operations.md``'s settings table is
generated from them, so the three can never disagree. How declarations are read is the
business of :mod:`pipeline.config.declare`, :mod:`~pipeline.config.loading` and
:mod:`~pipeline.config.flags`; this module only says what Tessera's settings are.

Where the original JIT system had a name for a setting (``JIT_ORCHESTRATOR_PORT``,
``JIT_CAPACITY``, ...), that name is the environment variable; new settings use ``TESSERA_*``.
Where Tessera's name differs from the original's (``TESSERA_VERBOSE``: ``JIT_VERBOSE``), the
original's is an alias (docs/coming-from-jit.md), and so are its short flags (``-t``, ``-v``).
``MAIN_MODULE`` is the original image's choice of program, read by the CLI before its command
line (:func:`main_command`).

Errors: :class:`~pipeline.errors.ConfigError` names the key, the bad value and what would be
accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import declare, loading, parsers
from pipeline.config import flags as cli_flags
from pipeline.config.declare import setting

MAIN_MODULES = {"orchestrator": "up", "agent": "agent"}
"""``MAIN_MODULE`` values (the original backend's programs) and the command each one runs."""


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tessera"


@dataclass(frozen=True)
class Config:
    """Every setting Tessera has. Build it with :func:`load`; never mutate it."""

    data_dir: Path = setting(
        _default_data_dir(),
        env="TESSERA_DATA_DIR",
        flag="--data-dir",
        parse=parsers.path,
        help="folder for the embedded NATS store and run files",
        shown="$XDG_DATA_HOME/tessera or ~/.local/share/tessera",
    )
    nats_url: str | None = setting(
        None,
        env="NATS_URL",
        flag="--nats-url",
        parse=parsers.optional_str,
        help="connect to this NATS (a cluster in production) instead of starting one",
        group="nats",
    )
    nats_users_file: Path | None = setting(
        None,
        env="TESSERA_NATS_USERS",
        flag="--nats-users",
        parse=parsers.optional_path,
        help="JSON file of per-role NATS passwords (default: made in the data dir for the "
        "embedded server; with NATS_URL, each role then connects as its own user)",
        group="nats",
    )
    nats_host: str = setting(
        "127.0.0.1",
        env="TESSERA_NATS_HOST",
        flag="--nats-host",
        parse=parsers.host,
        help="address the embedded nats-server listens on",
        group="nats",
    )
    nats_port: int = setting(
        0,
        env="TESSERA_NATS_PORT",
        flag="--nats-port",
        parse=parsers.port,
        help="port of the embedded nats-server (0: a free port, written to the data dir)",
        group="nats",
    )
    nats_server_bin: str | None = setting(
        None,
        env="NATS_SERVER_BIN",
        flag="--nats-server-bin",
        parse=parsers.optional_str,
        help="nats-server binary (default: the one nats-server-bin installed, then PATH)",
        group="nats",
    )
    nats_max_payload: int = setting(
        8 * 1024 * 1024,
        env="TESSERA_NATS_MAX_PAYLOAD",
        flag="--nats-max-payload",
        parse=parsers.positive_int,
        help="max message size of the embedded server in bytes (tiles larger than 640x360)",
        group="nats",
    )
    nats_replicas: int = setting(
        0,
        env="TESSERA_NATS_REPLICAS",
        flag="--nats-replicas",
        parse=parsers.replicas,
        help="copies of each stream and bucket on a NATS cluster (0: 3 on a cluster of 3 or "
        "more, else 1; frames always keep one)",
        group="nats",
    )
    nats_ready_timeout: float = setting(
        10.0,
        env="TESSERA_NATS_READY_TIMEOUT",
        flag="--nats-ready-timeout",
        parse=parsers.positive_float,
        help="seconds to wait for the embedded nats-server to accept clients",
        group="nats",
    )
    host: str = setting(
        "127.0.0.1",
        env="JIT_ORCHESTRATOR_HOST",
        flag="--host",
        parse=parsers.host,
        help="address the HTTP gateway binds (loopback by default: safe)",
        group="gateway",
    )
    port: int = setting(
        8080,
        env="JIT_ORCHESTRATOR_PORT",
        flag="--port",
        parse=parsers.port,
        help="port of the HTTP gateway",
        group="gateway",
    )
    public: bool = setting(
        False,
        env="TESSERA_PUBLIC",
        flag="--public",
        parse=parsers.boolean,
        help="serve others: refuse loopback/private sources even on a loopback bind",
        group="gateway",
    )
    api_token: str | None = setting(
        None,
        env="TESSERA_API_TOKEN",
        flag=None,
        parse=parsers.optional_str,
        help="bearer token for POST /session and session actions (made and stored in the "
        "data dir when the gateway is not loopback-only)",
        group="gateway",
        shown="unset (loopback: open; else <data dir>/api-token)",
    )
    play_secret: str | None = setting(
        None,
        env="TESSERA_PLAY_SECRET",
        flag="--play-secret",
        parse=parsers.optional_str,
        help="sign play URLs: every request for a mosaic (playlist, media, WHEP, viewer page) "
        "then needs a URL from `tessera sign`; comma-separated secrets rotate (the first signs, "
        "all verify)",
        group="gateway",
        shown="unset (play URLs are open, as they always were)",
    )
    play_ttl: float = setting(
        8 * 3600.0,
        env="TESSERA_PLAY_TTL",
        flag="--play-ttl",
        parse=parsers.positive_float,
        help="seconds a play URL the gateway signs itself stays valid (the /create redirect, "
        "a review session's link), with --play-secret",
        group="gateway",
    )
    create_rate: float = setting(
        5.0,
        env="TESSERA_CREATE_RATE",
        flag="--create-rate",
        parse=parsers.positive_float,
        help="GET /create requests, and WHEP offers to mosaics (a bucket of their own), per second "
        "per client (bursts of 5 s worth)",
        group="gateway",
    )
    session_rate: float = setting(
        2.0,
        env="TESSERA_SESSION_RATE",
        flag="--session-rate",
        parse=parsers.positive_float,
        help="POST /session requests per second per client (bursts of 5 s worth)",
        group="gateway",
    )
    max_tiles: int = setting(
        64,
        env="TESSERA_MAX_TILES",
        flag="--max-tiles",
        parse=parsers.positive_int,
        help="most tiles (streams) one mosaic may have",
        group="mosaics",
    )
    segment_duration: float = setting(
        1.0,
        env="TESSERA_SEGMENT_DURATION",
        flag="--segment-duration",
        parse=parsers.positive_float,
        help="seconds of video per HLS segment of a mosaic",
        group="mosaics",
    )
    dead_source_timeout: float = setting(
        5.0,
        env="TESSERA_DEAD_SOURCE_TIMEOUT",
        flag="--dead-source-timeout",
        parse=parsers.positive_float,
        help="seconds without frames before a tile shows the dead-source picture",
        group="mosaics",
    )
    idle_timeout: float = setting(
        300.0,
        env="TESSERA_IDLE_TIMEOUT",
        flag="--idle-timeout",
        parse=parsers.positive_float,
        help="seconds without a viewer before a mosaic's work stops",
        group="mosaics",
    )
    worker_heartbeat_timeout: float = setting(
        10.0,
        env="TESSERA_WORKER_HEARTBEAT_TIMEOUT",
        flag="--worker-heartbeat-timeout",
        parse=parsers.positive_float,
        help="seconds without a worker heartbeat before it is restarted",
        group="controller",
    )
    poll_interval: float = setting(
        1.0,
        env="TESSERA_POLL_INTERVAL",
        flag="--poll-interval",
        parse=parsers.positive_float,
        help="seconds between the controller's reconcile passes",
        group="controller",
    )
    source_open_timeout: float = setting(
        5.0,
        env="TESSERA_SOURCE_OPEN_TIMEOUT",
        flag="--source-open-timeout",
        parse=parsers.positive_float,
        help="seconds a grabber waits to open a source",
        group="mosaics",
    )
    source_read_timeout: float = setting(
        5.0,
        env="TESSERA_SOURCE_READ_TIMEOUT",
        flag="--source-read-timeout",
        parse=parsers.positive_float,
        help="seconds without data before a grabber reconnects",
        group="mosaics",
    )
    monitoring: bool = setting(
        True,
        env="TESSERA_MONITORING",
        flag="--monitoring",
        parse=parsers.boolean,
        help="grabbers decode their sources' audio (meters, mosaic audio) and raise alarms "
        "(black, freeze, silence, loudness, no audio, lost); false saves that CPU",
        group="mosaics",
    )
    frame_transport: str = setting(
        "auto",
        env="TESSERA_FRAME_TRANSPORT",
        flag="--frame-transport",
        parse=parsers.choice("auto", "nats", "shm"),
        help="how tile frames reach stitchers: nats (every frame on NATS), shm (shared memory "
        "on one machine, a seed frame per second on NATS), auto (shm for local workers)",
        group="mosaics",
    )
    frame_encoding: str = setting(
        "auto",
        env="TESSERA_FRAME_ENCODING",
        flag="--frame-encoding",
        parse=parsers.choice("auto", "raw", "jpeg"),
        help="what tile frames on NATS carry: raw (the yuv420p planes: a 320x180 tile is 17 "
        "Mbit/s at 25 fps), jpeg (a tenth of that for ~0.4 ms of CPU a tile frame: stitchers "
        "on other machines), auto (jpeg; an shm slot is always raw)",
        group="mosaics",
    )
    x264_preset: str = setting(
        "ultrafast",
        env="TESSERA_X264_PRESET",
        flag="--x264-preset",
        parse=parsers.choice("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"),
        help="libx264 preset of the mosaic encoder: ultrafast spends the least CPU per mosaic "
        "(about half of veryfast's) for ~1.7x its bitrate; veryfast for viewers on slow links",
        group="mosaics",
    )
    hls_format: str = setting(
        "cmaf",
        env="TESSERA_HLS_FORMAT",
        flag="--hls-format",
        parse=parsers.choice("cmaf", "ts"),
        help="a mosaic's HLS: cmaf (Low-Latency HLS: fMP4 parts of 200 ms, blocking playlist "
        "reload) or ts (MPEG-TS segments, for players that predate fMP4 HLS)",
        group="mosaics",
    )
    mosaic_viewers: int = setting(
        16,
        env="TESSERA_MOSAIC_VIEWERS",
        flag="--mosaic-viewers",
        parse=parsers.positive_int,
        help="WebRTC (WHEP) viewers one mosaic takes at once; HLS viewers are not limited",
        group="mosaics",
    )
    x264_crf: int = setting(
        26,
        env="TESSERA_X264_CRF",
        flag="--x264-crf",
        parse=parsers.crf,
        help="libx264 constant rate factor of the mosaic: lower is a better picture and more "
        "bits (a busy 9-tile 1280x720 wall at ultrafast: ~5.7 Mbit/s at 26, ~7.9 at 23)",
        group="mosaics",
    )
    capacity: int = setting(
        64,
        env="JIT_CAPACITY",
        flag="--capacity",
        parse=parsers.positive_int,
        help="most JIT sessions at once; beyond it POST /session answers 503",
        group="sessions",
    )
    public_ip: str | None = setting(
        None,
        env="JIT_PUBLIC_IP",
        also_env=("PUBLIC_IP",),
        flag="--public-ip",
        parse=parsers.optional_str,
        help="host or IP put in the session URLs handed to clients (default: --host)",
        group="sessions",
    )
    session_running_timeout: float = setting(
        120.0,
        env="JIT_SESSION_RUNNING_TIMEOUT",
        flag="--session-running-timeout",
        parse=parsers.positive_float,
        help="seconds a requested session may take to be running before it fails",
        group="sessions",
    )
    session_idle_timeout: float = setting(
        120.0,
        env="JIT_SESSION_IDLE_TIMEOUT",
        flag="--session-idle-timeout",
        parse=parsers.positive_float,
        help="seconds a session may have no viewer before it ends",
        group="sessions",
    )
    media_roots: str = setting(
        "",
        env="JIT_MEDIA_ROOTS",
        flag="--media-roots",
        parse=str,
        help="folders (':'-separated) whose files sessions may open by path; empty: none",
        group="sessions",
    )
    s3_endpoint_url: str | None = setting(
        None,
        env="JIT_S3_ENDPOINT_URL",
        flag="--s3-endpoint-url",
        parse=parsers.optional_str,
        help="S3 endpoint for s3:// inputs (MinIO, tests); default: AWS",
        group="sessions",
    )
    turn: bool = setting(
        False,
        env="JIT_TURN",
        flag="--turn",
        also_flags=("-t",),
        parse=parsers.boolean,
        help="start a TURN server (coturn) and hand sessions short-lived credentials for it",
        group="sessions",
    )
    turn_port: int = setting(
        3478,
        env="JIT_TURN_PORT",
        flag="--turn-port",
        parse=parsers.port,
        help="TURN port (UDP and TCP)",
        group="sessions",
    )
    turn_tls_port: int = setting(
        5349,
        env="JIT_TURN_TLS_PORT",
        flag="--turn-tls-port",
        parse=parsers.port,
        help="TURN over TLS port",
        group="sessions",
    )
    turn_secret: str | None = setting(
        None,
        env="JIT_TURN_SECRET",
        flag=None,
        parse=parsers.optional_str,
        help="TURN REST API shared secret",
        group="sessions",
        shown="unset (made and stored in <data dir>/turn-secret)",
    )
    turn_ttl: float = setting(
        3600.0,
        env="JIT_TURN_TTL",
        flag="--turn-ttl",
        parse=parsers.positive_float,
        help="seconds a session's TURN credentials stay valid",
        group="sessions",
    )
    jit_proxy: bool = setting(
        True,
        env="TESSERA_JIT_PROXY",
        flag="--jit-proxy",
        parse=parsers.boolean,
        help="sessions build a seek proxy (intra-only JPEG at the output size, under "
        "<data dir>/proxies) while paused, so a seek into a long GOP shows its frame at once",
        group="sessions",
    )
    jit_max_output: str = setting(
        "1920x1080",
        env="TESSERA_JIT_MAX_OUTPUT",
        flag="--jit-max-output",
        parse=parsers.size_box,
        help="the largest picture a session sends when its options give no width or height: "
        "a bigger video is scaled down to fit, keeping its shape (a UHD picture over WebRTC "
        "costs a core and more to encode); WIDTHxHEIGHT or off",
        group="sessions",
    )
    jit_proxy_mib: int = setting(
        4096,
        env="TESSERA_JIT_PROXY_MIB",
        flag="--jit-proxy-mib",
        parse=parsers.positive_int,
        help="disk a session's seek proxy may take, in MiB (about an hour of 1080p at 4096); "
        "past it, the part around the playhead",
        group="sessions",
    )
    worker_start: str = setting(
        "fork",
        env="TESSERA_WORKER_START",
        flag="--worker-start",
        parse=parsers.choice("fork", "spawn"),
        help="how a local worker starts: forked from a pre-imported process (milliseconds; "
        "Linux) or spawned as a new Python (~0.6 s of CPU each)",
        group="controller",
    )
    shutdown_timeout: float = setting(
        10.0,
        env="TESSERA_SHUTDOWN_TIMEOUT",
        flag="--shutdown-timeout",
        parse=parsers.positive_float,
        help="seconds a graceful stop may take before children are killed",
    )
    heartbeat_interval: float = setting(
        1.0,
        env="TESSERA_HEARTBEAT_INTERVAL",
        flag="--heartbeat-interval",
        parse=parsers.positive_float,
        help="seconds between liveness heartbeats of every service",
    )
    log_format: str = setting(
        "text",
        env="TESSERA_LOG_FORMAT",
        flag="--log-format",
        parse=parsers.choice("text", "json"),
        help="log lines as key=value text for people or JSON for machines",
        group="logging",
    )
    verbose: bool = setting(
        False,
        env="TESSERA_VERBOSE",
        also_env=("JIT_VERBOSE",),
        flag="--verbose",
        also_flags=("-v",),
        parse=parsers.boolean,
        help="log debug details",
        group="logging",
    )
    main_module: str | None = setting(
        None,
        env="MAIN_MODULE",
        flag=None,
        parse=parsers.optional_choice(*MAIN_MODULES),
        help="what `tessera` given no command runs, as the original image chose its program: "
        "orchestrator (`tessera up`) or agent (`tessera agent`)",
        shown="unset (a command is required)",
    )

    @property
    def nats_store_dir(self) -> Path:
        """Where the embedded nats-server keeps JetStream data."""
        return self.data_dir / "nats"

    @property
    def nats_users_path(self) -> Path | None:
        """The per-role NATS passwords: the configured file, else (embedded server) the data
        dir's; None for a ``NATS_URL`` server without one (its URL carries any credentials)."""
        if self.nats_users_file is not None:
            return self.nats_users_file
        return None if self.nats_url else self.data_dir / "nats-users.json"

    @property
    def nats_url_file(self) -> Path:
        """Run file in which a running embedded server leaves its client URL."""
        return self.data_dir / "nats.url"

    @property
    def media_root_paths(self) -> tuple[Path, ...]:
        """The configured media roots as absolute paths."""
        parts = [p for p in self.media_roots.split(":") if p.strip()]
        return tuple(Path(p).expanduser().resolve() for p in parts)

    @property
    def public_base(self) -> str:
        """``http://host:port`` that clients should use to reach the gateway."""
        host = self.public_ip or self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def binds_loopback(self) -> bool:
        """True when the gateway only listens on a loopback address."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def settings() -> tuple[dataclasses.Field[Any], ...]:
    """The declared settings of :class:`Config`, in declaration order."""
    return declare.settings(Config)


def load(env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None) -> Config:
    """Build the config: defaults, then ``env`` (default ``os.environ``), then ``flags``.

    ``flags`` maps field names to the raw text given on the command line.
    """
    return loading.build(Config, env, flags)


def main_command(env: Mapping[str, str] | None = None) -> str | None:
    """The command ``MAIN_MODULE`` in ``env`` (default ``os.environ``) names, if it is set."""
    module: str | None = loading.env_value(Config, "main_module", env)
    return MAIN_MODULES[module] if module is not None else None


def add_arguments(parser: argparse.ArgumentParser, groups: Iterable[str] | None = None) -> None:
    """Add a flag for every setting (of ``groups``, default all) to ``parser``; build the config
    from what was given with :func:`from_namespace`."""
    cli_flags.add_arguments(parser, Config, groups)


def from_namespace(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """Build the config from parsed flags (only those given) over the environment."""
    return load(env=env, flags=cli_flags.given_flags(ns, Config))


def to_env(config: Config, groups: Iterable[str] | None = None) -> dict[str, str]:
    """The settings (of ``groups``) as environment variables, for processes we start."""
    return loading.to_env(config, groups)


def describe() -> list[dict[str, str]]:
    """One row per setting (flags, env vars, default, help), for `tessera config`."""
    return declare.describe(Config)


def markdown_table() -> str:
    """The settings as a markdown table (docs/operations.md embeds it; a test keeps it true)."""
    return declare.markdown_table(Config)
