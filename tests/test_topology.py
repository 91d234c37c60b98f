"""Provisioning against a real nats-server: idempotent, and loud about conflicts."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from pipeline.errors import TopologyError
from pipeline.nats.topology import BUCKETS, EVENTS, HEARTBEATS, STREAMS, missing, provision


async def test_provision_creates_everything_then_is_a_no_op(js: JetStreamContext) -> None:
    assert await missing(js) == []
    info = await js.stream_info(EVENTS.name)
    assert info.config.storage == StorageType.FILE
    assert info.config.duplicate_window == EVENTS.duplicate_window
    hb = await js.stream_info(HEARTBEATS.name)
    assert hb.config.max_msgs_per_subject == 1
    assert await provision(js) == []
    assert await provision(js) == []


async def test_missing_names_what_is_gone(js: JetStreamContext) -> None:
    await js.delete_stream("FRAMES")
    await js.delete_key_value("manifests")
    assert await missing(js) == ["FRAMES", "KV_manifests"]
    done = await provision(js)
    assert done == ["created stream FRAMES", "created kv bucket manifests"]
    assert len(STREAMS) + len(BUCKETS) == 17


async def test_changed_limit_is_updated_in_place(js: JetStreamContext) -> None:
    info = await js.stream_info(HEARTBEATS.name)
    await js.update_stream(info.config.evolve(max_age=60.0))
    done = await provision(js)
    assert done == ["updated stream HEARTBEATS: max_age 60s -> 86400s"]
    assert (await js.stream_info(HEARTBEATS.name)).config.max_age == HEARTBEATS.max_age


async def test_conflicting_stream_is_one_clear_error(js: JetStreamContext) -> None:
    await js.delete_stream(EVENTS.name)
    await js.add_stream(
        StreamConfig(name="EVENTS", subjects=["events.>"], storage=StorageType.MEMORY)
    )
    with pytest.raises(TopologyError) as err:
        await provision(js)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("stream EVENTS exists with storage=memory (needs file)")
    assert "nats stream rm EVENTS" in message
