"""Signed play and review URLs (issue 21, points 1 and 4).

- the token itself, pure (:mod:`pipeline.access.signing`): round trip, tampering with any field,
  expiry, rotation, revocation, what a path opens; with hypothesis;
- the gateway over real HTTP against the session's nats-server, with ``--play-secret``:
  unsigned, expired, tampered, wrong-scope and revoked requests are one ``403`` each, the same
  for a mosaic that exists and one that does not; a signed URL plays (playlist, init section and
  parts through the playlist's relative URIs, blocking reloads, WHEP and its hang-up, the view
  page), from a real stitcher; rotation; revocation through the API and through the CLI;
  ``/create`` and ``POST /api/sign``; review links that watch and control but do not delete;
- without a secret nothing changes (``/s/...`` is a 404);
- ``tessera sign`` as a user runs it;
- headless Chromium plays ``/s/<token>/view/<fp>`` from the whole stack, and a review link's
  page seeks (skipped without Chromium).

Every wait polls a condition with a deadline; nothing sleeps a fixed time or measures one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fractions
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import httpx
import m3u8
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.signed import NOT_SIGNABLE, WATCH_ONLY, opens
from pipeline.access import signing
from pipeline.access.signing import (
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    MISSING,
    REVOKED,
    Granted,
    Refused,
    SigningError,
)
from pipeline.cli.up import Stack
from pipeline.config.settings import load
from pipeline.control.projector import Projector
from pipeline.errors import ConfigError
from pipeline.messages import control
from pipeline.messages.codec import decode_session_command, encode
from pipeline.nats.server import EmbeddedNats
from pipeline.nats.topology import AUDIT
from pipeline.runtime.httpserver import HttpServer
from pipeline.sources.synthetic import LiveHlsSource, SourceServer
from tests.browser import chromium_path
from tests.jitmedia import make_video
from tests.natsenv import server_env
from tests.test_stitcher import NAMES, WAIT, FramePublisher, make_stitcher, running
from tests.waiting import until

if TYPE_CHECKING:
    from playwright.async_api import Page

NEW = "n3w-secret-" + "a" * 24
OLD = "old-secret-" + "b" * 24
GONE = "gone-secret-" + "c" * 24
ADMIN = "admin-token-for-the-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
FP = "f" * 32
SID = "5" * 32
PATTERN = "http://cams.example/{a,b}[n]/index.m3u8"
UNKNOWN = "0" * 32
ANSWER = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
PEER = "ab" * 16
SDP = {"content-type": "application/sdp"}
CHROMIUM = chromium_path()


def token_of(path: str) -> str:
    split = signing.split_signed(urlsplit(path).path)
    assert split is not None, path
    return split[0]


def with_token(path: str, token: str) -> str:
    """``path`` (signed or not) signed with ``token`` instead."""
    return f"/s/{token}{signing.unsigned(urlsplit(path).path)}"


def tampered(token: str) -> dict[str, str]:
    """The token with each field changed, the rest left as it was."""
    exp, iat, viewer, sig = token.split(".")
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    mallory = base64.urlsafe_b64encode(b"mallory").rstrip(b"=").decode()
    return {
        "exp": f"{int(exp) + 3600}.{iat}.{viewer}.{sig}",
        "iat": f"{exp}.{int(iat) + 1}.{viewer}.{sig}",
        "viewer": f"{exp}.{iat}.{mallory}.{sig}",
        "sig": f"{exp}.{iat}.{viewer}.{flipped}",
    }


# -- the token, pure -----------------------------------------------------------------------------

NOW = 1_750_000_000.0
SCOPE = f"mosaic:{FP}"


def test_a_token_opens_its_scope_for_its_viewer_until_it_expires() -> None:
    token = signing.sign(NEW, SCOPE, 3600, "contractor", NOW)
    exp, iat, viewer, sig = token.split(".")
    assert (int(exp), int(iat)) == (NOW + 3600, NOW)
    assert base64.urlsafe_b64decode(viewer + "=" * (-len(viewer) % 4)) == b"contractor"
    assert len(sig) == 22 and "=" not in token
    assert signing.verify([NEW], SCOPE, token, NOW + 10) == Granted(
        viewer="contractor", expires_at=int(NOW) + 3600, issued_at=int(NOW)
    )
    assert signing.verify([NEW], SCOPE, token, NOW + 3600) == Refused(EXPIRED)
    assert signing.verify([NEW], f"mosaic:{UNKNOWN}", token, NOW) == Refused(BAD_SIGNATURE)
    assert signing.verify([NEW], f"session:{FP}", token, NOW) == Refused(BAD_SIGNATURE)
    assert signing.verify([NEW], SCOPE, None, NOW) == Refused(MISSING)
    nobody = signing.sign(NEW, SCOPE, 60, "", NOW)
    assert ".." in nobody
    assert signing.verify([NEW], SCOPE, nobody, NOW) == Granted("", int(NOW) + 60, int(NOW))


def test_rotation_verifies_with_every_listed_secret() -> None:
    old = signing.sign(OLD, SCOPE, 60, "", NOW)
    assert isinstance(signing.verify([NEW, OLD], SCOPE, old, NOW), Granted)
    assert signing.verify([NEW], SCOPE, old, NOW) == Refused(BAD_SIGNATURE)


def test_revocation_refuses_tokens_made_until_then() -> None:
    before = signing.sign(NEW, SCOPE, 600, "contractor", NOW)
    later = signing.sign(NEW, SCOPE, 600, "contractor", NOW + 5)
    other = signing.sign(NEW, SCOPE, 600, "colleague", NOW)
    revoked = {"contractor": NOW + 2.5}.get
    assert signing.verify([NEW], SCOPE, before, NOW + 3, revoked) == Refused(REVOKED)
    assert isinstance(signing.verify([NEW], SCOPE, later, NOW + 6, revoked), Granted)
    assert isinstance(signing.verify([NEW], SCOPE, other, NOW + 3, revoked), Granted)
    # Made in the second of the revocation: refused too (whole seconds).
    same = signing.sign(NEW, SCOPE, 600, "contractor", NOW + 2.9)
    assert signing.verify([NEW], SCOPE, same, NOW + 3, revoked) == Refused(REVOKED)
    key, value = signing.revocation_entry("contractor", NOW)
    assert len(key) == 32 and key == signing.revocation_key("contractor")
    assert signing.read_revocation(value) == signing.Revocation("contractor", NOW)
    with pytest.raises(SigningError):
        signing.read_revocation(b'{"viewer": 3}')


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b.c",
        "1.2.3.4.5",
        "0100.1..AAAAAAAAAAAAAAAAAAAAAA",  # a leading zero
        "-1.1..AAAAAAAAAAAAAAAAAAAAAA",
        "100.1.%%%.AAAAAAAAAAAAAAAAAAAAAA",
        "100.1..AAAAAAAAAAAAAAAAAAAAA",  # 21 characters of signature
        "100.1..AAAAAAAAAAAAAAAAAAAAAB",  # not the canonical encoding of 16 bytes
        "100.1.AA.AAAAAAAAAAAAAAAAAAAAAA",  # a viewer that is not UTF-8 text
        "100.1.CQ.AAAAAAAAAAAAAAAAAAAAAA",  # a tab
        "9999999999999.1..AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_malformed_tokens_are_refused_as_such(token: str) -> None:
    verdict = signing.verify([NEW], SCOPE, token, NOW)
    assert verdict == Refused(MISSING if not token else MALFORMED)


viewers = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), max_size=64
).filter(lambda v: v == v.strip() and v.isprintable())


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(min_size=16, max_size=40),
    viewer=viewers,
    ttl=st.floats(min_value=1, max_value=86400 * 30),
    now=st.floats(min_value=0, max_value=4e9),
    field=st.sampled_from(["exp", "iat", "viewer", "sig"]),
    other=st.one_of(
        st.integers(min_value=0, max_value=10**12), viewers, st.binary(min_size=16, max_size=16)
    ),
)
def test_changing_any_field_of_a_token_refuses_it(
    secret: str, viewer: str, ttl: float, now: float, field: str, other: object
) -> None:
    token = signing.sign(secret, SCOPE, ttl, viewer, now)
    assert isinstance(signing.verify([secret], SCOPE, token, now), Granted)
    parts = dict(zip(("exp", "iat", "viewer", "sig"), token.split("."), strict=True))
    if field in ("exp", "iat"):
        replacement = str(other) if isinstance(other, int) else str(int(parts[field]) + 1)
    elif field == "viewer":
        name = other if isinstance(other, str) else viewer + "x"
        replacement = base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()
    else:
        data = other if isinstance(other, bytes) else b"\0" * 16
        replacement = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    if replacement == parts[field]:
        return  # not a change
    parts[field] = replacement
    changed = ".".join(parts.values())
    verdict = signing.verify([secret], SCOPE, changed, min(now, float(parts["exp"]) - 1))
    assert isinstance(verdict, Refused), (token, changed)
    assert verdict.reason in (BAD_SIGNATURE, MALFORMED)


def test_what_can_be_signed_and_how_long() -> None:
    assert signing.scope_of(f"/play/{FP}/index.m3u8") == f"mosaic:{FP}"
    assert signing.scope_of(f"/play/{FP}/12.3.m4s") == f"mosaic:{FP}"
    assert signing.scope_of(f"/view/{FP}") == f"mosaic:{FP}"
    assert signing.scope_of(f"/session/{SID}/view") == f"session:{SID}"
    for path in ("/healthz", "/play/XYZ/index.m3u8", f"/view/{FP}/x", "/session", "/"):
        assert signing.scope_of(path) is None, path
    url = signing.signed_url(NEW, f"https://wall.example:8443/view/{FP}?via=hls", 60, "", NOW)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.query) == ("https", "wall.example:8443", "via=hls")
    assert parts.path.startswith("/s/") and parts.path.endswith(f"/view/{FP}")
    again = signing.signed_url(NEW, url, 120, "", NOW)  # a signed URL is signed anew
    assert signing.unsigned(urlsplit(again).path) == f"/view/{FP}" and again != url
    assert [signing.parse_ttl(t) for t in ("90", 90, "30m", "8h", "7d", "1.5h")] == [
        90, 90, 1800, 28800, 604800, 5400
    ]  # fmt: skip
    for bad in ("forever", "0", -5, "8w", True, None, "400d"):
        with pytest.raises(SigningError):
            signing.parse_ttl(bad)
    for bad_viewer in ("x" * 65, "tab\there", " padded", 7):
        with pytest.raises(SigningError):
            signing.check_viewer(bad_viewer)
    assert signing.parse_secrets(None) == ()
    assert signing.parse_secrets(f" {NEW} , {OLD} ") == (NEW, OLD)
    for bad_secret in ("short", f"{NEW},tiny", " , "):
        with pytest.raises(ConfigError, match="TESSERA_PLAY_SECRET"):
            signing.parse_secrets(bad_secret)


def test_what_a_review_link_opens() -> None:
    session = f"session:{SID}"
    assert opens(session, "GET", f"/session/{SID}")
    assert opens(session, "GET", f"/session/{SID}/view")
    assert opens(session, "POST", f"/session/{SID}/whep")
    assert opens(session, "DELETE", f"/session/{SID}/whep/{PEER}")
    assert opens(session, "POST", f"/session/{SID}/control")
    assert not opens(session, "DELETE", f"/session/{SID}")
    assert not opens(session, "POST", f"/session/{SID}/view")
    mosaic = f"mosaic:{FP}"
    assert opens(mosaic, "POST", f"/play/{FP}/whep")
    assert opens(mosaic, "GET", f"/view/{FP}")
    assert not opens(mosaic, "POST", f"/view/{FP}")


# -- a gateway ---------------------------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    http: httpx.AsyncClient
    media: Path | None = None


@contextlib.asynccontextmanager
async def serving(
    nc: Client, js: JetStreamContext, tmp_path: Path, **env: str
) -> AsyncIterator[Gateway]:
    """A gateway (and the projector beside it; no controller: nothing starts workers)."""
    config = load(env={"TESSERA_DATA_DIR": str(tmp_path), "TESSERA_SESSION_RATE": "1000",
                       "TESSERA_CREATE_RATE": "1000", **env})  # fmt: skip
    projector = Projector(nc, js, fetch_timeout=0.2)
    await projector.start()
    server = HttpServer(create_app(GatewayContext(nc=nc, js=js, config=config)),
                        host="127.0.0.1", port=0)  # fmt: skip
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            yield Gateway(server.url, http)
    finally:
        await server.stop()
        await projector.stop()


SIGNED_ENV = {"TESSERA_PLAY_SECRET": f"{NEW},{OLD}", "TESSERA_API_TOKEN": ADMIN}


@pytest_asyncio.fixture
async def gw(nc: Client, js: JetStreamContext, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway that signs play URLs with NEW (and still takes OLD)."""
    async with serving(nc, js, tmp_path, **SIGNED_ENV) as gateway:
        yield gateway


async def create(gw: Gateway) -> tuple[str, str]:
    """A mosaic: its fingerprint and the signed playlist URL /create answered with."""
    got = await gw.http.get("/create", params={"urls": PATTERN}, headers=AUTH)
    assert got.status_code == 302, got.text
    location = got.headers["location"]
    fp = signing.unsigned(location).split("/")[2]
    return fp, location


async def sign(gw: Gateway, path: str, **more: object) -> str:
    got = await gw.http.post("/api/sign", json={"path": path, **more}, headers=AUTH)
    assert got.status_code == 200, got.text
    return str(got.json()["path"])


def answer_of(response: httpx.Response) -> tuple[int, str, dict[str, str]]:
    """What a client learns from a response (but the date it was sent)."""
    headers = {k: v for k, v in response.headers.items() if k != "date"}
    return response.status_code, response.text, headers


async def test_create_answers_with_a_url_signed_for_its_creator(gw: Gateway) -> None:
    fp, location = await create(gw)
    assert location.startswith("/s/") and location.endswith(f"/play/{fp}/index.m3u8")
    verdict = signing.verify([NEW], f"mosaic:{fp}", token_of(location), time.time())
    assert isinstance(verdict, Granted) and verdict.viewer == "api-token"
    assert verdict.expires_at - verdict.issued_at == pytest.approx(8 * 3600, abs=2)
    got = await gw.http.get(location)
    assert got.status_code == 200 and got.text.startswith("#EXTM3U")


async def test_unsigned_and_bad_requests_are_one_403_for_any_mosaic(gw: Gateway) -> None:
    fp, location = await create(gw)
    token = token_of(location)
    expired = signing.sign(NEW, f"mosaic:{fp}", 60, "", time.time() - 3600)
    expired_unknown = signing.sign(NEW, f"mosaic:{UNKNOWN}", 60, "", time.time() - 3600)
    requests = [
        ("GET", "/play/{fp}/index.m3u8"),
        ("HEAD", "/play/{fp}/index.m3u8"),
        ("GET", "/play/{fp}/init.mp4"),
        ("GET", "/play/{fp}/3.1.m4s"),
        ("GET", "/play/{fp}/7.ts"),
        ("GET", "/view/{fp}"),
        ("POST", "/play/{fp}/whep"),
        ("OPTIONS", "/play/{fp}/whep"),
        ("DELETE", f"/play/{{fp}}/whep/{PEER}"),
    ]
    for method, template in requests:
        known = template.replace("{fp}", fp)
        unknown = template.replace("{fp}", UNKNOWN)
        cases = {
            "unsigned": (known, unknown, MISSING),
            "expired": (with_token(known, expired), with_token(unknown, expired_unknown), EXPIRED),
            "malformed": (with_token(known, "x"), with_token(unknown, "x"), MALFORMED),
            "wrong scope (another mosaic's)": (
                with_token(known, signing.sign(NEW, f"mosaic:{'e' * 32}", 60, "", time.time())),
                with_token(unknown, signing.sign(NEW, f"mosaic:{'e' * 32}", 60, "", time.time())),
                BAD_SIGNATURE,
            ),
            **{
                f"tampered {field}": (
                    with_token(known, bad),
                    with_token(unknown, tampered(token_of(with_token(unknown, token)))[field]),
                    BAD_SIGNATURE,
                )
                for field, bad in tampered(token).items()
            },
        }
        for case, (a, b, reason) in cases.items():
            got_a = await gw.http.request(method, a, content=b"v=0", headers=SDP)
            got_b = await gw.http.request(method, b, content=b"v=0", headers=SDP)
            what = f"{method} {template} {case}"
            assert got_a.status_code == 403, (what, got_a.text)
            # Nothing tells the existing mosaic from the unknown one: status, body, headers.
            assert answer_of(got_a) == answer_of(got_b), what
            if method != "HEAD":
                assert got_a.json() == {"error": reason}, what
    # A malformed fingerprint under /play is refused before it is even read.
    got = await gw.http.get("/play/XYZ/index.m3u8")
    assert got.status_code == 403 and got.json() == {"error": MISSING}
    # What a signed URL cannot open at all.
    for path in (f"/s/{token}/healthz", f"/s/{token}/api/mosaics", f"/s/{token}", "/s/"):
        got = await gw.http.get(path)
        assert got.status_code == 403 and got.json() == {"error": NOT_SIGNABLE}, path


async def test_the_admins_list_hands_out_signed_links(gw: Gateway) -> None:
    fp, _ = await create(gw)
    listed = await gw.http.get("/api/mosaics", headers=AUTH)
    (mosaic,) = [m for m in listed.json()["mosaics"] if m["fp"] == fp]
    for key, rest in (("view_url", f"/view/{fp}"), ("playlist_url", f"/play/{fp}/index.m3u8")):
        assert mosaic[key].startswith("/s/") and signing.unsigned(mosaic[key]) == rest
    assert (await gw.http.get(mosaic["view_url"])).status_code == 200
    assert (await gw.http.get(f"/view/{fp}")).status_code == 403


async def test_metrics_name_mosaics_only_to_the_admin_while_urls_are_signed(
    gw: Gateway, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    """/metrics labels series with fingerprints: a signed deployment keeps them to its admin."""
    refused = await gw.http.get("/metrics")
    assert refused.status_code == 401 and "admin" in refused.json()["error"]
    assert (await gw.http.get("/metrics", headers=AUTH)).status_code == 200
    async with serving(nc, js, tmp_path / "open") as open_gateway:
        assert (await open_gateway.http.get("/metrics")).status_code == 200


async def test_a_signed_url_plays_from_a_real_stitcher(
    gw: Gateway, nc: Client, js: JetStreamContext
) -> None:
    fp, location = await create(gw)
    stitcher = make_stitcher(nc, js, fp, hls_format="cmaf")
    async with FramePublisher(nc, NAMES), running(stitcher):
        playlist_url = urljoin(gw.url, location)
        async with asyncio.timeout(WAIT):
            while True:
                got = await gw.http.get(playlist_url)
                assert got.status_code == 200, got.text
                parsed = m3u8.loads(got.text)
                if any(s.uri for s in parsed.segments):
                    break
                await asyncio.sleep(0.1)
        # The playlist's URIs are relative: resolved against the signed URL, they carry it.
        init_url = urljoin(playlist_url, parsed.segment_map[0].uri)
        assert urlsplit(init_url).path == with_token(f"/play/{fp}/init.mp4", token_of(location))
        init = await gw.http.get(init_url)
        assert init.status_code == 200 and init.headers["content-type"] == "video/mp4"
        segment = [s for s in parsed.segments if s.uri][-1]
        part = await gw.http.get(urljoin(playlist_url, segment.parts[0].uri))
        assert part.status_code == 200 and len(part.content) > 0
        whole = await gw.http.get(urljoin(playlist_url, segment.uri))
        assert whole.status_code == 200
        # A blocking reload for the next part, signed like any other request.
        msn = (parsed.media_sequence or 0) + len(parsed.segments) - 1
        reload = await gw.http.get(
            playlist_url, params={"_HLS_msn": msn, "_HLS_part": len(parsed.segments[-1].parts)}
        )
        assert reload.status_code == 200
        # The unsigned twin of each is refused.
        assert (await gw.http.get(f"/play/{fp}/init.mp4")).status_code == 403
        # WHEP: the stitcher here has no WebRTC output: "starting", as for an unsigned install.
        offer = await gw.http.post(
            with_token(f"/play/{fp}/whep", token_of(location)), content=b"v=0", headers=SDP
        )
        assert offer.status_code == 503 and offer.headers["retry-after"] == "1", offer.text
    page = await gw.http.get(with_token(f"/view/{fp}", token_of(location)))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Content-Security-Policy" in page.headers


async def test_a_signed_whep_viewer_hangs_up_through_its_signed_location(
    gw: Gateway, nc: Client
) -> None:
    fp, location = await create(gw)
    token = token_of(location)
    seen: list[str] = []

    async def stitcher(msg: Msg) -> None:
        request = json.loads(msg.data)
        seen.append(request["type"])
        if request["type"] == "offer/1":
            await msg.respond(encode(control.SignalAnswer(sdp=ANSWER)))
        else:
            await msg.respond(encode(control.CommandReply(ok=True)))

    sub = await nc.subscribe(f"ctl.mosaic.{fp}", cb=stitcher)
    try:
        options = await gw.http.options(with_token(f"/play/{fp}/whep", token))
        assert options.status_code == 204
        got = await gw.http.post(with_token(f"/play/{fp}/whep", token), content=b"v=0",
                                 headers=SDP)  # fmt: skip
        assert got.status_code == 201, got.text
        # The Location carries the token, so the hang-up is signed too.
        assert got.headers["location"] == f"/s/{token}/play/{fp}/whep/{PEER}"
        assert (await gw.http.delete(f"/play/{fp}/whep/{PEER}")).status_code == 403
        gone = await gw.http.delete(got.headers["location"])
        assert gone.status_code == 204
        assert seen == ["offer/1", "hangup/1"]
    finally:
        await sub.unsubscribe()


async def test_rotation_keeps_the_old_secret_while_it_is_listed(
    gw: Gateway, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    fp, location = await create(gw)
    playlist = f"/play/{fp}/index.m3u8"

    def by(secret: str) -> str:
        return with_token(playlist, signing.sign(secret, f"mosaic:{fp}", 600, "", time.time()))

    assert (await gw.http.get(by(NEW))).status_code == 200
    assert (await gw.http.get(by(OLD))).status_code == 200
    removed = await gw.http.get(by(GONE))
    assert removed.status_code == 403 and removed.json() == {"error": BAD_SIGNATURE}
    # The API signs with the first secret.
    signed = await sign(gw, playlist)
    assert isinstance(signing.verify([NEW], f"mosaic:{fp}", token_of(signed), time.time()),
                      Granted)  # fmt: skip
    # A gateway that dropped OLD refuses what it signed.
    only_new = {**SIGNED_ENV, "TESSERA_PLAY_SECRET": NEW}
    async with serving(nc, js, tmp_path / "second", **only_new) as second:
        assert (await second.http.get(by(NEW))).status_code == 200
        dropped = await second.http.get(by(OLD))
        assert dropped.status_code == 403 and dropped.json() == {"error": BAD_SIGNATURE}


async def test_a_revoked_viewer_is_refused_before_expiry_and_a_new_url_works(
    gw: Gateway, js: JetStreamContext
) -> None:
    fp, _ = await create(gw)
    view = await sign(gw, f"/view/{fp}", viewer="contractor", ttl="8h")
    colleague = await sign(gw, f"/view/{fp}", viewer="colleague", ttl=600)
    assert (await gw.http.get(view)).status_code == 200

    no_token = await gw.http.post("/api/revocations", json={"viewer": "contractor"})
    assert no_token.status_code == 401
    done = await gw.http.post("/api/revocations", json={"viewer": "contractor"}, headers=AUTH)
    assert done.status_code == 201, done.text
    at = float(done.json()["revoked_at"])
    refused = await gw.http.get(view)
    assert refused.status_code == 403 and refused.json() == {"error": REVOKED}
    assert (await gw.http.get(with_token(f"/play/{fp}/index.m3u8", token_of(view)))
            ).status_code == 403  # fmt: skip
    assert (await gw.http.get(colleague)).status_code == 200

    # Stored, and in the audit trail.
    kv = await js.key_value("revoked")
    stored = await kv.get(signing.revocation_key("contractor"))
    assert stored.value is not None
    assert signing.read_revocation(stored.value) == signing.Revocation("contractor", at)
    entry = json.loads((await js.get_last_msg(AUDIT.name, "audit.viewer-revoke")).data)
    assert entry["target"] == "contractor" and entry["who"] == "token:api-token"

    # A URL signed after the revocation (in a later second) works.
    async def later_second() -> bool:
        return int(time.time()) > at

    await until(later_second, 3, "the second after the revocation")
    fresh = await sign(gw, f"/view/{fp}", viewer="contractor")
    assert (await gw.http.get(fresh)).status_code == 200


async def test_a_revocation_from_the_cli_reaches_the_gateway(
    gw: Gateway, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    fp, _ = await create(gw)
    view = await sign(gw, f"/view/{fp}", viewer="visitor")
    assert (await gw.http.get(view)).status_code == 200
    env = {**server_env(nats_server), "TESSERA_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "sign", "--revoke", "visitor", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "revoked 'visitor'" in out.decode()

    # The gateway hears of it through its watch of KV revoked.
    async def refused() -> httpx.Response | None:
        got = await gw.http.get(view)
        return got if got.status_code == 403 else None

    assert (await until(refused, WAIT, "the revocation")).json() == {"error": REVOKED}


async def test_the_sign_api_needs_the_admin_and_names_what_is_wrong(
    gw: Gateway, js: JetStreamContext
) -> None:
    fp, _ = await create(gw)
    assert (await gw.http.post("/api/sign", json={"path": f"/view/{fp}"})).status_code == 401
    got = await gw.http.post(
        "/api/sign",
        json={"path": f"http://wall.example/view/{fp}?via=hls", "ttl": "30m", "viewer": "bob"},
        headers=AUTH,
    )
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["url"].startswith("http://wall.example/s/")
    assert body["url"].endswith(f"/view/{fp}?via=hls")
    assert body["expires_at"] == pytest.approx(time.time() + 1800, abs=3)
    entry = json.loads((await js.get_last_msg(AUDIT.name, "audit.url-sign")).data)
    assert entry["target"] == f"mosaic:{fp}" and "'bob'" in entry["detail"]
    relative = await gw.http.post("/api/sign", json={"path": f"/view/{fp}"}, headers=AUTH)
    assert relative.json()["url"].startswith(gw.url + "/s/")
    for bad, reason in [
        ({"path": "/healthz"}, "is not a mosaic or session URL"),
        ({"path": f"/view/{fp}", "ttl": "forever"}, "ttl: 'forever'"),
        ({"path": f"/view/{fp}", "viewer": "x" * 65}, "viewer:"),
        ({"path": f"/view/{fp}", "colour": "red"}, "unknown field 'colour'"),
        ({}, "path:"),
    ]:
        refused = await gw.http.post("/api/sign", json=bad, headers=AUTH)
        assert refused.status_code == 400 and reason in refused.json()["error"], refused.text


# -- review links ----------------------------------------------------------------------------


VIDEO = {"inputs": [{"url": "https://media.example/clip.mov"}]}


async def test_a_review_link_watches_and_controls_but_does_not_delete(
    gw: Gateway, nc: Client
) -> None:
    made = await gw.http.post(
        "/session", json={**VIDEO, "link": {"viewer": "client", "ttl": "2h"}}, headers=AUTH
    )
    assert made.status_code == 201, made.text
    view = made.json()
    sid = view["id"]
    token = token_of(view["view_url"])
    for key, tail in (("view_url", "view"), ("whep_url", "whep"), ("control_url", "control")):
        assert view[key] == f"{gw.url}/s/{token}/session/{sid}/{tail}", key
    verdict = signing.verify([NEW], f"session:{sid}", token, time.time())
    assert isinstance(verdict, Granted) and verdict.viewer == "client"
    assert verdict.expires_at - verdict.issued_at == pytest.approx(7200, abs=2)
    prefix = f"/s/{token}"

    async def worker(msg: Msg) -> None:
        if msg.subject.startswith("ctl.signal."):
            request = json.loads(msg.data)
            reply = control.SignalAnswer(sdp=ANSWER) if request["type"] == "offer/1" else \
                control.CommandReply(ok=True)  # fmt: skip
            await msg.respond(encode(reply))
        else:
            decode_session_command(msg.data)
            await msg.respond(encode(control.CommandReply(ok=True, position=12)))

    subs = [await nc.subscribe(f"ctl.signal.{sid}", cb=worker),
            await nc.subscribe(f"ctl.session.{sid}", cb=worker)]  # fmt: skip
    try:
        # Reading the session through the link answers with URLs that carry it.
        async def projected() -> httpx.Response | None:
            got = await gw.http.get(f"{prefix}/session/{sid}")
            return got if got.status_code == 200 else None

        got = await until(projected, WAIT, "the session read through its link")
        assert got.json()["whep_url"] == f"{gw.url}{prefix}/session/{sid}/whep"
        page = await gw.http.get(f"{prefix}/session/{sid}/view")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        # Without the link (and without the API token) nothing of this goes.
        unsigned = await gw.http.post(f"/session/{sid}/whep", content=b"v=0", headers=SDP)
        assert unsigned.status_code == 401
        offer = await gw.http.post(f"{prefix}/session/{sid}/whep", content=b"v=0", headers=SDP)
        assert offer.status_code == 201, offer.text
        assert offer.headers["location"] == f"{prefix}/session/{sid}/whep/{PEER}"
        seek = await gw.http.post(f"{prefix}/session/{sid}/control",
                                  json={"type": "seek", "frame": 12})  # fmt: skip
        assert seek.status_code == 200 and seek.json()["position"] == 12
        assert (await gw.http.delete(offer.headers["location"])).status_code == 204
        # The link does not delete the session, nor open another one, nor make one.
        other = "6" * 32
        for method, path, reason in [
            ("DELETE", f"{prefix}/session/{sid}", WATCH_ONLY),
            ("GET", f"{prefix}/session/{other}", BAD_SIGNATURE),
            ("POST", f"{prefix}/session", NOT_SIGNABLE),
            ("GET", f"{prefix}/view/{FP}", BAD_SIGNATURE),
        ]:
            got = await gw.http.request(method, path)
            assert got.status_code == 403 and got.json() == {"error": reason}, (method, path)
        still = await gw.http.get(f"/session/{sid}", headers=AUTH)
        assert still.json()["state"] == "requested"
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def test_bad_review_links_are_400_and_start_nothing(gw: Gateway) -> None:
    for link, reason in [
        ("client", "link: an object"),
        ({"viewer": "x" * 65}, "link.viewer:"),
        ({"ttl": "forever"}, "link.ttl:"),
        ({"viewer": "a", "who": "b"}, "unknown field 'link.who'"),
    ]:
        got = await gw.http.post("/session", json={**VIDEO, "link": link}, headers=AUTH)
        assert got.status_code == 400 and reason in got.json()["error"], got.text
    assert (await gw.http.get("/session", headers=AUTH)).json()["sessions"] == []


# -- without a secret --------------------------------------------------------------------------


async def test_without_a_secret_nothing_changes(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    async with serving(nc, js, tmp_path) as plain:
        got = await plain.http.get("/create", params={"urls": PATTERN})
        assert got.status_code == 302 and got.headers["location"].startswith("/play/")
        fp = got.headers["location"].split("/")[2]
        assert (await plain.http.get(got.headers["location"])).status_code == 200
        token = signing.sign(NEW, f"mosaic:{fp}", 60, "", time.time())
        signed = await plain.http.get(with_token(f"/play/{fp}/index.m3u8", token))
        assert signed.status_code == 404 and signed.json() == {"error": "not found"}
        off = await plain.http.post("/api/sign", json={"path": f"/view/{fp}"})
        assert off.status_code == 400 and "--play-secret" in off.json()["error"]
        link = await plain.http.post("/session", json={**VIDEO, "link": {"viewer": "c"}})
        assert link.status_code == 400 and "link needs --play-secret" in link.json()["error"]


# -- tessera sign ------------------------------------------------------------------------------


def tessera(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env}
    return subprocess.run([sys.executable, "-m", "pipeline", "sign", *args], env=clean,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_tessera_sign_prints_a_url_the_gateway_accepts(tmp_path: Path) -> None:
    data = {"TESSERA_DATA_DIR": str(tmp_path)}
    url = f"http://wall.example:8080/view/{FP}?via=hls"
    got = tessera(url, "--ttl", "8h", "--viewer", "contractor", "--play-secret", NEW, **data)
    assert got.returncode == 0, got.stderr
    printed = got.stdout.strip()
    parts = urlsplit(printed)
    assert (parts.scheme, parts.netloc, parts.query) == ("http", "wall.example:8080", "via=hls")
    assert signing.unsigned(parts.path) == f"/view/{FP}"
    verdict = signing.verify([NEW], f"mosaic:{FP}", token_of(parts.path), time.time())
    assert isinstance(verdict, Granted) and verdict.viewer == "contractor"
    assert verdict.expires_at - verdict.issued_at == pytest.approx(28800, abs=2)
    # The secret from the environment; a path stays a path; the default ttl is --play-ttl.
    path = tessera(f"/session/{SID}/view", TESSERA_PLAY_SECRET=f"{OLD},{NEW}",
                   TESSERA_PLAY_TTL="60", **data)  # fmt: skip
    assert path.returncode == 0, path.stderr
    signed = path.stdout.strip()
    assert signed.startswith("/s/") and signed.endswith(f"/session/{SID}/view")
    verdict = signing.verify([OLD], f"session:{SID}", token_of(signed), time.time())
    assert isinstance(verdict, Granted) and verdict.expires_at - verdict.issued_at <= 61
    assert "--revoke NAME" in tessera("--help").stdout


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ((f"/view/{FP}",), {}, "no secret to sign with"),
        (("/healthz",), {"TESSERA_PLAY_SECRET": NEW}, "is not a mosaic or session URL"),
        ((f"/view/{FP}", "--ttl", "soon"), {"TESSERA_PLAY_SECRET": NEW}, "ttl: 'soon'"),
        ((f"/view/{FP}", "--viewer", "x" * 65), {"TESSERA_PLAY_SECRET": NEW}, "viewer:"),
        ((f"/view/{FP}",), {"TESSERA_PLAY_SECRET": "short"}, "fewer than 16"),
        ((), {"TESSERA_PLAY_SECRET": NEW}, "give the URL to sign"),
        ((f"/view/{FP}", "--revoke", "x"), {}, "not both"),
    ],
)
def test_tessera_sign_refuses_in_one_line_with_status_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    got = tessera(*args, TESSERA_DATA_DIR=str(tmp_path), **env)
    assert got.returncode == 2, (got.stdout, got.stderr)
    assert got.stdout == ""
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera: error: ") and says in lines[0], lines


# -- in a browser --------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def stack(
    nats_server: EmbeddedNats, js: JetStreamContext, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """Everything, workers included, signing play URLs."""
    media = tmp_path / "media"
    media.mkdir()
    env = {
        **server_env(nats_server),
        **SIGNED_ENV,
        "TESSERA_DATA_DIR": str(tmp_path),
        "JIT_ORCHESTRATOR_PORT": "0",
        "JIT_MEDIA_ROOTS": str(media),
        "TESSERA_HEARTBEAT_INTERVAL": "0.5",
        "TESSERA_POLL_INTERVAL": "0.5",
        "TESSERA_X264_PRESET": "ultrafast",
        "TESSERA_SOURCE_OPEN_TIMEOUT": "3",
        "TESSERA_SOURCE_READ_TIMEOUT": "3",
    }
    running_stack = Stack(load(env=env))
    await running_stack.start()
    try:
        assert running_stack.gateway is not None
        url = running_stack.gateway.url
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=AUTH) as http:
            yield Gateway(url, http, media)
    finally:
        await running_stack.stop()


async def until_true(page: Page, expression: str, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await page.evaluate(expression):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(("via", "shown"), [("hls", "LL-HLS"), ("webrtc", "WebRTC")])
async def test_chromium_plays_a_signed_view_url(
    page: Page, stack: Gateway, via: str, shown: str
) -> None:
    colours = {"red": (220, 30, 30), "blue": (30, 40, 220)}
    sources = SourceServer(
        {name: LiveHlsSource(rgb, width=320, height=180, fps=25) for name, rgb in colours.items()}
    )
    await asyncio.to_thread(sources.start)
    try:
        pattern = f"http://127.0.0.1:{sources.port}/{{red,blue}}[n]/index.m3u8"
        made = await stack.http.get("/create", params={"urls": pattern, "size": "640x360"})
        assert made.status_code == 302, made.text
        fp = signing.unsigned(made.headers["location"]).split("/")[2]
        view = (await stack.http.post("/api/sign", json={"path": f"/view/{fp}"})).json()["url"]
        fetched: list[str] = []
        page.on("request", lambda request: fetched.append(request.url))
        await page.goto(f"{view}?via={via}")
        await until_true(
            page,
            f"document.getElementById('via').textContent === {shown!r} && "
            "document.getElementById('video').readyState >= 2",
            60, f"the signed page to play over {shown}",
        )  # fmt: skip
        first = await page.evaluate("document.getElementById('video').currentTime")
        await until_true(page, f"document.getElementById('video').currentTime > {first} + 1",
                         15, "the picture to move")  # fmt: skip
        mine = [u for u in fetched if "/play/" in u]
        assert mine and all("/s/" in u for u in mine), mine
        # The same page without its token is refused, and says so.
        await page.goto(f"{stack.url}/view/{fp}")
        assert "signed URL" in await page.inner_text("body")
    finally:
        await asyncio.to_thread(sources.stop)


async def test_a_review_link_opens_the_review_page_and_seeks(page: Page, stack: Gateway) -> None:
    assert stack.media is not None
    video = make_video(stack.media / "numbers.mp4", frames=100, rate=fractions.Fraction(25))
    body = {"inputs": [{"url": str(video)}], "link": {"viewer": "client", "ttl": "1h"}}
    made = await stack.http.post("/session", json=body)
    assert made.status_code == 201, made.text
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    await page.goto(made.json()["view_url"])
    await until_true(page, "/^\\d+$/.test(document.getElementById('frame').textContent)", 45,
                     "the first frame report")  # fmt: skip
    await page.fill("#seek", "42")
    await page.press("#seek", "Enter")
    await until_true(page, "document.getElementById('frame').textContent === '42'", 15,
                     "frame 42 after a seek")  # fmt: skip
    asked = [u for u in fetched if "/session/" in u]
    assert asked and all("/s/" in u for u in asked), asked
