"""Log setup: ``key=value`` lines for people, JSON lines for machines (``--log-format json``).

Code logs a short message and puts ids in ``extra``: ``log.info("worker started",
extra={"worker": wid, "kind": "grabber"})`` prints
``2026-11-20T10:00:00.123Z INFO tessera.controller worker started worker=w1 kind=grabber``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _stamp(record: logging.LogRecord) -> str:
    millis = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{millis:03d}Z"


def _text(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> <message> k=v ...``"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_stamp(record), record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={_text(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in _fields(record).items()})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(*, verbose: bool = False, fmt: str = "text") -> None:
    """Configure the root logger once for a process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Third-party chatter only when asked for.
    for name in (
        "nats",
        "aioice",
        "aiortc",
        "libav",
        "uvicorn.error",
        "uvicorn.access",
        "botocore",
        "urllib3",
    ):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # nats-py logs a refused connection with a traceback; ours says it in one line.
    logging.getLogger("nats.aio.client").setLevel(logging.INFO if verbose else logging.CRITICAL)
