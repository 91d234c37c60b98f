"""Tessera's settings: one typed object, built once, from defaults < environment < flags.

Every setting is declared exactly once, as a field of :class:`Config` whose metadata names its
environment variable, its command-line flag, its parser and its help text. The CLI builds its
flags from these declarations, ``tessera config`` prints them, and ``docs/operations.md``'s
settings table is generated from them, so the three can never disagree.

Where the original JIT system had a name for a setting (``JIT_ORCHESTRATOR_PORT``,
``JIT_CAPACITY``, ...), that name is the environment variable; new settings use ``TESSERA_*``.

Errors: :class:`ConfigError` (a :class:`~pipeline.errors.TesseraError`) names the key, the bad
value and what would be accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

Parser = Callable[[str], Any]


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("not a port number (0-65535, 0 picks a free port)")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _crf(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 51:
        raise ValueError("must be a whole number from 0 (lossless) to 51")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a number greater than 0")
    return value


def _host(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _choice(*choices: str) -> Parser:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    parse.__name__ = "choice"
    return parse


def _optional_str(text: str) -> str | None:
    text = text.strip()
    return text or None


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def setting(
    default: Any,
    *,
    env: str,
    flag: str | None,
    parse: Parser,
    help: str,
    group: str = "general",
    shown: str | None = None,
) -> Any:
    """Declare one setting: a dataclass field carrying its env var, flag, parser and help.

    ``shown`` is how the default is written in help and docs when it depends on the machine.
    """
    return field(
        default=default,
        metadata={
            "env": env,
            "flag": flag,
            "parse": parse,
            "help": help,
            "group": group,
            "shown": shown,
        },
    )


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
        parse=_path,
        help="folder for the embedded NATS store and run files",
        shown="$XDG_DATA_HOME/tessera or ~/.local/share/tessera",
    )
    nats_url: str | None = setting(
        None,
        env="NATS_URL",
        flag="--nats-url",
        parse=_optional_str,
        help="connect to this NATS (a cluster in production) instead of starting one",
        group="nats",
    )
    nats_users_file: Path | None = setting(
        None,
        env="TESSERA_NATS_USERS",
        flag="--nats-users",
        parse=_optional_path,
        help="JSON file of per-role NATS passwords (default: made in the data dir for the "
        "embedded server; with NATS_URL, each role then connects as its own user)",
        group="nats",
    )
    nats_host: str = setting(
        "127.0.0.1",
        env="TESSERA_NATS_HOST",
        flag="--nats-host",
        parse=_host,
        help="address the embedded nats-server listens on",
        group="nats",
    )
    nats_port: int = setting(
        0,
        env="TESSERA_NATS_PORT",
        flag="--nats-port",
        parse=_port,
        help="port of the embedded nats-server (0: a free port, written to the data dir)",
        group="nats",
    )
    nats_server_bin: str | None = setting(
        None,
        env="NATS_SERVER_BIN",
        flag="--nats-server-bin",
        parse=_optional_str,
        help="nats-server binary (default: the one nats-server-bin installed, then PATH)",
        group="nats",
    )
    nats_max_payload: int = setting(
        8 * 1024 * 1024,
        env="TESSERA_NATS_MAX_PAYLOAD",
        flag="--nats-max-payload",
        parse=_positive_int,
        help="max message size of the embedded server in bytes (tiles larger than 640x360)",
        group="nats",
    )
    nats_ready_timeout: float = setting(
        10.0,
        env="TESSERA_NATS_READY_TIMEOUT",
        flag="--nats-ready-timeout",
        parse=_positive_float,
        help="seconds to wait for the embedded nats-server to accept clients",
        group="nats",
    )
    host: str = setting(
        "127.0.0.1",
        env="JIT_ORCHESTRATOR_HOST",
        flag="--host",
        parse=_host,
        help="address the HTTP gateway binds (loopback by default: safe)",
        group="gateway",
    )
    port: int = setting(
        8080,
        env="JIT_ORCHESTRATOR_PORT",
        flag="--port",
        parse=_port,
        help="port of the HTTP gateway",
        group="gateway",
    )
    public: bool = setting(
        False,
        env="TESSERA_PUBLIC",
        flag="--public",
        parse=_bool,
        help="serve others: refuse loopback/private sources even on a loopback bind",
        group="gateway",
    )
    api_token: str | None = setting(
        None,
        env="TESSERA_API_TOKEN",
        flag=None,
        parse=_optional_str,
        help="bearer token for POST /session and session actions (made and stored in the "
        "data dir when the gateway is not loopback-only)",
        group="gateway",
        shown="unset (loopback: open; else <data dir>/api-token)",
    )
    create_rate: float = setting(
        5.0,
        env="TESSERA_CREATE_RATE",
        flag="--create-rate",
        parse=_positive_float,
        help="GET /create requests per second per client (bursts of 5 s worth)",
        group="gateway",
    )
    session_rate: float = setting(
        2.0,
        env="TESSERA_SESSION_RATE",
        flag="--session-rate",
        parse=_positive_float,
        help="POST /session requests per second per client (bursts of 5 s worth)",
        group="gateway",
    )
    max_tiles: int = setting(
        64,
        env="TESSERA_MAX_TILES",
        flag="--max-tiles",
        parse=_positive_int,
        help="most tiles (streams) one mosaic may have",
        group="mosaics",
    )
    segment_duration: float = setting(
        1.0,
        env="TESSERA_SEGMENT_DURATION",
        flag="--segment-duration",
        parse=_positive_float,
        help="seconds of video per HLS segment of a mosaic",
        group="mosaics",
    )
    dead_source_timeout: float = setting(
        5.0,
        env="TESSERA_DEAD_SOURCE_TIMEOUT",
        flag="--dead-source-timeout",
        parse=_positive_float,
        help="seconds without frames before a tile shows the dead-source picture",
        group="mosaics",
    )
    idle_timeout: float = setting(
        300.0,
        env="TESSERA_IDLE_TIMEOUT",
        flag="--idle-timeout",
        parse=_positive_float,
        help="seconds without a viewer before a mosaic's work stops",
        group="mosaics",
    )
    worker_heartbeat_timeout: float = setting(
        10.0,
        env="TESSERA_WORKER_HEARTBEAT_TIMEOUT",
        flag="--worker-heartbeat-timeout",
        parse=_positive_float,
        help="seconds without a worker heartbeat before it is restarted",
        group="controller",
    )
    poll_interval: float = setting(
        1.0,
        env="TESSERA_POLL_INTERVAL",
        flag="--poll-interval",
        parse=_positive_float,
        help="seconds between the controller's reconcile passes",
        group="controller",
    )
    source_open_timeout: float = setting(
        5.0,
        env="TESSERA_SOURCE_OPEN_TIMEOUT",
        flag="--source-open-timeout",
        parse=_positive_float,
        help="seconds a grabber waits to open a source",
        group="mosaics",
    )
    source_read_timeout: float = setting(
        5.0,
        env="TESSERA_SOURCE_READ_TIMEOUT",
        flag="--source-read-timeout",
        parse=_positive_float,
        help="seconds without data before a grabber reconnects",
        group="mosaics",
    )
    frame_transport: str = setting(
        "auto",
        env="TESSERA_FRAME_TRANSPORT",
        flag="--frame-transport",
        parse=_choice("auto", "nats", "shm"),
        help="how tile frames reach stitchers: nats (every frame on NATS), shm (shared memory "
        "on one machine, a seed frame per second on NATS), auto (shm for local workers)",
        group="mosaics",
    )
    x264_preset: str = setting(
        "ultrafast",
        env="TESSERA_X264_PRESET",
        flag="--x264-preset",
        parse=_choice("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"),
        help="libx264 preset of the mosaic encoder: ultrafast spends the least CPU per mosaic "
        "(about half of veryfast's) for ~1.7x its bitrate; veryfast for viewers on slow links",
        group="mosaics",
    )
    x264_crf: int = setting(
        26,
        env="TESSERA_X264_CRF",
        flag="--x264-crf",
        parse=_crf,
        help="libx264 constant rate factor of the mosaic: lower is a better picture and more "
        "bits (a busy 9-tile 1280x720 wall at ultrafast: ~5.7 Mbit/s at 26, ~7.9 at 23)",
        group="mosaics",
    )
    capacity: int = setting(
        64,
        env="JIT_CAPACITY",
        flag="--capacity",
        parse=_positive_int,
        help="most JIT sessions at once; beyond it POST /session answers 503",
        group="sessions",
    )
    public_ip: str | None = setting(
        None,
        env="JIT_PUBLIC_IP",
        flag="--public-ip",
        parse=_optional_str,
        help="host or IP put in the session URLs handed to clients (default: --host)",
        group="sessions",
    )
    session_running_timeout: float = setting(
        120.0,
        env="JIT_SESSION_RUNNING_TIMEOUT",
        flag="--session-running-timeout",
        parse=_positive_float,
        help="seconds a requested session may take to be running before it fails",
        group="sessions",
    )
    session_idle_timeout: float = setting(
        120.0,
        env="JIT_SESSION_IDLE_TIMEOUT",
        flag="--session-idle-timeout",
        parse=_positive_float,
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
        parse=_optional_str,
        help="S3 endpoint for s3:// inputs (MinIO, tests); default: AWS",
        group="sessions",
    )
    turn: bool = setting(
        False,
        env="JIT_TURN",
        flag="--turn",
        parse=_bool,
        help="start a TURN server (coturn) and hand sessions short-lived credentials for it",
        group="sessions",
    )
    turn_port: int = setting(
        3478,
        env="JIT_TURN_PORT",
        flag="--turn-port",
        parse=_port,
        help="TURN port (UDP and TCP)",
        group="sessions",
    )
    turn_tls_port: int = setting(
        5349,
        env="JIT_TURN_TLS_PORT",
        flag="--turn-tls-port",
        parse=_port,
        help="TURN over TLS port",
        group="sessions",
    )
    turn_secret: str | None = setting(
        None,
        env="JIT_TURN_SECRET",
        flag=None,
        parse=_optional_str,
        help="TURN REST API shared secret",
        group="sessions",
        shown="unset (made and stored in <data dir>/turn-secret)",
    )
    turn_ttl: float = setting(
        3600.0,
        env="JIT_TURN_TTL",
        flag="--turn-ttl",
        parse=_positive_float,
        help="seconds a session's TURN credentials stay valid",
        group="sessions",
    )
    worker_start: str = setting(
        "fork",
        env="TESSERA_WORKER_START",
        flag="--worker-start",
        parse=_choice("fork", "spawn"),
        help="how a local worker starts: forked from a pre-imported process (milliseconds; "
        "Linux) or spawned as a new Python (~0.6 s of CPU each)",
        group="controller",
    )
    shutdown_timeout: float = setting(
        10.0,
        env="TESSERA_SHUTDOWN_TIMEOUT",
        flag="--shutdown-timeout",
        parse=_positive_float,
        help="seconds a graceful stop may take before children are killed",
    )
    heartbeat_interval: float = setting(
        1.0,
        env="TESSERA_HEARTBEAT_INTERVAL",
        flag="--heartbeat-interval",
        parse=_positive_float,
        help="seconds between liveness heartbeats of every service",
    )
    log_format: str = setting(
        "text",
        env="TESSERA_LOG_FORMAT",
        flag="--log-format",
        parse=_choice("text", "json"),
        help="log lines as key=value text for people or JSON for machines",
        group="logging",
    )
    verbose: bool = setting(
        False,
        env="TESSERA_VERBOSE",
        flag="--verbose",
        parse=_bool,
        help="log debug details (-v)",
        group="logging",
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


def _shown(f: dataclasses.Field[Any]) -> str:
    if f.metadata["shown"] is not None:
        return str(f.metadata["shown"])
    if f.default is None:
        return "unset"
    if f.default == ():
        return "none"
    return str(f.default)


def markdown_table(cls: type = Config) -> str:
    """The settings of ``cls`` as a markdown table (the docs embed it; a test keeps it true)."""
    lines = ["| flag | env var | default | what |", "| --- | --- | --- | --- |"]
    for row in describe(cls):
        flag = f"`{row['flag']}`" if row["flag"] else ""
        lines.append(f"| {flag} | `{row['env']}` | {row['default']} | {row['help']} |")
    return "\n".join(lines) + "\n"


def settings(cls: type = Config) -> tuple[dataclasses.Field[Any], ...]:
    """The declared settings of ``cls`` (a settings dataclass), in declaration order."""
    return dataclasses.fields(cls)


def _parse(f: dataclasses.Field[Any], source: str, text: str) -> Any:
    try:
        return f.metadata["parse"](text)
    except ValueError as exc:
        reason = str(exc)
        if "invalid literal" in reason or "could not convert" in reason:
            reason = "not a number"
        raise ConfigError(f"{source}={text!r}: {reason}") from exc


def parse_values(
    cls: type, env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Parsed values of the settings of ``cls`` given in ``env`` (default ``os.environ``) and
    ``flags`` (field name → raw text; flags win)."""
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in settings(cls):
        raw = environ.get(f.metadata["env"])
        if raw is not None:
            values[f.name] = _parse(f, f.metadata["env"], raw)
    by_name = {f.name: f for f in settings(cls)}
    for name, raw in (flags or {}).items():
        if name not in by_name:
            raise ConfigError(f"unknown setting {name!r}")
        f = by_name[name]
        values[name] = _parse(f, f.metadata["flag"] or name, raw)
    return values


def load(env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None) -> Config:
    """Build the config: defaults, then ``env`` (default ``os.environ``), then ``flags``.

    ``flags`` maps field names to the raw text given on the command line.
    """
    return Config(**parse_values(Config, env, flags))


def add_arguments(
    parser: argparse.ArgumentParser, groups: Iterable[str] | None = None, cls: type = Config
) -> None:
    """Add a flag for every setting of ``cls`` (of ``groups``, default all) to ``parser``.

    Flags are parsed as text and default to :data:`argparse.SUPPRESS`, so that only the flags a
    user gave override the environment; :func:`from_namespace` then builds the config.
    """
    wanted = set(groups) if groups is not None else None
    by_group: dict[str, argparse._ArgumentGroup] = {}
    for f in settings(cls):
        meta = f.metadata
        if meta["flag"] is None or (wanted is not None and meta["group"] not in wanted):
            continue
        group = by_group.get(meta["group"])
        if group is None:
            group = parser.add_argument_group(f"{meta['group']} settings")
            by_group[meta["group"]] = group
        help_text = f"{meta['help']} [env {meta['env']}; default {_shown(f)}]"
        if meta["parse"] is _bool:
            names = [meta["flag"], "-v"] if f.name == "verbose" else [meta["flag"]]
            group.add_argument(
                *names,
                dest=f.name,
                action="store_const",
                const="true",
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                meta["flag"],
                dest=f.name,
                metavar=f.name.upper(),
                default=argparse.SUPPRESS,
                help=help_text,
            )


def to_env(config: Any, groups: Iterable[str] | None = None) -> dict[str, str]:
    """Every setting of ``config`` (of ``groups``) as environment variables: how processes
    started by this one get the same settings, flags included."""
    wanted = set(groups) if groups is not None else None
    env: dict[str, str] = {}
    for f in settings(type(config)):
        if wanted is not None and f.metadata["group"] not in wanted:
            continue
        value = getattr(config, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            env[f.metadata["env"]] = "1" if value else "0"
        elif isinstance(value, tuple):
            env[f.metadata["env"]] = ",".join(f"{k}={v}" for k, v in value)
        else:
            env[f.metadata["env"]] = str(value)
    return env


def given_flags(ns: argparse.Namespace, cls: type = Config) -> dict[str, str]:
    """The flags a user gave for the settings of ``cls``."""
    names = {f.name for f in settings(cls)}
    return {k: v for k, v in vars(ns).items() if k in names}


def from_namespace(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """Build the config from parsed flags (only those given) over the environment."""
    return load(env=env, flags=given_flags(ns))


def describe(cls: type = Config) -> list[dict[str, str]]:
    """One row per setting (flag, env var, default, help), for `tessera config` and the docs."""
    return [
        {
            "name": f.name,
            "flag": f.metadata["flag"] or "",
            "env": f.metadata["env"],
            "default": _shown(f),
            "help": f.metadata["help"],
            "group": f.metadata["group"],
        }
        for f in settings(cls)
    ]
