"""Structured logs: one JSON object per line, with the ``extra`` fields of each call.

Request URLs are logged without their query string. The web widget's socket URL carries its
conversation id (``/bots/BOT/webhooks/web/ws?conversation_id=...``), and uvicorn logs every
WebSocket handshake with the full URL at INFO (and the request line at DEBUG): ``QueryStringFilter``
keeps the path and drops the rest from uvicorn's and the websockets library's records, so logs
never name a conversation (tests/e2e/test_access_log.py).
"""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class QueryStringFilter(logging.Filter):
    """Cut ``?query`` off every URL path among the arguments of the HTTP server's log records."""

    _LOGGERS = ("uvicorn", "websockets")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in self._LOGGERS and isinstance(record.args, tuple):
            record.args = tuple(_without_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def _without_query(value: str) -> str:
    if value.startswith("/") and "?" in value:
        return value.split("?", 1)[0]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        # exc_text first: the PII filter leaves a redacted traceback there.
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else None)
        if exc:
            entry["exc"] = exc
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", *, json_lines: bool = True, filters: list[logging.Filter] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(QueryStringFilter())
    for f in filters or []:
        handler.addFilter(f)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
