"""The concurrency series: many clients at once, against servers the bench started.

* **Clients.** For each workload and each of 1, 8 and 30 clients, each client
  on its own keep-alive connection sends the workload's requests back to back
  for `seconds` (W1 and W2 with 1,000 keys, W3's five pages in turn, W4 900 +
  900) to tcgraph (`tcgraph serve --workers N`, as deployed), PostGraphile v4
  and v5 (N processes each): requests per second, p50, p99 and max latency
  (the max says whether a request was starved), and, while tcgraph is the
  one saturated, the p99 and max of its `/health/live` (probed every 50 ms)
  and `/metrics` (every second), each on a connection of its own.
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
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson
import psutil

from bench.stats import percentile

CLIENTS = (1, 8, 30)
SECONDS = 10.0
COPIES = 30
# /health/live as a load balancer checks it, often; /metrics once a second (a
# Prometheus scrape is every 15 to 60 s; each one reads every worker's files).
PROBES = {"/health/live": 0.05, "/metrics": 1.0}


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
    pid: int | None = None  # the server's root process: its family's CPU is counted

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
    server_cpu_ms: float | None  # the server's CPU time per request answered (all processes)
    postgres_cpu_ms: float | None  # PostgreSQL's (every backend's) CPU time per request
    load: float  # 1-minute load average at the end
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


async def clients_series(target: Target, clients: int, seconds: float = SECONDS,
                         postmaster: int | None = None) -> ClientsResult:
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
                await asyncio.sleep(PROBES[path])

    family = _family(target.pid)
    cpu_before = _cpu_s(family)
    backends_before = _cpu_each(_family(postmaster))
    started = time.perf_counter()
    await asyncio.gather(*(prober(path) for path in probed),
                         *(one_client(n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    cpu = _cpu_s(family) - cpu_before
    # Backends the pools opened meanwhile count from zero; the pools keep theirs open.
    backends = sum(t - backends_before.get(pid, 0.0)
                   for pid, t in _cpu_each(_family(postmaster)).items())
    return ClientsResult(
        series=target.series, workload=target.workload, clients=clients,
        seconds=round(elapsed, 1), requests=len(latencies), failed=failed,
        per_second=round(len(latencies) / elapsed, 1),
        p50_ms=_round(_percentile(latencies, 50)), p99_ms=_round(_percentile(latencies, 99)),
        max_ms=_round(max(latencies) if latencies else None),
        server_cpu_ms=_round(cpu * 1000 / len(latencies)) if family and latencies else None,
        postgres_cpu_ms=(_round(backends * 1000 / len(latencies))
                         if postmaster is not None and latencies else None),
        load=round(os.getloadavg()[0], 1),
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


def _family(pid: int | None) -> list[psutil.Process]:
    """The process and its descendants (uvicorn's workers, node:cluster's, npx's node)."""
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_each(family: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for process in family:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[process.pid] = times.user + times.system
    return out


def _cpu_s(family: list[psutil.Process]) -> float:
    return sum(_cpu_each(family).values())


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def run(groups: list[list[Target]], copies_target: Target, log: Callable[[str], None],
              seconds: float = SECONDS, postmaster: int | None = None) -> dict[str, Any]:
    """Every group's clients series, then the copies series. `postmaster`: PostgreSQL's,
    whose backends' CPU is counted."""
    found = await clients_only(groups, log, seconds, postmaster)
    log(f"concurrency: {COPIES} copies of W1 (10,000 labels), sequential then concurrent")
    copies = await copies_series(copies_target)
    log(f"  sequential {copies.sequential_s} s, concurrent {copies.concurrent_s} s "
        f"(ratio {copies.ratio:.2f}), failed {copies.failed}")
    return {"clients": found, "copies": copies.as_dict(), "seconds": seconds}


async def clients_only(groups: list[list[Target]], log: Callable[[str], None],
                       seconds: float = SECONDS,
                       postmaster: int | None = None) -> list[dict[str, Any]]:
    """Each group (one workload, one target per server) at each client count, the servers
    taking turns, their order rotated from one count to the next, so that a noisy moment
    of a shared machine falls on all of them alike."""
    found: list[dict[str, Any]] = []
    turn = 0
    for group in groups:
        for target in group:
            await _warm(target)
        for clients in CLIENTS:
            turn += 1
            for target in group[turn % len(group):] + group[:turn % len(group)]:
                found.append(await _one(target, clients, seconds, log, postmaster))
    return found


async def _warm(target: Target, times: int = 3) -> None:
    """Each body a few times first: the peers' JIT, everyone's statement caches."""
    async with _client(target.base) as client:
        for _ in range(times):
            for body in target.bodies:
                await _post(client, target.path, body)


async def _one(target: Target, clients: int, seconds: float, log: Callable[[str], None],
               postmaster: int | None) -> dict[str, Any]:
    result = await clients_series(target, clients, seconds, postmaster)
    health = result.probes.get("/health/live", {}).get("p99_ms")
    metrics = result.probes.get("/metrics", {}).get("p99_ms")
    log(f"  {target.workload} {result.series:<22} {clients:>2} clients "
        f"{result.per_second:8.1f} req/s  p50 {result.p50_ms} p99 {result.p99_ms} "
        f"max {result.max_ms} ms, CPU ms/request server {result.server_cpu_ms} "
        f"PostgreSQL {result.postgres_cpu_ms}"
        + (f"  /health/live p99 {health} ms, /metrics p99 {metrics} ms"
           if result.probes else "") + f"  failed {result.failed}  load {result.load}")
    return asdict(result)


def markdown(results: dict[str, Any]) -> str:
    """The series as a Markdown table, for docs/performance.md."""
    lines = ["| workload | series | clients | req/s | CPU ms/req server + PostgreSQL | p50 ms | "
             "p99 ms | max ms | /health/live p99 (max) ms | /metrics p99 (max) ms | failed | "
             "load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def probe(r: dict[str, Any], path: str) -> str:
        p = (r.get("probes") or {}).get(path)
        return "-" if not p else f"{p['p99_ms']} ({p['max_ms']})"

    for r in results["clients"]:
        lines.append(f"| {r['workload']} | {r['series']} | {r['clients']} | {r['per_second']} | "
                     f"{r.get('server_cpu_ms', '-')} + {r.get('postgres_cpu_ms', '-')} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                     f"{probe(r, '/health/live')} | "
                     f"{probe(r, '/metrics')} | {r['failed']} | {r.get('load', '-')} |")
    c = results["copies"]
    lines += ["", f"{c['copies']} copies of W1 (10,000 labels) to tcgraph: "
              f"{c['sequential_s']} s one after another, {c['concurrent_s']} s at once "
              f"(ratio {c['ratio']}; target at most 1.3), {c['failed']} failed."]
    return "\n".join(lines)
