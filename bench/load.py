"""`python -m bench.load`: a bounded load test of `tcgraph serve` on 127.0.0.1.

N concurrent clients send a mix of real documents (label and index-path
batches, task lookups, a task-group page, a Taskcluster batch REST call) for a
fixed time, and the run reports throughput, p50/p99 latency, errors by status
and the server's memory. `--restart-at S` stops PostgreSQL S seconds in and
starts it again `--outage` seconds later: while it is down only 503s are
allowed, and once it is back every request must succeed again.

Only ever against a server this command starts itself on 127.0.0.1; every loop
is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import psutil

from bench import dataset
from bench.pg import BenchPostgres, database_name, free_port
from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    started: float  # seconds since the run began
    ms: float
    status: int  # 0: the connection failed
    error: str = ""  # the exception's name, when status is 0


@dataclass
class Report:
    workers: int
    clients: int
    seconds: float
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    connection_errors: dict[str, int]
    rss_mb_start: float
    rss_mb_end: float
    rss_mb_peak: float
    outage: dict[str, object] = field(default_factory=dict)


def _documents(keys: dataset.Keys, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, JSON body) of the request mix: what CI tools and UIs send."""
    labels = keys.labels
    paths = keys.paths

    def sample(pool: list[str], n: int) -> list[str]:
        return rng.sample(pool, min(n, len(pool)))

    mix: list[tuple[str, str, dict[str, Any]]] = []
    for _ in range(20):
        mix.append(("POST", "/graphql", {
            "query": "query ($l: [String!]!) { labels(labels: $l) { label latest { taskId "
                     "status { state expires } } } }",
            "variables": {"l": sample(labels, 100)}}))
        mix.append(("POST", "/graphql", {
            "query": "query ($p: [String!]!) { indexedTasks(indexPaths: $p) { taskId "
                     "task { status { state expires runs { state } } } } }",
            "variables": {"p": sample(paths, 100)}}))
        mix.append(("POST", "/graphql", {
            "query": "query ($l: String!) { label(label: $l) { lastSuccess { taskId } "
                     "lastFailure { taskId } history(first: 10) { nodes { taskId created } } } }",
            "variables": {"l": rng.choice(labels)}}))
        mix.append(("POST", "/graphql", {
            "query": "query ($g: ID!) { taskGroup(taskGroupId: $g) { tasks(first: 100) { "
                     "nodes { taskId label status { state } dependencies { status { state } } } "
                     "pageInfo { hasNextPage } } } }",
            "variables": {"g": keys.w3_group}}))
        mix.append(("POST", "/api/index/v1/tasks/indexes", {"indexes": sample(paths, 200)}))
    return mix


async def _client(client: httpx.AsyncClient, mix: list[tuple[str, str, dict[str, Any]]],
                  rng: random.Random, begin: float, until: float, samples: list[Sample]) -> None:
    while time.monotonic() < until:
        method, path, body = rng.choice(mix)
        started = time.monotonic()
        error = ""
        try:
            response = await client.request(method, path, json=body)
            status = response.status_code
        except httpx.HTTPError as e:
            status, error = 0, f"{type(e).__name__}: {e}"[:200]
        samples.append(Sample(started - begin, (time.monotonic() - started) * 1000, status, error))


def _rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes."""
    try:
        process = psutil.Process(pid)
        total: int = process.memory_info().rss
        for child in process.children(recursive=True):
            total += child.memory_info().rss
    except psutil.NoSuchProcess:
        return 0.0
    return total / 2**20


async def _run(base: str, pid: int, keys: dataset.Keys, args: argparse.Namespace,
               pg: BenchPostgres) -> Report:
    rng = random.Random(1)
    mix = _documents(keys, rng)
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    rss: list[float] = [_rss_mb(pid)]
    outage: dict[str, object] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits,
                                 trust_env=False) as client:
        begin = time.monotonic()
        until = begin + args.seconds

        async def watch_memory() -> None:
            while time.monotonic() < until:
                rss.append(_rss_mb(pid))
                await asyncio.sleep(1)

        async def restart_postgres() -> None:
            await asyncio.sleep(args.restart_at)
            outage["down_at_s"] = round(time.monotonic() - begin, 2)
            await asyncio.to_thread(pg.stop)
            outage["stopped_at_s"] = round(time.monotonic() - begin, 2)
            await asyncio.sleep(args.outage)
            await asyncio.to_thread(pg.start)
            outage["up_at_s"] = round(time.monotonic() - begin, 2)

        tasks = [_client(client, mix, random.Random(i), begin, until, samples)
                 for i in range(args.clients)]
        extra = [watch_memory()]
        if args.restart_at is not None:
            extra.append(restart_postgres())
        await asyncio.gather(*tasks, *extra)
    elapsed = args.seconds
    ok = sorted(s.ms for s in samples if s.status == 200)
    statuses = Counter(str(s.status) for s in samples)
    if args.restart_at is not None:
        down, up = cast(float, outage["down_at_s"]), cast(float, outage["up_at_s"])
        during = [s for s in samples if down <= s.started < up]
        # Requests sent once PostgreSQL answered again; the first seconds after
        # are the pool noticing that its old connections are gone.
        recovered_by = None
        failures_after = [s for s in samples if s.started >= up and s.status != 200]
        if failures_after:
            recovered_by = max(s.started for s in failures_after) - up
        outage.update(
            statuses_while_down=dict(Counter(str(s.status) for s in during)),
            non_503_errors_while_down=sum(1 for s in during if s.status not in (200, 503)),
            failures_after_up=len(failures_after),
            recovered_within_s=round(recovered_by, 2) if recovered_by is not None else 0.0,
            failures_after_recovery=sum(
                1 for s in samples
                if s.started >= up + (recovered_by or 0) + 0.001 and s.status != 200),
        )
    return Report(
        workers=args.workers, clients=args.clients, seconds=elapsed, requests=len(samples),
        per_second=round(len(samples) / elapsed, 1),
        p50_ms=round(percentile(ok, 50), 1) if ok else float("nan"),
        p99_ms=round(percentile(ok, 99), 1) if ok else float("nan"),
        statuses=dict(statuses),
        connection_errors=dict(Counter(s.error for s in samples if s.status == 0)),
        rss_mb_start=round(rss[0], 1), rss_mb_end=round(rss[-1], 1),
        rss_mb_peak=round(max(rss), 1), outage=outage)


def serve(url: str, workers: int, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`tcgraph serve --workers N` on a free 127.0.0.1 port, once ready: (process, base URL)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCGRAPH_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tcgraph", "serve", "--database-url", url, "--port", str(port),
         "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tcgraph serve exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=2, trust_env=False).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("tcgraph serve did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200_000,
                        help="dataset size (as python -m bench)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".bench")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=1, help="tcgraph serve --workers")
    parser.add_argument("--restart-at", type=float, help="stop PostgreSQL this many seconds in")
    parser.add_argument("--outage", type=float, default=5, help="seconds PostgreSQL stays down")
    parser.add_argument("--json", type=Path, help="append the report to this JSON Lines file")
    args = parser.parse_args(argv)

    pg = BenchPostgres(args.data_dir)
    pg.start()
    database = database_name(args.tasks)
    url = pg.url(database)
    asyncio.run(dataset.ensure(pg.url("postgres"), url, database, args.tasks,
                               lambda m: print(m, file=sys.stderr)))
    keys = asyncio.run(dataset.pick_keys(url, 2_000))
    log_path = args.data_dir / "load-server.log"
    process, base = serve(url, args.workers, log_path)
    try:
        report = asyncio.run(_run(base, process.pid, keys, args, pg))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        # As `python -m bench` does: the bench's PostgreSQL runs only while used.
        pg.stop()
    line = json.dumps(asdict(report))
    print(line)
    if args.json:
        with args.json.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
