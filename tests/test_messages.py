"""Every message round-trips; tags are unique and versioned; old readers tolerate new fields."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import MessageError
from pipeline.messages import control, heartbeats
from pipeline.messages.codec import (
    decode_agent_command,
    decode_event,
    decode_heartbeat,
    decode_reply,
    decode_session_command,
    decode_worker_spec,
    encode,
)
from pipeline.messages.events import (
    EVENT_TYPES,
    AlarmCleared,
    AlarmRaised,
    InstanceLaunched,
    InstanceReady,
    InstanceTerminated,
    MosaicCreated,
    SessionEnded,
    SessionFailed,
    SessionInput,
    SessionOptions,
    SessionRequested,
    SessionStarted,
    Tile,
    WorkerRetiled,
    WorkerStarted,
    WorkerStopped,
    entity_of,
)
from pipeline.messages.frames import FrameHeader, pack_frame, unpack_frame
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec, WorkerSpec

EVENTS = [
    MosaicCreated(
        at=1.5,
        fp="f" * 32,
        tiles=(Tile("http://a/x.m3u8", "A"),),
        width=1280,
        height=720,
        fps=25,
        cols=2,
        title="ops",
        audio="0",
    ),
    AlarmRaised(
        at=10.5,
        source="a" * 20,
        kind="black",
        onset=10.0,
        onset_wall=1e9,
        value=0.99,
        url="http://cam/x.m3u8",
        worker_id="w2",
    ),
    AlarmCleared(
        at=12.0,
        source="a" * 20,
        kind="black",
        onset=10.0,
        end=11.8,
        end_wall=1e9 + 1.8,
        worst=1.0,
    ),
    SessionRequested(
        at=2.0,
        session_id="s1",
        inputs=(SessionInput("s3://b/v.mxf", None, "v"), SessionInput("/a.wav", 6, "a")),
        options=SessionOptions(lowres=1, width=1280, cho=2, thread_type="frame"),
        client="127.0.0.1",
    ),
    SessionStarted(at=3.0, session_id="s1", worker_id="w1", instance_id="i1", endpoint="x"),
    SessionEnded(at=4.0, session_id="s1", reason="idle"),
    SessionFailed(at=4.0, session_id="s2", cause="input 2: no audio stream"),
    InstanceLaunched(at=5.0, instance_id="i1", provider="local", capacity={"jit": 4}),
    InstanceReady(at=6.0, instance_id="i1", address="127.0.0.1:8081"),
    InstanceTerminated(at=7.0, instance_id="i1", reason="idle"),
    WorkerStarted(at=8.0, worker_id="w1", kind="stitcher", target="f" * 32, pid=42),
    WorkerStopped(at=9.0, worker_id="w1", reason="not-needed", exit_code=0),
    WorkerRetiled(at=10.0, worker_id="grabber-k", sizes=("640x360", "320x180"), fps=25.0),
]


def test_every_event_type_has_an_example() -> None:
    assert {type(e) for e in EVENTS} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trips(event: msgspec.Struct) -> None:
    data = encode(event)
    assert decode_event(data) == event
    doc = json.loads(data)
    assert doc["type"] == type(event).__struct_config__.tag
    assert "/" in doc["type"], "tags carry a version"


def test_tags_are_unique() -> None:
    tags = [cls.__struct_config__.tag for cls in EVENT_TYPES]
    assert len(tags) == len(set(tags))


def test_an_old_reader_ignores_fields_a_newer_writer_added() -> None:
    doc = json.loads(encode(EVENTS[0]))
    doc["added_in_a_later_version"] = {"x": 1}
    doc["tiles"][0]["rotation"] = 90
    assert decode_event(json.dumps(doc).encode()) == EVENTS[0]


def test_unknown_tag_names_the_subject() -> None:
    with pytest.raises(MessageError, match=r"cannot decode event on events\.mosaic\.x"):
        decode_event(b'{"type": "mosaic.exploded/9", "at": 1}', "events.mosaic.x")


def test_entity_of_every_event() -> None:
    assert [entity_of(e)[0] for e in EVENTS] == [
        "mosaic", "source", "source", "session", "session", "session", "session",
        "instance", "instance", "instance", "worker", "worker", "worker",
    ]  # fmt: skip


def test_heartbeats_and_control_round_trip() -> None:
    beats = [
        heartbeats.ViewerHeartbeat(at=1.0, scope="mosaic", id="f"),
        heartbeats.WorkerHeartbeat(
            at=1.0, worker_id="w", kind="grabber", target="s", ready=True,
            stats=heartbeats.GrabberStats(fps_in=25.0, reconnects=2, last_error="eof"),
        ),
        heartbeats.WorkerHeartbeat(
            at=1.0, worker_id="w", kind="stitcher", target="f",
            stats=heartbeats.StitcherStats(fps=25.0, segments=3),
        ),
        heartbeats.InstanceHeartbeat(at=1.0, instance_id="i", capacity={"jit": 2}),
        heartbeats.ServiceHeartbeat(at=1.0, service="projector", id="main", position=9),
    ]  # fmt: skip
    for beat in beats:
        assert decode_heartbeat(encode(beat)) == beat
    for cmd in [
        control.Play(), control.Pause(), control.Seek(120), control.Step(-1),
        control.SetRate(2.0), control.SelectChannels((2, 3)),
        control.Compare(mode="wipe", split=0.3, offset=-2, show="B"),
    ]:  # fmt: skip
        assert decode_session_command(encode(cmd)) == cmd
    for agent_cmd in [control.StartWorker(spec=JitSpec(session_id="s")),
                      control.StopWorker(worker_id="w")]:  # fmt: skip
        assert decode_agent_command(encode(agent_cmd)) == agent_cmd
    for reply in [
        control.CommandReply(ok=False, error="no such frame", position=3),
        control.CommandReply(ok=False, error="instance i is full for jit workers", code="full"),
    ]:
        assert decode_reply(encode(reply)) == reply


SPECS: list[WorkerSpec] = [
    GrabberSpec(key="abc", url="rtsp://u:p@cam/1?a=b c", sizes=((320, 180), (160, 90)),
                fps=12.5),
    StitcherSpec(fp="f" * 32),
    JitSpec(session_id="s1"),
]  # fmt: skip


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_worker_specs_round_trip_whole_and_inside_start_worker(spec: WorkerSpec) -> None:
    assert decode_worker_spec(encode(spec)) == spec
    command = decode_agent_command(encode(control.StartWorker(spec=spec)))
    assert isinstance(command, control.StartWorker) and command.spec == spec
    assert type(command.spec) is type(spec)
    doc = json.loads(encode(spec))
    assert doc["type"] == type(spec).__struct_config__.tag and "/" in doc["type"]
    assert spec.worker_id == f"{spec.kind}-{spec.target}"


def test_worker_spec_tags_are_unique_and_start_worker_is_version_2() -> None:
    tags = {type(s).__struct_config__.tag for s in SPECS}
    assert len(tags) == len(SPECS)
    assert control.StartWorker.__struct_config__.tag == "start-worker/2"
    # A version-1 command (options as name=value strings) is refused, naming what it is.
    old = b'{"type": "start-worker/1", "worker_id": "jit-s", "kind": "jit", "target": "s"}'
    with pytest.raises(MessageError, match=r"cannot decode agent command on ctl\.agent\.i"):
        decode_agent_command(old, "ctl.agent.i")


@given(
    url=st.text(min_size=1, max_size=200),
    width=st.integers(min_value=2, max_value=8192),
    height=st.integers(min_value=2, max_value=8192),
    fps=st.floats(min_value=0.1, max_value=240, allow_nan=False),
)
def test_any_grabber_spec_round_trips(url: str, width: int, height: int, fps: float) -> None:
    spec = GrabberSpec(key="x", url=url, sizes=((width, height),), fps=fps)
    assert decode_worker_spec(encode(spec)) == spec


@given(
    seq=st.integers(min_value=0, max_value=2**62),
    pts=st.floats(allow_nan=False, allow_infinity=False),
    width=st.integers(min_value=2, max_value=4096),
    height=st.integers(min_value=2, max_value=4096),
    pixels=st.binary(max_size=4096),
)
def test_frames_round_trip_without_copying_pixels(
    seq: int, pts: float, width: int, height: int, pixels: bytes
) -> None:
    header = FrameHeader(
        source_id="abc-320x180", seq=seq, pts=pts, wall=1.0, width=width, height=height
    )
    payload = pack_frame(header, pixels)
    got, view = unpack_frame(payload)
    assert got == header
    assert isinstance(view, memoryview) and bytes(view) == pixels


@pytest.mark.parametrize(
    "payload", [b"", b"\x00\x00", b"\x00\x00\x00\x09abc", b"\x00\x00\x00\x01\xc1"]
)
def test_broken_frames_are_message_errors(payload: bytes) -> None:
    with pytest.raises(MessageError):
        unpack_frame(payload)
