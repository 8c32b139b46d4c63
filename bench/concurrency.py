"""The concurrency series: many clients at once, against servers the bench started.

* **Clients.** `clients` concurrent clients, each on its own keep-alive
  connection, send one document back to back for `seconds` (W1 with 1,000
  labels) to tcgraph, the floor (the same uvicorn) and PostGraphile: requests
  per second, p50 and p99 latency, and the p99 of tcgraph's `/health/live`,
  probed every 50 ms on its own connection while the clients run.
* **Copies.** The same document (W1 with 10,000 labels) sent `copies` times one
  after another, then `copies` times at once: the wall time of each, and their
  ratio (at most 1.3 is the target; 1.0 would mean no cost for concurrency
  beyond the CPU the copies need anyway).

Only ever against servers on 127.0.0.1 that the bench itself started; every
loop is bounded by `seconds`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import httpx
import orjson

from bench.stats import percentile

CLIENTS = 30
SECONDS = 30.0
COPIES = 30
HEALTH_EVERY_S = 0.05


@dataclass
class Target:
    """Where one series sends its document: `base` + `path`, and the body."""

    series: str
    base: str
    path: str
    body: bytes


@dataclass
class ClientsResult:
    series: str
    clients: int
    seconds: float
    requests: int
    failed: int
    per_second: float
    p50_ms: float | None
    p99_ms: float | None
    health_p99_ms: float | None
    health_max_ms: float | None


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


async def _post(client: httpx.AsyncClient, target: Target) -> bool:
    r = await client.post(target.path, content=target.body,
                          headers={"content-type": "application/json"})
    return r.status_code == 200 and b'"errors"' not in r.content[:200]


async def clients_series(target: Target, health_base: str, clients: int = CLIENTS,
                         seconds: float = SECONDS) -> ClientsResult:
    """`clients` clients sending `target` back to back for `seconds`, /health/live probed."""
    latencies: list[float] = []
    health: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        nonlocal failed
        async with _client(target.base) as client:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    ok = await _post(client, target)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    failed += 1

    async def prober() -> None:
        async with _client(health_base) as client:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await client.get("/health/live")
                except httpx.HTTPError:
                    pass
                health.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(HEALTH_EVERY_S)

    started = time.perf_counter()
    await asyncio.gather(prober(), *(one_client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return ClientsResult(
        series=target.series, clients=clients, seconds=round(elapsed, 1),
        requests=len(latencies), failed=failed, per_second=round(len(latencies) / elapsed, 1),
        p50_ms=_round(_percentile(latencies, 50)), p99_ms=_round(_percentile(latencies, 99)),
        health_p99_ms=_round(_percentile(health, 99)),
        health_max_ms=_round(max(health) if health else None))


async def copies_series(target: Target, copies: int = COPIES) -> CopiesResult:
    """`copies` of `target` one after another, then all at once (one connection each)."""
    failed = 0
    async with _client(target.base) as client:
        started = time.perf_counter()
        for _ in range(copies):
            failed += not await _post(client, target)
        sequential = time.perf_counter() - started

    async def one() -> bool:
        async with _client(target.base) as client:
            return await _post(client, target)

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(copies)))
    concurrent = time.perf_counter() - started
    failed += sum(not ok for ok in results)
    return CopiesResult(series=target.series, copies=copies, sequential_s=round(sequential, 2),
                        concurrent_s=round(concurrent, 2), failed=failed)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def run(targets: list[Target], copies_target: Target, health_base: str,
              log: Callable[[str], None], seconds: float = SECONDS) -> dict[str, Any]:
    """Every target's clients series, then the copies series; results as plain dicts."""
    found: list[dict[str, Any]] = []
    for target in targets:
        log(f"concurrency: {CLIENTS} clients x {seconds:g} s against {target.series}")
        result = await clients_series(target, health_base, seconds=seconds)
        log(f"  {result.series:<20} {result.per_second:8.1f} req/s  p50 {result.p50_ms} ms  "
            f"p99 {result.p99_ms} ms  /health/live p99 {result.health_p99_ms} ms  "
            f"failed {result.failed}")
        found.append(asdict(result))
    log(f"concurrency: {COPIES} copies of W1 (10,000 labels), sequential then concurrent")
    copies = await copies_series(copies_target)
    log(f"  sequential {copies.sequential_s} s, concurrent {copies.concurrent_s} s "
        f"(ratio {copies.ratio:.2f}), failed {copies.failed}")
    return {"clients": found, "copies": copies.as_dict()}


def markdown(results: dict[str, Any]) -> str:
    """The series as a Markdown table, for docs/performance.md."""
    lines = ["| series | clients | req/s | p50 ms | p99 ms | /health/live p99 ms | failed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["clients"]:
        lines.append(f"| {r['series']} | {r['clients']} | {r['per_second']} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {r['health_p99_ms']} | {r['failed']} |")
    c = results["copies"]
    lines += ["", f"{c['copies']} copies of W1 (10,000 labels) to tcgraph: "
              f"{c['sequential_s']} s one after another, {c['concurrent_s']} s at once "
              f"(ratio {c['ratio']}; target at most 1.3), {c['failed']} failed."]
    return "\n".join(lines)
