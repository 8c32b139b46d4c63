"""The subscription series: S WebSocket subscribers over G task groups while a follower
applies pulse messages at a fixed rate.

The traffic is bench/follow.py's (copies of the Taskcluster 106 recording with fresh
ids), its copies interleaved so that every group changes from the start; G is the
number of groups in the copies. `tcgraph serve` runs as a process of its own (its
memory is measured), the follower in this process (its batch hook timestamps each
commit), the publisher and the subscribers in processes of their own. Each
subscriber's `taskGroupChanges` starts before the first message, and is live once its
snapshot has arrived (each group holds one marker task no message touches): the
server's memory is read when every subscription is live, not while some are still
being set up.

Reported: the latency from the commit of a task's change to the frame carrying it at
the client (p50, p99; the commit time is PostgreSQL's own, `track_commit_timestamp`,
which the series turns on for its run, of the transaction the frame's cursor names),
the events per second delivered, the server's memory per subscriber (its RSS with
every subscriber connected, less its RSS after one subscription came and went, over
S), the subscriptions refused (an `error` or `complete` where a stream was expected:
none may be) and the SQL statements per notification burst (the server's /metrics),
at S and at a small S for comparison.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import httpx
import orjson
import psutil

from bench.follow import Traffic, _declare_queue, _fresh_database, _options, _paced_publisher
from bench.pg import free_port
from bench.stats import percentile
from bench.subscribers import DOCUMENT, client_process
from tcgraph.config import Settings
from tcgraph.ingest.events import EXCHANGE_PREFIX, EXCHANGES
from tcgraph.api.subscriptions.cursors import decode
from tcgraph.ingest.follow import follow
from tcgraph.store.pool import open_pool
from tcgraph.store.queries.task_changes import Position

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from api.subscriptions.wsclient import connected  # noqa: E402
from factories import FakeTask, store  # noqa: E402
from services.rabbitmq import running_rabbitmq  # noqa: E402
from services.replay import Recording, declare_exchanges, upstream_app  # noqa: E402

BURST = "tcgraph_subscription_burst_sql_statements"
EVENTS = "tcgraph_subscription_events_total"


@dataclass(frozen=True)
class SubscriptionFigures:
    subscribers: int
    groups: int
    connections: int
    rate: float
    seconds: float
    events: int
    events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    server_kb_per_subscriber: float
    refused: int
    statements_per_burst: float
    bursts: int
    load_average: float

    def line(self) -> str:
        return (f"subscriptions: {self.subscribers:,} subscribers on {self.groups} groups "
                f"({self.connections} connections) at {self.rate:.0f} msg/s: "
                f"{self.events:,} events ({self.events_per_s:,.0f}/s), commit->frame p50 "
                f"{self.latency_p50_ms:.0f} ms, p99 {self.latency_p99_ms:.0f} ms; "
                f"{self.server_kb_per_subscriber:.1f} KB per subscriber; "
                f"{self.refused} subscriptions refused or ended; "
                f"{self.statements_per_burst:.2f} statements per burst ({self.bursts} bursts); "
                f"load average {self.load_average:.1f}")


def _metric(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _serve(url: str, port: int, connections: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TCGRAPH_MAX_CONNECTIONS": str(connections + 100),
           "TCGRAPH_MAX_WEBSOCKETS": str(connections + 100),
           "TCGRAPH_POOL_MAX_SIZE": "4"}
    return subprocess.Popen([sys.executable, "-m", "tcgraph", "serve", "--database-url", url,
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("tcgraph serve exited")
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("tcgraph serve did not become ready")


def _xid(cursor: str) -> int | None:
    """The transaction a live change's cursor names (None for a snapshot's)."""
    decoded = decode(cursor)
    return decoded.xid if isinstance(decoded, Position) else None


async def _commit_times(pool: Any, xids: set[int | None]) -> dict[int | None, float]:
    """When each transaction committed (epoch seconds), as PostgreSQL recorded it."""
    known = sorted(x for x in xids if x is not None)
    rows = await pool.fetch("""
        SELECT x::bigint AS xid,
               extract(epoch FROM pg_xact_commit_timestamp(xid(x::text::xid8)))::float8 AS at
        FROM unnest($1::bigint[]) AS x""", known)
    return {r["xid"]: r["at"] for r in rows}


def _interleave(copies: Sequence[list[Any]]) -> list[Any]:
    """Round-robin over the copies, so that every group has traffic from the start."""
    longest = max(len(c) for c in copies)
    return [c[i] for i in range(longest) for c in copies if i < len(c)]


async def run_subscriptions(admin_url: str, make_url: Any, log: Any, *, subscribers: int,
                            groups: int, rate: float, seconds: float,
                            per_connection: int, clients: int) -> SubscriptionFigures:
    """One measurement at `subscribers` subscribers (see the module docstring)."""
    from servers import serving

    rec = Recording.load()
    traffic = Traffic(rec)
    # Copies until `groups` groups have messages within the run (not every group of a
    # copy has its messages early in it).
    copies: list[list[Any]] = []
    group_ids: list[str] = []
    while len(group_ids) < groups and len(copies) < 4 * groups:
        copies.append(traffic.copy())
        paced = _interleave(copies)[:int(rate * seconds)]
        group_ids = sorted({m.routing_key.split(".")[8] for m in paced
                            if len(m.routing_key.split(".")) > 8})
    group_ids = group_ids[:groups]
    watched = [group_ids[i % len(group_ids)] for i in range(subscribers)]
    connections = -(-subscribers // per_connection)
    served = Recording(messages=[], definitions=traffic.definitions)
    url = await _fresh_database(admin_url, make_url, "tcgraph_bench_subscriptions")
    marker_pool = await open_pool(url, Settings(pool_min_size=1, pool_max_size=1))
    try:
        await store(marker_pool, [FakeTask(task_group_id=g, label="marker") for g in group_ids])
    finally:
        await marker_pool.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(url, port, connections)
    context = multiprocessing.get_context("spawn")
    workers: list[Any] = []
    try:
        await asyncio.to_thread(_wait_ready, base, server)
        # One subscription first, so that what any first one costs (caches, the pool's
        # connections) is not counted per subscriber.
        async with connected(base, ping_interval=None) as warm_up:
            await warm_up.subscribe("warm-up", DOCUMENT, g=group_ids[0])
            assert (await warm_up.receive())["type"] == "next"
            await warm_up.complete("warm-up")
            await warm_up.send({"type": "ping"})
            while (await warm_up.receive()).get("type") != "pong":
                pass
        rss_before = psutil.Process(server.pid).memory_info().rss
        outs = [Path(tempfile.mkdtemp(prefix="tcgraph-bench-")) / f"client{i}.json"
                for i in range(clients)]
        share = -(-subscribers // clients)
        for i in range(clients):
            ready_r, ready_s = context.Pipe(duplex=False)
            go_r, go_s = context.Pipe(duplex=False)
            process = context.Process(target=client_process, args=(
                base, watched[i * share:(i + 1) * share], per_connection, ready_s, go_r,
                str(outs[i])))
            process.start()
            workers.append((process, ready_r, go_s))
        for _, ready_r, _ in workers:
            await asyncio.to_thread(ready_r.recv)
        rss_after = psutil.Process(server.pid).memory_info().rss
        log(f"subscriptions: {subscribers:,} subscribers on {len(group_ids)} groups over "
            f"{connections} connections; server RSS {rss_before / 2**20:.0f} -> "
            f"{rss_after / 2**20:.0f} MiB")
        bursts_sum, bursts_count = _metric(base, BURST + "_sum"), _metric(base, BURST + "_count")
        with running_rabbitmq() as broker, serving(upstream_app(served)) as upstream:
            await declare_exchanges(broker.url, [EXCHANGE_PREFIX + e for e in EXCHANGES])
            options = _options(broker.url, upstream)
            await _declare_queue(options)
            pool = await open_pool(url, Settings(pool_min_size=1, pool_max_size=4))
            task = asyncio.create_task(follow(pool, options))
            plan = Path(tempfile.mkdtemp(prefix="tcgraph-bench-")) / "paced.jsonl"
            plan.write_bytes(b"".join(orjson.dumps([m.exchange, m.routing_key, list(m.cc),
                                                    m.body.decode()]) + b"\n" for m in paced))
            log(f"subscriptions: publishing {len(paced):,} messages at {rate:.0f}/s")
            receiver, sender = context.Pipe(duplex=False)
            publisher = context.Process(target=_paced_publisher,
                                        args=(str(plan), broker.url, rate, sender))
            publisher.start()
            await asyncio.to_thread(receiver.recv)  # the publisher has started
            await asyncio.to_thread(publisher.join)
            # Until the server has handed every change out: its count of events stops
            # moving (then a moment for the last frames to cross the loopback).
            sent, still = -1.0, 0
            while still < 3:
                await asyncio.sleep(1)
                now_sent = await asyncio.to_thread(_metric, base, EVENTS)
                still = still + 1 if now_sent == sent else 0
                sent = now_sent
            await asyncio.sleep(2)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        bursts_sum = _metric(base, BURST + "_sum") - bursts_sum
        bursts_count = _metric(base, BURST + "_count") - bursts_count
        for _, _, go_s in workers:
            go_s.send(True)
        for process, _, _ in workers:
            await asyncio.to_thread(process.join)
        frames: list[tuple[float, str]] = []
        refused: list[str] = []
        for out in outs:
            recorded = orjson.loads(out.read_bytes())
            frames += [tuple(f) for f in recorded["received"]]
            refused += recorded["refused"]
        committed = await _commit_times(pool, {_xid(cursor) for _, cursor in frames})
        await pool.close()
    finally:
        for process, _, _ in workers:
            if process.is_alive():
                process.terminate()
        server.terminate()
        server.wait(timeout=60)
    latencies = [(received - committed[_xid(cursor)]) * 1000 for received, cursor in frames
                 if committed.get(_xid(cursor)) is not None]
    # Events per second over the publishing time (the frames of its last second may
    # arrive a little after it).
    duration = len(paced) / rate
    figures = SubscriptionFigures(
        subscribers=subscribers, groups=len(group_ids), connections=connections, rate=rate,
        seconds=seconds, events=len(frames), events_per_s=round(len(frames) / duration, 1),
        latency_p50_ms=round(percentile(latencies, 50), 1) if latencies else -1,
        latency_p99_ms=round(percentile(latencies, 99), 1) if latencies else -1,
        latency_max_ms=round(max(latencies), 1) if latencies else -1,
        server_kb_per_subscriber=round((rss_after - rss_before) / 1024 / subscribers, 2),
        refused=len(refused),
        statements_per_burst=round(bursts_sum / bursts_count, 2) if bursts_count else 0,
        bursts=int(bursts_count), load_average=round(os.getloadavg()[0], 2))
    log(figures.line())
    return figures


def _commit_timestamps(pg: Any, value: str | None) -> None:
    """Turn PostgreSQL's commit timestamps on (or back to the default) and restart it."""
    import asyncpg

    async def alter() -> None:
        conn = await asyncpg.connect(pg.url("postgres"))
        try:
            if value is None:
                await conn.execute("ALTER SYSTEM RESET track_commit_timestamp")
            else:
                await conn.execute(f"ALTER SYSTEM SET track_commit_timestamp = {value}")
        finally:
            await conn.close()

    asyncio.run(alter())
    pg.stop()
    pg.start()


def series(data_dir: Path, out: Path, *, quick: bool = False, subscribers: int | None = None,
           groups: int = 100, rate: float = 300.0, seconds: float | None = None,
           per_connection: int = 10, clients: int = 2) -> int:
    """Run the series on the bench's PostgreSQL in `data_dir` (at a small S, then at S);
    write `out` (JSON)."""
    from bench.pg import BenchPostgres

    subscribers = subscribers or (200 if quick else 5_000)
    seconds = seconds or (10.0 if quick else 60.0)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    pg = BenchPostgres(data_dir)
    pg.start()
    _commit_timestamps(pg, "on")
    runs = []
    try:
        for count in sorted({max(10, subscribers // 50), subscribers}):
            runs.append(asyncio.run(run_subscriptions(
                pg.url("postgres"), pg.url, log, subscribers=count, groups=groups, rate=rate,
                seconds=seconds, per_connection=per_connection, clients=clients)))
    finally:
        _commit_timestamps(pg, None)
        pg.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join(["python -m", *(["bench.subscriptions"]
                                            if sys.argv[0].endswith("subscriptions.py")
                                            else ["bench"]), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        "runs": [asdict(r) for r in runs]}, indent=2) + "\n")
    for r in runs:
        print(r.line())
    print(f"wrote {out}")
    top = runs[-1]
    met = (top.latency_p99_ms < 250 and top.server_kb_per_subscriber < 20 and not top.refused
           and runs[0].statements_per_burst == top.statements_per_burst)
    print("targets: 5,000 subscribers on 100 groups at 300 msg/s, p99 < 250 ms, < 20 KB per "
          "subscriber, statements per burst independent of S: "
          + ("met" if met and top.subscribers >= 5_000 else "NOT met")
          + (f" (measured at {top.subscribers:,})" if top.subscribers < 5_000 else ""))
    return 0


def main() -> int:
    """`python -m bench.subscriptions`: the subscription series alone."""
    import argparse

    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(prog="python -m bench.subscriptions", description=__doc__)
    p.add_argument("--subscribers", type=int, default=5_000)
    p.add_argument("--groups", type=int, default=100)
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--per-connection", type=int, default=10,
                   help="subscriptions per WebSocket connection")
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--data-dir", type=Path, default=root / ".bench")
    p.add_argument("--json", type=Path,
                   default=root / "bench" / "results" / "subscriptions.json")
    args = p.parse_args()
    return series(args.data_dir, args.json, subscribers=args.subscribers, groups=args.groups,
                  rate=args.rate, seconds=args.seconds, per_connection=args.per_connection,
                  clients=args.clients)


if __name__ == "__main__":
    raise SystemExit(main())
