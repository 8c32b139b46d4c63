"""The concurrency series: many clients at once, against servers the bench started.

* **Clients.** For each workload and each of 1, 8 and 30 clients, each client
  on its own keep-alive connection sends the workload's requests back to back
  for `seconds` (W1 and W2 with 1,000 keys, W3's five pages in turn, W4 900 +
  900) to tcgraph (`tcgraph serve --workers N`, as deployed), PostGraphile v4
  and v5 (N processes each): requests per second, p50, p99 and max latency
  (the max says whether a request was starved), and, while tcgraph is the
  one saturated, the p99 and max of its `/health/live` and `/metrics`, each
  probed every 50 ms on a connection of its own.
* **Copies.** The same document (W1 with 10,000 labels) sent `copies` times one
  after another, then `copies` times at once: the wall time of each, and their
  ratio (at most 1.3 is the target; 1.0 would mean no cost for concurrency
  beyond the CPU the copies need anyway).

Only ever against servers on 127.0.0.1 that the bench itself started; every
loop is bounded by `seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

from bench.stats import percentile

CLIENTS = (1, 8, 30)
SECONDS = 10.0
COPIES = 30
PROBE_EVERY_S = 0.05
PROBES = ("/health/live", "/metrics")


@dataclass
class Target:
    """Where one series sends a workload: `base` + `path`, the bodies in turn, and (for
    tcgraph) the server whose health is probed meanwhile."""

    series: str
    workload: str
    base: str
    path: str
    bodies: list[bytes]
    probe: bool = False

    @property
    def body(self) -> bytes:
        return self.bodies[0]


@dataclass
class ClientsResult:
    series: str
    workload: str
    clients: int
    seconds: float
    requests: int
    failed: int
    per_second: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    probes: dict[str, dict[str, float | None]] = field(default_factory=dict)


@dataclass
class CopiesResult:
    series: str
    copies: int
    sequential_s: float
    concurrent_s: float
    failed: int

    @property
    def ratio(self) -> float:
        return self.concurrent_s / self.sequential_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 3)}


def body(query: str, variables: dict[str, Any]) -> bytes:
    return orjson.dumps({"query": query, "variables": variables})


def _percentile(values: list[float], p: float) -> float | None:
    """`percentile`, or None for a series that measured nothing (reported as such)."""
    return percentile(values, p) if values else None


def _client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, timeout=300, trust_env=False,
                             limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))


async def _post(client: httpx.AsyncClient, path: str, body: bytes) -> bool:
    r = await client.post(path, content=body, headers={"content-type": "application/json"})
    return r.status_code == 200 and b'"errors"' not in r.content[:200]


async def clients_series(target: Target, clients: int,
                         seconds: float = SECONDS) -> ClientsResult:
    """`clients` clients sending `target`'s bodies back to back for `seconds`; if
    `target.probe`, its /health/live and /metrics probed meanwhile."""
    latencies: list[float] = []
    probed: dict[str, list[float]] = {path: [] for path in PROBES} if target.probe else {}
    failed = 0
    deadline = time.perf_counter() + seconds

    async def one_client(n: int) -> None:
        nonlocal failed
        bodies = itertools.cycle(target.bodies[n % len(target.bodies):]
                                 + target.bodies[:n % len(target.bodies)])
        async with _client(target.base) as client:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    ok = await _post(client, target.path, next(bodies))
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    failed += 1

    async def prober(path: str) -> None:
        async with _client(target.base) as client:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(path)
                probed[path].append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(PROBE_EVERY_S)

    started = time.perf_counter()
    await asyncio.gather(*(prober(path) for path in probed),
                         *(one_client(n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    return ClientsResult(
        series=target.series, workload=target.workload, clients=clients,
        seconds=round(elapsed, 1), requests=len(latencies), failed=failed,
        per_second=round(len(latencies) / elapsed, 1),
        p50_ms=_round(_percentile(latencies, 50)), p99_ms=_round(_percentile(latencies, 99)),
        max_ms=_round(max(latencies) if latencies else None),
        probes={path: {"p99_ms": _round(_percentile(values, 99)),
                       "max_ms": _round(max(values) if values else None)}
                for path, values in probed.items()})


async def copies_series(target: Target, copies: int = COPIES) -> CopiesResult:
    """`copies` of `target` one after another, then all at once (one connection each)."""
    failed = 0
    async with _client(target.base) as client:
        started = time.perf_counter()
        for _ in range(copies):
            failed += not await _post(client, target.path, target.body)
        sequential = time.perf_counter() - started

    async def one() -> bool:
        async with _client(target.base) as client:
            return await _post(client, target.path, target.body)

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(copies)))
    concurrent = time.perf_counter() - started
    failed += sum(not ok for ok in results)
    return CopiesResult(series=target.series, copies=copies, sequential_s=round(sequential, 2),
                        concurrent_s=round(concurrent, 2), failed=failed)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def run(targets: list[Target], copies_target: Target, log: Callable[[str], None],
              seconds: float = SECONDS) -> dict[str, Any]:
    """Every target's clients series at each client count, then the copies series."""
    found = await clients_only(targets, log, seconds)
    log(f"concurrency: {COPIES} copies of W1 (10,000 labels), sequential then concurrent")
    copies = await copies_series(copies_target)
    log(f"  sequential {copies.sequential_s} s, concurrent {copies.concurrent_s} s "
        f"(ratio {copies.ratio:.2f}), failed {copies.failed}")
    return {"clients": found, "copies": copies.as_dict(), "seconds": seconds}


async def clients_only(targets: list[Target], log: Callable[[str], None],
                       seconds: float = SECONDS) -> list[dict[str, Any]]:
    """Every target's clients series at each client count."""
    found: list[dict[str, Any]] = []
    for target in targets:
        for clients in CLIENTS:
            result = await clients_series(target, clients, seconds=seconds)
            health = result.probes.get("/health/live", {}).get("p99_ms")
            metrics = result.probes.get("/metrics", {}).get("p99_ms")
            log(f"  {target.workload} {result.series:<22} {clients:>2} clients "
                f"{result.per_second:8.1f} req/s  p50 {result.p50_ms} p99 {result.p99_ms} "
                f"max {result.max_ms} ms"
                + (f"  /health/live p99 {health} ms, /metrics p99 {metrics} ms"
                   if result.probes else "") + f"  failed {result.failed}")
            found.append(asdict(result))
    return found


def markdown(results: dict[str, Any]) -> str:
    """The series as a Markdown table, for docs/performance.md."""
    lines = ["| workload | series | clients | req/s | p50 ms | p99 ms | max ms | "
             "/health/live p99 (max) ms | /metrics p99 (max) ms | failed |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def probe(r: dict[str, Any], path: str) -> str:
        p = (r.get("probes") or {}).get(path)
        return "-" if not p else f"{p['p99_ms']} ({p['max_ms']})"

    for r in results["clients"]:
        lines.append(f"| {r['workload']} | {r['series']} | {r['clients']} | {r['per_second']} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                     f"{probe(r, '/health/live')} | "
                     f"{probe(r, '/metrics')} | {r['failed']} |")
    c = results["copies"]
    lines += ["", f"{c['copies']} copies of W1 (10,000 labels) to tcgraph: "
              f"{c['sequential_s']} s one after another, {c['concurrent_s']} s at once "
              f"(ratio {c['ratio']}; target at most 1.3), {c['failed']} failed."]
    return "\n".join(lines)
