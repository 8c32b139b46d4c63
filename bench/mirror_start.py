"""`python -m bench.mirror_start --tasks 50000`: how long a new mirror's backfill takes.

A new mirror of a big deployment follows pulse from now on, and backfills the
history its label and index lookups need: recent task groups (every label's
latest tasks) and index subtrees. This measures that backfill, the way the
follower and `tcgraph backfill` do it (tcgraph.ingest.backfill: one
listTaskGroup or index page at a time, each written in its own transaction),
against the replay upstream (tests/services/replay.py) on 127.0.0.1.

The recording holds one small task group, so the upstream's answers are
synthesized: `tcgraph.demo.generate(tasks)` gives the listTaskGroup pages of ten
pushes and the index entries of their completed tasks; the replay app serves
them as queue.listTaskGroup, index.listNamespaces and index.listTasks do (1,000
per page). The figures (tasks per second, seconds per million tasks) include
the upstream's work, which runs in the same process: a real upstream over a
network is slower per page, and the walk is sequential, so its rate is bounded
by one page in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.measure import log
from bench.pg import BenchPostgres
from tcgraph.config import Settings
from tcgraph.demo import generate
from tcgraph.ingest import backfill
from tcgraph.ingest.upstream import Upstream
from tcgraph.store.migrate import migrate
from tcgraph.store.pool import open_pool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from services.replay import Recording, upstream_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "tcgraph_bench_mirror_start"


def recording(tasks: int) -> tuple[Recording, list[str], list[str]]:
    """The demo's documents as an upstream's answers: (recording, groups, top namespaces)."""
    rec = Recording(messages=[])
    groups: list[str] = []
    for document in generate(tasks):
        if not isinstance(document, dict):
            continue
        if "taskGroupId" in document:
            if document["taskGroupId"] not in groups:
                groups.append(document["taskGroupId"])
            for element in document["tasks"]:
                task_id = element["status"]["taskId"]
                rec.definitions[task_id] = element["task"]
                rec.statuses[task_id] = {"status": element["status"]}
        else:
            for entry in document["tasks"]:
                rec.found[entry["namespace"]] = entry
    tops = sorted({".".join(path.split(".")[:2]) for path in rec.found})
    return rec, groups, tops


async def run(pg: BenchPostgres, tasks: int) -> dict[str, Any]:
    from servers import serving  # tests/servers.py: uvicorn in a thread

    admin = await asyncpg.connect(pg.url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    url = pg.url(DATABASE)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    rec, groups, tops = recording(tasks)
    log(f"mirror_start: {len(rec.definitions):,} tasks in {len(groups)} groups, "
        f"{len(rec.found):,} index entries under {', '.join(tops)}")
    pool = await open_pool(url, Settings(pool_min_size=1, pool_max_size=2))
    try:
        with serving(upstream_app(rec)) as root:
            upstream = Upstream(root)
            try:
                load_before = os.getloadavg()
                t0, cpu0 = time.perf_counter(), time.process_time()
                walked = [await backfill.task_group(pool, upstream, g) for g in groups]
                t1, cpu1 = time.perf_counter(), time.process_time()
                indexed = [await backfill.index_namespace(pool, upstream, top) for top in tops]
                t2 = time.perf_counter()
            finally:
                await upstream.close()
        stored = await pool.fetchval("SELECT count(*) FROM tasks")
        entries = await pool.fetchval("SELECT count(*) FROM index_entries")
    finally:
        await pool.close()
    admin = await asyncpg.connect(pg.url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()
    backfilled = sum(w.tasks for w in walked)
    return {
        "tasks": backfilled, "stored_tasks": stored, "groups": len(groups),
        "group_s": round(t1 - t0, 1), "tasks_per_s": round(backfilled / (t1 - t0)),
        "s_per_million_tasks": round((t1 - t0) / backfilled * 1e6),
        "cpu_s_of_this_process": round(cpu1 - cpu0, 1),
        "index_entries": sum(i.index_entries for i in indexed), "stored_entries": entries,
        "index_s": round(t2 - t1, 1),
        "entries_per_s": round(sum(i.index_entries for i in indexed) / (t2 - t1)),
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
    }


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mirror_start", description=__doc__)
    p.add_argument("--tasks", type=int, default=50_000)
    p.add_argument("--data-dir", type=Path, default=ROOT / ".bench")
    p.add_argument("--json", type=Path,
                   default=ROOT / "bench" / "results" / "mirror_start.json")
    args = p.parse_args()
    pg = BenchPostgres(args.data_dir)
    pg.start()
    try:
        figures = asyncio.run(run(pg, args.tasks))
    finally:
        pg.stop()
    figures = {"command": "python -m bench.mirror_start " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
