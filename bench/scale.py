"""`python -m bench --scale 200000,2000000,30000000`: W1-W4 at each dataset size.

Each size is one ordinary bench run (bench/run.py: the floor, tcgraph in process
and over HTTP, PostGraphile, with the same keys and checks) on a database that
bench/dataset_fast.py builds (`Shape.firefox`: pushes of ~5,000 tasks over 29
days, 20,000 labels), without the concurrency series; the EXPLAIN (ANALYZE,
BUFFERS) plans are taken at the largest size only. Around each run it records:

* the build's time (load, indexes, analyse) from the database's bench.meta;
* table, TOAST and index sizes, in bytes per task (Taskcluster's own tasks
  table: ~160 GB for ~29 million rows, ~5.5 KB per task);
* the workloads' buffer cache hit ratio: pg_stat_statements' shared blocks hit
  and read, over the statements run at least as often as the timed runs
  (the workloads', not the one-off key picking);
* the load average before and after.

Everything goes to bench/results/scale.json, each size's own run to
bench/results/scale/<tasks>.json, and the table is printed.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import dataset_scale
from bench.measure import log
from bench.pg import BenchPostgres

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Taskcluster's tasks table on Firefox CI: ~160 GB for ~29 million rows.
TASKCLUSTER_BYTES_PER_TASK = 160e9 / 29e6
TABLES = ("tasks", "task_dependencies", "index_entries", "index_namespaces")


async def _prepare(pg: BenchPostgres, tasks: int) -> None:
    """Build (or reuse) the size's database, then zero the statement counters."""
    database = dataset_scale.database_name(tasks)
    await dataset_scale.ensure(pg.url("postgres"), pg.url(database), database, tasks, log)
    conn = await asyncpg.connect(pg.url("postgres"))  # where ensure made the extension
    try:
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def _measure(pg: BenchPostgres, tasks: int, runs: int) -> dict[str, Any]:
    """Sizes per task, the workloads' cache hit ratio, and the build's times."""
    database = dataset_scale.database_name(tasks)
    conn = await asyncpg.connect(pg.url(database))
    try:
        stored = await conn.fetchval("SELECT value::bigint FROM bench.meta "
                                     "WHERE key = 'stored_tasks'")
        sizes = {}
        for table in TABLES:
            row = await conn.fetchrow(
                "SELECT pg_relation_size($1::regclass) AS heap, "
                "pg_table_size($1::regclass) - pg_relation_size($1::regclass) AS toast, "
                "pg_indexes_size($1::regclass) AS indexes, "
                "pg_total_relation_size($1::regclass) AS total", table)
            sizes[table] = {k: int(v) for k, v in row.items()}
        indexes = {r["name"]: int(r["bytes"]) for r in await conn.fetch(
            "SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS bytes "
            "FROM pg_index WHERE indrelid::regclass::text = ANY($1) ORDER BY 2 DESC",
            list(TABLES))}
        admin = await asyncpg.connect(pg.url("postgres"))
        try:
            hits = await admin.fetchrow(
                "SELECT sum(shared_blks_hit) AS hit, sum(shared_blks_read) AS read "
                "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = $1 AND s.calls >= $2", database, runs)
        finally:
            await admin.close()
        meta = dict(await conn.fetch("SELECT key, value FROM bench.meta"))
        database_bytes = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    total = sum(t["total"] for t in sizes.values())
    hit, read = int(hits["hit"] or 0), int(hits["read"] or 0)
    return {
        "stored_tasks": stored,
        "build_s": {k: float(meta[k]) for k in ("load_s", "index_s", "analyze_s", "built_s",
                                                "cpu_s") if meta.get(k)},
        "bytes": sizes, "index_bytes": indexes, "database_bytes": int(database_bytes),
        "bytes_per_task": round(total / stored),
        "bytes_per_task_by_table": {t: round(s["total"] / stored) for t, s in sizes.items()},
        "taskcluster_bytes_per_task": round(TASKCLUSTER_BYTES_PER_TASK),
        "cache_hit_ratio": round(hit / (hit + read), 4) if hit + read else None,
        "blocks_hit": hit, "blocks_read": read,
    }


def series(args: Any) -> int:
    """Run the bench at each size of `args.scale`; write and print the series."""
    from bench.run import WORKLOADS, run

    sizes = [int(s) for s in args.scale.split(",") if s.strip()]
    out_dir = RESULTS / "scale"
    out_dir.mkdir(parents=True, exist_ok=True)
    pg = BenchPostgres(args.data_dir)
    failed = 0
    figures: list[dict[str, Any]] = []
    for tasks in sizes:
        started = time.perf_counter()
        load_before = os.getloadavg()
        pg.start()
        asyncio.run(_prepare(pg, tasks))
        one = copy.copy(args)
        one.tasks, one.fast_dataset, one.concurrency_seconds = tasks, True, 0
        one.only = [w for w in args.only if w in WORKLOADS]
        one.no_explain = tasks != max(sizes) or args.no_explain
        one.json, one.plot = out_dir / f"{tasks}.json", out_dir / f"{tasks}.png"
        one.plans, one.docs = out_dir / f"plans-{tasks}.md", None
        failed = max(failed, asyncio.run(run(one)))
        pg.start()
        measured = asyncio.run(_measure(pg, tasks, one.runs))
        figures.append({"tasks": tasks, **measured, "load_avg_before": load_before,
                        "load_avg_after": os.getloadavg(),
                        "duration_s": round(time.perf_counter() - started),
                        "results": orjson.loads(one.json.read_bytes())["results"]})
        log(f"scale: {tasks:,} tasks: {measured['bytes_per_task']:,} bytes per task, cache "
            f"hit ratio {measured['cache_hit_ratio']}, load {os.getloadavg()[0]:.1f}")
    if not args.keep_running:
        pg.stop()
    path = RESULTS / "scale.json"
    path.write_bytes(orjson.dumps({"command": f"python -m bench --scale {args.scale}",
                                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "cpus": os.cpu_count(), "sizes": figures},
                                  option=orjson.OPT_INDENT_2) + b"\n")
    print(markdown(figures))
    print(f"wrote {path.relative_to(ROOT)}")
    return failed


def markdown(figures: list[dict[str, Any]]) -> str:
    """The series as docs/scaling.md shows it: medians per size, and the sizes."""
    sizes = [f["tasks"] for f in figures]
    rows: dict[tuple[str, int, str], dict[int, float]] = {}
    for f in figures:
        for r in f["results"]:
            if r.get("median_ms") is not None:
                key = (r["workload"], r["keys"], r["series"])
                rows.setdefault(key, {})[f["tasks"]] = r["median_ms"]
    head = ("| workload | keys | series | " + " | ".join(f"{s:,} ms" for s in sizes)
            + " | largest / smallest |")
    lines = [head, "|" + " --- |" * (len(sizes) + 4)]
    for (workload, keys, series_name), by_size in sorted(rows.items()):
        cells = [f"{by_size[s]:,.1f}" if s in by_size else "" for s in sizes]
        first, last = by_size.get(sizes[0]), by_size.get(sizes[-1])
        ratio = f"{last / first:.2f}x" if first and last else ""
        lines.append(f"| {workload} | {keys:,} | {series_name} | " + " | ".join(cells)
                     + f" | {ratio} |")
    lines += ["", "| tasks | built in s (load + indexes + analyse; server CPU s) | "
              "bytes per task (tasks, dependencies, index entries, namespaces) | database | "
              "cache hit ratio | load average before / after |",
              "| --- | --- | --- | --- | --- | --- |"]
    for f in figures:
        b = f["build_s"]
        per = f["bytes_per_task_by_table"]
        cpu = f"; {b['cpu_s']:,.0f} CPU s" if "cpu_s" in b else ""
        lines.append(
            f"| {f['stored_tasks']:,} | {b.get('built_s', 0):,.0f} ({b.get('load_s', 0):,.0f} + "
            f"{b.get('index_s', 0):,.0f} + {b.get('analyze_s', 0):,.0f}{cpu}) | "
            f"{f['bytes_per_task']:,} ({', '.join(f'{per[t]:,}' for t in TABLES)}) | "
            f"{f['database_bytes'] / 1e9:,.2f} GB | {f['cache_hit_ratio']} | "
            f"{f['load_avg_before'][0]:.1f} / {f['load_avg_after'][0]:.1f} |")
    return "\n".join(lines)
