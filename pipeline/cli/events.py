"""``tessera events tail``: events as JSON lines, like ``nats stream view`` / ``nats sub``.

Each line is ``{"seq": N, "subject": "...", "event": {...}}`` with the event as stored. The last
``N`` matching events are shown exactly, also under a subject filter: the server's per-subject
counts tell how many match, and the ones before the last N are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from pipeline.nats.eventlog import matching_count
from pipeline.nats.topology import EVENTS


async def tail(
    js: JetStreamContext,
    write: Callable[[str], None],
    *,
    subject: str = "events.>",
    last: int | None = 10,
    follow: bool = True,
) -> int:
    """Print the last ``last`` (None: all) matching events, then new ones while ``follow``.

    Returns how many lines were written. Without ``follow`` it returns once caught up.
    """
    total = await matching_count(js, subject)
    skip = 0 if last is None else max(0, total - last)
    if not follow and total - skip == 0:
        return 0
    sub = await js.subscribe(
        subject, stream=EVENTS.name, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    written = 0
    seen = 0
    try:
        async for msg in sub.messages:
            seen += 1
            meta = msg.metadata
            if seen > skip:
                line = {
                    "seq": meta.sequence.stream,
                    "subject": msg.subject,
                    "event": json.loads(msg.data) if msg.data else None,
                }
                write(json.dumps(line, separators=(",", ":")))
                written += 1
            if not follow and meta.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return written
