"""`python -m bench.breakdown`: where the milliseconds of one W1 request go, stage by stage.

On the bench's database (`python -m bench` builds it), W1 with `--keys`
labels (default 10,000), each stage timed on its own, `--runs` times, median:

* parse: graphql-core's `parse` of the document;
* validate: graphql-core's `validate` against tcgraph's schema;
* cost: tcgraph's cost walk (`measure.document_demands`), which coerces the
  variables itself (the 10,000 labels) before walking the selection;
* coerce: graphql-core coercing the variables once more for execution;
* execute: `schema.execute` in process, whole (the four stages above, the
  resolvers, the SQL); of it, `SQL wait` is the time its statements took
  (tcgraph's own count: acquire, execute, decode; statements at once add up,
  `SQL wall` is the longest of them when they ran at once);
* JSON: `orjson.dumps` of the result (the rows are JSON PostgreSQL built,
  passed through as fragments);
* app: the same request through tcgraph's whole ASGI app in process (httpx's
  ASGI transport: middleware, the GraphQL view decoding the body, execute,
  encoding); `view` is app minus execute;
* HTTP: `POST /graphql` on tcgraph's uvicorn (`bench.server`), from the
  client's first byte to its last, minus the in-process app (uvicorn,
  loopback, the client);
* floor/http: the true floor on the same uvicorn, for scale.

Only ever against a server it starts itself on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from graphql import build_schema as build_graphql_schema
from graphql import parse, validate

from bench import dataset, workloads
from bench import server as bench_server
from bench.measure import TcgraphServer
from bench.pg import BenchPostgres, database_name

ROOT = Path(__file__).resolve().parent.parent


def _median_ms(runs: int, work: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def _amedian_ms(runs: int, work: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(url: str, base: str, size: int, runs: int) -> dict[str, float]:
    from graphql.execution.values import get_variable_values

    from tcgraph.api.context import Context
    from tcgraph.api.schema import build_schema
    from tcgraph.measure import choose_operation, document_demands
    from tcgraph.server import create_app
    from tcgraph.store.pool import open_pool

    keys = await dataset.pick_keys(url, size)
    variables = {"labels": dataset.take(keys.labels, size)}
    query = workloads.DOCS["W1"]
    settings = bench_server.settings()
    schema = build_schema(settings)
    graphql_schema = build_graphql_schema(schema.as_str())  # what the cost walk reads
    document = parse(query)
    operation = choose_operation(document, None)
    assert operation is not None
    pool = await open_pool(url, settings)
    out: dict[str, float] = {}
    try:
        out["parse"] = _median_ms(runs, lambda: parse(query))
        out["validate"] = _median_ms(runs, lambda: validate(schema._schema, document))
        out["cost"] = _median_ms(runs, lambda: document_demands(
            graphql_schema, document, None, variables, settings.default_page_size))
        out["coerce"] = _median_ms(runs, lambda: get_variable_values(
            schema._schema, operation.variable_definitions or (), variables))
        sql_ms: list[float] = []
        result: list[Any] = []

        async def execute() -> None:
            context = Context.create(pool, settings)
            result[:] = [await schema.execute(query, variable_values=variables,
                                              context_value=context)]
            sql_ms.append(context.db.stats.ms)

        await execute()
        out["execute"] = await _amedian_ms(runs, execute)
        out["SQL wait"] = statistics.median(sql_ms[1:])
        data = result[0].data
        out["JSON"] = _median_ms(runs, lambda: orjson.dumps({"data": data}))
        body = orjson.dumps({"query": query, "variables": variables})
        app = create_app(settings, url)
        app.state.pool = pool  # the ASGI transport runs no lifespan, which would open it
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1") as asgi:
            async def in_app() -> None:
                r = await asgi.post("/graphql", content=body,
                                    headers={"content-type": "application/json"})
                r.raise_for_status()

            await in_app()
            out["app"] = await _amedian_ms(runs, in_app)
        out["view"] = out["app"] - out["execute"]
        with httpx.Client(base_url=base, timeout=300, trust_env=False) as client:
            def post(path: str) -> Callable[[], Any]:
                return lambda: client.post(path, content=body,
                                           headers={"content-type": "application/json"})

            post("/graphql")()
            out["tcgraph/http"] = _median_ms(runs, post("/graphql"))
            post(bench_server.FLOOR_PATH + "/W1")()
            out["floor/http"] = _median_ms(runs, post(bench_server.FLOOR_PATH + "/W1"))
        out["HTTP"] = out["tcgraph/http"] - out["app"]
    finally:
        await pool.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.breakdown",
                                description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=200_000, help="the dataset (as python -m bench)")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--data-dir", type=Path, default=ROOT / ".bench")
    args = p.parse_args(argv)
    pg = BenchPostgres(args.data_dir)
    pg.start()
    url = pg.url(database_name(args.tasks))
    server = TcgraphServer(url, args.data_dir)
    try:
        server.start()
        found = asyncio.run(measure(url, server.base, args.keys, args.runs))
    finally:
        server.stop()
        pg.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"W1, {args.keys:,} labels, median of {args.runs}; load average {load}")
    for stage, ms in found.items():
        print(f"  {stage:<14} {ms:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
