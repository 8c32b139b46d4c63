"""The drift series: what repairing a gap costs, and what a second follower adds.

Two measurements, each on a fresh database and queue of a real RabbitMQ on 127.0.0.1:

- repair: the Taskcluster 106 recording with a gap in the middle, as a follower sees it
  after being stopped while pulse deleted its queue: the first third is followed, the
  queue is deleted, the middle third is published to no queue (lost), and a follower
  started again (reconciling at the default budget, 2 calls a second) declares the queue
  anew and gets the last third. Reported: the upstream calls reconciliation made per
  task it repaired, and the time from the gap's end (the queue declared anew) to the
  gap repaired, checked by a verification of every task and index entry (0 differences).
  The replay upstream serves the recorded REST answers.
- followers: copies of the recording with fresh ids (bench/follow.py's Traffic), all
  published first, drained by one `tcgraph follow` process, then by two on one queue
  (competing consumers), each in a process of its own; messages per second from the
  first committed batch to the last. Reconciliation is off for this one (the copies
  have no recorded statuses to reconcile with).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from collections.abc import Callable

import asyncpg

from bench.follow import Traffic, _declare_queue, _fresh_database, _options, _publish_fast
from tcgraph.config import Settings
from tcgraph.ingest import verify
from tcgraph.ingest.events import EXCHANGE_PREFIX, EXCHANGES
from tcgraph.ingest.follow import follow
from tcgraph.ingest.reconcile import DEFAULT_RATE, ReconcileOptions
from tcgraph.ingest.upstream import Upstream
from tcgraph.store.pool import open_pool

# The tests' own services (RabbitMQ, the replay upstream) have one home, in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from services.rabbitmq import running_rabbitmq  # noqa: E402
from services.replay import (Message, Recording, declare_exchanges, publish, sentinel,  # noqa: E402
                             upstream_app)

POLL_S = 0.05
TIMEOUT_S = 900.0


@dataclass(frozen=True)
class DriftFigures:
    lost_messages: int
    repair_calls: int
    tasks_repaired: int
    calls_per_repaired_task: float
    gap_end_to_repaired_s: float
    verified_differences: int
    follower_messages: int
    one_follower_per_s: float
    two_followers_per_s: float
    load_average: float

    def line(self) -> str:
        return (f"drift: a gap of {self.lost_messages} lost messages repaired in "
                f"{self.gap_end_to_repaired_s:.1f} s after it ended, {self.repair_calls} "
                f"upstream calls for {self.tasks_repaired} tasks "
                f"({self.calls_per_repaired_task:.2f} calls per repaired task; verification: "
                f"{self.verified_differences} differences); {self.follower_messages:,} "
                f"messages drained at {self.one_follower_per_s:,.0f} msg/s by one follower, "
                f"{self.two_followers_per_s:,.0f} msg/s by two (load average "
                f"{self.load_average:.1f})")


async def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not await condition():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise TimeoutError(f"drift bench: timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


async def _repair(admin_url: str, make_url: Callable[[str], str], broker_url: str,
                  log: Callable[[str], None]) -> dict[str, float]:
    from servers import serving  # tests/servers.py: uvicorn in a thread

    rec = Recording.load()
    with serving(upstream_app(rec)) as upstream:
        url = await _fresh_database(admin_url, make_url, "tcgraph_bench_drift")
        options = replace(_options(broker_url, upstream), name="bench",
                          reconcile=ReconcileOptions(rate=DEFAULT_RATE, every_s=300.0),
                          verify_every_s=0)
        await _declare_queue(options)
        third = len(rec.messages) // 3
        first, last = sentinel(1), sentinel(2)
        await publish(broker_url, [*rec.messages[:third], first])
        pool = await open_pool(url, Settings(pool_min_size=1, pool_max_size=4))
        try:
            async def reached(marker: object) -> bool:
                key = await pool.fetchval("SELECT last_routing_key FROM mirror_state")
                return bool(key == marker.routing_key)  # type: ignore[attr-defined]

            task = asyncio.create_task(follow(pool, options))
            await _until(lambda: reached(first), "the first third")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            before = await pool.fetchrow("SELECT calls, tasks_repaired FROM mirror_reconcile")
            import aio_pika

            connection = await aio_pika.connect(broker_url)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(options.pulse.queue_name)
            await publish(broker_url, rec.messages[third:2 * third])  # no queue: lost
            log(f"drift: {2 * third - third} messages lost; following again")
            task = asyncio.create_task(follow(pool, options))

            async def gap_ended() -> bool:
                return bool(await pool.fetchval("SELECT count(*) FROM mirror_gaps"))

            await _until(gap_ended, "the gap")
            await publish(broker_url, [*rec.messages[2 * third:], last])

            async def repaired() -> bool:
                return bool(await pool.fetchval(
                    "SELECT bool_and(repaired_at IS NOT NULL) FROM mirror_gaps"))

            await _until(lambda: reached(last), "the last third")
            await _until(repaired, "the gap repaired")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            gap = await pool.fetchrow(
                "SELECT EXTRACT(EPOCH FROM repaired_at - ended) AS seconds FROM mirror_gaps "
                "ORDER BY id LIMIT 1")
            after = await pool.fetchrow("SELECT calls, tasks_repaired FROM mirror_reconcile")
            checker = Upstream(upstream)
            try:
                checked = await verify.verify(pool, checker, sample=10_000, settle_s=0)
            finally:
                await checker.close()
        finally:
            await pool.close()
    calls = after["calls"] - (before["calls"] if before else 0)
    tasks = after["tasks_repaired"] - (before["tasks_repaired"] if before else 0)
    return {"lost_messages": 2 * third - third, "repair_calls": calls, "tasks_repaired": tasks,
            "calls_per_repaired_task": round(calls / max(tasks, 1), 3),
            "gap_end_to_repaired_s": round(float(gap["seconds"]), 2),
            "verified_differences": len(checked.differences)}


async def _drain(admin_url: str, make_url: Callable[[str], str], broker_url: str,
                 upstream: str, traffic_messages: list[Message], followers: int) -> float:
    """Messages a second `followers` processes drain a full queue at."""
    url = await _fresh_database(admin_url, make_url, f"tcgraph_bench_drift_{followers}")
    options = _options(broker_url, upstream)
    await _declare_queue(options)
    marker = sentinel(1)
    await _publish_fast(broker_url, [*traffic_messages, marker])
    logs = Path(tempfile.mkdtemp(prefix="tcgraph-bench-drift-"))
    processes = []
    for i in range(followers):
        with open(logs / f"{i}.log", "wb") as out:  # the child keeps its own descriptor
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tcgraph", "follow", "--database-url", url,
                 "--upstream-root-url", upstream, "--pulse-url", broker_url,
                 "--queue-name", options.pulse.queue_name, "--follower-name", f"bench-{i}",
                 "--no-backfill", "--expire-every", "0", "--reconcile-rate", "0",
                 "--verify-every", "0"],
                stdout=out, stderr=subprocess.STDOUT))
    conn = await asyncpg.connect(url)
    try:
        async def started() -> bool:
            return bool(await conn.fetchval("SELECT COALESCE(max(batches), 0) FROM mirror_state"))

        async def drained() -> bool:
            done = await conn.fetchval("SELECT COALESCE(max(messages), 0) FROM mirror_state")
            return bool(done >= len(traffic_messages) + 1)

        await _until(started, "the first batch")
        begin = time.perf_counter()
        first = await conn.fetchval("SELECT messages FROM mirror_state")
        await _until(drained, "every message")
        elapsed = time.perf_counter() - begin
        total = await conn.fetchval("SELECT messages FROM mirror_state")
    finally:
        await conn.close()
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(30)
    return float(total - first) / elapsed


async def run_drift(admin_url: str, make_url: Callable[[str], str], log: Callable[[str], None],
                    *, messages: int) -> DriftFigures:
    from servers import serving

    rec = Recording.load()
    traffic = Traffic(rec)
    drained = traffic.copies(messages)
    served = Recording(messages=[], definitions=traffic.definitions)
    with running_rabbitmq() as broker:
        await declare_exchanges(broker.url, [EXCHANGE_PREFIX + e for e in EXCHANGES])
        repair = await _repair(admin_url, make_url, broker.url, log)
        log(f"drift: repair {repair}")
        with serving(upstream_app(served)) as upstream:
            rates = []
            for followers in (1, 2):
                rates.append(await _drain(admin_url, make_url, broker.url, upstream, drained,
                                          followers))
                log(f"drift: {followers} follower(s): {rates[-1]:,.0f} msg/s")
    figures = DriftFigures(**repair, follower_messages=len(drained),  # type: ignore[arg-type]
                           one_follower_per_s=round(rates[0], 1),
                           two_followers_per_s=round(rates[1], 1),
                           load_average=round(os.getloadavg()[0], 2))
    log(figures.line())
    return figures


def series(data_dir: Path, out: Path, *, quick: bool = False, messages: int | None = None) -> int:
    """Run the drift series on the bench's PostgreSQL in `data_dir`; write `out` (JSON)."""
    from bench.pg import BenchPostgres

    messages = messages or (5_000 if quick else 40_000)
    pg = BenchPostgres(data_dir)
    pg.start()
    try:
        figures = asyncio.run(run_drift(pg.url("postgres"), pg.url,
                                        lambda m: print(m, file=sys.stderr, flush=True),
                                        messages=messages))
    finally:
        pg.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join(["python -m", *(["bench.drift"] if sys.argv[0].endswith("drift.py")
                                            else ["bench"]), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        **asdict(figures)}, indent=2) + "\n")
    print(figures.line())
    print(f"wrote {out}")
    return 1 if figures.verified_differences else 0


def main() -> int:
    """`python -m bench.drift`: the drift series alone."""
    import argparse

    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__)
    p.add_argument("--messages", type=int, default=40_000,
                   help="messages drained by one and by two followers (default 40000)")
    p.add_argument("--data-dir", type=Path, default=root / ".bench")
    p.add_argument("--json", type=Path, default=root / "bench" / "results" / "drift.json")
    args = p.parse_args()
    return series(args.data_dir, args.json, messages=args.messages)


if __name__ == "__main__":
    raise SystemExit(main())
