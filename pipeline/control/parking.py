"""Parking: where an event the projector cannot fold goes, so that it is kept, not retried
forever, and the projection moves on.

A parked event is a copy of the ``EVENTS`` message on ``parked.events.<seq>`` in the ``PARKED``
stream (file storage, kept until an operator removes it): the body is the original bytes,
unchanged (republishing it after a fix is a copy), and headers say where it came from and why
it was parked. ``Nats-Expected-Last-Subject-Sequence: 0`` makes a park happen once per event,
ever: a projector restarted before it acknowledged the event, or a replay that meets it again,
finds it parked already.

What is parked and what is skipped: an event whose ``type`` this Tessera does not know is a
newer Tessera's and is skipped (the catalogue's forward-compatibility rule); anything else that
fails to decode or to fold is parked after the projector's delivery bound.

Pure apart from :func:`park` and :func:`read_parked`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from pipeline.messages.events import EVENT_TYPES
from pipeline.nats.topology import PARKED

KNOWN_TYPES = frozenset(str(cls.__struct_config__.tag) for cls in EVENT_TYPES)

SEQ = "Tessera-Parked-Seq"
SUBJECT = "Tessera-Parked-Subject"
DELIVERIES = "Tessera-Parked-Deliveries"
ERROR = "Tessera-Parked-Error"
AT = "Tessera-Parked-At"

# JetStream's error code for "wrong last sequence": the expected-sequence check failed, so
# this event has been parked before.
_WRONG_LAST_SEQUENCE = 10071
_ERROR_LIMIT = 500


class _Tagged(msgspec.Struct):
    type: str


_tagged = msgspec.json.Decoder(_Tagged)


def is_unknown_type(data: bytes) -> bool:
    """True when ``data`` is an event of a type this Tessera does not know (a newer one's):
    a JSON object whose ``type`` is a string not in the catalogue. Malformed JSON, or a known
    type with bad fields, is not unknown: it is broken."""
    try:
        tagged = _tagged.decode(data)
    except msgspec.DecodeError:
        return False
    return tagged.type not in KNOWN_TYPES


def one_line(text: str, limit: int = _ERROR_LIMIT) -> str:
    """``text`` as one header-safe line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parked_subject(seq: int) -> str:
    """``parked.events.<seq>``: the parked copy of ``EVENTS`` message ``seq``."""
    return f"parked.events.{seq}"


@dataclass(frozen=True)
class ParkedEvent:
    """An ``EVENTS`` message the projector gave up on."""

    seq: int
    """Its sequence in ``EVENTS``."""
    subject: str
    deliveries: int
    """How many times it was delivered (and failed) before it was parked."""
    error: str
    """Why the last delivery failed, one line."""
    data: bytes
    at: float = 0.0

    def headers(self) -> dict[str, str]:
        """The headers of the parked copy (the body is :attr:`data`)."""
        return {
            SEQ: str(self.seq),
            SUBJECT: self.subject,
            DELIVERIES: str(self.deliveries),
            ERROR: one_line(self.error) or "unknown error",
            AT: f"{self.at:.3f}",
            "Nats-Expected-Last-Subject-Sequence": "0",
        }

    @classmethod
    def from_headers(cls, headers: dict[str, str], data: bytes) -> ParkedEvent:
        """Read a parked copy back; missing or bad headers read as zero or empty (a copy an
        operator wrote by hand is still shown)."""

        def number(name: str) -> float:
            try:
                return float(headers.get(name, "0"))
            except ValueError:
                return 0.0

        return cls(
            seq=int(number(SEQ)),
            subject=headers.get(SUBJECT, ""),
            deliveries=int(number(DELIVERIES)),
            error=headers.get(ERROR, ""),
            data=data,
            at=number(AT),
        )


async def park(js: JetStreamContext, event: ParkedEvent, ack_timeout: float = 2.0) -> bool:
    """Store ``event`` in ``PARKED``; False when it was parked before (nothing is written).

    Other failures raise (nats-py's errors): the caller must not acknowledge the event then.
    """
    if not event.at:
        event = dataclasses.replace(event, at=time.time())
    try:
        await js.publish(
            parked_subject(event.seq), event.data, timeout=ack_timeout, headers=event.headers()
        )
    except APIError as exc:
        if exc.err_code == _WRONG_LAST_SEQUENCE:
            return False
        raise
    return True


async def read_parked(js: JetStreamContext, limit: int = 20) -> tuple[int, list[ParkedEvent]]:
    """How many events are parked, and the newest ``limit`` of them (newest first)."""
    try:
        info = await js.stream_info(PARKED.name)
    except NotFoundError:
        return 0, []
    total = int(info.state.messages)
    found: list[ParkedEvent] = []
    seq = int(info.state.last_seq)
    while total and seq >= int(info.state.first_seq) and len(found) < limit:
        try:
            msg = await js.get_msg(PARKED.name, seq)
        except NotFoundError:  # removed by an operator: a gap in the stream
            seq -= 1
            continue
        found.append(ParkedEvent.from_headers(dict(msg.headers or {}), msg.data or b""))
        seq -= 1
    return total, found
