"""``tessera events tail``: events as JSON lines, like ``nats stream view`` / ``nats sub``.

Each line is ``{"seq": N, "subject": "...", "event": {...}}`` with the event as stored. The last
``N`` matching events are shown exactly, also under a subject filter: the server's per-subject
counts tell how many match, and the ones before the last N are skipped.

With ``--audit`` it reads the audit trail (stream ``AUDIT``) instead: each line is
``{"seq": N, "subject": "audit.<action>", "entry": {...}}``; ``--action`` keeps one action (a
subject filter, on the server), ``--who`` one actor (``token:ops``, or just ``ops`` for any kind
of actor of that name; filtered here). The last ``N`` shown are the last N that match both.
"""

from __future__ import annotations

import argparse
import json
from collections import deque
from collections.abc import Callable
from typing import Any, get_args

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from pipeline.errors import TesseraError
from pipeline.messages.audit import AuditAction, who_matches
from pipeline.nats import subjects
from pipeline.nats.topology import AUDIT, EVENTS

AUDIT_ACTIONS: tuple[str, ...] = get_args(AuditAction)


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    """``--audit``, ``--who``, ``--action`` for ``tessera events tail``."""
    parser.add_argument(
        "--audit", action="store_true", help="read the audit trail (stream AUDIT) instead"
    )
    parser.add_argument(
        "--who", default="", help="audit entries of this actor only: token:ops, viewer:ann, "
        "cli:root, or a bare name (implies --audit)",
    )  # fmt: skip
    parser.add_argument(
        "--action",
        choices=AUDIT_ACTIONS,
        help="audit entries of this action only (implies --audit)",
    )


async def _count(js: JetStreamContext, stream: str, subject: str, everything: str) -> int:
    """How many messages of ``stream`` match ``subject``."""
    info = await js.stream_info(stream, subjects_filter=subject)
    if info.state.subjects is None:
        return int(info.state.messages) if subject in (everything, ">") else 0
    return sum(int(n) for n in info.state.subjects.values())


async def tail(
    js: JetStreamContext,
    write: Callable[[str], None],
    *,
    subject: str = "events.>",
    last: int | None = 10,
    follow: bool = True,
    audit: bool = False,
    who: str = "",
    action: str | None = None,
) -> int:
    """Print the last ``last`` (None: all) matching events, then new ones while ``follow``;
    with ``audit`` (implied by ``who`` or ``action``), audit entries.

    Returns how many lines were written. Without ``follow`` it returns once caught up.
    """
    stream, everything, key = EVENTS.name, subjects.EVENTS_ALL, "event"
    if audit or who or action is not None:
        if subject != subjects.EVENTS_ALL:
            raise TesseraError(
                f"--audit reads stream {AUDIT.name}: filter it with --action, not {subject!r}"
            )
        if action is not None and action not in AUDIT_ACTIONS:
            raise TesseraError(f"--action {action!r}: one of {', '.join(AUDIT_ACTIONS)}")
        stream, everything, key = AUDIT.name, subjects.AUDIT_ALL, "entry"
        subject = subjects.audit(action) if action else everything
    total = await _count(js, stream, subject, everything)
    keep: Callable[[Any], bool] | None = None
    if who:
        keep = lambda doc: isinstance(doc, dict) and who_matches(str(doc.get("who", "")), who)  # noqa: E731
    # Without a filter here, the server's count says how many to skip; with one, the last
    # `last` kept are held until caught up.
    skip = 0 if last is None or keep is not None else max(0, total - last)
    held: deque[str] | None = deque(maxlen=last) if keep is not None and last is not None else None
    if not follow and total - skip == 0:
        return 0
    caught_up = total == 0
    sub = await js.subscribe(
        subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    written = 0
    seen = 0
    try:
        async for msg in sub.messages:
            seen += 1
            meta = msg.metadata
            doc = json.loads(msg.data) if msg.data else None
            if seen > skip and (keep is None or keep(doc)):
                line = json.dumps(
                    {"seq": meta.sequence.stream, "subject": msg.subject, key: doc},
                    separators=(",", ":"),
                )
                if held is not None and not caught_up:
                    held.append(line)
                else:
                    write(line)
                    written += 1
            if meta.num_pending == 0 and not caught_up:
                caught_up = True
                for line in held or ():
                    write(line)
                    written += 1
            if not follow and meta.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return written
