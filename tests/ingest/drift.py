"""Helpers for the tests of lost messages, gaps and reconciliation (ingest/gaps.py,
reconcile.py, verify.py): a follower that reconciles quickly, and the events to wait for."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime

import aio_pika
import asyncpg

from ingest.conftest import follow_options, reached
from services.replay import Message, publish, sentinel
from waiting import eventually_async
from tcgraph.ingest.follow import FollowOptions
from tcgraph.ingest.reconcile import ReconcileOptions

# Fast enough that a test does not wait long, bounded all the same.
RATE = 20.0


def drifting_options(broker_url: str, upstream_url: str, *, name: str | None = None,
                     follower: str = "follower-1", rate: float = RATE,
                     batch_size: int = 1000) -> FollowOptions:
    """A follower that reconciles at `rate` calls a second, a pass right after another."""
    return replace(follow_options(broker_url, upstream_url, name=name, batch_size=batch_size),
                   name=follower, reconcile=ReconcileOptions(rate=rate, every_s=0.2),
                   verify_every_s=0)


def dropped(messages: list[Message], fraction: float, seed: int) -> list[Message]:
    """`messages` without a `fraction` of them, picked at random (never published)."""
    rng = random.Random(seed)
    return [m for m in messages if rng.random() >= fraction]


async def database_now(conn: asyncpg.Pool | asyncpg.Connection) -> datetime:
    now: datetime = await conn.fetchval("SELECT now()")
    return now


async def reconciled_since(conn: asyncpg.Pool | asyncpg.Connection, since: datetime) -> bool:
    """Whether a reconciliation pass that started after `since` is complete, and no
    gap waits for repair."""
    return bool(await conn.fetchval(
        "SELECT (SELECT last_pass_started > $1 FROM mirror_reconcile) "
        "AND NOT EXISTS (SELECT 1 FROM mirror_gaps WHERE repaired_at IS NULL)", since))


async def publish_and_settle(pool: asyncpg.Pool, broker_url: str, messages: list[Message],
                             n: int) -> None:
    """Publish `messages` and sentinel `n` after them; return once the sentinel's batch is
    written and a reconciliation pass that started after it is complete."""
    marker = sentinel(n)
    await publish(broker_url, [*messages, marker])
    await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
    after = await database_now(pool)
    await eventually_async(lambda: reconciled_since(pool, after), what="a pass after the sentinel")


async def gap_recorded(conn: asyncpg.Pool | asyncpg.Connection, reason: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM mirror_gaps WHERE reason = $1)",
                                    reason))


async def delete_queue(url: str, name: str) -> None:
    """Delete a queue, as pulse does with one that grew too long (its messages are lost)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def repaired(conn: asyncpg.Pool | asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT COALESCE(max(tasks_repaired), 0) FROM mirror_reconcile"))
