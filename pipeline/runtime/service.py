"""The shape of a long-running service, and running one until SIGINT/SIGTERM.

Every service is an object with ``async start()`` (returns once it works) and ``async stop()``
(graceful, safe to call twice). :func:`run_until_signal` starts one, waits for SIGINT or SIGTERM,
and stops it; a second signal calls ``force`` (if any) and exits at once with status 130.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("tessera")


class Service(Protocol):
    """Anything with a start and a graceful stop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_until_signal(
    service: Service,
    *,
    on_started: Callable[[], None] | None = None,
    force: Callable[[], None] | None = None,
) -> None:
    """Start ``service``, wait for SIGINT/SIGTERM, stop it (also when starting fails)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            log.warning("second signal: forcing exit")
            if force is not None:
                force()
            raise SystemExit(130)
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stopping.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await service.start()
        if on_started is not None:
            on_started()
        await stopping.wait()
    finally:
        await service.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
