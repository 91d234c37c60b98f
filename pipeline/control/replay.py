"""Rebuilding every projection from ``EVENTS`` (``tessera events replay``).

A replay wipes the state buckets and the projector's consumer, then folds every event again
from sequence 1. It refuses while a projector is alive (its heartbeat is fresh): two writers
would interleave old and new state. Stop ``tessera up`` (or the controller) first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.control.projector import DURABLE, SERVICE, SERVICE_ID, Projector
from pipeline.errors import MessageError, ProjectionError
from pipeline.messages.codec import decode_heartbeat
from pipeline.messages.heartbeats import ServiceHeartbeat
from pipeline.nats import subjects
from pipeline.nats.topology import EVENTS, HEARTBEATS, STATE_BUCKETS, provision


async def projector_alive(js: JetStreamContext, within: float) -> bool:
    """True if a projector heartbeat is younger than ``within`` seconds."""
    subject = subjects.service_heartbeat(SERVICE, SERVICE_ID)
    try:
        msg = await js.get_last_msg(HEARTBEATS.name, subject)
    except NotFoundError:
        return False
    try:
        beat = decode_heartbeat(msg.data or b"", subject)
    except MessageError:
        return False
    return isinstance(beat, ServiceHeartbeat) and beat.running and time.time() - beat.at < within


async def replay(
    nc: Client,
    js: JetStreamContext,
    *,
    progress: Callable[[int, int], None] | None = None,
    alive_within: float = 5.0,
    replicas: int = 1,
) -> int:
    """Wipe and rebuild every projection (its buckets at ``replicas`` copies); return the
    number of events folded."""
    if await projector_alive(js, alive_within):
        raise ProjectionError(
            "a projector is running (heartbeat is fresh): stop `tessera up` before a replay"
        )
    try:
        await js.delete_consumer(EVENTS.name, DURABLE)
    except NotFoundError:
        pass
    for spec in STATE_BUCKETS:
        try:
            await js.delete_stream(spec.stream_name)
        except NotFoundError:
            pass
    await provision(js, replicas)
    info = await js.stream_info(EVENTS.name)
    last = int(info.state.last_seq)
    total = int(info.state.messages)
    first = int(info.state.first_seq)

    def report(position: int) -> None:
        if progress is not None:
            done = max(0, min(total, position - first + 1)) if total else 0
            progress(done, total)

    projector = Projector(nc, js, on_progress=report, fetch_timeout=0.5)
    await projector.start()
    try:
        if total:
            await projector.wait_for(last)
        report(last)
    finally:
        await projector.stop()
    return projector.applied
