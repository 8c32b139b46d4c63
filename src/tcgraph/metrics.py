"""Prometheus metrics: what tcgraph served, what it cost, and what it refused.

`GET /metrics` answers Prometheus' text format. With several server processes
(`serve --workers N`) tcgraph points `PROMETHEUS_MULTIPROC_DIR` at a directory
of its own before the workers start, and every figure is the sum over the
workers, whichever of them answers the scrape (prometheus-client's
multiprocess mode). The variable must be set before this module is imported.

Every request passes through `Observe`, which counts it by route, GraphQL
operation type and status, times it, records the SQL statements and rows it
ran, and writes one access-log line (`tcgraph.access`). The error codes and
refused limits of a request are reported with `note_errors`.

The pulse follower reports through three public functions:

    metrics.follower_message(exchange)     # one message handled from `exchange`
    metrics.follower_lag(seconds)          # now minus the newest handled message's time
    metrics.follower_error(code)           # a message that could not be handled, by code

which feed `tcgraph_follower_messages_total{exchange}`,
`tcgraph_follower_lag_seconds` and `tcgraph_follower_errors_total{code}`; and
of the mirror's completeness (ingest/gaps.py, reconcile.py, verify.py):

    metrics.mirror_gap(reason)             # a gap recorded -> tcgraph_mirror_gaps_total{reason}
    metrics.mirror_reconcile_call(outcome) # an upstream call -> ..._reconcile_calls_total{outcome}
    metrics.mirror_repaired(tasks)         # tasks repaired -> tcgraph_mirror_tasks_repaired_total
    metrics.mirror_drift(differences)      # the last verification -> tcgraph_mirror_drift
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest, multiprocess)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

if TYPE_CHECKING:
    from tcgraph.store.pool import SqlStats

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
access_log = logging.getLogger("tcgraph.access")

REQUESTS = Counter("tcgraph_requests", "HTTP requests answered",
                   ["route", "operation", "status"])
LATENCY = Histogram("tcgraph_request_duration_seconds", "Time to answer a request",
                    ["route", "operation"])
SQL_STATEMENTS = Histogram("tcgraph_request_sql_statements", "SQL statements run per request",
                           ["route"], buckets=(0, 1, 2, 3, 4, 5, 8, 13, 21, 50, 100))
SQL_ROWS = Histogram("tcgraph_request_sql_rows", "Rows PostgreSQL returned per request",
                     ["route"], buckets=(0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000))
# Pool figures are kept up to date by every acquire and release; `livesum`
# adds them over the worker processes that are alive.
WORKERS = Gauge("tcgraph_workers", "Server processes serving (summed over the live ones)",
                multiprocess_mode="livesum")
POOL_SIZE = Gauge("tcgraph_pool_size", "Open connections in the pool",
                  multiprocess_mode="livesum")
POOL_IN_USE = Gauge("tcgraph_pool_in_use", "Pooled connections running a statement",
                    multiprocess_mode="livesum")
POOL_WAITING = Gauge("tcgraph_pool_waiting", "Statements waiting for a free pooled connection",
                     multiprocess_mode="livesum")
LIMIT_REFUSALS = Counter("tcgraph_limit_refusals", "Requests refused over a limit, by limit",
                         ["limit"])
ERRORS = Counter("tcgraph_errors", "Errors answered, by extensions.code", ["code"])
FOLLOWER_MESSAGES = Counter("tcgraph_follower_messages", "Pulse messages handled, by exchange",
                            ["exchange"])
FOLLOWER_LAG = Gauge("tcgraph_follower_lag_seconds",
                     "Age of the newest pulse message handled", multiprocess_mode="livemax")
FOLLOWER_ERRORS = Counter("tcgraph_follower_errors", "Pulse messages that failed, by code",
                          ["code"])

MIRROR_GAPS = Counter("tcgraph_mirror_gaps", "Gaps in which messages may have been lost, "
                      "by reason", ["reason"])
MIRROR_RECONCILE_CALLS = Counter("tcgraph_mirror_reconcile_calls",
                                 "Upstream calls made to reconcile the mirror, by outcome",
                                 ["outcome"])
MIRROR_REPAIRED = Counter("tcgraph_mirror_tasks_repaired",
                          "Tasks whose stored status or definition reconciliation corrected")
MIRROR_DRIFT = Gauge("tcgraph_mirror_drift", "Differences from the upstream the last "
                     "verification found", multiprocess_mode="livemax")


@dataclass
class Observation:
    """What is known about the request being served."""

    operation: str = "none"  # the GraphQL operation type, "rest", or "none"
    sql: list[SqlStats] = field(default_factory=list)


_current: contextvars.ContextVar[Observation | None] = contextvars.ContextVar(
    "tcgraph_observation", default=None)


def track_sql(stats: SqlStats) -> None:
    """Count what `stats` records in the current request's figures (if any)."""
    observation = _current.get()
    if observation is not None:
        observation.sql.append(stats)


def note_operation(operation: str) -> None:
    """Name the current request's operation type (`query`, `mutation`, `rest`, ...)."""
    observation = _current.get()
    if observation is not None:
        observation.operation = operation


class OperationType(SchemaExtension):
    """Names the executed GraphQL operation's type (query, mutation) in the request's figures."""

    def on_execute(self):  # type: ignore[no-untyped-def]  # a generator hook
        note_operation(self.execution_context.operation_type.value)
        yield


def note_errors(extensions: Iterable[Mapping[str, object] | None]) -> None:
    """Count the errors a response reports, by code, and the limits among them."""
    for ext in extensions:
        code = str((ext or {}).get("code") or "UNCODED")
        ERRORS.labels(code).inc()
        limit = (ext or {}).get("limit")
        if code == "LIMIT_EXCEEDED" and limit:
            LIMIT_REFUSALS.labels(str(limit)).inc()


def pool_changed(size: int, in_use: int = 0, waiting: int = 0) -> None:
    """The pool's size now, and the change in connections in use and statements waiting."""
    POOL_SIZE.set(size)
    if in_use:
        POOL_IN_USE.inc(in_use)
    if waiting:
        POOL_WAITING.inc(waiting)


def follower_message(exchange: str) -> None:
    """The follower handled one message from `exchange`."""
    FOLLOWER_MESSAGES.labels(exchange).inc()


def follower_lag(seconds: float) -> None:
    """How old the newest message the follower handled was when it was handled."""
    FOLLOWER_LAG.set(seconds)


def follower_error(code: str) -> None:
    """The follower could not handle a message, for reason `code`."""
    FOLLOWER_ERRORS.labels(code).inc()


def mirror_gap(reason: str) -> None:
    """A gap (a period in which messages may have been lost) was recorded."""
    MIRROR_GAPS.labels(reason).inc()


def mirror_reconcile_call(outcome: str) -> None:
    """Reconciliation made one upstream call, which ended as `outcome` (ok, 5xx, ...)."""
    MIRROR_RECONCILE_CALLS.labels(outcome).inc()


def mirror_repaired(tasks: int) -> None:
    """Reconciliation corrected `tasks` tasks."""
    MIRROR_REPAIRED.inc(tasks)


def mirror_drift(differences: int) -> None:
    """The last verification found `differences` differences from the upstream."""
    MIRROR_DRIFT.set(differences)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def worker_started() -> None:
    """Count this process among the serving workers (call when a worker starts)."""
    WORKERS.set(1)


def worker_exited() -> None:
    """Drop this process from the workers, and its live gauges from the sums."""
    WORKERS.set(0)
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


async def endpoint(request: Request) -> Response:
    """`GET /metrics`: every worker's figures, summed, in Prometheus' text format."""
    POOL_SIZE.set(request.app.state.pool.get_size())  # fresh for this worker, idle or not
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class Observe:
    """Count, time and log every HTTP request, with its SQL statements and rows."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observation = Observation()
        token = _current.set(observation)
        status = 500  # unless a response starts
        started = time.perf_counter()

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            _current.reset(token)
            elapsed = time.perf_counter() - started
            # The route's template (e.g. /api/queue/v1/task/{taskId}), never the
            # raw path, so that labels stay few.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if observation.operation == "none" and route.startswith("/api/"):
                observation.operation = "rest"
            statements = sum(s.statements for s in observation.sql)
            rows = sum(s.rows for s in observation.sql)
            REQUESTS.labels(route, observation.operation, str(status)).inc()
            LATENCY.labels(route, observation.operation).observe(elapsed)
            SQL_STATEMENTS.labels(route).observe(statements)
            SQL_ROWS.labels(route).observe(rows)
            duration_ms = round(elapsed * 1000, 3)
            access_log.info(
                "%s %s %d %.1f ms, %d SQL statements, %d rows", scope["method"], scope["path"],
                status, duration_ms, statements, rows,
                extra={"method": scope["method"], "path": scope["path"], "route": route,
                       "operation": observation.operation, "status": status,
                       "duration_ms": duration_ms, "sql_statements": statements,
                       "sql_rows": rows})
