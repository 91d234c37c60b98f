"""Reading projected state from the KV buckets (for the gateway, the controller and the CLI)."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError

from pipeline.nats.topology import STATE_BUCKETS
from pipeline.state.model import State
from pipeline.state.stored import Projected, decode_entry


async def read_projected(js: JetStreamContext, bucket: str, key: str) -> Projected[Any] | None:
    """The stored entry of one entity (its state and the stream sequence folded into it), or
    None."""
    kv = await js.key_value(bucket)
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    return decode_entry(bucket, entry.value)


async def read_entry(js: JetStreamContext, bucket: str, key: str) -> State | None:
    """The projected state of one entity, or None."""
    entry = await read_projected(js, bucket, key)
    if entry is None:
        return None
    state: Any = entry.state
    return state  # type: ignore[no-any-return]


async def read_bucket(js: JetStreamContext, bucket: str) -> dict[str, State]:
    """Every projected state of one bucket, by key.

    The keys come from the bucket's stream (the subjects it holds), not from a KV watcher: a
    watcher is a consumer made and torn down per listing, and on a busy server (right after a
    replay recreated the bucket) it could end its initial delivery before every key came."""
    prefix = f"$KV.{bucket}."
    try:
        info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    except NotFoundError:
        return {}
    out: dict[str, State] = {}
    for subject in sorted(info.state.subjects or {}):
        key = subject[len(prefix) :]
        state = await read_entry(js, bucket, key)
        if state is not None:
            out[key] = state
    return out


async def read_all(js: JetStreamContext) -> dict[tuple[str, str], State]:
    """Every projected state, by ``(bucket, key)``: what :func:`evolve.fold` gives for EVENTS."""
    out: dict[tuple[str, str], State] = {}
    for spec in STATE_BUCKETS:
        for key, state in (await read_bucket(js, spec.name)).items():
            out[(spec.name, key)] = state
    return out
