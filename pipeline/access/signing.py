"""Signed play and review URLs, pure: a token that names an expiry, when it was made and for
whom, with an HMAC over those and the thing it opens.

A signed URL is the plain one behind ``/s/<token>``: ``/s/<token>/play/<fp>/index.m3u8``,
``/s/<token>/view/<fp>``, ``/s/<token>/session/<sid>/view``. The token is::

    <exp>.<iat>.<viewer>.<sig>

- ``exp``, ``iat``: when it stops working and when it was made, whole Unix seconds (decimal,
  no leading zeros);
- ``viewer``: who it was made for, base64url (no padding) of UTF-8, ``""`` for nobody named;
  at most :data:`MAX_VIEWER` printable characters;
- ``sig``: HMAC-SHA256 with the secret over ``tessera-url/1\\n<scope>\\n<exp>\\n<iat>\\n<viewer>``,
  its first 16 bytes in base64url (22 characters).

The **scope** is what the path after the token opens: ``mosaic:<fp>`` (everything under
``/play/<fp>/`` and ``/view/<fp>``) or ``session:<sid>`` (``/session/<sid>`` and below). A
token is checked against the scope of the path it arrives with, so one made for mosaic A opens
nothing of mosaic B, and the playlist's relative URIs (init section, parts, segments) carry it
by themselves.

**Rotation**: several secrets may be valid at once (``TESSERA_PLAY_SECRET=new,old``): the first
signs, every one verifies. **Revocation**: a viewer name revoked at time ``at`` refuses every
token made for it at or before ``at`` (whole seconds: one made in the same second as the
revocation is refused too); tokens made later work.

Errors: :class:`SigningError` (a :class:`~pipeline.errors.TesseraError`) for what a user asks
to sign (a path that opens nothing, a bad ttl or viewer name); a bad secret setting is a
:class:`~pipeline.errors.ConfigError`. A token that does not open is not an error but a
:class:`Refused` verdict with a one-line reason, the same whatever the mosaic or session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import ConfigError, TesseraError

VERSION = "tessera-url/1"
"""The first line of every signed message: a new format gets a new one."""
PREFIX = "/s/"
MAX_VIEWER = 64
MIN_SECRET = 16
MAX_TTL = 366 * 86400.0
"""A signed URL lives at most a year: longer is a password, and should be a token."""
SIG_BYTES = 16
_SIG_CHARS = 22  # base64 of 16 bytes, unpadded
_INT_RE = re.compile(r"^(0|[1-9][0-9]{0,11})$")
_B64_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_HEX32 = r"[0-9a-f]{32}"
_PLAY_RE = re.compile(rf"^/play/({_HEX32})(/.*)?$")
_VIEW_RE = re.compile(rf"^/view/({_HEX32})/?$")
_SESSION_RE = re.compile(rf"^/session/({_HEX32})(/.*)?$")
_ALARMS_RE = re.compile(rf"^/mosaics/({_HEX32})/alarms(/events)?$")
_TTL_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

MISSING = "this needs a signed URL (/s/<token>/...): ask whoever shared it for one"
MALFORMED = "the signed URL is malformed: ask for a new one"
BAD_SIGNATURE = "the signed URL's signature does not match: ask for a new one"
EXPIRED = "the signed URL has expired: ask for a new one"
REVOKED = "the signed URL was revoked: ask for a new one"


class SigningError(TesseraError):
    """What was asked to be signed cannot be: a path that opens no mosaic or session, a bad
    ttl, a bad viewer name."""


@dataclass(frozen=True)
class Granted:
    """The token opens its scope, for ``viewer`` until ``expires_at``."""

    viewer: str
    expires_at: int
    issued_at: int


@dataclass(frozen=True)
class Refused:
    """The token opens nothing; ``reason`` is the one line a 403 says."""

    reason: str


Verdict = Granted | Refused


# -- settings and requests -------------------------------------------------------------------


def parse_secrets(text: str | None) -> tuple[str, ...]:
    """The secrets of ``TESSERA_PLAY_SECRET`` (comma-separated, the first signs); ``()`` when
    unset (signing is off). ConfigError for one that is too short to be a secret."""
    if text is None:
        return ()
    found = tuple(s.strip() for s in text.split(",") if s.strip())
    if not found:
        raise ConfigError(
            "TESSERA_PLAY_SECRET (--play-secret) is set but holds no secret: "
            "give one, e.g. `openssl rand -hex 32`, or unset it"
        )
    for number, secret in enumerate(found, start=1):
        if len(secret) < MIN_SECRET:
            raise ConfigError(
                f"TESSERA_PLAY_SECRET (--play-secret): secret {number} has {len(secret)} "
                f"characters, fewer than {MIN_SECRET}: use e.g. `openssl rand -hex 32`"
            )
    return found


def parse_ttl(value: object) -> float:
    """Seconds from ``3600``, ``90.5``, ``"45s"``, ``"30m"``, ``"8h"`` or ``"7d"``; SigningError
    for anything else, or a ttl not above 0 or over a year."""
    if isinstance(value, bool):
        raise SigningError(f"ttl: {value!r} is not a duration: use seconds or e.g. 8h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _TTL_RE.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise SigningError(f"ttl: {value!r} is not a duration: use seconds or e.g. 30m, 8h, 7d")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TTL:
        raise SigningError(f"ttl: {value!r} must be above 0 and at most 366d")
    return seconds


def check_viewer(viewer: object) -> str:
    """``viewer`` if it can be named in a token (a string of at most :data:`MAX_VIEWER`
    printable characters, no spaces at its ends), else SigningError."""
    if not isinstance(viewer, str):
        raise SigningError(f"viewer: {viewer!r} is not a string")
    if len(viewer) > MAX_VIEWER or not viewer.isprintable() or viewer != viewer.strip():
        raise SigningError(
            f"viewer: {viewer[:80]!r} must be at most {MAX_VIEWER} printable characters "
            "without spaces at its ends"
        )
    return viewer


def revocation_key(viewer: str) -> str:
    """The ``revoked`` KV key of a viewer name: sha256 hex, first 32 characters (any name
    makes a valid key, and the key list names nobody)."""
    return hashlib.sha256(viewer.encode()).hexdigest()[:32]


# -- paths -----------------------------------------------------------------------------------


def scope_of(path: str) -> str | None:
    """What a plain path opens: ``mosaic:<fp>`` for ``/play/<fp>/...``, ``/view/<fp>`` and
    the mosaic's alarms (``/mosaics/<fp>/alarms``, ``.../events``: the viewer page lists
    them), ``session:<sid>`` for ``/session/<sid>`` and below; None for anything else."""
    if path.startswith("/play/"):
        if match := _PLAY_RE.match(path):
            return f"mosaic:{match.group(1)}"
    elif path.startswith("/view/"):
        if match := _VIEW_RE.match(path):
            return f"mosaic:{match.group(1)}"
    elif path.startswith("/session/") and (match := _SESSION_RE.match(path)):
        return f"session:{match.group(1)}"
    elif path.startswith("/mosaics/") and (match := _ALARMS_RE.match(path)):
        return f"mosaic:{match.group(1)}"
    return None


def split_signed(path: str) -> tuple[str, str] | None:
    """``(token, rest)`` of ``/s/<token><rest>``, or None when ``path`` is not under ``/s/``
    or has nothing after the token."""
    if not path.startswith(PREFIX):
        return None
    token, slash, rest = path[len(PREFIX) :].partition("/")
    if not token or not slash:
        return None
    return token, "/" + rest


def unsigned(path: str) -> str:
    """``path`` without a ``/s/<token>`` in front (as it is when it has none)."""
    split = split_signed(path)
    return split[1] if split is not None else path


def signed_path(secret: str, path: str, ttl: float, viewer: str, now: float) -> tuple[str, int]:
    """``(/s/<token><path>, exp)``: ``path`` (a plain one, or one signed before: its old token
    is dropped) signed for ``viewer`` for ``ttl`` seconds; SigningError when it opens no mosaic
    or session."""
    path = unsigned(path)
    scope = scope_of(path)
    if scope is None:
        raise SigningError(
            f"{path[:200]!r} is not a mosaic or session URL: sign /play/<fp>/index.m3u8, "
            "/view/<fp> or /session/<id>/view"
        )
    token = sign(secret, scope, ttl, viewer, now)
    return f"{PREFIX}{token}{path}", expiry(token)


def signed_url(secret: str, url: str, ttl: float, viewer: str, now: float) -> str:
    """``url`` signed as :func:`signed_path` signs its path: a full URL keeps its scheme, host
    and query, a path stays a path."""
    parts = urlsplit(url)
    path, _ = signed_path(secret, parts.path, ttl, viewer, now)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


# -- tokens ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """The bytes of canonical unpadded base64url ``text`` (one encoding per value), else None."""
    if not _B64_RE.match(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64(data) == text else None


def _mac(secret: str, scope: str, exp: int, iat: int, viewer: str) -> bytes:
    message = f"{VERSION}\n{scope}\n{exp}\n{iat}\n{viewer}".encode()
    return hmac.digest(secret.encode(), message, "sha256")[:SIG_BYTES]


def sign(secret: str, scope: str, ttl: float, viewer: str, now: float) -> str:
    """A token opening ``scope`` for ``viewer`` from ``now`` for ``ttl`` seconds."""
    ttl = parse_ttl(ttl)
    check_viewer(viewer)
    iat = math.floor(now)
    exp = math.ceil(now + ttl)
    sig = _mac(secret, scope, exp, iat, viewer)
    return f"{exp}.{iat}.{_b64(viewer.encode())}.{_b64(sig)}"


def expiry(token: str) -> int:
    """The ``exp`` a well-formed token names (unchecked)."""
    return int(token.split(".", 1)[0])


def verify(
    secrets: Sequence[str],
    scope: str,
    token: str | None,
    now: float,
    revoked_at: Callable[[str], float | None] = lambda viewer: None,
) -> Verdict:
    """Whether ``token`` opens ``scope`` at ``now`` under any of ``secrets``, checked in this
    order: there is one, it is well formed, its signature matches, it has not expired, its
    viewer was not revoked since it was made."""
    if not token:
        return Refused(MISSING)
    parts = token.split(".")
    if len(parts) != 4 or len(parts[3]) != _SIG_CHARS:
        return Refused(MALFORMED)
    exp_text, iat_text, viewer_text, sig_text = parts
    name = _unb64(viewer_text)
    sig = _unb64(sig_text)
    if not (_INT_RE.match(exp_text) and _INT_RE.match(iat_text)) or name is None or sig is None:
        return Refused(MALFORMED)
    try:
        viewer = check_viewer(name.decode("utf-8"))
    except (UnicodeDecodeError, SigningError):
        return Refused(MALFORMED)
    exp, iat = int(exp_text), int(iat_text)
    # Every secret is tried, matching or not: which one matched takes no less time to find.
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(_mac(secret, scope, exp, iat, viewer), sig)
    if not matched:
        return Refused(BAD_SIGNATURE)
    if now >= exp:
        return Refused(EXPIRED)
    at = revoked_at(viewer)
    if at is not None and iat <= at:
        return Refused(REVOKED)
    return Granted(viewer=viewer, expires_at=exp, issued_at=iat)


# -- revocations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revocation:
    """Every URL made for ``viewer`` at or before ``at`` (Unix seconds) is refused."""

    viewer: str
    at: float


def revocation_entry(viewer: str, at: float) -> tuple[str, bytes]:
    """The KV ``revoked`` key and value that revoke ``viewer`` at ``at``."""
    if not check_viewer(viewer):
        raise SigningError("viewer: give the name whose URLs to revoke")
    value = json.dumps({"viewer": viewer, "at": at}, separators=(",", ":")).encode()
    return revocation_key(viewer), value


def read_revocation(value: bytes) -> Revocation:
    """A KV ``revoked`` value; SigningError when it is not one."""
    try:
        doc = json.loads(value)
        viewer, at = doc["viewer"], doc["at"]
    except (ValueError, TypeError, KeyError) as exc:
        raise SigningError(f"not a revocation: {value[:100]!r}") from exc
    if not isinstance(viewer, str) or not isinstance(at, int | float) or isinstance(at, bool):
        raise SigningError(f"not a revocation: {value[:100]!r}")
    return Revocation(viewer=viewer, at=float(at))
