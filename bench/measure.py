"""Measuring the series: the processes they run in, their timed runs, their answers' checks."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import report, workloads
from bench.pg import free_port
from bench.report import Result
from bench.workloads import Session

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- processes --------------------------------------------------------------


class TcgraphServer:
    """`python -m bench.server`: tcgraph + the floor endpoints on uvicorn, 127.0.0.1."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url = url
        self.port = free_port()
        self.log_path = log_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TCGRAPH_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        out = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.server", self.url, str(self.port)], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"bench.server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/health/ready", timeout=2,
                             trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench.server did not become ready: "
                                   f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process else []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def reset_peak(pids: list[int]) -> None:
    """Reset the processes' VmHWM to their current RSS (Linux clear_refs 5)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def peak_mb(pids: list[int]) -> float | None:
    """The processes' VmHWM, summed (one serving process in the latency series)."""
    total = None
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = (total or 0) + int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


class PgCounter:
    """Top-level statements run in the bench database, from pg_stat_statements."""

    # Transaction control and session settings are not statements that answer
    # anything; neither is the reset asyncpg runs on a connection it returns to
    # its pool (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`).
    NOT_COUNTED = ("begin", "commit", "rollback", "end", "set", "reset", "show", "savepoint",
                   "release", "start", "discard", "deallocate", "listen", "unlisten", "close",
                   "select pg_advisory_unlock_all")
    QUERY = """
        SELECT coalesce(sum(s.calls), 0)::bigint
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = $1 AND s.toplevel AND s.query !~* ('^\\s*(' || $2 || ')\\y')"""

    def __init__(self, conn: asyncpg.Connection | None, database: str = "") -> None:
        self.conn = conn
        self.database = database

    @classmethod
    async def open(cls, admin_url: str, database: str) -> PgCounter:
        try:
            conn = await asyncpg.connect(admin_url)
            await conn.fetchval(cls.QUERY, database, "|".join(cls.NOT_COUNTED))
            # From here on, pg_stat_statements holds what the workloads ran.
            await conn.execute("SELECT pg_stat_statements_reset()")
            return cls(conn, database)
        except Exception as e:  # the count is an extra; the bench runs without it
            log(f"pg_stat_statements unavailable ({type(e).__name__}: {e}); "
                "PostGraphile's statements will not be counted")
            return cls(None)

    async def total(self) -> int | None:
        if self.conn is None:
            return None
        total: int | None = await self.conn.fetchval(self.QUERY, self.database,
                                                     "|".join(self.NOT_COUNTED))
        return total

    async def top(self, n: int = 12) -> list[dict[str, Any]]:
        if self.conn is None:
            return []
        rows = await self.conn.fetch(r"""
            SELECT s.calls, round(s.total_exec_time::numeric, 1) AS total_ms,
                   round(s.mean_exec_time::numeric, 2) AS mean_ms, s.rows,
                   regexp_replace(s.query, '\s+', ' ', 'g') AS query
            FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
            WHERE d.datname = $1 AND s.toplevel ORDER BY s.total_exec_time DESC LIMIT $2""",
                                     self.database, n)
        return [dict(r, total_ms=float(r["total_ms"]), mean_ms=float(r["mean_ms"]),
                     query=r["query"][:400]) for r in rows]

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


# --- measuring ----------------------------------------------------------------


@dataclass
class Case:
    result: Result
    tx: Any
    flow: workloads.Flow
    pids: Callable[[], list[int]]  # the processes whose peak RSS counts (none: in process)
    answer: Any = None


async def measure(cases: list[Case], runs: int, warmup: int, counter: PgCounter) -> None:
    first = cases[0].result
    label = f"{first.workload} {report.keys_label(first.workload, first.keys)}"
    for case in cases:
        r = case.result
        try:
            for i in range(warmup):
                collect = i == warmup - 1
                s = Session(collect=collect)
                if collect:
                    before_pg = await counter.total()
                    case.answer = await case.flow(case.tx, s)
                    after_pg = await counter.total()
                    r.calls = s.calls
                    r.requests = s.requests if case.tx.http else None
                    r.statements = s.statements
                    r.sql_ms = s.sql_ms if s.statements is not None else None
                    if before_pg is not None and after_pg is not None:
                        # (the counting queries run in another database)
                        r.pg_statements = after_pg - before_pg
                else:
                    await case.flow(case.tx, s)
        except Exception as e:
            r.error = f"{type(e).__name__}: {e}"[:300]
            log(f"  {label} {r.series}: FAILED: {r.error}")
    live = [c for c in cases if not c.result.error]
    for run in range(runs):
        for n in range(len(live)):
            case = live[(n + run) % len(live)]  # rotate the order from run to run
            pids = case.pids()
            reset_peak(pids)
            gc.collect()
            s = Session(collect=False)
            started = time.perf_counter()
            try:
                await case.flow(case.tx, s)
            except Exception as e:
                case.result.error = f"{type(e).__name__}: {e}"[:300]
                continue
            case.result.times_ms.append((time.perf_counter() - started) * 1000)
            peak = peak_mb(pids)
            if peak is not None:
                case.result.peak_rss_mb = max(case.result.peak_rss_mb or 0, peak)
    load = os.getloadavg()[0]
    for case in cases:
        r = case.result
        r.load = load
        if r.median is not None:
            log(f"  {label:<16} {r.series:<20} median {r.median:9.1f} ms  "
                f"SQL {r.sql if r.sql is not None else '-':>5}  "
                f"HTTP {r.requests if r.requests is not None else '-':>5}"
                + (f"  RSS {r.peak_rss_mb:.0f} MB" if r.peak_rss_mb else ""))


def check_answers(cases: list[Case]) -> None:
    """Compare every series' answer with the in-process floor's."""
    reference = next((c for c in cases if c.result.series == "floor" and c.answer is not None),
                     None)
    if reference is None:
        return
    workload = reference.result.workload
    want = workloads.canonical(workload, "floor", reference.answer)
    for case in cases:
        r = case.result
        if case is reference:
            r.check = "reference"
            continue
        if case.answer is None or r.error:
            continue
        try:
            got = workloads.canonical(workload, r.series, case.answer)
        except Exception as e:
            r.check = f"unreadable answer: {type(e).__name__}: {e}"[:200]
            continue
        if got != want:
            r.check = f"DIFFERS from the floor ({_differ(got, want)})"
        elif r.series.startswith(("tcgraph", "floor")):
            exact = _data(case.answer) == _data(reference.answer)
            r.check = "ok (same body)" if exact else "ok (same facts, body differs)"
        else:
            r.check = "ok"


def _data(answer: Any) -> Any:
    if isinstance(answer, list):
        return [a["data"] for a in answer]
    return answer["data"]


def _differ(got: Any, want: Any) -> str:
    if isinstance(got, tuple):
        return "; ".join(_differ(g, w) for g, w in zip(got, want, strict=False) if g != w)
    missing = len(set(map(repr, want)) - set(map(repr, got)))
    extra = len(set(map(repr, got)) - set(map(repr, want)))
    return f"{len(got)} items vs {len(want)}, {missing} missing, {extra} extra"
