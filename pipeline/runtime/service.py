"""The shape of a long-running service, and running one until SIGINT/SIGTERM.

Every service is an object with ``async start()`` (returns once it works) and ``async stop()``
(graceful, safe to call twice). :func:`run_until_signal` starts one, waits for SIGINT or SIGTERM,
and stops it; a second signal calls ``force`` (if any) and exits at once with status 130.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from pipeline.errors import TesseraError

log = logging.getLogger("tessera")


class Service(Protocol):
    """Anything with a start and a graceful stop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Parts:
    """A service made of parts that ``_start()`` starts in order: ``start()`` runs it and, if
    it fails anywhere, ``stop()`` (which stops whatever had started) before raising, so no part
    is left running. Subclasses define ``_start`` and a ``stop`` safe to call twice."""

    async def _start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Start everything; on a failure, stop what started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise


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


def run_command(main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine to its exit status, the way every Tessera process ends: a
    :class:`TesseraError` is one line on stderr and status 1 (never a traceback), Ctrl-C is 130,
    and a closed stdout (``tessera events tail | head``) is a normal end."""
    try:
        return asyncio.run(main)
    except TesseraError as exc:
        print(f"tessera: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
