"""Who may do what on NATS: one user per role, each with the subjects its work needs.

The embedded nats-server runs with these users and no anonymous access. A grabber can publish
frames and audio levels but not segments or events; a stitcher can read frames and levels and
write segments but not start sessions; the gateway (the part strangers talk to) can record
mosaic and session requests and read state, but cannot touch streams, frames or agents. Only
``controller`` (the control plane: provisioning, projections, reconciliation) and ``admin`` (the
operator's CLI) manage JetStream.

Each role also gets its own reply-inbox prefix (``_INBOX.<role>``) so that no role can read
the replies meant for another. Workers answering requests (jit, agent) reply through
``allow_responses``, which lets them publish only to the reply subject of a request they got.

Pure: the permission table, the config text and URLs; the users file is the only I/O.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pipeline.errors import ConfigError
from pipeline.runtime.secretfile import write_private

ROLES = ("admin", "controller", "gateway", "grabber", "stitcher", "jit", "agent")

_API = "$JS.API"


def inbox_prefix(role: str | None) -> str:
    """Reply-inbox prefix of a role's connections (``_INBOX`` for admin and unknown)."""
    return "_INBOX" if role in (None, "admin") else f"_INBOX.{role}"


def _read_stream(stream: str) -> list[str]:
    """JetStream API subjects to look at and consume one stream (no changes to it)."""
    return [
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        f"{_API}.CONSUMER.CREATE.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}.>",
        f"{_API}.CONSUMER.INFO.{stream}.>",
        f"{_API}.CONSUMER.DELETE.{stream}.>",
        f"{_API}.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _read_kv(*buckets: str) -> list[str]:
    return [s for b in buckets for s in _read_stream(f"KV_{b}")]


def _write_kv(*buckets: str) -> list[str]:
    return [f"$KV.{b}.>" for b in buckets]


_SEGMENT_STORE = [*_read_stream("OBJ_segments")]
_WRITE_SEGMENTS = ["$O.segments.>", f"{_API}.STREAM.PURGE.OBJ_segments"]
_STATE_BUCKETS = (
    "manifests", "mosaics", "alarms", "sessions", "instances", "workers", "slots",
)  # fmt: skip
_ACCESS_BUCKETS = ("tokens", "revoked")


@dataclass(frozen=True)
class Permissions:
    """What one role may publish and subscribe to (allow-lists; all else refused)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False


def permissions(role: str) -> Permissions:
    """The permissions of ``role`` (one of :data:`ROLES`)."""
    inbox = f"{inbox_prefix(role)}.>"
    common = [f"{_API}.INFO", f"{_API}.STREAM.NAMES"]
    match role:
        case "admin":
            return Permissions(publish=(">",), subscribe=(">",), allow_responses=True)
        case "controller":
            # Provisioning, the projector's durable consumer, every state bucket, instance
            # commands; never frames, segments or a session's control subjects.
            return Permissions(
                publish=(
                    f"{_API}.>",
                    "$JS.ACK.>",
                    "$JS.FC.>",
                    "$KV.>",
                    "events.>",
                    "parked.>",  # the projector parks events it cannot fold
                    "hb.service.>",
                    "ctl.agent.>",
                    "ctl.worker.*",  # a running grabber given other tile sizes
                ),
                # Live heartbeats by core NATS too: on a cluster, a HEARTBEATS leader election
                # (seconds) must not look like every worker and agent going silent.
                subscribe=(inbox, "hb.>"),
            )
        case "gateway":
            return Permissions(
                publish=(
                    *common,
                    "events.mosaic.*",
                    "events.session.*",
                    "hb.viewer.>",
                    "hb.service.gateway.*",
                    "ctl.signal.*",
                    "ctl.session.*",
                    *_write_kv("slots"),
                    f"{_API}.STREAM.INFO.*",  # /healthz and /metrics report every stream
                    *_read_stream("EVENTS"),
                    *_read_stream("HEARTBEATS"),
                    *_read_stream("SEGMENTS"),
                    *_read_stream("PARTS"),
                    "ctl.mosaic.*",  # WHEP offers relayed to a mosaic's stitcher
                    *_read_kv(*_STATE_BUCKETS),
                    *_read_kv(*_ACCESS_BUCKETS),  # who may: API tokens, revoked viewers
                    *_write_kv("revoked"),  # POST /api/revocations (admin scope)
                    "audit.*",  # the audit trail (stream AUDIT)
                    *_read_stream("AUDIT"),  # GET /api/audit (admin scope)
                    *_SEGMENT_STORE,
                ),
                # Live heartbeats by core NATS too (pipeline/nats/beats.py): an election of
                # HEARTBEATS' leader must not make every agent look gone to /create.
                subscribe=(inbox, "hb.>"),
            )
        case "grabber":
            return Permissions(
                publish=(
                    *common,
                    "frames.*",
                    "levels.*",
                    "audio.*",
                    "hb.worker.*",
                    "events.source.*",  # alarm raised / cleared (acknowledged appends)
                    *_read_kv("alarms"),  # a restarted grabber ends what it no longer sees
                ),
                # A stitcher wants its audio; the controller retiles it.
                subscribe=(inbox, "ctl.audio.*", "ctl.worker.*"),
                allow_responses=True,
            )
        case "stitcher":
            return Permissions(
                publish=(
                    *common,
                    "segments.*",
                    "parts.*.*",  # CMAF parts and init sections (stream PARTS)
                    f"{_API}.STREAM.INFO.PARTS",  # was the stream replaced under it?
                    "hb.worker.*",
                    "hb.viewer.mosaic.*",  # a connected WHEP viewer is a viewer
                    "ctl.audio.*",  # the tile whose audio it plays: its grabber sends it
                    *_write_kv("manifests"),
                    *_read_kv("manifests", "mosaics", "alarms"),
                    *_read_stream("FRAMES"),
                    *_SEGMENT_STORE,
                    *_WRITE_SEGMENTS,
                ),
                subscribe=(inbox, "frames.*", "levels.*", "audio.*", "ctl.mosaic.*"),
                allow_responses=True,  # answers WHEP offers
            )
        case "jit":
            return Permissions(
                publish=(
                    *common,
                    "events.session.*",
                    "hb.worker.*",
                    "hb.viewer.session.*",  # a peer that is connected is a viewer
                    *_read_kv("sessions"),
                    # A session's worker started again (its machine died) reads where its
                    # predecessor was from its last beat (a token wildcard cannot say "jit-"
                    # only: any worker's last beat, whose stats are no secret).
                    f"{_API}.DIRECT.GET.HEARTBEATS.hb.worker.*",
                ),
                subscribe=(inbox, "ctl.session.*", "ctl.signal.*"),
                allow_responses=True,
            )
        case "agent":
            return Permissions(
                publish=(*common, "hb.instance.*"),
                subscribe=(inbox, "ctl.agent.*"),
                allow_responses=True,
            )
    raise ValueError(f"unknown NATS role {role!r}: one of {', '.join(ROLES)}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_quote(v) for v in values) + "]"


def render_authorization(passwords: dict[str, str]) -> str:
    """The ``authorization`` block of nats-server's config: one user per role, nothing else
    (so an anonymous client is refused)."""
    lines = ["authorization {", "  users = ["]
    for role in ROLES:
        perms = permissions(role)
        lines.append(
            f"    {{user: {_quote(role)}, password: {_quote(passwords[role])}, permissions: {{"
            f"publish: {{allow: {_list(perms.publish)}}}, "
            f"subscribe: {{allow: {_list(perms.subscribe)}}}"
            + (", allow_responses: true" if perms.allow_responses else "")
            + "}}"
        )
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def new_passwords() -> dict[str, str]:
    """A fresh random password per role."""
    return {role: secrets.token_urlsafe(24) for role in ROLES}


def load_or_create(path: Path) -> dict[str, str]:
    """The role passwords kept in ``path`` (mode 0600), made on first use."""
    try:
        passwords = load(path)
    except FileNotFoundError:
        passwords = new_passwords()
        write_private(path, json.dumps(passwords), atomic=True)
        return passwords
    if set(passwords) != set(ROLES):
        # A file from another version: make every role again.
        path.unlink()
        return load_or_create(path)
    return passwords


def load(path: Path) -> dict[str, str]:
    """The role passwords in ``path``; FileNotFoundError when it is missing."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"NATS users file {path} is not JSON ({exc}): delete it") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"NATS users file {path} is not a role -> password map: delete it")
    return {str(k): v for k, v in data.items()}


def has_credentials(url: str) -> bool:
    """True when ``url`` names a user (or token) already."""
    return any("@" in urlsplit(u.strip()).netloc for u in url.split(","))


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` (one or several, comma-separated) with ``user:password@`` in each."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        # Quoted: a password with "@", "/" or ":" must not end the user part early.
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
        out.append(urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}")))
    return ",".join(out)


def redact(url: str) -> str:
    """``url`` without its password, for logs."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if "@" in parts.netloc:
            userinfo, host = parts.netloc.rsplit("@", 1)
            parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}")
        out.append(urlunsplit(parts))
    return ",".join(out)
