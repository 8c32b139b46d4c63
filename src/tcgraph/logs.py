"""How tcgraph logs: readable lines by default, or one JSON object per line.

Verbosity 0 (the default) shows tcgraph's own messages (one access line per
request when serving) and warnings from everything else; 1 (`-v`) adds the
INFO messages of the libraries (uvicorn, embedded PostgreSQL); 2 (`-vv`) is
DEBUG. `--log-format json` writes each record as a JSON object carrying the
request id and, for access lines, the route, status, duration and SQL counts.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import datetime, timezone

import orjson

from tcgraph.timefmt import format_time

FORMATS = ("text", "json")
_TEXT = "%(levelname)s %(name)s [%(request_id)s]: %(message)s"
# Attributes every LogRecord has; anything else was passed as `extra=` and is data.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}

# The id of the request being served (api.middleware.RequestId sets it), for
# log records and masked errors.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record, for the log format to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id, and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": format_time(datetime.fromtimestamp(record.created, timezone.utc)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(verbosity: int = 0, log_format: str = "text") -> None:
    """Send every log record to stderr in `log_format`, at the levels `verbosity` asks."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1
                  else logging.WARNING)
    logging.getLogger("tcgraph").setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)


def uvicorn_level(verbosity: int) -> str:
    """uvicorn's own log level for `verbosity` (its access log is replaced by tcgraph's)."""
    return "debug" if verbosity >= 2 else "info" if verbosity == 1 else "warning"
