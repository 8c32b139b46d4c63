"""The follower killed with SIGKILL, and PostgreSQL stopped under it: nothing lost, nothing doubled.

The points of failure are chosen by events (after the k-th committed batch), never by
time; the final answers must equal the recorded ones every time.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ingest.conftest import (batches_written, follow_options, following, prepare_queue,
                             reached)
from ingest.drift import gap_recorded
from ingest.oracle import mismatches
from ingest.test_pulse import ALL_EXCHANGES
from services.rabbitmq import RabbitMQ
from services.replay import Recording, declare_exchanges, publish, sentinel
from tcgraph.config import Settings
from tcgraph.ingest import gaps
from tcgraph.store.migrate import migrate
from tcgraph.store.pool import open_pool
from test_adversity import OwnPostgres
from waiting import eventually_async

BATCH = 20  # small batches: many commit points to fail between


def start_follower(database_url: str, broker: RabbitMQ, upstream: str, queue: str,
                   log: Path) -> subprocess.Popen[bytes]:
    """`tcgraph follow` in its own process (and process group, to kill it whole)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tcgraph", "follow", "--database-url", database_url,
             "--upstream-root-url", upstream, "--pulse-url", broker.url, "--queue-name", queue,
             "--no-backfill", "--batch-size", str(BATCH)],
            stdout=out, stderr=out, start_new_session=True)


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


async def at_least(conn: asyncpg.Connection, batches: int) -> bool:
    return await batches_written(conn) >= batches


async def test_kill_9_of_the_follower_at_committed_batches_loses_and_doubles_nothing(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording,
        tmp_path: Path) -> None:
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = follow_options(broker.url, upstream)
    await prepare_queue(options)
    marker = sentinel(1)
    await publish(broker.url, [*recording.messages, marker])
    conn = await asyncpg.connect(database_url)
    name = options.pulse.queue_name
    try:
        for k in (3, 11, 25):  # killed after the k-th commit, before or after its ack
            follower = start_follower(database_url, broker, upstream, name, tmp_path / "log")
            try:
                await eventually_async(functools.partial(at_least, conn, k), what=f"batch {k}")
            finally:
                kill(follower)
            assert not await reached(conn, marker), "the stream ended before the kill"
        follower = start_follower(database_url, broker, upstream, name, tmp_path / "log")
        try:
            await eventually_async(lambda: reached(conn, marker), what="the sentinel's batch")
        finally:
            kill(follower)
    finally:
        await conn.close()
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=2))
    try:
        assert await mismatches(pool, recording, database_url) == []
    finally:
        await pool.close()


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    """A PostgreSQL of this test's own, migrated, that it may stop and start."""
    with tempfile.TemporaryDirectory(prefix="tcgraph-follow-pg-") as tmp:
        pg = OwnPostgres(Path(tmp))
        try:
            async def create() -> None:
                conn = await asyncpg.connect(pg.url)
                try:
                    await migrate(conn)
                finally:
                    await conn.close()

            asyncio.run(create())
            yield pg
        finally:
            pg.close()


async def test_postgresql_stopped_and_started_under_the_follower_loses_nothing(
        own_pg: OwnPostgres, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = follow_options(broker.url, upstream, batch_size=BATCH)
    await prepare_queue(options)
    half = len(recording.messages) // 2
    await publish(broker.url, recording.messages[:half])
    async with following(own_pg.url, options) as pool:
        await eventually_async(lambda: at_least(pool, 5), what="five committed batches")
        await asyncio.to_thread(own_pg.stop)
        marker = sentinel(1)
        # Published while the database is down: the follower holds its batch, unacknowledged.
        await publish(broker.url, [*recording.messages[half:], marker])
        await asyncio.to_thread(own_pg.start)
        await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
        assert await mismatches(pool, recording, own_pg.url) == []
        # The outage is a gap, recorded once a batch commits again.
        await eventually_async(lambda: gap_recorded(pool, gaps.DATABASE_UNAVAILABLE),
                      what="the outage recorded as a gap")
