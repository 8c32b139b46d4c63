"""The Starlette application: routes, and the pool's life from start to stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

from tcgraph import logs, metrics, observe, probes
from tcgraph.api import graphiql, references
from tcgraph.api import live as live_page
from tcgraph.api.graphql import GraphQLApp
from tcgraph.api.middleware import (
    REQUEST_ID_HEADER, AllowedHosts, BodyDeadline, BodyLimit, RequestId,
)
from tcgraph.api.rest.errors import API_PREFIX, routing_error
from tcgraph.api.rest.routes import ROUTES as REST_ROUTES
from tcgraph.api.subscriptions.hub import Hub
from tcgraph.api.schema import build_schema
from tcgraph.config import MULTIPROC_ENV, Settings
from tcgraph.errors import HTTP_CODES, error_body
from tcgraph.store.pool import open_pool, pool_figures

if TYPE_CHECKING:  # the follower's modules load only when it runs
    from tcgraph.ingest.follow import FollowOptions

_READY_TIMEOUT_S = 2.0
# With several workers, how often each writes its pool's figures for the
# others to sum (one worker alone reports its pool when it is scraped).
POOL_REPORT_S = 1.0
# Routes that build no URL answer any `Host`: probes and scrapers (load
# balancers, orchestrators, Prometheus) often name the instance by its address.
ANY_HOST_PATHS = ("/health/live", "/health/ready", "/metrics")


async def live(request: Request) -> JSONResponse:
    """The process is up (says nothing about the database)."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    """The database answers: ready to serve queries."""
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            await request.app.state.pool.fetchval("SELECT 1")
    except Exception as e:  # any failure to answer means not ready, whatever its kind
        return JSONResponse({"status": "unavailable", "reason": type(e).__name__}, status_code=503)
    return JSONResponse({"status": "ok"})


async def _report_pool(pool: asyncpg.Pool) -> None:
    """Keep this worker's pool figures current for a scrape another worker answers."""
    while True:
        metrics.report_pool(pool_figures(pool))
        await asyncio.sleep(POOL_REPORT_S)


async def http_error(request: Request, exc: Exception) -> Response:
    """Routing's refusals (404, 405): Taskcluster's error body under `/api/`, else a GraphQL one."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(API_PREFIX) and exc.status_code in (404, 405):
        return routing_error(request, exc.status_code, exc.headers)
    code = HTTP_CODES.get(exc.status_code, "BAD_REQUEST")
    metrics.note_errors([{"code": code}])
    return Response(error_body(f"{exc.detail}: {request.method} {request.url.path}", code),
                    status_code=exc.status_code, headers=exc.headers,
                    media_type="application/json")


# The youngest generation is collected after this many net allocations (CPython: 700).
GC_YOUNG_THRESHOLD = 10_000


def _tune_collector() -> None:
    """Keep the garbage collector's pauses short for a long-running server.

    The modules, the schema and the pool live as long as the process; they are
    frozen out of every later collection (a full collection walks every object
    it tracks, pausing the event loop meanwhile). And the youngest generation
    is collected less often: at thousands of WebSocket frames a second, objects
    in flight (deliveries, frames) were caught young, promoted, and brought a
    full collection every few seconds. Under bench subscriptions' 5,000
    subscribers the two together took the p99 from about 300 ms to under 100 ms.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def create_app(settings: Settings, database_url: str, *, follow: FollowOptions | None = None,
               write_database_url: str | None = None) -> Starlette:
    """The ASGI app serving `database_url` (already migrated) with `settings`.

    With `follow`, the app also runs the follower (ingest.follow) into
    `write_database_url` (default: `database_url`) for as long as it serves.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await open_pool(database_url, settings, tolerate_outage=True)
        # LISTEN needs the primary, directly (not a replica, not a transaction-pooling pgbouncer).
        app.state.hub = Hub(app.state.pool, settings, settings.listen_database_url
                            or write_database_url or settings.database_url or database_url)
        app.state.hub.start()
        metrics.worker_started()
        reporter = (asyncio.create_task(_report_pool(app.state.pool))
                    if metrics.multiprocess_mode() else None)
        # The probe process (serve --ops-port) reads this loop's heartbeat.
        heartbeat = (asyncio.create_task(probes.beat(Path(os.environ[MULTIPROC_ENV])))
                     if settings.ops_port else None)
        follower = None
        if follow is not None:
            from tcgraph.ingest.follow import run

            follower = asyncio.create_task(run(write_database_url or database_url, settings,
                                               follow))
        _tune_collector()
        try:
            yield
        finally:
            for task in (follower, reporter, heartbeat):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await app.state.hub.stop()
            await app.state.pool.close()
            metrics.worker_exited()

    graphql = GraphQLApp(build_schema(settings), settings)
    routes = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/metrics", observe.endpoint, methods=["GET"]),
        *REST_ROUTES,
        *references.routes,
        *live_page.routes,
        *([Mount(graphiql.STATIC_PATH, graphiql.static_files(), name="graphiql-static")]
          if settings.graphiql else []),
    ]
    middleware = [
        Middleware(RequestId),
        Middleware(observe.Observe),
        Middleware(AllowedHosts, allowed_hosts=settings.allowed_host_list,
                   any_host_paths=ANY_HOST_PATHS),
        Middleware(BodyDeadline, timeout_s=settings.body_timeout_ms / 1000),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
    ]
    # Pages on other origins may call tcgraph from a browser only if their origin is listed.
    if settings.cors_origin_list:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"], allow_headers=["content-type", "authorization"],
            expose_headers=[REQUEST_ID_HEADER]))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={HTTPException: http_error})
    app.state.settings = settings
    app.state.websockets = graphql.websockets
    return app


def app_from_environment() -> Starlette:
    """The app as `TCGRAPH_*` variables describe it (for `serve --workers N`)."""
    settings = Settings.from_env()
    logs.configure(settings.verbose, settings.log_format)
    url = settings.read_database_url or settings.database_url
    if not url:
        raise RuntimeError("TCGRAPH_DATABASE_URL must be set")
    return create_app(settings, url)
