"""How projected state is stored: one KV entry per entity, ``{seq, state}``.

The projector writes entries (:func:`encode_entry`); everything that reads the state buckets
(:mod:`pipeline.control.read`, the controller's watches) decodes them (:func:`decode_entry`).
The format lives here, apart from both, so that a reader does not depend on the writer's
machinery.

``seq`` is the ``EVENTS`` stream sequence of the last event folded into ``state``, written in
the same KV write as the state, so the two cannot disagree. It is what lets the projector skip
a redelivered event (sequence not above the stored one), and a reader that has just appended
an event tell whether the projection includes it yet (its append returned that sequence).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from pipeline.errors import MessageError
from pipeline.state.model import (
    InstanceState,
    MosaicState,
    SessionState,
    SourceState,
    State,
    WorkerState,
)

S = TypeVar("S", MosaicState, SourceState, SessionState, InstanceState, WorkerState)


class Projected(msgspec.Struct, Generic[S], frozen=True):
    """A KV entry of a projection: the state and the stream sequence folded into it."""

    seq: int
    state: S


# One decoder per bucket: each bucket holds one kind of state, and a typed decoder both checks
# it and is faster than decoding to builtins and converting.
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "mosaics": msgspec.json.Decoder(Projected[MosaicState]),
    "alarms": msgspec.json.Decoder(Projected[SourceState]),
    "sessions": msgspec.json.Decoder(Projected[SessionState]),
    "instances": msgspec.json.Decoder(Projected[InstanceState]),
    "workers": msgspec.json.Decoder(Projected[WorkerState]),
}
_encoder = msgspec.json.Encoder()


def encode_entry(seq: int, state: State) -> bytes:
    """The KV value storing ``state`` as folded up to stream sequence ``seq``."""
    return _encoder.encode(Projected(seq=seq, state=state))


def decode_entry(bucket: str, value: bytes) -> Projected[Any]:
    """Decode a KV entry of state bucket ``bucket`` (``mosaics``, ``alarms``, ``sessions``,
    ``instances`` or ``workers``)."""
    decoder = _DECODERS.get(bucket)
    if decoder is None:
        raise ValueError(f"{bucket!r} is not a state bucket: use one of {', '.join(_DECODERS)}")
    try:
        entry: Projected[Any] = decoder.decode(value)
    except msgspec.DecodeError as exc:  # ValidationError is one too
        raise MessageError(
            f"an entry of KV bucket {bucket!r} is not a projected state ({exc}): "
            "`tessera events replay` rebuilds the projection from the events"
        ) from exc
    return entry
