"""``python -m tests.hostile_probe URL [--public] [--allow CIDR] [--timeout S]``: open ``URL``
as a grabber does and decode up to 50 frames, in a process of its own so that its peak memory
is the source's doing. Prints one JSON line: outcome (frames, refused, unavailable), the
error, seconds taken, frames decoded, peak RSS in MiB.
"""

from __future__ import annotations

import argparse
import json
import time

from pipeline.sources.opener import open_input
from pipeline.sources.policy import SourcePolicy, SourceRefused, SourceUnavailable
from tests.hostile import peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--public", action="store_true")
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    policy = SourcePolicy.public(args.allow) if args.public else SourcePolicy.local(args.allow)
    started = time.monotonic()
    outcome, error, frames = "frames", "", 0
    try:
        with open_input(
            args.url, policy, open_timeout=args.timeout, read_timeout=args.timeout
        ) as container:
            for _ in container.decode(video=0):
                frames += 1
                if frames >= 50:
                    break
    except SourceRefused as exc:
        outcome, error = "refused", str(exc)
    except SourceUnavailable as exc:
        outcome, error = "unavailable", str(exc)
    except Exception as exc:  # noqa: BLE001 - reported, the test decides
        outcome, error = "error", f"{type(exc).__name__}: {exc}"
    print(
        json.dumps(
            {
                "outcome": outcome,
                "error": error,
                "seconds": round(time.monotonic() - started, 3),
                "frames": frames,
                "peak_mb": round(peak_rss_mb(), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
