"""``tessera sign``: signed play and review URLs from the command line.

- ``tessera sign URL [--ttl 8h] [--viewer NAME]`` prints URL signed (``/s/<token>/...``,
  :mod:`pipeline.access.signing`) with the first secret of ``--play-secret`` /
  ``TESSERA_PLAY_SECRET``. Offline: nothing but the secret is needed, and nothing is recorded.
  A full URL keeps its scheme, host and query; a path stays a path; a URL signed before is
  signed anew.
- ``tessera sign --revoke NAME`` stores a revocation of ``NAME`` in KV ``revoked`` over NATS
  (every URL made for that viewer until now is refused by every gateway) and records it in
  the audit trail as ``cli:<user>``.

No secret, or a URL that names no mosaic or session: one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

import nats.errors

from pipeline.access import signing
from pipeline.access.signing import SigningError
from pipeline.config import settings as config_mod
from pipeline.config.settings import Config
from pipeline.errors import ConfigError
from pipeline.messages.audit import AuditEntry
from pipeline.messages.codec import encode
from pipeline.nats import subjects
from pipeline.nats.connect import connect, resolve_url
from pipeline.nats.topology import REVOKED

USAGE_ERROR = 2

EXAMPLES = """\
examples:
  tessera sign http://wall.example:8080/view/<fp> --ttl 8h --viewer contractor
  tessera sign /play/<fp>/index.m3u8 --ttl 30m
  tessera sign http://wall.example:8080/session/<id>/view --ttl 2d --viewer client
  tessera sign --revoke contractor

The URL works until --ttl runs out, the secret that signed it is dropped from --play-secret,
or its viewer is revoked. The gateway must run with the same --play-secret."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sign`` to the CLI's subcommands."""
    parser = sub.add_parser(
        "sign",
        help="print a signed play or review URL (needs --play-secret), or revoke a viewer",
        description="Sign a mosaic URL (/play/<fp>/index.m3u8, /view/<fp>) or a review URL "
        "(/session/<id>/view) for a time and, optionally, a viewer name; or revoke every URL "
        "signed for a viewer so far.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", nargs="?", help="the URL or path to sign")
    parser.add_argument(
        "--ttl",
        help="how long the URL works: seconds or e.g. 30m, 8h, 7d (default: --play-ttl)",
    )
    parser.add_argument("--viewer", default="", help="who the URL is for (default: nobody named)")
    parser.add_argument(
        "--revoke", metavar="NAME", help="revoke every URL signed for viewer NAME until now"
    )
    config_mod.add_arguments(parser, groups=("general", "nats", "gateway", "logging"))
    parser.set_defaults(run=run)


def _fail(message: str) -> int:
    print(f"tessera: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def sign_url(config: Config, url: str, ttl: str | None, viewer: str, now: float) -> str:
    """``url`` signed with the configured secret; SigningError or ConfigError saying why not."""
    secrets = signing.parse_secrets(config.play_secret)
    if not secrets:
        raise ConfigError(
            "no secret to sign with: give --play-secret or TESSERA_PLAY_SECRET, the same as "
            "the gateway's"
        )
    seconds = signing.parse_ttl(ttl) if ttl is not None else config.play_ttl
    signing.check_viewer(viewer)
    return signing.signed_url(secrets[0], url, seconds, viewer, now)


async def run(config: Config, args: argparse.Namespace) -> int:
    """``tessera sign``."""
    if args.revoke is not None:
        if args.url is not None:
            return _fail("give a URL to sign or --revoke NAME, not both")
        try:
            key, value = signing.revocation_entry(signing.check_viewer(args.revoke), time.time())
        except SigningError as exc:
            return _fail(str(exc))
        await _revoke(config, args.revoke, key, value)
        print(f"revoked {args.revoke!r}: every URL signed for it until now is refused")
        return 0
    if args.url is None:
        return _fail("give the URL to sign (or --revoke NAME); see tessera sign --help")
    try:
        print(sign_url(config, args.url, args.ttl, args.viewer, time.time()))
    except (SigningError, ConfigError) as exc:
        return _fail(str(exc))
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


async def _revoke(config: Config, viewer: str, key: str, value: bytes) -> None:
    nc = await connect(resolve_url(config), name="tessera-sign")
    try:
        js = nc.jetstream()
        kv = await js.key_value(REVOKED.name)
        await kv.put(key, value)
        entry = AuditEntry(at=time.time(), action="viewer-revoke", who=f"cli:{_user()}",
                           target=viewer)  # fmt: skip
        try:
            await js.publish(subjects.audit("viewer-revoke"), encode(entry), timeout=5)
        except (nats.errors.Error, TimeoutError) as exc:
            # The revocation holds; only its record is missing: say so, do not fail.
            print(f"tessera: warning: the audit trail did not record it ({exc!r})",
                  file=sys.stderr)  # fmt: skip
    finally:
        await nc.close()
