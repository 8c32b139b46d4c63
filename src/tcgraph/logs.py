"""How tcgraph logs: readable lines by default, or one JSON object per line.

Verbosity 0 (the default) shows tcgraph's own messages (one access line per
request when serving) and warnings from everything else; 1 (`-v`) adds the
INFO messages of the libraries (uvicorn, embedded PostgreSQL); 2 (`-vv`) is
DEBUG. `--log-format json` writes each record as a JSON object carrying the
request id and, for access lines, the route, status, duration and SQL counts.

What a verb says to the person running it (its result, the URL it serves,
why it cannot run) goes through `console`: a bare line in text format, a JSON
object like every other line in json format. So do Python's warnings and an
unexpected exception's traceback: in json format, stderr holds nothing else.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import datetime, UTC
from types import TracebackType

import orjson

from tcgraph.timefmt import format_time

FORMATS = ("text", "json")
_TEXT = "%(levelname)s %(name)s [%(request_id)s]: %(message)s"
# Attributes every LogRecord has; anything else was passed as `extra=` and is data.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}
# Extras that are presentation, not data: uvicorn's message with terminal colours.
_PRESENTATION = frozenset({"color_message"})

# The person running the command: results and refusals, shown at every verbosity.
console = logging.getLogger("tcgraph.console")

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
            "time": format_time(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry.update({k: v for k, v in record.__dict__.items()
                      if k not in _STANDARD and k not in _PRESENTATION})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _handler(formatter: logging.Formatter) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter)
    return handler


def _replace_handlers(logger: logging.Logger, handler: logging.Handler) -> None:
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)


def _log_uncaught(kind: type[BaseException], error: BaseException,
                  traceback: TracebackType | None) -> None:
    """sys.excepthook in json format: the traceback as one JSON object."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    console.critical("unexpected error: %s: %s", kind.__name__, error,
                     exc_info=(kind, error, traceback))


def configure(verbosity: int = 0, log_format: str = "text") -> None:
    """Send every log record to stderr in `log_format`, at the levels `verbosity` asks."""
    json = log_format == "json"
    root = logging.getLogger()
    _replace_handlers(root, _handler(JsonFormatter() if json else logging.Formatter(_TEXT)))
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1
                  else logging.WARNING)
    logging.getLogger("tcgraph").setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    _replace_handlers(console, _handler(JsonFormatter() if json
                                        else logging.Formatter("%(message)s")))
    console.propagate = False
    console.setLevel(logging.INFO)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught if json else sys.__excepthook__


def json_format() -> bool:
    """Whether lines are written as JSON objects (as `configure` was last told)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in console.handlers)


def requested_format(argv: list[str], environ: dict[str, str]) -> str:
    """The log format asked for, read before the arguments are checked (so that their
    refusal is written in it too): `--log-format`, else TCGRAPH_LOG_FORMAT, else text."""
    wanted = environ.get("TCGRAPH_LOG_FORMAT", "text")
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            wanted = argv[i + 1]
        elif arg.startswith("--log-format="):
            wanted = arg.partition("=")[2]
    return wanted if wanted in FORMATS else "text"


def uvicorn_level(verbosity: int) -> str:
    """uvicorn's own log level for `verbosity` (its access log is replaced by tcgraph's)."""
    return "debug" if verbosity >= 2 else "info" if verbosity == 1 else "warning"
