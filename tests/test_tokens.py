"""Scoped API tokens against a running gateway (connected to a real nats-server as its own
role, so a permission it lacks shows up as a refusal): what each scope opens, 401 against 403,
the gateway's own token, revocation, hashed storage, per-token rate limits, and
``tessera tokens`` as a user runs it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js import JetStreamContext
from starlette.requests import Request

from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.guard import Guard, RateLimiter
from pipeline.access import tokens
from pipeline.access.tokens import SCOPES, Identity, Revoked, Scope, TokenError
from pipeline.config.settings import load
from pipeline.messages.audit import AuditEntry
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import AUDIT, TOKENS, provision
from pipeline.runtime.httpserver import HttpServer
from tests.natsenv import server_env

LEGACY = "the-gateway-s-own-token"
PLAY_SECRET = "0123456789abcdef0123456789abcdef"
VIDEO = {"inputs": [{"url": "https://media.example/clip.mov"}]}
NO_SESSION = "0" * 32
WAIT = 10.0
"""Seconds a bounded poll waits for the gateway's KV watch to see a change."""

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve(gateway_nc: Client, tmp_path: Path) -> Serve:
    @asynccontextmanager
    async def run(**env: str) -> AsyncIterator[httpx.AsyncClient]:
        settings = {
            "TESSERA_DATA_DIR": str(tmp_path),
            "TESSERA_CREATE_RATE": "1000",
            "TESSERA_SESSION_RATE": "1000",
            "JIT_CAPACITY": "64",
        }
        config = load(env=settings | env)
        ctx = GatewayContext(nc=gateway_nc, js=gateway_nc.jetstream(), config=config)
        server = HttpServer(create_app(ctx), host="127.0.0.1", port=0)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
                yield client
        finally:
            await server.stop()

    return run


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def store(js: JetStreamContext, name: str, *scopes: Scope, rate: float | None = None) -> str:
    """A token put in KV ``tokens`` as ``tessera tokens create`` puts it; its string."""
    token, record = tokens.issue(name, tuple(scopes), at=time.time(), rate=rate)
    kv = await js.key_value(TOKENS.name)
    await kv.create(name, tokens.encode_record(record))
    return token


async def listed(http: httpx.AsyncClient, admin: str) -> dict[str, dict[str, Any]]:
    got = await http.get("/api/tokens", headers=bearer(admin))
    assert got.status_code == 200, got.text
    return {t["name"]: t for t in got.json()["tokens"]}


async def until_listed(
    http: httpx.AsyncClient, admin: str, name: str, revoked: bool = False
) -> None:
    """Wait (bounded) until the gateway's watch has token ``name`` (revoked, if asked)."""
    async with asyncio.timeout(WAIT):
        while True:
            token = (await listed(http, admin)).get(name)
            if token is not None and (token["revoked_at"] is not None) == revoked:
                return
            await asyncio.sleep(0.02)


# -- what each scope opens ----------------------------------------------------------------------

Call = tuple[str, str, dict[str, Any]]
ROUTES: dict[Scope, list[Call]] = {
    "mosaics": [("GET", "/create", {"params": {"urls": "http://cams.example/{a,b}"}})],
    "sessions": [
        ("POST", "/session", {"json": VIDEO}),
        ("GET", f"/session/{NO_SESSION}", {}),
        ("DELETE", f"/session/{NO_SESSION}", {}),
        ("POST", f"/session/{NO_SESSION}/whep",
         {"content": "v=0", "headers": {"content-type": "application/sdp"}}),
        ("DELETE", f"/session/{NO_SESSION}/whep/peer1", {}),
        ("POST", f"/session/{NO_SESSION}/control", {"json": {"type": "play"}}),
    ],
    "admin": [
        ("GET", "/api/audit", {}),
        ("GET", "/api/tokens", {}),
        ("GET", "/api/mosaics", {}),  # the lists name everything: the admin's, when signed
        ("GET", "/session", {}),
        ("POST", "/api/sign", {"json": {"path": f"/view/{NO_SESSION}"}}),
        ("POST", "/api/revocations", {"json": {"viewer": "someone"}}),
    ],
}  # fmt: skip
"""Every guarded route of a signed install, by the scope it needs. Authorized, a request for a
session that does not exist is a 404: the guard answers before anything is looked up."""


async def call(http: httpx.AsyncClient, route: Call, token: str | None) -> httpx.Response:
    method, path, kwargs = route
    headers = dict(kwargs.get("headers", {})) | (bearer(token) if token else {})
    rest = {k: v for k, v in kwargs.items() if k != "headers"}
    return await http.request(method, path, headers=headers, **rest)


async def test_each_scope_opens_exactly_its_routes(serve: Serve, js: JetStreamContext) -> None:
    held = {
        "m": await store(js, "m", "mosaics"),
        "s": await store(js, "s", "sessions"),
        "ms": await store(js, "ms", "mosaics", "sessions"),
        "a": await store(js, "a", "admin"),
    }
    given_scopes: dict[str, set[Scope]] = {
        "m": {"mosaics"}, "s": {"sessions"}, "ms": {"mosaics", "sessions"}, "a": set(SCOPES),
    }  # fmt: skip
    async with serve(TESSERA_API_TOKEN=LEGACY, TESSERA_PLAY_SECRET=PLAY_SECRET) as http:
        for name in held:
            await until_listed(http, LEGACY, name)
        for scope, routes in ROUTES.items():
            for route in routes:
                what = f"{route[0]} {route[1]}"
                for name, token in held.items():
                    got = await call(http, route, token)
                    if scope in given_scopes[name]:
                        assert got.status_code not in (401, 403), (what, name, got.text)
                    else:
                        assert got.status_code == 403, (what, name, got.text)
                        body = got.json()
                        assert body["code"] == "scope"
                        assert f"token {name!r} lacks the {scope} scope" in body["error"]
                        assert "\n" not in body["error"]
                        challenge = got.headers["www-authenticate"]
                        assert f'error="insufficient_scope", scope="{scope}"' in challenge
                # The gateway's own token has every scope; no token is a 401, not a 403.
                legacy = await call(http, route, LEGACY)
                assert legacy.status_code not in (401, 403), (what, legacy.text)
                anonymous = await call(http, route, None)
                assert anonymous.status_code == 401, (what, anonymous.text)
                assert anonymous.headers["www-authenticate"] == 'Bearer realm="tessera"'
                assert f"the {scope} scope" in anonymous.json()["error"]
                # A well-formed token with a wrong secret, or none of ours: 401, the same line.
                forged = "tsr_a_" + "A" * 43
                for wrong in (forged, "not-a-token"):
                    got = await call(http, route, wrong)
                    assert got.status_code == 401, (what, wrong)
                    assert got.json()["error"].startswith("unknown token")
                    assert 'error="invalid_token"' in got.headers["www-authenticate"]


async def test_an_open_install_stays_open_and_a_public_one_keeps_create_open(
    serve: Serve, js: JetStreamContext, tmp_path: Path
) -> None:
    sessions_only = await store(js, "sessions-only", "sessions")
    async with serve() as http:  # loopback, no token, unsigned: as the seed was
        for routes in ROUTES.values():
            for route in routes:
                for token in (None, sessions_only, "tsr_nobody_" + "A" * 43):
                    got = await call(http, route, token)
                    assert got.status_code not in (401, 403), (route, token, got.text)
        # Open, but a valid token is still named (for the audit trail); a forged one is not.
        created = [e.who for e in await audit_entries(js) if e.action == "session-create"]
        assert Counter(created) == {"anonymous": 2, "token:sessions-only": 1}
    async with serve(TESSERA_PUBLIC="1") as http:  # serving others, unsigned
        own = (tmp_path / "api-token").read_text().strip()
        assert (await call(http, ROUTES["mosaics"][0], None)).status_code == 302
        assert (await http.get("/api/mosaics")).status_code == 200
        assert (await http.get("/session")).status_code == 200
        assert (await http.post("/session", json=VIDEO)).status_code == 401
        assert (await http.get("/api/audit")).status_code == 401
        assert (await http.get("/api/audit", headers=bearer(own))).status_code == 200


async def test_a_signed_install_on_loopback_is_closed(serve: Serve, tmp_path: Path) -> None:
    """A signed deployment is a closed one: it makes its own token, as a public one does."""
    async with serve(TESSERA_PLAY_SECRET=PLAY_SECRET) as http:
        assert (await call(http, ROUTES["mosaics"][0], None)).status_code == 401
        own = (tmp_path / "api-token").read_text().strip()
        assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
        assert (await call(http, ROUTES["mosaics"][0], own)).status_code == 302


async def test_a_revoked_token_is_refused_once_the_watch_sees_it(
    serve: Serve, js: JetStreamContext
) -> None:
    token = await store(js, "contractor", "sessions")
    async with serve(TESSERA_API_TOKEN=LEGACY) as http:
        await until_listed(http, LEGACY, "contractor")
        assert (await http.post("/session", json=VIDEO, headers=bearer(token))).status_code == 201
        kv = await js.key_value(TOKENS.name)
        entry = await kv.get("contractor")
        revoked = tokens.revoke(tokens.decode_record(entry.value or b""), time.time())
        await kv.update("contractor", tokens.encode_record(revoked), last=entry.revision)
        await until_listed(http, LEGACY, "contractor", revoked=True)
        got = await http.post("/session", json=VIDEO, headers=bearer(token))
        assert got.status_code == 401
        assert got.json()["error"] == "token 'contractor' is revoked: ask for a new one"
        # Deleted outright (not what `tessera tokens` does): unknown, refused all the same.
        await kv.delete("contractor")
        async with asyncio.timeout(WAIT):
            while True:
                if "contractor" not in await listed(http, LEGACY):
                    break
                await asyncio.sleep(0.02)
        got = await http.post("/session", json=VIDEO, headers=bearer(token))
        assert got.status_code == 401 and got.json()["error"].startswith("unknown token")


async def test_a_replaced_tokens_bucket_is_watched_again(
    serve: Serve, js: JetStreamContext
) -> None:
    first = await store(js, "first", "sessions")
    async with serve(TESSERA_API_TOKEN=LEGACY) as http:
        await until_listed(http, LEGACY, "first")
        await js.delete_key_value(TOKENS.name)
        await provision(js)
        second = await store(js, "second", "sessions")
        await until_listed(http, LEGACY, "second")
        assert "first" not in await listed(http, LEGACY)
        assert (await http.post("/session", json=VIDEO, headers=bearer(first))).status_code == 401
        ok = await http.post("/session", json=VIDEO, headers=bearer(second))
        assert ok.status_code == 201


async def test_tokens_are_stored_hashed(js: JetStreamContext) -> None:
    token = await store(js, "ops", "admin", "mosaics")
    name, secret = tokens.split(token) or ("", "")
    assert name == "ops" and len(secret) == 43
    kv = await js.key_value(TOKENS.name)
    stored = (await kv.get("ops")).value or b""
    assert secret.encode() not in stored and token.encode() not in stored
    doc = msgspec.json.decode(stored)
    assert doc == {
        "name": "ops",
        "scopes": ["mosaics", "admin"],
        "hash": hashlib.sha256(secret.encode()).hexdigest(),
        "created_at": doc["created_at"],
    }


# -- rate limits --------------------------------------------------------------------------------


async def burst(http: httpx.AsyncClient, token: str | None, n: int = 8) -> list[int]:
    params = {"urls": "http://c.example/{a,b}"}
    headers = bearer(token) if token else {}
    return [(await http.get("/create", params=params, headers=headers)).status_code
            for _ in range(n)]  # fmt: skip


async def test_limits_are_per_token_and_per_address_without_one(
    serve: Serve, js: JetStreamContext
) -> None:
    one = await store(js, "one", "mosaics")
    two = await store(js, "two", "mosaics")
    slow = await store(js, "slow", "mosaics", rate=0.2)  # a burst of 1
    async with serve(TESSERA_API_TOKEN=LEGACY, TESSERA_CREATE_RATE="1") as http:
        for name in ("one", "two", "slow"):
            await until_listed(http, LEGACY, name)
        for token in (one, two, None):  # each its own bucket of 5, from one address
            codes = await burst(http, token)
            assert codes[:5] == [302] * 5, (token, codes)
            assert 429 in codes[5:], (token, codes)
        refused = await http.get("/create", params={"urls": "http://c.example/{a,b}"},
                                 headers=bearer(one))  # fmt: skip
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"] == "too many requests from token 'one': slow down"
        codes = await burst(http, slow, 3)
        assert codes[0] == 302 and 429 in codes[1:]
        # The gateway's own token is a token like the others: its own bucket.
        assert (await burst(http, LEGACY, 5)) == [302] * 5


@given(st.lists(st.tuples(st.booleans(), st.floats(min_value=0, max_value=0.5)), max_size=200))
def test_a_key_with_its_own_rate_never_gets_more(steps: list[tuple[bool, float]]) -> None:
    now = [0.0]
    limiter = RateLimiter(100.0, 500, clock=lambda: now[0])
    admitted = 0
    for other, gap in steps:
        now[0] += gap
        if other:
            limiter.take("someone-else")  # another key's use takes nothing from this one
        elif limiter.take("token:slow", 2.0) == 0.0:
            admitted += 1
    assert admitted <= 10 + 2.0 * now[0] + 1e-9  # burst: five seconds' worth


# -- the pure rules -----------------------------------------------------------------------------


def test_token_strings_and_identities() -> None:
    token, record = tokens.issue("ops", ("sessions",), at=1.0, secret=bytes(range(32)))
    assert token.startswith("tsr_ops_") and tokens.split(token) is not None
    records = {"ops": record}
    assert tokens.identify(token, records, None) == Identity("ops", frozenset({"sessions"}))
    assert tokens.identify(token[:-1] + "B", records, None) is None
    assert tokens.identify(token, {}, None) is None
    assert tokens.identify("anything", records, "anything") == tokens.LEGACY_IDENTITY
    assert tokens.identify(token, {"ops": tokens.revoke(record, 2.0)}, None) == Revoked("ops")
    admin = Identity("a", frozenset({"admin"}))
    assert all(admin.allows(s) for s in SCOPES)
    assert not Identity("m", frozenset({"mosaics"})).allows("sessions")
    assert tokens.parse_scopes("sessions, mosaics,sessions") == ("mosaics", "sessions")
    for bad, message in [
        ("", "no scope given"),
        ("mosaics,root", "unknown scope 'root'"),
    ]:
        with pytest.raises(TokenError, match=message):
            tokens.parse_scopes(bad)
    for name in ("", "Ops", "a_b", "x" * 33, "api-token"):
        with pytest.raises(TokenError):
            tokens.check_name(name)
    with pytest.raises(TokenError, match="--rate 0"):
        tokens.check_rate(0)


# -- tessera tokens -----------------------------------------------------------------------------


async def tessera(nats_server: EmbeddedNats, tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "TESSERA_", "JIT_"))}
    env |= {"TESSERA_DATA_DIR": str(tmp_path / "cli")} | server_env(nats_server)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", *argv, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_creates_lists_and_revokes(
    serve: Serve, nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> None:
    code, out, err = await tessera(
        nats_server, tmp_path, "tokens", "create", "ops", "--scopes", "sessions,mosaics",
        "--rate", "50",
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    assert tokens.split(token) is not None and "\n" not in token
    assert "shown this once" in err
    async with serve(TESSERA_API_TOKEN=LEGACY) as http:
        await until_listed(http, LEGACY, "ops")
        assert (await http.post("/session", json=VIDEO, headers=bearer(token))).status_code == 201
        assert (await http.get("/api/tokens", headers=bearer(token))).status_code == 403

        code, out, err = await tessera(nats_server, tmp_path, "tokens", "list")
        assert code == 0, err
        header, row = out.splitlines()
        assert header.split() == ["NAME", "SCOPES", "RATE", "CREATED", "REVOKED"]
        assert row.split()[:3] == ["ops", "mosaics,sessions", "50/s"] and row.endswith("-")
        assert token.split("_")[2] not in out

        code, out, err = await tessera(nats_server, tmp_path, "tokens", "revoke", "ops")
        assert (code, out.strip()) == (0, "token 'ops' revoked: gateways refuse it from now on")
        await until_listed(http, LEGACY, "ops", revoked=True)
        assert (await http.post("/session", json=VIDEO, headers=bearer(token))).status_code == 401
        code, out, _ = await tessera(nats_server, tmp_path, "tokens", "list")
        assert not out.splitlines()[1].endswith("-")  # revoked: when
        code, out, _ = await tessera(nats_server, tmp_path, "tokens", "revoke", "ops")
        assert code == 0 and "revoked already" in out

    entries = [e for e in await audit_entries(js) if e.action.startswith("token-")]
    assert [(e.action, e.target) for e in entries] == [
        ("token-create", "ops"),
        ("token-revoke", "ops"),
    ]
    assert all(e.who.startswith("cli:") for e in entries)
    assert entries[0].detail == "scopes mosaics,sessions, rate 50/s"


async def audit_entries(js: JetStreamContext) -> list[AuditEntry]:
    return [msgspec.json.decode(m.data, type=AuditEntry) for m in await audit_messages(js)]


async def audit_messages(js: JetStreamContext) -> list[Any]:
    """Every message of stream ``AUDIT``."""
    info = await js.stream_info(AUDIT.name)
    if not info.state.messages:
        return []
    first, last = info.state.first_seq, info.state.last_seq
    return [await js.get_msg(AUDIT.name, seq) for seq in range(first, last + 1)]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["create", "Ops", "--scopes", "admin"], 2, "token name 'Ops': use 1 to 32 of a-z"),
        (["create", "api-token", "--scopes", "admin"], 2, "the gateway's own token"),
        (["create", "ops", "--scopes", "root"], 2, "unknown scope 'root'"),
        (["create", "ops", "--scopes", "admin", "--rate", "x"], 2, "--rate 'x': not a number"),
        (["create", "ops", "--scopes", "admin", "--rate", "-1"], 2, "--rate -1"),
        (["create", "taken", "--scopes", "admin"], 1, "token 'taken' exists"),
        (["revoke", "nobody"], 1, "no token 'nobody'"),
        (["revoke", "No/Body"], 2, "token name 'No/Body'"),
    ],
)
async def test_the_cli_refuses_bad_input_in_one_line(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path,
    argv: list[str], code: int, message: str,
) -> None:  # fmt: skip
    await store(js, "taken", "sessions")
    got, out, err = await tessera(nats_server, tmp_path, "tokens", *argv)
    assert got == code, err
    assert out == ""
    assert err.startswith("tessera: error: ") and message in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert len(await audit_messages(js)) == 0


def test_only_an_open_install_or_an_admin_token_is_told_the_agents_room() -> None:
    """A 503 for want of room names every agent's id, cores and load
    (:func:`~pipeline.state.costs.refusal`): to an open install's callers and to admin
    tokens; an install that serves others tells anyone else only what was needed."""

    def request(token: str | None) -> Request:
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        return Request({"type": "http", "headers": headers})

    open_guard = Guard(load(env={}))
    assert open_guard.may_see_rooms(request(None))
    closed = Guard(load(env={"TESSERA_API_TOKEN": "tsr_api-token_" + "s" * 32}))
    assert closed.closed and closed.token is not None
    assert closed.may_see_rooms(request(closed.token))  # the gateway's own: every scope
    assert not closed.may_see_rooms(request(None))
    assert not closed.may_see_rooms(request("tsr_nobody_" + "x" * 32))
