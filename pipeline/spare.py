"""``python -m pipeline spare``: a worker process that is started before it is needed.

Most of a new worker's first second is Python importing PyAV, aiortc, numpy and nats-py
(bench cases 3 and 6). A spare does that at once, then waits on stdin for one JSON line
``{"argv": ["worker", KIND, TARGET, ...], "env": {...}}``, applies the environment and runs
that worker in this same process: the provider gets a worker that is ready in milliseconds and
is still its own child (exit codes, process group and parent-death signal as usual). End of
input without a line means "not needed": the spare exits 0.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    """Import the workers' modules, wait for the assignment, run it."""
    # The heavy imports each worker kind needs, done before anyone waits.
    import pipeline.consumers.stitcher  # noqa: F401
    import pipeline.producers.grabber  # noqa: F401
    import pipeline.producers.jit.worker  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    request = json.loads(line)
    os.environ.update({str(k): str(v) for k, v in request.get("env", {}).items()})
    from pipeline.cli import main as cli_main

    return cli_main([str(a) for a in request["argv"]])
