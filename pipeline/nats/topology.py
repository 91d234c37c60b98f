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

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError, ServerError, ServiceUnavailableError

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
    max_replicas: int = 5
    """At most this many copies in a cluster, whatever :func:`provision` is asked for."""
    essential: bool = True
    """False: Tessera runs without it for a while (its one server is down); provisioning warns
    instead of failing."""

    def config(self, replicas: int = 1) -> StreamConfig:
        """The nats-py stream config for this spec, at ``replicas`` copies (or its maximum)."""
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
            num_replicas=max(1, min(replicas, self.max_replicas)),
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
    # Frames are the one stream kept on one server in a cluster: every tile frame would
    # otherwise cross the routes twice more (~17 Mbit/s per 320x180 tile, raw), and a frame
    # lost with its server is replaced by the next one 40 ms later. Subscribers get frames by
    # core NATS, which does not need the stream; a stitcher seeds from it when it can.
    max_replicas=1,
    essential=False,
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
    if (have.num_replicas or 1) != (want.num_replicas or 1):
        changes.append(f"replicas {have.num_replicas or 1} -> {want.num_replicas or 1}")
    if _norm_age(have.max_age) != _norm_age(want.max_age):
        changes.append(f"max_age {_norm_age(have.max_age):g}s -> {_norm_age(want.max_age):g}s")
    for name in ("max_msgs_per_subject", "max_bytes", "duplicate_window"):
        a, b = getattr(have, name), getattr(want, name)
        if (a if a is not None else -1) != (b if b is not None else -1):
            changes.append(f"{name} {a} -> {b}")
    return changes


async def _ensure_stream(js: JetStreamContext, want: StreamConfig, shrink: bool = True) -> str:
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        return f"created stream {want.name}"
    have = info.config.num_replicas or 1
    if not shrink and have > (want.num_replicas or 1):
        want = want.evolve(num_replicas=have)
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
        num_replicas=want.num_replicas,
    )
    await js.update_stream(merged)
    return f"updated stream {want.name}: {', '.join(changes)}"


async def _ensure_bucket(
    js: JetStreamContext, spec: BucketSpec, replicas: int = 1, shrink: bool = True
) -> str:
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
                replicas=replicas,
            )
        else:
            await js.create_object_store(
                spec.name,
                description=spec.description,
                storage=spec.storage,
                ttl=spec.ttl or None,
                replicas=replicas,
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
    copies = have.num_replicas or 1
    if copies != replicas and (shrink or copies < replicas):
        await js.update_stream(have.evolve(num_replicas=replicas))
        return f"updated {spec.kind} bucket {spec.name}: replicas {copies} -> {replicas}"
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


async def _answered(make: Callable[[], Awaitable[str]], name: str) -> str:
    """:func:`_retrying`, with no answer from JetStream (a cluster without a leader for this
    stream, or without a majority) as a TopologyError naming the stream and the likely cause."""
    try:
        return await _retrying(make, name)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError):
        raise TopologyError(
            f"NATS did not answer about {name}: is JetStream up, and are most of the cluster's "
            "servers (the ones holding it) running?"
        ) from None


def replicas_for(server_info: dict[str, Any], configured: int = 0) -> int:
    """Copies per stream: ``configured`` when set (1-5), else 3 when the server belongs to a
    cluster of 3 or more (its INFO names a cluster and lists the servers' client URLs), else 1.
    Three is what survives one server's loss with a majority left; more only costs."""
    if configured > 0:
        return configured
    if not server_info.get("cluster"):
        return 1
    return max(1, min(3, len(server_info.get("connect_urls") or ())))


async def provision(js: JetStreamContext, replicas: int = 1, *, shrink: bool = True) -> list[str]:
    """Create or check every stream and bucket, each at ``replicas`` copies (at most its
    spec's maximum; 3 on a 3-server cluster, 1 on one server); return what was done (empty:
    nothing). Copies are changed in place where they differ; with ``shrink=False`` only ever
    raised (``replicas`` guessed from a server that may not see all its peers yet must not
    take copies away)."""
    actions = []
    for stream in STREAMS:
        config = stream.config(replicas)
        make = functools.partial(_ensure_stream, js, config, shrink)
        try:
            actions.append(await _answered(make, stream.name))
        except TopologyError as exc:
            if stream.essential:
                raise
            log.warning("%s; going on without it", exc)
    for bucket in BUCKETS:
        make = functools.partial(_ensure_bucket, js, bucket, replicas, shrink)
        actions.append(await _answered(make, bucket.name))
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
