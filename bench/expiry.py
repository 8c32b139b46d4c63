"""`python -m bench.expiry --tasks 2000000`: expiry at scale, beside a following mirror.

On a scale database (bench/dataset_fast.py, built by `python -m bench --scale`),
`tcgraph.ingest.expire.expire` deletes `--expire` tasks (the oldest, with their
dependency edges, index entries and namespaces: a day of Firefox CI is about a
million) in its bounded batches, while a follower (tcgraph.ingest.follow) on the
same database applies pulse messages published at `--rate` per second by another
process (bench/follow.py's traffic: the Taskcluster 106 recording, copied with
fresh ids). A third connection samples pg_locks every 20 ms for lock waits
(`waitstart`), so that any wait longer than 100 ms is seen. After the expiry, a
`VACUUM tasks` runs while the follower goes on. Reported: the expiry's rate and
batch times, the follower's lag (p50, p99, max: from the moment a message was due
to be published to the commit of its batch), the longest lock wait seen and by
which statement, the dead rows left and the vacuum's time; load average too.

The expired tasks are deleted for good: run it after the scale series, or
rebuild the database after.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import asyncpg
import orjson

from bench import dataset_scale
from bench.follow import Traffic, _declare_queue, _options, _paced_publisher
from bench.measure import log
from bench.pg import BenchPostgres
from bench.stats import percentile
from tcgraph.config import Settings
from tcgraph.ingest.events import EXCHANGE_PREFIX, EXCHANGES
from tcgraph.ingest.expire import expire
from tcgraph.ingest.follow import follow
from tcgraph.ingest.mirror import BatchResult, Delivery
from tcgraph.store.pool import open_pool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from services.rabbitmq import running_rabbitmq  # noqa: E402
from services.replay import Recording, declare_exchanges, upstream_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOCK_SAMPLE_S = 0.02

# Lock waits now: who waits, since when, for what statement.
_WAITS = """
SELECT l.pid, (extract(epoch FROM now() - l.waitstart) * 1000)::float8 AS waited_ms, a.query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND l.waitstart IS NOT NULL AND a.datname = current_database()"""


async def _watch_locks(url: str, stop: asyncio.Event) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    longest: dict[str, Any] = {"waited_ms": 0.0, "query": None}
    samples = over_100 = 0
    try:
        while not stop.is_set():
            for row in await conn.fetch(_WAITS):
                if row["waited_ms"] > longest["waited_ms"]:
                    longest = {"waited_ms": round(row["waited_ms"], 1),
                               "query": " ".join(row["query"].split())[:200]}
                over_100 += row["waited_ms"] > 100
            samples += 1
            await asyncio.sleep(LOCK_SAMPLE_S)
    finally:
        await conn.close()
    return {**longest, "samples": samples, "samples_over_100_ms": over_100}


async def run(pg: BenchPostgres, tasks: int, doomed: int, rate: float,
              batch_size: int, seconds: float) -> dict[str, Any]:
    database = dataset_scale.database_name(tasks)
    url = pg.url(database)
    await dataset_scale.ensure(pg.url("postgres"), url, database, tasks, log)
    conn = await asyncpg.connect(url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM tasks")
        # tasks_expires_task_id: the expiry that deletes the oldest `doomed` tasks.
        before: datetime = await conn.fetchval(
            "SELECT expires FROM tasks ORDER BY expires, task_id OFFSET $1 LIMIT 1",
            min(doomed, stored - 1))
        expiring = await conn.fetchval("SELECT count(*) FROM tasks WHERE expires < $1", before)
    finally:
        await conn.close()
    log(f"expiry: {expiring:,} of {stored:,} tasks expire before {before.isoformat()}")
    rec = Recording.load()
    traffic = Traffic(rec)
    # The publisher's schedule should outlast the expiry (it is stopped when done).
    paced = traffic.copies(int(rate * seconds))[:int(rate * seconds)]
    served = Recording(messages=[], definitions=traffic.definitions)
    settings = Settings(pool_min_size=1, pool_max_size=4)
    from servers import serving  # tests/servers.py: uvicorn in a thread

    with running_rabbitmq() as broker, serving(upstream_app(served)) as upstream:
        await declare_exchanges(broker.url, [EXCHANGE_PREFIX + e for e in EXCHANGES])
        options = _options(broker.url, upstream)
        await _declare_queue(options)
        due: dict[tuple[str, str], float] = {}
        lags: list[tuple[float, float]] = []  # (commit time, lag ms)

        async def lag(deliveries: Sequence[Delivery], result: BatchResult) -> None:
            now = time.time()
            for d in deliveries:
                sent = due.pop((d.exchange, d.routing_key), None)
                if sent is not None:
                    lags.append((now, (now - sent) * 1000))

        follower_pool = await open_pool(url, settings)
        follower = asyncio.create_task(follow(follower_pool, options, on_batch=lag))
        plan = Path(tempfile.mkdtemp(prefix="tcgraph-bench-")) / "paced.jsonl"
        plan.write_bytes(b"".join(orjson.dumps([m.exchange, m.routing_key, list(m.cc),
                                                m.body.decode()]) + b"\n" for m in paced))
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        publisher = context.Process(target=_paced_publisher,
                                    args=(str(plan), broker.url, rate, sender))
        publisher.start()
        start = await asyncio.to_thread(receiver.recv)
        for i, m in enumerate(paced):
            due.setdefault((m.exchange, m.routing_key), start + i / rate)
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_locks(url, stop))
        # Ten seconds of following alone first: the lag without expiry.
        while time.time() < start + 10:
            await asyncio.sleep(0.1)
        expiry_pool = await open_pool(url, settings.with_(statement_timeout_ms=600_000))
        load_before = os.getloadavg()
        t0 = time.time()
        done = await expire(expiry_pool, now=before, batch_size=batch_size)
        t1 = time.time()
        async with expiry_pool.acquire() as conn:
            dead = await conn.fetchval(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'tasks'")
            await conn.execute("VACUUM tasks")
        t2 = time.time()
        await expiry_pool.close()
        stop.set()
        locks = await watcher
        publisher.terminate()
        publisher.join()
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await follower_pool.close()

    def window(a: float, b: float) -> dict[str, float | int]:
        values = [ms for at, ms in lags if a <= at <= b]
        if not values:
            return {"messages": 0}
        return {"messages": len(values), "p50_ms": round(percentile(values, 50), 1),
                "p99_ms": round(percentile(values, 99), 1), "max_ms": round(max(values), 1)}

    figures = {
        "tasks": stored, "expired_tasks": done.tasks, "expired_index_entries": done.index_entries,
        "expired_namespaces": done.namespaces, "batch_size": batch_size,
        "expiry_s": round(t1 - t0, 1), "expired_per_s": round(done.tasks / (t1 - t0)),
        "dead_rows_after": dead, "vacuum_s": round(t2 - t1, 1), "rate": rate,
        "lag_before_expiry": window(start, t0), "lag_during_expiry": window(t0, t1),
        "lag_during_vacuum": window(t1, t2), "longest_lock_wait": locks,
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
    }
    return figures


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.expiry", description=__doc__)
    p.add_argument("--tasks", type=int, default=2_000_000,
                   help="the scale database to use (built by python -m bench --scale)")
    p.add_argument("--expire", type=int, default=1_000_000, help="tasks to expire")
    p.add_argument("--rate", type=float, default=300.0, help="pulse messages per second")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=600.0,
                   help="the publisher's schedule; longer than the expiry and vacuum take")
    p.add_argument("--data-dir", type=Path, default=ROOT / ".bench")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "expiry.json")
    args = p.parse_args()
    pg = BenchPostgres(args.data_dir)
    pg.start()
    try:
        figures = asyncio.run(run(pg, args.tasks, args.expire, args.rate, args.batch_size,
                                     args.seconds))
    finally:
        pg.stop()
    figures = {"command": "python -m bench.expiry " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    text = orjson.dumps(figures, option=orjson.OPT_INDENT_2,
                        default=str)
    print(text.decode())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(text + b"\n")
    during = figures["lag_during_expiry"]
    met = during.get("p99_ms", 1e9) < 1000 and figures["longest_lock_wait"]["waited_ms"] < 100
    print("targets: follower p99 lag < 1 s during expiry, no lock wait > 100 ms: "
          + ("met" if met else "NOT met"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
