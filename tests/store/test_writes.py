"""The write statements' rules, against a real PostgreSQL."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tcgraph.model import IndexEntryRow, NamespaceRow
from tcgraph.precedence import entry_replaces
from tcgraph.store import writes

T0 = datetime(2026, 12, 1, tzinfo=UTC)
LATER = datetime(2099, 1, 1, tzinfo=UTC)


def entry(task: str, rank: float, resolved: datetime | None,
          expires: datetime = LATER) -> IndexEntryRow:
    return IndexEntryRow(namespace="a.b", name="c", task_id=task * 22, rank=rank, data="{}",
                         expires=expires, resolved=resolved)


async def held(pool: asyncpg.Pool) -> str:
    task_id: str = await pool.fetchval("SELECT task_id FROM index_entries")
    return task_id[0]


async def write_in_order(pool: asyncpg.Pool, rows: list[IndexEntryRow]) -> str:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM index_entries")
        for row in rows:
            await writes.upsert_index_entries(conn, [row])
    return await held(pool)


async def test_rank_then_the_later_completion_wins_in_any_order(pool: asyncpg.Pool) -> None:
    rows = [entry("A", 1, T0 + timedelta(seconds=5)), entry("B", 1, T0),
            entry("C", 0, T0 + timedelta(hours=1)), entry("D", 1, T0 + timedelta(seconds=5))]
    for order in itertools.permutations(rows):
        # A and D completed at the same time: the greater task id breaks the tie.
        assert await write_in_order(pool, list(order)) == "D", order
        winner = list(order)[0]
        for row in order:
            if entry_replaces(row, winner, T0):
                winner = row
        assert winner.task_id[0] == "D"


async def test_an_entry_without_a_completion_time_wins_ties_as_insert_task_does(
        pool: asyncpg.Pool) -> None:
    assert await write_in_order(pool, [entry("A", 1, T0), entry("B", 1, None)]) == "B"
    assert await write_in_order(pool, [entry("B", 1, None), entry("A", 1, T0)]) == "A"
    assert await write_in_order(pool, [entry("A", 2, None), entry("B", 1, None)]) == "A"


async def test_an_expired_entry_gives_way_to_any_other(pool: asyncpg.Pool) -> None:
    gone = entry("A", 9, T0, expires=datetime(2020, 1, 1, tzinfo=UTC))
    assert await write_in_order(pool, [gone, entry("B", 0, T0)]) == "B"


async def test_a_namespace_expiry_is_only_extended(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for days in (5, 3, 8, 1):
            await writes.upsert_namespaces(conn, [NamespaceRow("a", "b", T0 + timedelta(days))])
    assert await pool.fetchval("SELECT expires FROM index_namespaces") == T0 + timedelta(8)


async def test_a_transaction_aborted_for_a_conflict_is_run_again_a_bounded_number_of_times(
        pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    async def conflicting(conn: asyncpg.Connection) -> int:
        attempts.append(len(attempts) + 1)
        await conn.execute("INSERT INTO mirror_rejected (exchange, routing_key, problem, body) "
                           "VALUES ('', '', '', '')")
        if len(attempts) < 3:  # PostgreSQL's own serialization failure, as a conflict gives
            await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' "
                               "USING ERRCODE = 'serialization_failure'; END $$")
        return len(attempts)

    caplog.set_level(logging.INFO, logger=writes.__name__)
    assert await writes.in_transaction(pool, conflicting) == 3
    # The aborted attempts left nothing behind.
    assert await pool.fetchval("SELECT count(*) FROM mirror_rejected") == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"write transaction aborted (SerializationError), attempt {n} of "
        f"{writes.TRANSACTION_ATTEMPTS}" for n in (1, 2)]

    attempts.clear()

    async def always_conflicting(conn: asyncpg.Connection) -> None:
        attempts.append(len(attempts) + 1)
        await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' "
                           "USING ERRCODE = 'deadlock_detected'; END $$")

    with pytest.raises(asyncpg.DeadlockDetectedError):
        await writes.in_transaction(pool, always_conflicting)
    assert len(attempts) == writes.TRANSACTION_ATTEMPTS

    attempts.clear()

    async def refused(conn: asyncpg.Connection) -> None:
        attempts.append(1)
        await conn.execute("SELECT 1 / 0")

    with pytest.raises(asyncpg.DivisionByZeroError):
        await writes.in_transaction(pool, refused)
    assert attempts == [1]  # not a conflict: not run again
