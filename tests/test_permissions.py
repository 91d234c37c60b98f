"""The NATS permission matrix: each role is refused every subject that is another role's, and
can use its own; anonymous clients and wrong passwords are refused.

A real nats-server with the users ``tessera up`` gives it (:mod:`pipeline.nats.auth`). Every
role publishes to every subject in the table; an admin subscriber says what got through, the
client's error callback says what the server refused, and both must match the table exactly.
The same for subscriptions, with the admin publishing. That the permissions are *enough* is
shown by the rest of the suite: the session's server has these users, every stack under test
connects each component as its role, and the session fails if any refusal was logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from pipeline.errors import NatsUnavailableError
from pipeline.nats import auth as natsauth
from pipeline.nats.connect import connect
from pipeline.nats.server import EmbeddedNats
from pipeline.runtime.secretfile import write_private

ROLES = [r for r in natsauth.ROLES if r != "admin"]

# subject -> the roles that may publish to it (admin may publish anywhere).
PUBLISH: dict[str, set[str]] = {
    "frames.src1": {"grabber"},
    "levels.src1": {"grabber"},
    "segments.fp1": {"stitcher"},
    "$O.segments.C.chunk1": {"stitcher"},
    "$KV.manifests.fp1": {"stitcher", "controller"},
    "$KV.mosaics.fp1": {"controller"},
    "$KV.sessions.s1": {"controller"},
    "$KV.slots.slot-0": {"gateway", "controller"},
    "$KV.tokens.t1": {"controller"},  # API tokens: the admin's CLI writes them, gateways read
    "$KV.revoked.v1": {"gateway", "controller"},  # POST /api/revocations
    "audit.mosaic-create": {"gateway"},  # the audit trail (and the admin's CLI)
    "events.mosaic.fp1": {"gateway", "controller"},
    "events.session.s1": {"gateway", "controller", "jit"},
    "events.worker.w1": {"controller"},
    "events.instance.i1": {"controller"},
    "parked.events.1": {"controller"},
    "hb.worker.w1": {"grabber", "stitcher", "jit"},
    "hb.instance.i1": {"agent"},
    "hb.viewer.mosaic.fp1": {"gateway", "stitcher"},  # the stitcher's WHEP viewers count
    "hb.service.controller.c1": {"controller"},
    "ctl.agent.i1": {"controller"},
    "ctl.session.s1": {"gateway"},
    "ctl.signal.s1": {"gateway"},
    "ctl.mosaic.fp1": {"gateway"},
    "$JS.API.STREAM.DELETE.NOTHING": {"controller"},
    "$JS.API.STREAM.CREATE.NOTHING": {"controller"},
    "$JS.API.STREAM.PURGE.NOTHING": {"controller"},
}

# subject -> the roles that may subscribe to it (admin may subscribe anywhere).
SUBSCRIBE: dict[str, set[str]] = {
    "frames.src1": {"stitcher"},
    "levels.src1": {"stitcher"},
    "ctl.session.s1": {"jit"},
    "ctl.signal.s1": {"jit"},
    "ctl.mosaic.fp1": {"stitcher"},
    "ctl.agent.i1": {"agent"},
    "events.mosaic.fp1": set(),
    "hb.worker.w1": {"controller", "gateway"},  # live beats beside the stream (elections)
    "hb.instance.i1": {"controller", "gateway"},
    "segments.fp1": set(),
    "audit.mosaic-create": set(),  # read through stream AUDIT, never subscribed
    "_INBOX.gateway.reply1": {"gateway"},
    "_INBOX.jit.reply1": {"jit"},
    "_INBOX.reply1": set(),  # the admin's replies (and the nats CLI's)
}

SETTLE = 0.5  # s for the server's verdicts and deliveries to arrive after a flush


@pytest_asyncio.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    root: Path = tmp_path_factory.mktemp("perm")
    # Its own logger: the refusals here are the point, not a finding for the session's check.
    embedded = EmbeddedNats(
        store_dir=root / "store",
        passwords=natsauth.new_passwords(),
        logger=logging.getLogger("tests.permissions.nats"),
    )
    await embedded.start()
    try:
        yield embedded
    finally:
        await embedded.stop()


class Refusals:
    """The permission violations one client was told about."""

    def __init__(self) -> None:
        self.subjects: set[str] = set()

    async def on_error(self, exc: Exception) -> None:
        text = str(exc)
        if "permissions violation" in text.lower():
            self.subjects.add(text.rsplit('"', 2)[-2].lower())


async def as_role(server: EmbeddedNats, role: str, refusals: Refusals) -> Client:
    return await nats.connect(
        server.url_for(role),
        name=f"matrix-{role}",
        inbox_prefix=natsauth.inbox_prefix(role),
        error_cb=refusals.on_error,
        max_reconnect_attempts=1,
    )


async def test_each_role_publishes_only_its_own_subjects(server: EmbeddedNats) -> None:
    admin = await connect(server.url_for("admin"), name="matrix-admin")
    got: dict[str, set[str]] = {subject: set() for subject in PUBLISH}

    def watcher(subject: str):  # type: ignore[no-untyped-def]
        async def on_msg(msg: Msg) -> None:
            got[subject].add(msg.data.decode())

        return on_msg

    for subject in PUBLISH:
        await admin.subscribe(subject, cb=watcher(subject))
    await admin.flush()
    refused: dict[str, set[str]] = {}
    try:
        for role in ROLES:
            refusals = Refusals()
            client = await as_role(server, role, refusals)
            try:
                for subject in PUBLISH:
                    await client.publish(subject, role.encode())
                await client.flush()
                await asyncio.sleep(SETTLE)
                assert client.is_connected, f"{role}: a refusal must not cost the connection"
            finally:
                await client.close()
            refused[role] = refusals.subjects
        await asyncio.sleep(SETTLE)
    finally:
        await admin.close()
    for subject, owners in PUBLISH.items():
        assert got[subject] == owners, f"{subject}: delivered from {got[subject]}, not {owners}"
        for role in ROLES:
            assert (subject.lower() in refused[role]) == (role not in owners), (role, subject)


async def test_each_role_subscribes_only_to_its_own_subjects(server: EmbeddedNats) -> None:
    admin = await connect(server.url_for("admin"), name="matrix-admin")
    try:
        for role in ROLES:
            refusals = Refusals()
            client = await as_role(server, role, refusals)
            received: set[str] = set()

            async def on_msg(msg: Msg, received: set[str] = received) -> None:
                received.add(msg.subject)

            try:
                for subject in SUBSCRIBE:
                    await client.subscribe(subject, cb=on_msg)
                await client.flush()
                await asyncio.sleep(SETTLE)
                for subject in SUBSCRIBE:
                    await admin.publish(subject, b"x")
                await admin.flush()
                await asyncio.sleep(SETTLE)
                assert client.is_connected
            finally:
                await client.close()
            for subject, owners in SUBSCRIBE.items():
                allowed = role in owners
                assert (subject.lower() in refusals.subjects) == (not allowed), (role, subject)
                assert (subject in received) == allowed, (role, subject)
    finally:
        await admin.close()


async def test_anonymous_and_wrong_passwords_are_refused(server: EmbeddedNats) -> None:
    with pytest.raises(NatsUnavailableError, match=r"refused user \(none\)"):
        await connect(server.url, name="anonymous", attempts=1)
    wrong = natsauth.with_credentials(server.url, "gateway", "not-the-password")
    with pytest.raises(NatsUnavailableError, match="refused user gateway"):
        await connect(wrong, name="guess", attempts=1)
    # The right one, for contrast.
    client = await connect(server.url_for("gateway"), name="gateway", role="gateway")
    await client.close()


def test_users_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "nats-users.json"
    first = natsauth.load_or_create(path)
    assert set(first) == set(natsauth.ROLES)
    assert path.stat().st_mode & 0o777 == 0o600
    assert natsauth.load_or_create(path) == first
    assert len(set(first.values())) == len(first), "every role has its own password"


@pytest.mark.parametrize("atomic", [False, True])
def test_private_files_are_private_even_when_they_were_not(tmp_path: Path, atomic: bool) -> None:
    path = tmp_path / "secrets" / "conf"
    write_private(path, "first", atomic=atomic)  # the folder made too
    assert path.read_text() == "first"
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)  # O_CREAT alone would keep this mode
    write_private(path, b"second\n", atomic=atomic)
    assert path.read_bytes() == b"second\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert list(path.parent.iterdir()) == [path], "no temporary file left"


def test_urls_carry_and_hide_credentials() -> None:
    url = natsauth.with_credentials("nats://127.0.0.1:4222,nats://h2:4222", "jit", "pw")
    assert url == "nats://jit:pw@127.0.0.1:4222,nats://jit:pw@h2:4222"
    assert natsauth.has_credentials(url) and not natsauth.has_credentials("nats://h:1")
    assert natsauth.redact(url) == "nats://jit:***@127.0.0.1:4222,nats://jit:***@h2:4222"
    with pytest.raises(ValueError, match="unknown NATS role"):
        natsauth.permissions("root")
