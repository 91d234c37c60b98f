"""Shared fixtures: one real nats-server (JetStream) per test session on a free loopback port
with a temporary store, started by the same module ``tessera up`` uses; fresh streams per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.bus import connect
from pipeline.natsserver import EmbeddedNats
from pipeline.topology import BUCKETS, STREAMS, provision


@pytest_asyncio.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    """The session's nats-server."""
    root: Path = tmp_path_factory.mktemp("nats")
    server = EmbeddedNats(store_dir=root / "store")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """A client connection for one test."""
    client = await connect(nats_server.url, name="test")
    try:
        yield client
    finally:
        await client.close()


async def wipe(js: JetStreamContext) -> None:
    """Delete every Tessera stream and bucket, so a test starts from nothing."""
    names = [s.name for s in STREAMS] + [b.stream_name for b in BUCKETS]
    for name in names:
        try:
            await js.delete_stream(name)
        except NotFoundError:
            pass


@pytest_asyncio.fixture
async def js(nc: Client) -> JetStreamContext:
    """A JetStream context on freshly provisioned streams and buckets."""
    ctx = nc.jetstream()
    await wipe(ctx)
    await provision(ctx)
    return ctx
