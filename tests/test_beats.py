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


async def test_live_beats_come_while_the_stream_does_not_answer(
    nc: Client, js: JetStreamContext
) -> None:
    """With a client, the cache takes beats by core NATS too: a cluster's HEARTBEATS leader
    election (no stream for seconds; here, none at all) does not make every worker look gone.
    The newest beat of a subject wins, whichever way it came."""
    cache = HeartbeatCache(js, check_interval=60, nc=nc)
    await cache.start()
    try:
        await js.delete_stream(HEARTBEATS.name)  # nothing stores or replays beats now
        subject = subjects.worker_heartbeat("live")
        newer = WorkerHeartbeat(at=time.time(), worker_id="live", kind="grabber", target="s")
        await nc.publish(subject, encode(newer))
        await until(lambda: subject in cache.latest, 5, "the live beat")
        older = WorkerHeartbeat(at=newer.at - 5, worker_id="live", kind="grabber", target="old")
        await nc.publish(subject, encode(older))  # a stream's replay of an older beat, say
        # Core NATS keeps one publisher's order: once a beat sent after it is in, so was it.
        after = subjects.worker_heartbeat("after")
        await nc.publish(after, beat("after"))
        await until(lambda: after in cache.latest, 5, "the beat sent after the older one")
        assert cache.latest[subject][0] == newer
    finally:
        await cache.stop()
        await provision(js)  # the other tests' stream
