"""Shared fixtures: one real nats-server (JetStream) per test session on a free loopback port
with a temporary store, started by the same module ``tessera up`` uses; fresh streams per test.

The server runs as ``tessera up`` runs it: with per-role users and no anonymous access. Tests
connect as ``admin``; stacks under test get the users file (:func:`tests.natsenv.server_env`),
so every component runs with its own role's permissions, and a permission a role lacks shows
up as a refused request. The session ends with a check that no role was refused anything.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pipeline.nats import auth as natsauth
from pipeline.nats.connect import connect
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import BUCKETS, STREAMS, provision
from tests.browser import chromium_path, launch
from tests.natsenv import users_file

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


class RefusalLog(logging.Handler):
    """Collects the nats-server's log lines about refused publishes and subscriptions."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "Violation" in text and "Authorization" not in text:
            self.lines.append(text)


@pytest_asyncio.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    """The session's nats-server."""
    root: Path = tmp_path_factory.mktemp("nats")
    passwords = natsauth.load_or_create(users_file(root / "store"))
    server = EmbeddedNats(store_dir=root / "store", passwords=passwords)
    refused = RefusalLog()
    logging.getLogger("tessera.nats").addHandler(refused)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        logging.getLogger("tessera.nats").removeHandler(refused)
    # A role refused a subject during the tests: its permissions (pipeline/nats/auth.py) lack
    # something that role does, and some test exercised it.
    assert not refused.lines, "NATS refused a role:\n" + "\n".join(refused.lines[:20])


@pytest_asyncio.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """A client connection for one test."""
    client = await connect(nats_server.url_for("admin"), name="test")
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


@contextlib.asynccontextmanager
async def as_role(nats_server: EmbeddedNats, role: str) -> AsyncIterator[Client]:
    """A connection as one of the NATS roles (pipeline/nats/auth.py), closed after: for tests
    that prove a component's permissions are enough."""
    client = await connect(nats_server.url_for(role), name=role, role=role)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture
async def gateway_nc(nats_server: EmbeddedNats, js: JetStreamContext) -> AsyncIterator[Client]:
    """A connection as the gateway's NATS role (``js`` first: the streams are provisioned)."""
    async with as_role(nats_server, "gateway") as client:
        yield client


@pytest_asyncio.fixture
async def grabber_nc(nats_server: EmbeddedNats, js: JetStreamContext) -> AsyncIterator[Client]:
    """A connection as a grabber's NATS role (``js`` first: the streams are provisioned)."""
    async with as_role(nats_server, "grabber") as client:
        yield client


# -- headless Chromium (tests/browser.py) ---------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium per test module; the test is skipped where there is none."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium binary: apt-get install chromium (or set TESSERA_CHROMIUM)")
    pytest.importorskip("playwright.async_api", reason="pip install -e '.[dev]' installs it")
    async with launch(executable) as chromium:
        yield chromium


@pytest_asyncio.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A new 1280x720 page in its own context (no shared storage); fails the test on an
    uncaught error in the page."""
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    errors: list[str] = []
    tab = await context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
