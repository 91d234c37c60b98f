"""Appending facts to ``EVENTS`` (the only way events are written), and counting them.

Each append carries a ``Nats-Msg-Id`` (given, or made once per call), so a retry after a lost
ack is deduplicated by JetStream instead of recorded twice. ``expect_first=True`` appends only
if the entity has no events yet (``Nats-Expected-Last-Subject-Sequence: 0``): how "create a
mosaic once per fingerprint" holds beyond the dedup window.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from pipeline.errors import TesseraError
from pipeline.messages.codec import encode
from pipeline.messages.events import Event, entity_of
from pipeline.nats import subjects
from pipeline.nats.topology import EVENTS

log = logging.getLogger("tessera.events")

# No acknowledgement: lost, or no stream leader to give one (an election in a cluster).
_UNANSWERED = (
    NatsTimeoutError,
    NoRespondersError,
    TimeoutError,
    NoStreamResponseError,
    ServiceUnavailableError,
)

# JetStream's error code for "wrong last sequence" (the expected-sequence check failed).
_WRONG_LAST_SEQUENCE = 10071


class AppendError(TesseraError):
    """An event could not be appended (after retries)."""


class AlreadyExists(TesseraError):
    """``expect_first`` was asked and the entity already has events."""


def subject_of(event: Event) -> str:
    """``events.<entity>.<id>`` for an event."""
    entity, entity_id = entity_of(event)
    return subjects.event(entity, entity_id)


async def append(
    js: JetStreamContext,
    event: Event,
    *,
    msg_id: str | None = None,
    expect_first: bool = False,
    attempts: int = 8,
    ack_timeout: float = 2.0,
) -> PubAck:
    """Append ``event``; retried with backoff on a lost ack, deduplicated by ``msg_id``.

    The default tries back off over ~7 s (plus ``ack_timeout`` for each try nobody answered):
    long enough for a NATS cluster to elect a new leader for ``EVENTS`` after the server that
    led it died, while JetStream answers 503 or nobody answers at once."""
    subject = subject_of(event)
    headers = {"Nats-Msg-Id": msg_id or uuid.uuid4().hex}
    if expect_first:
        headers["Nats-Expected-Last-Subject-Sequence"] = "0"
    payload = encode(event)
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            ack = await js.publish(subject, payload, timeout=ack_timeout, headers=headers)
        except _UNANSWERED as exc:
            if attempt == attempts:
                raise AppendError(
                    f"cannot append to {subject}: no ack after {attempts} tries ({exc!r})"
                ) from exc
            log.warning("append not acknowledged; retrying", extra={"subject": subject})
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
            continue
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise AlreadyExists(f"{subject} already has events") from exc
            raise AppendError(f"cannot append to {subject}: {exc.description}") from exc
        log.debug("appended", extra={"subject": subject, "seq": ack.seq})
        return ack
    raise AssertionError("unreachable")


async def matching_count(js: JetStreamContext, subject: str) -> int:
    """How many events in EVENTS match ``subject``."""
    info = await js.stream_info(EVENTS.name, subjects_filter=subject)
    if info.state.subjects is None:
        return int(info.state.messages) if subject in ("events.>", ">") else 0
    return sum(int(n) for n in info.state.subjects.values())
