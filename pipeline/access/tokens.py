"""API tokens: their format, their scopes, and how they are stored. Pure.

A token is ``tsr_<name>_<secret>``: ``name`` is 1-32 of ``[a-z0-9-]`` (it names the holder in
the audit trail and in rate limits), ``secret`` is 32 random bytes, base64url without padding.
KV ``tokens`` keeps, under ``<name>``, a :class:`TokenRecord`: the scopes, the SHA-256 of the
secret (never the secret), when it was made and, once revoked, when. The secret exists outside
its holder only in the one answer of ``tessera tokens create``.

Scopes (:data:`SCOPES`): ``mosaics`` (``/create`` where creation is closed), ``sessions`` (the
session API) and ``admin`` (everything, plus the admin routes). The gateway's own token
(``TESSERA_API_TOKEN`` or ``<data dir>/api-token``) is the token named :data:`LEGACY`, with
every scope.

Errors: :class:`TokenError` (a :class:`~pipeline.errors.TesseraError`): a bad name, scope list
or rate, or a stored record that cannot be read; the message names the value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import msgspec

from pipeline.errors import TesseraError

Scope = Literal["mosaics", "sessions", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
PREFIX = "tsr_"
SECRET_BYTES = 32
LEGACY = "api-token"
"""The name of the gateway's own token (every scope); no stored token may take it."""

_NAME_RE = re.compile(r"^[a-z0-9-]{1,32}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
"""32 bytes in base64url without padding are 43 characters."""


class TokenError(TesseraError):
    """A token's name, scopes or rate is unusable, or its stored record is unreadable."""


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What KV ``tokens`` keeps of one token: never its secret."""

    name: str
    scopes: tuple[Scope, ...]
    hash: str
    """SHA-256 of the secret, hex."""
    created_at: float
    revoked_at: float | None = None
    rate: float | None = None
    """Requests per second on rate-limited routes, for this token alone (None: the gateway's)."""


@dataclass(frozen=True)
class Identity:
    """Who a valid token says the caller is."""

    name: str
    scopes: frozenset[Scope]
    rate: float | None = None

    def allows(self, scope: Scope) -> bool:
        """``admin`` may do everything."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class Revoked:
    """A token that was valid, presented with its right secret, and is revoked."""

    name: str


LEGACY_IDENTITY = Identity(LEGACY, frozenset(SCOPES))


def check_name(name: str) -> str:
    """``name`` if it can name a stored token, else TokenError."""
    if not _NAME_RE.match(name):
        raise TokenError(f"token name {name!r}: use 1 to 32 of a-z, 0-9 and -")
    if name == LEGACY:
        raise TokenError(f"token name {name!r} is the gateway's own token: choose another")
    return name


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """``"sessions,mosaics"`` → ``("mosaics", "sessions")`` (canonical order), else TokenError."""
    given = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in given if s not in SCOPES]
    if unknown or not given:
        what = f"unknown scope {unknown[0]!r}" if unknown else "no scope given"
        raise TokenError(f"--scopes {text!r}: {what}: use one or more of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in given)


def check_rate(rate: float | None) -> float | None:
    """``rate`` if usable as requests per second (or None), else TokenError."""
    if rate is not None and not (0 < rate <= 10_000):
        raise TokenError(f"--rate {rate:g}: give requests per second, more than 0, at most 10000")
    return rate


def digest(secret: str) -> str:
    """The stored form of a secret: SHA-256, hex.

    A fast hash, on purpose: slow hashes (bcrypt, argon2) protect guessable passwords against
    a stolen table; a secret of 256 random bits cannot be guessed however fast the hash, so a
    slow one would only slow every API request.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(
    name: str,
    scopes: tuple[Scope, ...],
    *,
    at: float,
    rate: float | None = None,
    secret: bytes | None = None,
) -> tuple[str, TokenRecord]:
    """A new token: its string (to hand to its holder once) and its record (to store).
    ``secret``: the random bytes (made here when None)."""
    check_name(name)
    check_rate(rate)
    if not scopes or any(s not in SCOPES for s in scopes):
        raise TokenError(f"scopes {scopes!r}: one or more of {', '.join(SCOPES)}")
    scopes = tuple(s for s in SCOPES if s in scopes)
    raw = secret if secret is not None else secrets.token_bytes(SECRET_BYTES)
    if len(raw) != SECRET_BYTES:
        raise TokenError(f"a token secret is {SECRET_BYTES} bytes, not {len(raw)}")
    text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    record = TokenRecord(name=name, scopes=scopes, hash=digest(text), created_at=at, rate=rate)
    return f"{PREFIX}{name}_{text}", record


def split(token: str) -> tuple[str, str] | None:
    """``(name, secret)`` of a well-formed token string, else None."""
    if not token.startswith(PREFIX):
        return None
    name, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or not _NAME_RE.match(name) or not _SECRET_RE.match(secret):
        return None
    return name, secret


def encode_record(record: TokenRecord) -> bytes:
    """The KV value of ``record`` (JSON)."""
    return msgspec.json.encode(record)


_records = msgspec.json.Decoder(TokenRecord)


def decode_record(data: bytes, key: str = "") -> TokenRecord:
    """A stored record, else TokenError naming the key."""
    try:
        record = _records.decode(data)
    except msgspec.DecodeError as exc:
        raise TokenError(f"token {key!r} in KV tokens is unreadable: {exc}") from exc
    if key and record.name != key:
        raise TokenError(f"token {key!r} in KV tokens names itself {record.name!r}")
    return record


def revoke(record: TokenRecord, at: float) -> TokenRecord:
    """``record`` revoked at ``at`` (the first revocation stands)."""
    if record.revoked_at is not None:
        return record
    return msgspec.structs.replace(record, revoked_at=at)


def identify(
    bearer: str, records: Mapping[str, TokenRecord], legacy: str | None
) -> Identity | Revoked | None:
    """Who ``bearer`` is: the gateway's own token (``legacy``), a stored token whose secret
    matches and which is not revoked, a :class:`Revoked` one, or None (unknown, malformed or a
    wrong secret: told apart from nothing, so a guess learns nothing)."""
    given = bearer.encode()
    if legacy is not None and hmac.compare_digest(given, legacy.encode()):
        return LEGACY_IDENTITY
    parts = split(bearer)
    if parts is None:
        return None
    name, secret = parts
    record = records.get(name)
    if record is None or not hmac.compare_digest(digest(secret), record.hash):
        return None
    if record.revoked_at is not None:
        return Revoked(name)
    return Identity(name, frozenset(record.scopes), record.rate)
