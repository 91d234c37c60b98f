"""The heartbeat cache follows a replaced HEARTBEATS stream (a restarted server's new memory
stream) instead of waiting, blind, for its old sequence numbers to come round again."""

from __future__ import annotations

import time

from nats.aio.client import Client
from nats.js import JetStreamContext

from pipeline.messages.codec import encode
from pipeline.messages.heartbeats import WorkerHeartbeat
from pipeline.nats import subjects
from pipeline.nats.beats import HeartbeatCache
from pipeline.nats.topology import HEARTBEATS, provision
from tests.waiting import until


def beat(worker: str) -> bytes:
    return encode(WorkerHeartbeat(at=time.time(), worker_id=worker, kind="grabber", target="s"))


async def test_a_replaced_stream_is_followed_afresh(nc: Client, js: JetStreamContext) -> None:
    # Many beats first, so the old stream's sequence is far ahead of the new one's.
    for i in range(50):
        await js.publish(subjects.worker_heartbeat(f"w{i % 5}"), beat(f"w{i % 5}"))
    cache = HeartbeatCache(js, check_interval=0.2)
    await cache.start()
    try:
        await until(lambda: len(cache.latest) == 5, 5, "the five workers' beats")
        # A restarted server: the memory stream is gone and provisioned again, empty.
        await js.delete_stream(HEARTBEATS.name)
        await provision(js)
        await js.publish(subjects.worker_heartbeat("after"), beat("after"))
        await until(lambda: "hb.worker.after" in cache.latest, 5, "the beat after the restart")
        assert cache.resubscribed == 1
    finally:
        await cache.stop()
        await cache.stop()
