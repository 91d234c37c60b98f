"""``python -m urldsl PATTERN...``: print one JSON object per stream, in order.

Each line is ``{"url": ..., "name": ...}``. On a bad pattern the one-line message, the
pattern and a caret go to stderr and the exit status is 2 (as for a usage error). This
is the only module of the package that does I/O, and nothing imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import msgspec

from urldsl.errors import UrlDslError
from urldsl.expansion import DEFAULT_MAX_STREAMS, expand_all

_EXIT_BAD_PATTERN = 2


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m urldsl",
        description="Expand UrlDsl patterns into streams, one JSON object per line.",
        epilog="example: python -m urldsl 'https://s.xyz/{MEL,SYD}[n]{1,2}[n]/m.m3u8'",
    )
    parser.add_argument(
        "patterns",
        nargs="+",
        metavar="PATTERN",
        help="a UrlDsl pattern; several are concatenated in order (use -- before one"
        " that starts with '-')",
    )
    parser.add_argument(
        "--max-streams",
        type=_positive,
        default=DEFAULT_MAX_STREAMS,
        metavar="N",
        help=f"refuse more than N streams in total (default {DEFAULT_MAX_STREAMS})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    arguments = _arguments().parse_args(argv)
    try:
        streams = expand_all(arguments.patterns, max_streams=arguments.max_streams)
    except UrlDslError as error:
        print(error.render(), file=sys.stderr)
        return _EXIT_BAD_PATTERN
    encoder = msgspec.json.Encoder()
    out = sys.stdout.buffer
    for stream in streams:
        out.write(encoder.encode(stream) + b"\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
