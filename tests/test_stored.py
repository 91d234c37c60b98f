"""The stored-entry format of projected state (:mod:`pipeline.state.stored`), pure."""

from __future__ import annotations

import pytest

from pipeline.errors import MessageError
from pipeline.state.model import InstanceState, MosaicState, SessionState, State, WorkerState
from pipeline.state.stored import Projected, decode_entry, encode_entry


@pytest.mark.parametrize(
    ("bucket", "state"),
    [
        ("mosaics", MosaicState(fp="f" * 32, tiles=(), width=64, height=64, fps=5, version=1)),
        ("sessions", SessionState(session_id="s", phase="running", worker_id="jit-s")),
        ("instances", InstanceState(instance_id="i", capacity={"jit": 2})),
        ("workers", WorkerState(worker_id="w", kind="grabber", pid=7)),
    ],
)
def test_an_entry_is_the_state_and_the_sequence_folded_into_it(bucket: str, state: State) -> None:
    value = encode_entry(42, state)
    assert decode_entry(bucket, value) == Projected(seq=42, state=state)
    assert value.startswith(b'{"seq":42,"state":{')  # the format other readers rely on


def test_an_entry_of_the_wrong_kind_or_broken_names_its_bucket_and_the_fix() -> None:
    session = encode_entry(1, SessionState(session_id="s"))
    with pytest.raises(MessageError, match=r"bucket 'mosaics' is not a projected state.*replay"):
        decode_entry("mosaics", session)
    with pytest.raises(MessageError, match="bucket 'sessions'"):
        decode_entry("sessions", b"{not json")


def test_a_bucket_that_holds_no_state_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'manifests' is not a state bucket: use one of mosaics"):
        decode_entry("manifests", b"{}")
