"""Acknowledged events survive a `kill -9` of nats-server, each exactly once (issue: reliability).

A publisher appends events with retries (each with its own Nats-Msg-Id) while nats-server is
killed with SIGKILL and restarted on the same port and store. Every event whose append was
acknowledged must be in EVENTS afterwards, and no event may be there twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

from pipeline.messages.codec import decode_event
from pipeline.messages.events import WorkerStarted
from pipeline.nats.connect import connect
from pipeline.nats.eventlog import AppendError, append
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import EVENTS, provision


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_acknowledged_events_survive_kill_9_each_once(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedNats(store_dir=tmp_path / "store", port=port)
    await server.start()
    nc = await connect(server.url, name="durability", forever=True)
    try:
        js = nc.jetstream()
        await provision(js)
        acked: list[str] = []
        failed = 0
        hundred = asyncio.Event()

        async def publish(n: int) -> None:
            nonlocal failed
            for i in range(n):
                event = WorkerStarted(at=float(i), worker_id=f"w{i}", kind="grabber", target="t")
                try:
                    await append(js, event, msg_id=f"ev-{i}", attempts=40, ack_timeout=0.5)
                except AppendError:
                    failed += 1
                    continue
                acked.append(f"w{i}")
                if len(acked) == 100:
                    hundred.set()

        publisher = asyncio.create_task(publish(400))
        async with asyncio.timeout(30):
            await hundred.wait()
        pid = server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await server.stop()  # reaps the killed process
        await server.start()  # same port, same store
        async with asyncio.timeout(120):
            await publisher
        assert len(acked) + failed == 400
        assert len(acked) >= 300, f"only {len(acked)} of 400 were acknowledged"

        info = await js.stream_info(EVENTS.name)
        sub = await js.subscribe("events.>", ordered_consumer=True, stream=EVENTS.name)
        stored: list[str] = []
        try:
            async with asyncio.timeout(30):
                while len(stored) < info.state.messages:
                    msg = await sub.next_msg(timeout=5)
                    event = decode_event(msg.data)
                    assert isinstance(event, WorkerStarted)
                    stored.append(event.worker_id)
        finally:
            await sub.unsubscribe()
        assert len(stored) == len(set(stored)), "an event was stored twice"
        missing = set(acked) - set(stored)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
    finally:
        await nc.close()
        await server.stop()
