"""Backfill from the REST upstream: `tcgraph backfill`, and the follower's own backfill of
task groups it first sees in the middle of a push."""

from __future__ import annotations

import subprocess
import sys

import asyncpg

from ingest.conftest import follow_options, following, prepare_queue, reached
from ingest.oracle import mismatches
from ingest.test_pulse import ALL_EXCHANGES
from services.rabbitmq import RabbitMQ
from services.replay import Recording, declare_exchanges, publish, sentinel
from tcgraph.config import Settings
from tcgraph.store.pool import open_pool
from waiting import eventually_async


async def test_backfill_of_every_group_and_the_index_gives_every_recorded_answer(
        database_url: str, upstream: str, recording: Recording) -> None:
    groups = sorted(recording.groups)
    done = subprocess.run(
        [sys.executable, "-m", "tcgraph", "backfill", "--database-url", database_url,
         "--upstream-root-url", upstream, *[a for g in groups for a in ("--task-group", g)],
         "--index", "gecko"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for group in groups:
        assert f"task group {group}: {len(recording.groups[group])} tasks" in done.stderr
    assert f"index gecko: 0 tasks, {len(recording.found)} index entries" in done.stderr
    pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=2))
    try:
        assert await mismatches(pool, recording, database_url) == []
    finally:
        await pool.close()


async def _groups_backfilled(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM mirror_groups WHERE backfilled IS NULL)")


async def test_a_follower_started_mid_push_backfills_the_groups_it_first_sees(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = follow_options(broker.url, upstream, backfill=True)
    await prepare_queue(options)
    marker = sentinel(1)
    # Everything before this was published before the follower's queue existed.
    await publish(broker.url, [*recording.messages[700:], marker])
    async with following(database_url, options) as pool:
        await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
        await eventually_async(lambda: _groups_backfilled(pool), what="the backfills")
        backfilled = await pool.fetchval("SELECT count(*) FROM mirror_groups")
        assert backfilled == len({m.routing_key.split(".")[8] for m in recording.messages[700:]
                                  if m.exchange.endswith(("task-defined", "task-pending",
                                                          "task-running", "task-completed",
                                                          "task-failed", "task-exception"))})
        assert await mismatches(pool, recording, database_url) == []
