"""The follow series: `tcgraph follow` fed synthetic pulse traffic shaped like the recording.

Synthetic traffic is the Taskcluster 106 recording (tests/fixtures/taskcluster-106)
copied as many times as needed, every taskId, taskGroupId and revision of each copy
replaced by fresh ones: the same exchanges, routing keys, CC routes, run histories,
retries, duplicates and index routes, for new tasks. A replay upstream serves the
copies' definitions. Two measurements, each on a fresh database and queue of a real
RabbitMQ on 127.0.0.1:

- sustained: all messages are published first, then a follower drains them;
  messages per second from its first committed batch to its last.
- lag at a fixed rate: messages are published at `rate` per second; each one's lag is
  from the moment it was due to be published to the commit of its batch (the follower's
  batch hook), so a stalled publisher counts as lag, never hides it.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.stats import percentile
from tcgraph.config import Settings
from tcgraph.ingest.events import EXCHANGE_PREFIX, EXCHANGES
from tcgraph.ingest.follow import FollowOptions, follow
from tcgraph.ingest.mirror import BatchResult, Delivery
from tcgraph.ingest.pulse import PulseOptions, bindings, queue_name
from tcgraph.store.migrate import migrate
from tcgraph.store.pool import open_pool

# The tests' own services (RabbitMQ, the replay upstream) have one home, in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from services.rabbitmq import running_rabbitmq  # noqa: E402
from services.replay import (Message, Recording, declare_exchanges, declare_queue,  # noqa: E402
                             sentinel, upstream_app)

_REVISION = re.compile(r"\b[0-9a-f]{40}\b")
_SLUGID = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])")


def _slug() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]


class Traffic:
    """Copies of the recording with fresh ids; `definitions` holds every copy's."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self._known = set(rec.definitions) | {d["taskGroupId"] for d in rec.definitions.values()}
        self._templates = [(m, m.body.decode()) for m in rec.messages]
        self._definitions = {t: orjson.dumps(d).decode()
                             for t, d in rec.definitions.items()}
        self.definitions: dict[str, dict[str, Any]] = {}

    def copy(self) -> list[Message]:
        """One more copy of the recording's messages, its definitions added."""
        fresh: dict[str, str] = {}
        revisions: dict[str, str] = {}

        def rename(text: str) -> str:
            text = _SLUGID.sub(lambda m: fresh.setdefault(m.group(0), _slug())
                               if m.group(0) in self._known else m.group(0), text)
            return _REVISION.sub(lambda m: revisions.setdefault(m.group(0),
                                                                secrets.token_hex(20)), text)

        messages = [Message(m.exchange, rename(m.routing_key),
                            tuple(rename(c) for c in m.cc), rename(body).encode())
                    for m, body in self._templates]
        for task_id, text in self._definitions.items():
            self.definitions[fresh.setdefault(task_id, _slug())] = orjson.loads(rename(text))
        return messages

    def copies(self, count: int) -> list[Message]:
        """As many whole copies as it takes to make at least `count` messages."""
        return [m for _ in range(-(-count // len(self.rec.messages))) for m in self.copy()]


@dataclass(frozen=True)
class FollowFigures:
    messages: int
    sustained_per_s: float
    rate: float
    rate_messages: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    per_cpu_second: float  # messages per second of this process's CPU while draining
    load_average: float  # the machine's 1-minute load average at the end

    def line(self) -> str:
        return (f"follow: {self.messages:,} messages drained at {self.sustained_per_s:,.0f} "
                f"msg/s ({self.per_cpu_second:,.0f} per CPU second of the follower's "
                f"process; load average {self.load_average:.1f}); at {self.rate:.0f} msg/s "
                f"({self.rate_messages:,} messages) lag p50 "
                f"{self.lag_p50_ms:.0f} ms, p99 {self.lag_p99_ms:.0f} ms, max "
                f"{self.lag_max_ms:.0f} ms")


async def _fresh_database(admin_url: str, make_url: Callable[[str], str], name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


def _options(broker_url: str, upstream: str) -> FollowOptions:
    return FollowOptions(
        root_url=upstream, backfill=False, expire_every_s=0,
        pulse=PulseOptions(url=broker_url, queue_name=queue_name(broker_url, _slug()),
                           bindings=bindings()))


async def _declare_queue(options: FollowOptions) -> None:
    await declare_queue(options.pulse.url, options.pulse.queue_name,
                        [(b.exchange, b.routing_key) for b in options.pulse.bindings])


async def _publish_fast(url: str, messages: Sequence[Message], window: int = 1000) -> None:
    """Publish everything, persistent and confirmed, with `window` confirms awaited at once."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges = {e: await channel.get_exchange(EXCHANGE_PREFIX + e, ensure=False)
                     for e in EXCHANGES}
        for start in range(0, len(messages), window):
            await asyncio.gather(*(
                exchanges[m.exchange.removeprefix(EXCHANGE_PREFIX)].publish(
                    aio_pika.Message(m.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                     headers={"CC": list(m.cc)} if m.cc else {}),
                    routing_key=m.routing_key)
                for m in messages[start:start + window]))


def _paced_publisher(plan: str, url: str, rate: float, started: Any) -> None:
    """Publish the planned messages, message i at wall-clock `start + i / rate`; `start`
    is sent on `started` once connected."""
    import aio_pika

    async def run() -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            planned = [orjson.loads(line) for line in Path(plan).read_text().splitlines()]
            exchanges: dict[str, Any] = {}
            for exchange, *_ in planned:
                if exchange not in exchanges:
                    exchanges[exchange] = await channel.get_exchange(exchange, ensure=False)
            start = time.time() + 0.5
            started.send(start)
            for i, (exchange, routing_key, cc, body) in enumerate(planned):
                wait = start + i / rate - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await exchanges[exchange].publish(
                    aio_pika.Message(body.encode(), headers={"CC": cc} if cc else {}),
                    routing_key=routing_key)

    asyncio.run(run())


async def run_follow(admin_url: str, make_url: Callable[[str], str], log: Callable[[str], None],
                     *, messages: int = 100_000, rate: float = 300.0,
                     rate_seconds: float = 60.0) -> FollowFigures:
    """Both measurements; `make_url(name)` is the URL of database `name` on the bench server."""
    from servers import serving  # tests/servers.py: uvicorn in a thread

    rec = Recording.load()
    traffic = Traffic(rec)
    drained = traffic.copies(messages)
    log(f"follow: built {len(drained) // len(rec.messages)} copies of the recording "
        f"({len(drained):,} messages)")
    paced = traffic.copies(int(rate * rate_seconds))[:int(rate * rate_seconds)]
    served = Recording(messages=[], definitions=traffic.definitions)
    settings = Settings(pool_min_size=1, pool_max_size=4)
    with running_rabbitmq() as broker, serving(upstream_app(served)) as upstream:
        await declare_exchanges(broker.url, [EXCHANGE_PREFIX + e for e in EXCHANGES])

        # 1. sustained: drain a full queue.
        url = await _fresh_database(admin_url, make_url, "tcgraph_bench_follow")
        options = _options(broker.url, upstream)
        await _declare_queue(options)
        marker = sentinel(1)
        log(f"follow: publishing {len(drained):,} messages")
        await _publish_fast(broker.url, [*drained, marker])
        commits: list[tuple[float, int]] = []
        done = asyncio.Event()

        async def count(deliveries: Sequence[Delivery], result: BatchResult) -> None:
            commits.append((time.perf_counter(), len(deliveries)))
            if deliveries[-1].routing_key == marker.routing_key:
                done.set()

        pool = await open_pool(url, settings)
        log("follow: draining")
        cpu = time.process_time()
        task = asyncio.create_task(follow(pool, options, on_batch=count))
        await asyncio.wait_for(done.wait(), 3600)
        cpu = time.process_time() - cpu
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
        first, last = commits[0][0], commits[-1][0]
        counted = sum(n for _, n in commits[1:])
        sustained = counted / (last - first)
        drained_count = sum(n for _, n in commits)
        per_cpu_second = drained_count / cpu
        log(f"follow: {drained_count:,} messages in {len(commits)} batches, "
            f"{sustained:,.0f} msg/s; {cpu:.1f} s of CPU in this process "
            f"({per_cpu_second:,.0f} msg per CPU second)")

        # 2. lag at a fixed rate.
        url = await _fresh_database(admin_url, make_url, "tcgraph_bench_follow_rate")
        options = _options(broker.url, upstream)
        await _declare_queue(options)
        due: dict[tuple[str, str], float] = {}
        lags: list[float] = []

        async def lag(deliveries: Sequence[Delivery], result: BatchResult) -> None:
            now = time.time()
            for d in deliveries:
                sent = due.pop((d.exchange, d.routing_key), None)
                if sent is not None:
                    lags.append((now - sent) * 1000)

        pool = await open_pool(url, settings)
        task = asyncio.create_task(follow(pool, options, on_batch=lag))
        # The publisher runs in a process of its own, so that the follower's work never
        # delays it (and a delay would hide lag); wall-clock times are shared. It names
        # the start of its schedule once it is connected.
        plan = Path(tempfile.mkdtemp(prefix="tcgraph-bench-")) / "paced.jsonl"
        plan.write_bytes(b"".join(orjson.dumps([m.exchange, m.routing_key, list(m.cc),
                                                m.body.decode()]) + b"\n" for m in paced))
        log(f"follow: publishing {len(paced):,} messages at {rate:.0f}/s")
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        publisher = context.Process(target=_paced_publisher,
                                    args=(str(plan), broker.url, rate, sender))
        publisher.start()
        start = await asyncio.to_thread(receiver.recv)
        for i, m in enumerate(paced):
            due.setdefault((m.exchange, m.routing_key), start + i / rate)
        await asyncio.to_thread(publisher.join)
        deadline = time.time() + 120
        while due and time.time() < deadline:
            await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
    figures = FollowFigures(
        messages=sum(n for _, n in commits), sustained_per_s=round(sustained, 1), rate=rate,
        rate_messages=len(lags), lag_p50_ms=round(percentile(lags, 50), 1),
        lag_p99_ms=round(percentile(lags, 99), 1), lag_max_ms=round(max(lags), 1),
        per_cpu_second=round(per_cpu_second, 1), load_average=round(os.getloadavg()[0], 2))
    log(figures.line())
    return figures


def series(data_dir: Path, out: Path, *, quick: bool = False, messages: int | None = None,
           rate: float = 300.0, rate_seconds: float | None = None) -> int:
    """Run the follow series on the bench's PostgreSQL in `data_dir`; write `out` (JSON)."""
    import json

    from bench.pg import BenchPostgres

    messages = messages or (5_000 if quick else 100_000)
    rate_seconds = rate_seconds or (10.0 if quick else 60.0)
    pg = BenchPostgres(data_dir)
    pg.start()
    try:
        figures = asyncio.run(run_follow(
            pg.url("postgres"), pg.url, lambda m: print(m, file=sys.stderr, flush=True),
            messages=messages, rate=rate, rate_seconds=rate_seconds))
    finally:
        pg.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join(["python -m", *(["bench.follow"] if sys.argv[0].endswith("follow.py")
                                            else ["bench"]), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        **figures.__dict__}, indent=2) + "\n")
    print(figures.line())
    print(f"wrote {out}")
    met = figures.sustained_per_s >= 2000 and figures.lag_p99_ms < 1000
    print("targets: >= 2,000 msg/s sustained, p99 lag < 1 s at 300 msg/s: "
          + ("met" if met else "NOT met"))
    return 0


def main() -> int:
    """`python -m bench.follow`: the follow series alone."""
    import argparse

    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(prog="python -m bench.follow", description=__doc__)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--rate-seconds", type=float, default=60.0)
    p.add_argument("--data-dir", type=Path, default=root / ".bench")
    p.add_argument("--json", type=Path, default=root / "bench" / "results" / "follow.json")
    args = p.parse_args()
    return series(args.data_dir, args.json, messages=args.messages, rate=args.rate,
                  rate_seconds=args.rate_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
