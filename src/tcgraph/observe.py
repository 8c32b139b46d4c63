"""The HTTP side of the metrics: every request counted and logged, and `GET /metrics`.

`Observe` wraps every HTTP request: it counts it by route, GraphQL operation
type and status, times it, records the SQL statements and rows it ran, and
writes one access-log line (`tcgraph.access`). `OperationType` names the
GraphQL operation for it. The figures themselves live in `metrics.py`.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from tcgraph import metrics
from tcgraph.store.pool import pool_figures

access_log = logging.getLogger("tcgraph.access")


async def endpoint(request: Request) -> Response:
    """`GET /metrics`: every worker's figures, summed, in Prometheus' text format."""
    # This worker's pool, as it is now; the other workers report theirs (server.py).
    metrics.report_pool(pool_figures(request.app.state.pool))
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


class OperationType(SchemaExtension):
    """Names the executed GraphQL operation's type (query, mutation) in the request's figures."""

    def on_execute(self):  # type: ignore[no-untyped-def]  # a generator hook
        metrics.note_operation(self.execution_context.operation_type.value)
        yield


class Observe:
    """Count, time and log every HTTP request, with its SQL statements and rows."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts
        started = time.perf_counter()

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with metrics.observing() as observation:
            try:
                await self.app(scope, receive, observing_send)
            finally:
                elapsed = time.perf_counter() - started
                # The route's template (e.g. /api/queue/v1/task/{taskId}), never
                # the raw path, so that labels stay few.
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                if observation.operation == "none" and route.startswith("/api/"):
                    observation.operation = "rest"
                statements, rows = metrics.record_request(
                    route, observation.operation, status, elapsed, observation.sql)
                duration_ms = round(elapsed * 1000, 3)
                access_log.info(
                    "%s %s %d %.1f ms, %d SQL statements, %d rows", scope["method"],
                    scope["path"], status, duration_ms, statements, rows,
                    extra={"method": scope["method"], "path": scope["path"], "route": route,
                           "operation": observation.operation, "status": status,
                           "duration_ms": duration_ms, "sql_statements": statements,
                           "sql_rows": rows})
