"""Prometheus metrics: what tcgraph served, what it cost, and what it refused.

This module holds the figures and the functions that move them; it loads
prometheus-client only, so the store and the follower report through it
without loading the web stack. `observe.py` is the HTTP side: the middleware
that counts every request and the `GET /metrics` endpoint.

With several server processes (`serve --workers N`) tcgraph points
prometheus-client's variable (`config.MULTIPROC_ENV`) at a directory of its own
before the workers start, and every figure is the sum over the workers, whichever of
them answers the scrape (prometheus-client's multiprocess mode). The variable
must be set before this module is imported.

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

import contextlib
import contextvars
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

from tcgraph.config import MULTIPROC_ENV

if TYPE_CHECKING:
    from tcgraph.store.pool import PoolFigures, SqlStats


REQUESTS = Counter("tcgraph_requests", "HTTP requests answered",
                   ["route", "operation", "status"])
LATENCY = Histogram("tcgraph_request_duration_seconds", "Time to answer a request",
                    ["route", "operation"])
SQL_STATEMENTS = Histogram("tcgraph_request_sql_statements", "SQL statements run per request",
                           ["route"], buckets=(0, 1, 2, 3, 4, 5, 8, 13, 21, 50, 100))
SQL_ROWS = Histogram("tcgraph_request_sql_rows", "Rows PostgreSQL returned per request",
                     ["route"], buckets=(0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000))
# Pool figures are read from the pool when reported (`report_pool`); `livesum`
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
# Subscriptions (api/subscriptions/).
WS_CONNECTIONS = Gauge("tcgraph_ws_connections", "Open WebSocket connections",
                       multiprocess_mode="livesum")
SUBSCRIPTIONS = Gauge("tcgraph_subscriptions", "Subscriptions being served",
                      multiprocess_mode="livesum")
SUBSCRIPTION_EVENTS = Counter("tcgraph_subscription_events", "TaskChange events sent")
SUBSCRIPTION_DROPS = Counter("tcgraph_subscription_clients_dropped",
                             "WebSocket clients closed by the server, by reason", ["reason"])
BURST_STATEMENTS = Histogram("tcgraph_subscription_burst_sql_statements",
                             "SQL statements per change-feed burst (all subscribers together)",
                             buckets=(1, 2, 3, 4, 5, 8, 13, 21, 50))

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


@contextlib.contextmanager
def observing() -> Iterator[Observation]:
    """The figures of the request served inside the block (`track_sql`, `note_operation`)."""
    observation = Observation()
    token = _current.set(observation)
    try:
        yield observation
    finally:
        _current.reset(token)


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


def note_errors(extensions: Iterable[Mapping[str, object] | None]) -> None:
    """Count the errors a response reports, by code, and the limits among them."""
    for ext in extensions:
        code = str((ext or {}).get("code") or "UNCODED")
        ERRORS.labels(code).inc()
        limit = (ext or {}).get("limit")
        if code == "LIMIT_EXCEEDED" and limit:
            LIMIT_REFUSALS.labels(str(limit)).inc()


def report_pool(figures: PoolFigures) -> None:
    """Set the pool gauges to `figures`, read from the pool just now."""
    POOL_SIZE.set(figures.size)
    POOL_IN_USE.set(figures.in_use)
    POOL_WAITING.set(figures.waiting)


def record_request(route: str, operation: str, status: int, elapsed_s: float,
                   sql: Iterable[SqlStats]) -> tuple[int, int]:
    """Count one answered request; returns its SQL statements and rows."""
    stats = list(sql)
    statements = sum(s.statements for s in stats)
    rows = sum(s.rows for s in stats)
    REQUESTS.labels(route, operation, str(status)).inc()
    LATENCY.labels(route, operation).observe(elapsed_s)
    SQL_STATEMENTS.labels(route).observe(statements)
    SQL_ROWS.labels(route).observe(rows)
    return statements, rows


def follower_message(exchange: str) -> None:
    """The follower handled one message from `exchange`."""
    FOLLOWER_MESSAGES.labels(exchange).inc()


def follower_lag(seconds: float) -> None:
    """How old the newest message the follower handled was when it was handled."""
    FOLLOWER_LAG.set(seconds)


def follower_error(code: str) -> None:
    """The follower could not handle a message, for reason `code`."""
    FOLLOWER_ERRORS.labels(code).inc()


def ws_connections(delta: int) -> None:
    """A WebSocket connection opened (+1) or closed (-1)."""
    WS_CONNECTIONS.inc(delta)


def subscriptions(delta: int) -> None:
    """A subscription started (+1) or ended (-1)."""
    SUBSCRIPTIONS.inc(delta)


def subscription_events(count: int = 1) -> None:
    """`count` TaskChange events handed to clients."""
    SUBSCRIPTION_EVENTS.inc(count)


def client_dropped(reason: str) -> None:
    """The server closed a WebSocket client, for `reason` (slow, feed_lost, ...)."""
    SUBSCRIPTION_DROPS.labels(reason).inc()


def burst_statements(count: int) -> None:
    """The change feed read and loaded one burst of changes with `count` statements."""
    BURST_STATEMENTS.observe(count)


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
    """Whether the figures are kept in files, to be summed over several worker processes."""
    return bool(os.environ.get(MULTIPROC_ENV))


def worker_started() -> None:
    """Count this process among the serving workers (call when a worker starts)."""
    WORKERS.set(1)


def worker_exited() -> None:
    """Drop this process from the workers, and its live gauges from the sums."""
    WORKERS.set(0)
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """Every figure in Prometheus' text format, summed over the live workers if several."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
