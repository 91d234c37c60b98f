"""Writing the audit trail from the gateway: one :class:`~pipeline.messages.audit.AuditEntry`
per thing someone did, on stream ``AUDIT`` (``audit.<action>``).

An entry is appended with JetStream's acknowledgement awaited (a short timeout), so one that
is answered was stored; one that cannot be stored is logged at error level with everything it
held, so the trail's gap is at least in the log, and the request it records still succeeds
(refusing a viewer because NATS is slow would turn an audit into an outage).

Watching is recorded once per viewer and mosaic or session per :data:`WATCH_EVERY` seconds,
not per playlist request (a player asks five times a second).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import nats.errors
from starlette.requests import Request

from gateway.context import GatewayContext
from gateway.who import who
from pipeline.messages.audit import AuditAction, AuditEntry
from pipeline.messages.codec import encode
from pipeline.nats import subjects

log = logging.getLogger("tessera.audit")

WATCH_EVERY = 600.0
"""Seconds between two ``*-watch`` entries of the same viewer and target."""
TIMEOUT = 2.0
_MAX_WATCHERS = 100_000


class AuditTrail:
    """Appends the gateway's audit entries."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self._watched: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self.failed = 0
        """Entries that could not be stored (each logged)."""

    async def record(
        self, request: Request | None, action: AuditAction, target: str, detail: str = "",
        *, actor: str | None = None,
    ) -> None:  # fmt: skip
        """Append one entry; ``actor`` overrides who the request names."""
        entry = AuditEntry(
            at=time.time(),
            action=action,
            who=actor or (who(request) if request is not None else "anonymous"),
            target=target,
            client=request.client.host if request is not None and request.client else "",
            detail=detail,
        )
        try:
            await self.ctx.js.publish(subjects.audit(action), encode(entry), timeout=TIMEOUT)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            self.failed += 1
            log.error("audit entry not stored",
                      extra={"entry": str(entry), "error": repr(exc)})  # fmt: skip

    async def watched(self, request: Request, action: AuditAction, target: str) -> None:
        """Record a watch, at most once per viewer and target per :data:`WATCH_EVERY`."""
        key = (who(request), action, target)
        now = time.monotonic()
        last = self._watched.get(key)
        if last is not None and now - last < WATCH_EVERY:
            return
        self._watched[key] = now
        self._watched.move_to_end(key)
        while len(self._watched) > _MAX_WATCHERS:
            self._watched.popitem(last=False)
        await self.record(request, action, target)
