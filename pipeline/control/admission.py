"""Admission of JIT sessions: at most ``capacity`` at once, across every gateway.

Capacity is a set of slots, keys ``slot-0`` … ``slot-<capacity-1>`` in KV ``slots``, each
holding the id of the session that has it. Claiming is ``kv.create`` (atomic: it fails if the
key exists), so concurrent requests can never take more slots than there are, without locks or
counters. The controller releases a slot when its session ends or fails, and frees slots whose
session never appeared (a gateway that died between claiming and recording).
"""

from __future__ import annotations

import random
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError

from pipeline.nats.topology import SLOTS


def slot_key(index: int) -> str:
    """The KV key of slot ``index``."""
    return f"slot-{index}"


async def claim(js: JetStreamContext, session_id: str, capacity: int) -> str | None:
    """Take a free slot for ``session_id``; return its key, or None when all are taken."""
    kv = await js.key_value(SLOTS.name)
    start = random.randrange(capacity)  # spread concurrent claimers over the slots
    for offset in range(capacity):
        key = slot_key((start + offset) % capacity)
        try:
            await kv.create(key, f"{session_id} {time.time():.3f}".encode())
        except KeyWrongLastSequenceError:
            continue
        return key
    return None


async def holders(js: JetStreamContext) -> dict[str, tuple[str, float]]:
    """Slot key → (session id, Unix time it was claimed), for every taken slot."""
    kv = await js.key_value(SLOTS.name)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    out: dict[str, tuple[str, float]] = {}
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        if entry.value:
            session_id, _, claimed = entry.value.decode().partition(" ")
            out[key] = (session_id, float(claimed or 0.0))
    return out


async def release(js: JetStreamContext, key: str) -> None:
    """Free a slot (idempotent)."""
    kv = await js.key_value(SLOTS.name)
    try:
        await kv.purge(key)
    except KeyNotFoundError:
        pass
