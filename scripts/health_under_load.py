"""/health/live and /metrics latency while `tcgraph serve` is saturated by GraphQL work.

Starts `tcgraph serve --ops-port` on 127.0.0.1 (its embedded PostgreSQL in --data-dir, which
`tcgraph demo --tasks N --data-dir DIR` fills first), then for --seconds runs --clients clients
sending a W1-like document (1,000 labels -> latest -> status) back to back on keep-alive
connections, from a process of their own, while this process probes, each from its own thread
every 50 ms: /health/live and /metrics on the main port and on the ops port. Prints each
probe's p50, p99 and max, the load's requests per second and the load average. Bounded: every
loop ends at the deadline, and the server is stopped by its pid.

    python scripts/health_under_load.py --data-dir /tmp/bench-data --clients 30 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import asyncpg
import httpx
import orjson

W1 = ("query W1($labels: [String!]!) { labels(labels: $labels) "
      "{ label latest { status { state expires } } } }")
PROBE_EVERY_S = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def labels(database_url: str, count: int) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        found = [r["label"] for r in await conn.fetch(
            "SELECT DISTINCT label FROM tasks WHERE label IS NOT NULL LIMIT $1", count)]
    finally:
        await conn.close()
    # As many real labels as there are; the rest are labels nothing matches.
    return found + [f"no-such-label-{n}" for n in range(count - len(found))]


def load(base: str, body: bytes, clients: int, seconds: float,
         done: multiprocessing.Queue[tuple[int, int]]) -> None:
    """The clients, in a process of their own: (answered, failed) into `done`."""
    async def run() -> tuple[int, int]:
        deadline = time.monotonic() + seconds
        answered = failed = 0

        async def client() -> None:
            nonlocal answered, failed
            async with httpx.AsyncClient(base_url=base, timeout=120, trust_env=False) as http:
                while time.monotonic() < deadline:
                    r = await http.post("/graphql", content=body,
                                        headers={"content-type": "application/json"})
                    if r.status_code == 200 and b'"errors"' not in r.content[:200]:
                        answered += 1
                    else:
                        failed += 1

        await asyncio.gather(*(client() for _ in range(clients)))
        return answered, failed

    done.put(asyncio.run(run()))


def probe(url: str, until: float, times: list[float]) -> None:
    with httpx.Client(timeout=60, trust_env=False) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            assert http.get(url).status_code == 200, url
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(PROBE_EVERY_S)


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98]
    return (f"n={len(ordered)} p50={statistics.median(ordered):.1f} ms p99={p99:.1f} ms "
            f"max={ordered[-1]:.1f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--clients", type=int, default=30)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    port, ops_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "TCGRAPH_DATABASE_URL"}
    server = subprocess.Popen(
        [sys.executable, "-m", "tcgraph", "serve", "--data-dir", args.data_dir, "--port",
         str(port), "--ops-port", str(ops_port), "--workers", str(args.workers)],
        env={**env, "TCGRAPH_LOG_FORMAT": "text"}, stderr=subprocess.DEVNULL)
    base, ops = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"
    # The floor of this machine: an idle process of its own answering a tiny file.
    control_port = free_port()
    control = f"http://127.0.0.1:{control_port}"
    idle = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", os.path.dirname(os.path.abspath(__file__)),
                             str(control_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
            time.sleep(0.2)
        url = f"postgresql://postgres:@/postgres?host={os.path.abspath(args.data_dir)}/pgdata"
        body = orjson.dumps({"query": W1, "variables": {
            "labels": asyncio.run(labels(url, args.keys))}})
        done: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()
        loader = multiprocessing.Process(target=load, args=(base, body, args.clients,
                                                            args.seconds, done))
        loader.start()
        time.sleep(2)  # the clients are connected and the server saturated
        until = time.monotonic() + args.seconds - 4
        targets = {"main /health/live": f"{base}/health/live", "main /metrics": f"{base}/metrics",
                   "ops /health/live": f"{ops}/health/live", "ops /metrics": f"{ops}/metrics",
                   "control": f"{control}/"}
        times: dict[str, list[float]] = {name: [] for name in targets}
        threads = [threading.Thread(target=probe, args=(url, until, times[name]))
                   for name, url in targets.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answered, failed = done.get(timeout=300)
        loader.join()
        load1, load5, _ = os.getloadavg()
        print(f"{args.clients} clients, W1 with {args.keys} labels, {args.seconds:g} s, "
              f"{args.workers} worker(s): {answered / args.seconds:.1f} req/s, {failed} failed; "
              f"load average {load1:.2f} (1 min), {load5:.2f} (5 min), {os.cpu_count()} cores")
        for name, found in times.items():
            print(f"  {name:20} {summary(found)}")
    finally:
        server.send_signal(signal.SIGTERM)
        idle.send_signal(signal.SIGTERM)
        server.wait(60)
        idle.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
