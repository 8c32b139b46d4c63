"""`python -m bench.scaling`: tcgraph on a primary, through pgbouncer, and on a hot standby.

Everything runs on 127.0.0.1 in a temporary directory this command creates
and removes: an embedded PostgreSQL primary filled with the demo dataset, a
streaming hot standby of it (pg_basebackup), Debian's pgbouncer in
transaction pooling mode in front of the primary, and one `tcgraph serve` per
setup. For each setup, `--clients` concurrent clients send a fixed mix of
documents for `--seconds`; then the primary takes `--commits` small imports
and the standby's replay lag is measured for each commit (the time from the
commit until pg_last_wal_replay_lsn on the standby reaches it). The services
are the ones the tests use (tests/services/postgres.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from services.postgres import PgBouncer, Standby  # noqa: E402  (the tests' own services)

from bench.pg import free_port  # noqa: E402
from tcgraph.config import Settings  # noqa: E402
from tcgraph.demo import write_demo  # noqa: E402
from tcgraph.store.embedded import EmbeddedPostgres  # noqa: E402
from tcgraph.store.migrate import migrate  # noqa: E402
from tcgraph.store.pool import open_pool  # noqa: E402


async def _create_database(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _fill(url: str, tasks: int) -> tuple[list[str], list[str]]:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await open_pool(url, Settings(pool_max_size=2))
    try:
        await write_demo(pool, tasks=tasks)
    finally:
        await pool.close()
    conn = await asyncpg.connect(url)
    try:
        labels = [r[0] for r in await conn.fetch("SELECT DISTINCT label FROM tasks ORDER BY 1")]
        paths = [r[0] for r in await conn.fetch(
            "SELECT namespace || '.' || name FROM index_entries ORDER BY 1")]
    finally:
        await conn.close()
    return labels, paths


def _mix(labels: list[str], paths: list[str],
         rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    mix = []
    for _ in range(20):
        mix.append(("/graphql", {
            "query": "query ($l: [String!]!) { labels(labels: $l) { label latest { taskId "
                     "status { state expires } } } }",
            "variables": {"l": rng.sample(labels, min(100, len(labels)))}}))
        mix.append(("/graphql", {
            "query": "query ($p: [String!]!) { indexedTasks(indexPaths: $p) { taskId "
                     "task { status { state expires } } } }",
            "variables": {"p": rng.sample(paths, min(100, len(paths)))}}))
        mix.append(("/api/index/v1/tasks/indexes",
                    {"indexes": rng.sample(paths, min(200, len(paths)))}))
    return mix


def _serve(read_url: str, write_url: str, env: dict[str, str], log: Path
           ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tcgraph", "serve", "--database-url", write_url,
         "--read-database-url", read_url, "--port", str(port)],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TCGRAPH_")}, **env},
        stdout=subprocess.DEVNULL, stderr=log.open("w"), stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tcgraph serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("tcgraph serve did not become ready")


async def _load(base: str, mix: list[tuple[str, dict[str, Any]]], clients: int, seconds: float
                ) -> dict[str, object]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    until = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient, rng: random.Random) -> None:
        while time.monotonic() < until:
            path, body = rng.choice(mix)
            started = time.monotonic()
            response = await http.post(path, json=body)
            latencies.append((time.monotonic() - started) * 1000)
            statuses[response.status_code] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        began = time.monotonic()
        await asyncio.gather(*(client(http, random.Random(i)) for i in range(clients)))
        took = time.monotonic() - began
    latencies.sort()
    return {"requests": len(latencies), "per_second": round(len(latencies) / took, 1),
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


async def _lag(primary: str, standby: str, commits: int) -> dict[str, float]:
    """Replay lag of `commits` small imports, each measured from its commit."""
    lags = []
    pool = await open_pool(primary, Settings(pool_max_size=2))
    watcher = await asyncpg.connect(standby)
    try:
        for seed in range(commits):
            await write_demo(pool, tasks=50, seed=1000 + seed)
            committed = time.monotonic()
            lsn = await pool.fetchval("SELECT pg_current_wal_lsn()")
            while not await watcher.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn):
                await asyncio.sleep(0.001)
            lags.append((time.monotonic() - committed) * 1000)
    finally:
        await watcher.close()
        await pool.close()
    lags.sort()
    return {"commits": commits, "median_ms": round(statistics.median(lags), 1),
            "max_ms": round(lags[-1], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="demo dataset size")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--json", type=Path, help="append the report to this JSON Lines file")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="tcgraph-scaling-"))
    primary = EmbeddedPostgres(tmp / "primary")
    bouncer: PgBouncer | None = None
    standby: Standby | None = None
    servers: list[subprocess.Popen[bytes]] = []
    report: dict[str, object] = {"tasks": args.tasks, "clients": args.clients,
                                 "seconds": args.seconds}
    try:
        admin = primary.start()
        url = admin.replace("/postgres?", "/tcgraph?")
        asyncio.run(_create_database(admin, "tcgraph"))
        labels, paths = asyncio.run(_fill(url, args.tasks))
        standby = Standby(admin, tmp / "standby")
        standby.create()
        standby.start()
        bouncer = PgBouncer(admin, tmp / "pgbouncer", pool_size=10)
        bouncer.start()
        mix = _mix(labels, paths, random.Random(1))
        setups = {
            "primary": (url, {}),
            "pgbouncer": (bouncer.url("tcgraph"), {"TCGRAPH_STATEMENT_CACHE_SIZE": "0"}),
            "standby": (standby.url("tcgraph"), {}),
            # What the statement cache does behind pgbouncer 1.18's transaction pooling.
            "pgbouncer_statement_cache_on": (bouncer.url("tcgraph"), {}),
        }
        for name, (read_url, env) in setups.items():
            process, base = _serve(read_url, url, env, tmp / f"{name}.log")
            servers.append(process)
            try:
                report[name] = asyncio.run(_load(base, mix, args.clients, args.seconds))
            finally:
                process.terminate()
                process.wait(timeout=60)
            print(f"{name}: {report[name]}", file=sys.stderr)
        report["replication_lag"] = asyncio.run(_lag(url, standby.url("tcgraph"), args.commits))
        print(f"replication lag: {report['replication_lag']}", file=sys.stderr)
    finally:
        for process in servers:
            if process.poll() is None:
                process.terminate()
        if bouncer is not None:
            bouncer.stop()
        if standby is not None:
            standby.remove()
        primary.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
