"""``tessera tokens``: create, list and revoke the gateway's API tokens (KV ``tokens``), over
NATS as the admin, like every other command.

- ``create NAME --scopes mosaics,sessions[,admin] [--rate N]`` prints the token once, on
  stdout (KV keeps only the SHA-256 of its secret: this is the one time the secret exists
  outside its holder).
- ``list``: name, scopes, rate, when made, when revoked; never a secret or a hash.
- ``revoke NAME``: every gateway refuses it from the moment its watch of KV ``tokens`` sees the
  change (a moment); the record stays, so the name is never handed to someone else.

Bad input (a name, scope list or rate) is one line and exit 2, before NATS is asked; a name that
is taken (revoked ones too: in the audit trail a name is one holder) or unknown is one line and
exit 1. Creating and revoking are audited (``token-create``, ``token-revoke``, by
``cli:<user>``).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import time
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.errors import NotFoundError as JsNotFoundError
from nats.js.kv import KeyValue

from pipeline.access import tokens
from pipeline.access.tokens import TokenError, TokenRecord
from pipeline.config import settings as config_mod
from pipeline.config.settings import Config
from pipeline.errors import TesseraError
from pipeline.messages.audit import AuditAction, AuditEntry
from pipeline.messages.codec import encode
from pipeline.nats import subjects
from pipeline.nats.connect import connect, resolve_url
from pipeline.nats.topology import TOKENS

log = logging.getLogger("tessera")

AUDIT_TIMEOUT = 2.0
_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``tessera tokens`` on the command's subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "tokens",
        help="create, list and revoke API tokens (scopes: mosaics, sessions, admin)",
        description="API tokens for the gateway, each with its scopes: mosaics (/create where "
        "play URLs are signed), sessions (the session API), admin (everything, and the "
        "admin routes). KV tokens keeps each one's SHA-256, never its secret.",
    )
    actions = parser.add_subparsers(dest="tokens_command", metavar="ACTION")
    actions.required = True
    create = actions.add_parser(
        "create",
        help="make a token and print it (once)",
        description="Make a token and print it on stdout: the only time it is shown.",
    )
    create.add_argument("name", help="who holds it: 1-32 of a-z, 0-9, - (the audit names it)")
    create.add_argument("--scopes", required=True, help="comma-separated: mosaics, sessions, admin")
    create.add_argument(
        "--rate", help="requests per second for this token on rate-limited routes "
        "(default: the gateway's --create-rate / --session-rate)",
    )  # fmt: skip
    create.set_defaults(run=_create)
    listing = actions.add_parser("list", help="show every token (never its secret)")
    listing.set_defaults(run=_list)
    revoke = actions.add_parser(
        "revoke", help="refuse a token from now on", description="Refuse a token from now on."
    )
    revoke.add_argument("name", help="the token's name")
    revoke.set_defaults(run=_revoke)
    for action in (create, listing, revoke):
        config_mod.add_arguments(action, groups=("general", "nats", "logging"))
    return parser


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def _usage_error(exc: TokenError) -> int:
    print(f"tessera: error: {exc}", file=sys.stderr)
    return 2


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at is not None else "-"


async def _bucket(nc: Client) -> KeyValue:
    try:
        return await nc.jetstream().key_value(TOKENS.name)
    except (BucketNotFoundError, JsNotFoundError) as exc:
        raise TesseraError(
            f"KV {TOKENS.name} does not exist on this NATS: start `tessera up` once (it "
            "provisions it) or point NATS_URL at Tessera's NATS"
        ) from exc


async def _audit(nc: Client, action: AuditAction, target: str, detail: str = "") -> None:
    """Append the entry; one that cannot be stored is said on stderr (what it recorded stands)."""
    entry = AuditEntry(
        at=time.time(), action=action, who=f"cli:{_user()}", target=target, detail=detail
    )
    try:
        await nc.jetstream().publish(subjects.audit(action), encode(entry), timeout=AUDIT_TIMEOUT)
    except _NATS_ERRORS as exc:
        print(f"tessera: warning: audit entry not stored ({exc!r}): {entry}", file=sys.stderr)


async def _create(config: Config, args: argparse.Namespace) -> int:
    try:
        name = tokens.check_name(args.name)
        scopes = tokens.parse_scopes(args.scopes)
        rate = _rate(args.rate)
        token, record = tokens.issue(name, scopes, at=time.time(), rate=rate)
    except TokenError as exc:
        return _usage_error(exc)
    nc = await connect(resolve_url(config), name="tessera-tokens")
    try:
        kv = await _bucket(nc)
        try:
            await kv.create(name, tokens.encode_record(record))
        except KeyWrongLastSequenceError:
            raise TesseraError(
                f"token {name!r} exists (`tessera tokens list`): a name is one holder's for "
                "good, choose another"
            ) from None
        except _NATS_ERRORS as exc:
            raise TesseraError(f"cannot store token {name!r} in KV {TOKENS.name}: {exc!r}") from exc
        detail = f"scopes {','.join(scopes)}" + (f", rate {rate:g}/s" if rate else "")
        await _audit(nc, "token-create", name, detail)
    finally:
        await nc.close()
    print(token, flush=True)
    print(
        f"token {name!r} ({', '.join(scopes)}): shown this once; send it as "
        "Authorization: Bearer <token>",
        file=sys.stderr,
    )
    return 0


def _rate(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise TokenError(f"--rate {text!r}: not a number of requests per second") from None
    return tokens.check_rate(value)


async def _records(kv: KeyValue) -> list[TokenRecord]:
    found: list[TokenRecord] = []
    try:
        names = await kv.keys()
    except NoKeysError:
        return found
    for name in names:
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            continue  # deleted meanwhile
        if entry.value:
            found.append(tokens.decode_record(entry.value, name))
    return sorted(found, key=lambda r: r.created_at)


async def _list(config: Config, args: argparse.Namespace) -> int:
    nc = await connect(resolve_url(config), name="tessera-tokens")
    try:
        records = await _records(await _bucket(nc))
    finally:
        await nc.close()
    rows = [("NAME", "SCOPES", "RATE", "CREATED", "REVOKED")] + [
        (r.name, ",".join(r.scopes), f"{r.rate:g}/s" if r.rate else "-", _when(r.created_at),
         _when(r.revoked_at))
        for r in records
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _revoke(config: Config, args: argparse.Namespace) -> int:
    try:
        name = tokens.check_name(args.name)
    except TokenError as exc:
        return _usage_error(exc)
    nc = await connect(resolve_url(config), name="tessera-tokens")
    try:
        kv = await _bucket(nc)
        for _ in range(5):  # a write between our read and update: read again
            try:
                entry = await kv.get(name)
            except KeyNotFoundError:
                raise TesseraError(f"no token {name!r}: `tessera tokens list` shows them") from None
            record = tokens.decode_record(entry.value or b"", name)
            if record.revoked_at is not None:
                print(f"token {name!r} was revoked already, at {_when(record.revoked_at)}")
                return 0
            revoked = tokens.revoke(record, time.time())
            try:
                await kv.update(name, tokens.encode_record(revoked), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            break
        else:
            raise TesseraError(f"token {name!r} keeps changing under us: try again")
        await _audit(nc, "token-revoke", name)
    finally:
        await nc.close()
    print(f"token {name!r} revoked: gateways refuse it from now on")
    return 0
