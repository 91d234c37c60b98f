"""Every stream, KV bucket and object store Tessera uses, declared once and provisioned
idempotently.

| name            | kind   | subjects / keys            | storage | retention                      |
|-----------------|--------|----------------------------|---------|--------------------------------|
| EVENTS          | stream | events.<entity>.<id>       | file    | forever; dedup on Nats-Msg-Id  |
| HEARTBEATS      | stream | hb.<kind>...               | file    | last per subject, 1 day        |
| FRAMES          | stream | frames.<source_id>         | memory  | 3 per subject, 10 s            |
| SEGMENTS        | stream | segments.<fp> (notices)    | memory  | 5 min                          |
| PARTS           | stream | parts.<fp>.<name> (CMAF)   | memory  | last per subject, 60 s, 1 GiB  |
| AUDIT           | stream | audit.<action>             | file    | 90 days                        |
| PARKED          | stream | parked.events.<seq>        | file    | forever (until removed)        |
| manifests       | KV     | <fp>                       | memory  | 5 min TTL                      |
| mosaics, alarms, sessions, instances, workers | KV | <id> | file | latest only (projections) |
| segments        | object | <fp>/<seq>.<ext>           | memory  | 5 min TTL                      |
| slots           | KV     | slot-<k> -> session id     | file    | latest only (admission)        |
| tokens          | KV     | <name> -> scopes, hash     | file    | latest only (API tokens)       |
| revoked         | KV     | <viewer hash> -> until     | file    | latest only (signed URLs)      |

:func:`provision` creates what is missing, updates limits that may change (ages, sizes, counts)
and refuses with :class:`~pipeline.errors.TopologyError` when an existing one differs in what
cannot change (storage, retention, subjects): that is another application's stream, or an old
Tessera's, and silently adopting it would lose data.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError, ServerError

from pipeline.errors import TopologyError

log = logging.getLogger("tessera.topology")

_STORE_CREATE_FAILED = 10049
KV_PREFIX = "KV_"
OBJ_PREFIX = "OBJ_"


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream Tessera owns."""

    name: str
    subjects: tuple[str, ...]
    storage: StorageType
    description: str
    max_age: float = 0.0
    max_msgs_per_subject: int = -1
    max_bytes: int = -1
    duplicate_window: float = 120.0
    allow_direct: bool = False
    discard: DiscardPolicy = DiscardPolicy.OLD

    def config(self) -> StreamConfig:
        """The nats-py stream config for this spec."""
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=self.storage,
            max_age=self.max_age or None,
            max_msgs_per_subject=self.max_msgs_per_subject,
            max_bytes=self.max_bytes,
            duplicate_window=self.duplicate_window,
            allow_direct=self.allow_direct,
            discard=self.discard,
            num_replicas=1,
        )


@dataclass(frozen=True)
class BucketSpec:
    """A KV bucket (``kind="kv"``) or an object store (``kind="object"``)."""

    name: str
    kind: str
    storage: StorageType
    description: str
    ttl: float = 0.0

    @property
    def stream_name(self) -> str:
        """The stream behind the bucket."""
        return (KV_PREFIX if self.kind == "kv" else OBJ_PREFIX) + self.name


EVENTS = StreamSpec(
    name="EVENTS",
    subjects=("events.>",),
    storage=StorageType.FILE,
    description="Tessera facts: the only source of truth",
    # A wide dedup window: a publisher retrying after a NATS restart still dedups.
    duplicate_window=600.0,
)
HEARTBEATS = StreamSpec(
    name="HEARTBEATS",
    subjects=("hb.>",),
    storage=StorageType.FILE,
    description="Tessera liveness: last heartbeat per subject",
    max_age=86400.0,
    max_msgs_per_subject=1,
    duplicate_window=1.0,
    allow_direct=True,
)
FRAMES = StreamSpec(
    name="FRAMES",
    subjects=("frames.>",),
    storage=StorageType.MEMORY,
    description="Tessera tile-sized frames, newest few per source",
    max_age=10.0,
    max_msgs_per_subject=3,
    max_bytes=1024 * 1024 * 1024,
    duplicate_window=1.0,
    allow_direct=True,
)
SEGMENT_NOTICES = StreamSpec(
    name="SEGMENTS",
    subjects=("segments.>",),
    storage=StorageType.MEMORY,
    description="Tessera notices of stored mosaic segments",
    max_age=300.0,
    max_msgs_per_subject=64,
    duplicate_window=1.0,
)
PARTS = StreamSpec(
    name="PARTS",
    subjects=("parts.>",),
    storage=StorageType.MEMORY,
    description="Tessera CMAF parts and init sections of live mosaics",
    # A part is fetchable while its segment is listed or kept (about 15 s with a 6-segment
    # window); the age is only the backstop for a stitcher that died. Max_bytes bounds memory.
    max_age=60.0,
    max_msgs_per_subject=1,
    max_bytes=1024 * 1024 * 1024,
    duplicate_window=1.0,
    allow_direct=True,
)
AUDIT = StreamSpec(
    name="AUDIT",
    subjects=("audit.>",),
    storage=StorageType.FILE,
    description="Tessera audit trail: who created, watched and stopped what",
    max_age=90 * 86400.0,
    duplicate_window=120.0,
)

PARKED = StreamSpec(
    name="PARKED",
    subjects=("parked.>",),
    storage=StorageType.FILE,
    description="Tessera events the projector could not fold, kept for an operator",
)

STREAMS: tuple[StreamSpec, ...] = (
    EVENTS,
    HEARTBEATS,
    FRAMES,
    SEGMENT_NOTICES,
    PARTS,
    AUDIT,
    PARKED,
)

MANIFESTS = BucketSpec("manifests", "kv", StorageType.MEMORY, "live playlists by fp", ttl=300.0)
MOSAICS = BucketSpec("mosaics", "kv", StorageType.FILE, "projected mosaic state")
ALARMS = BucketSpec("alarms", "kv", StorageType.FILE, "projected alarms per source URL")
SESSIONS = BucketSpec("sessions", "kv", StorageType.FILE, "projected session state")
INSTANCES = BucketSpec("instances", "kv", StorageType.FILE, "projected instance state")
WORKERS = BucketSpec("workers", "kv", StorageType.FILE, "projected worker state")
SEGMENTS = BucketSpec("segments", "object", StorageType.MEMORY, "mosaic media", ttl=300.0)
SLOTS = BucketSpec("slots", "kv", StorageType.FILE, "JIT session admission: slot-<k> -> session")
TOKENS = BucketSpec("tokens", "kv", StorageType.FILE, "API tokens by name: scopes, secret hash")
REVOKED = BucketSpec(
    "revoked", "kv", StorageType.FILE, "viewer names whose signed URLs are revoked"
)

STATE_BUCKETS: tuple[BucketSpec, ...] = (MOSAICS, ALARMS, SESSIONS, INSTANCES, WORKERS)
BUCKETS: tuple[BucketSpec, ...] = (MANIFESTS, *STATE_BUCKETS, SEGMENTS, SLOTS, TOKENS, REVOKED)


def _norm_age(value: Any) -> float:
    return float(value or 0.0)


def _conflicts(want: StreamConfig, have: StreamConfig) -> list[str]:
    """Differences that JetStream cannot (or Tessera must not) change in place."""
    problems = []
    if have.storage != want.storage:
        problems.append(f"storage={_enum(have.storage)} (needs {_enum(want.storage)})")
    if (have.retention or RetentionPolicy.LIMITS) != want.retention:
        problems.append(f"retention={_enum(have.retention)} (needs {_enum(want.retention)})")
    if want.subjects is not None and sorted(have.subjects or []) != sorted(want.subjects):
        problems.append(f"subjects={have.subjects} (needs {want.subjects})")
    return problems


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value))


def _updates(want: StreamConfig, have: StreamConfig) -> list[str]:
    """Limits that differ and may be changed in place."""
    changes = []
    if _norm_age(have.max_age) != _norm_age(want.max_age):
        changes.append(f"max_age {_norm_age(have.max_age):g}s -> {_norm_age(want.max_age):g}s")
    for name in ("max_msgs_per_subject", "max_bytes", "duplicate_window"):
        a, b = getattr(have, name), getattr(want, name)
        if (a if a is not None else -1) != (b if b is not None else -1):
            changes.append(f"{name} {a} -> {b}")
    return changes


async def _ensure_stream(js: JetStreamContext, want: StreamConfig) -> str:
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        return f"created stream {want.name}"
    problems = _conflicts(want, info.config)
    if problems:
        raise TopologyError(
            f"stream {want.name} exists with {'; '.join(problems)}: remove it "
            f"(`nats stream rm {want.name}`) or point Tessera at another NATS (NATS_URL)"
        )
    changes = _updates(want, info.config)
    if not changes:
        return ""
    merged = info.config.evolve(
        max_age=want.max_age,
        max_msgs_per_subject=want.max_msgs_per_subject,
        max_bytes=want.max_bytes,
        duplicate_window=want.duplicate_window,
    )
    await js.update_stream(merged)
    return f"updated stream {want.name}: {', '.join(changes)}"


async def _ensure_bucket(js: JetStreamContext, spec: BucketSpec) -> str:
    try:
        info = await js.stream_info(spec.stream_name)
    except NotFoundError:
        info = None
    if info is None:
        if spec.kind == "kv":
            await js.create_key_value(
                bucket=spec.name,
                description=spec.description,
                storage=spec.storage,
                ttl=spec.ttl or None,
                history=1,
            )
        else:
            await js.create_object_store(
                spec.name,
                description=spec.description,
                storage=spec.storage,
                ttl=spec.ttl or None,
            )
        return f"created {spec.kind} bucket {spec.name}"
    have = info.config
    problems = []
    if have.storage != spec.storage:
        problems.append(f"storage={_enum(have.storage)} (needs {_enum(spec.storage)})")
    if _norm_age(have.max_age) != spec.ttl:
        problems.append(f"ttl={_norm_age(have.max_age):g}s (needs {spec.ttl:g}s)")
    if problems:
        raise TopologyError(
            f"{spec.kind} bucket {spec.name} exists with {'; '.join(problems)}: remove it "
            f"(`nats stream rm {spec.stream_name}`) or point Tessera at another NATS (NATS_URL)"
        )
    return ""


async def _retrying(make: Callable[[], Awaitable[str]], name: str) -> str:
    # nats-server can answer "error creating store for stream" (10049) for a file stream
    # created right after one of the same name was deleted (its old store is still being
    # removed): a short, bounded retry covers it (a replay deletes and recreates buckets).
    delay = 0.05
    for attempt in range(6):
        try:
            return await make()
        except ServerError as exc:
            if exc.err_code != _STORE_CREATE_FAILED or attempt == 5:
                raise TopologyError(f"cannot create {name}: {exc.description}") from exc
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def provision(js: JetStreamContext) -> list[str]:
    """Create or check every stream and bucket; return what was done (empty: nothing)."""
    actions = []
    for stream in STREAMS:
        config = stream.config()
        actions.append(await _retrying(functools.partial(_ensure_stream, js, config), stream.name))
    for bucket in BUCKETS:
        actions.append(await _retrying(functools.partial(_ensure_bucket, js, bucket), bucket.name))
    done = [a for a in actions if a]
    for action in done:
        log.info(action)
    return done


async def missing(js: JetStreamContext) -> list[str]:
    """Names of declared streams and buckets that do not exist (for health checks)."""
    names = [s.name for s in STREAMS] + [b.stream_name for b in BUCKETS]
    absent = []
    for name in names:
        try:
            await js.stream_info(name)
        except NotFoundError:
            absent.append(name)
    return absent
