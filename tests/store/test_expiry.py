"""store/expiry.py: bounded batches of deletes, oldest first, never waiting on a held row."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from factories import BASE, FakeTask, store
from services.postgres import connected
from store.plans import Statement, assert_uses
from tcgraph.store import expiry

# FakeTask expires a year after it was created.
NOW = BASE + timedelta(days=365 + 30)


class RecordingConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that keeps each statement it executes (asyncpg's connection_class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executed: list[Statement] = []

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        if args:
            self.executed.append(Statement(query, args))
        status: str = await super().execute(query, *args, timeout=timeout)
        return status

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None,
                       record_class: Any = None) -> Any:
        self.executed.append(Statement(query, args))
        return await super().fetchrow(query, *args, timeout=timeout, record_class=record_class)


async def task_ids(pool: asyncpg.Pool) -> set[str]:
    return {r["task_id"] for r in await pool.fetch("SELECT task_id FROM tasks")}


@pytest.fixture
async def aged(pool: asyncpg.Pool) -> list[FakeTask]:
    """Four tasks expired at NOW (oldest first), and one that is not."""
    old = [FakeTask(created=BASE + timedelta(minutes=n)) for n in range(4)]
    await store(pool, [*old, FakeTask(created=BASE + timedelta(days=60))])
    return old


async def test_a_batch_takes_at_most_its_limit_oldest_first(
        pool: asyncpg.Pool, database_url: str, aged: list[FakeTask]) -> None:
    before = await task_ids(pool)
    async with connected(database_url) as conn:
        deleted, key = await expiry.delete_expired_tasks(conn, NOW, 3, expiry.TaskKey.start())
        assert deleted == 3
    assert before - await task_ids(pool) == {t.task_id for t in aged[:3]}
    async with connected(database_url) as conn:
        deleted, key = await expiry.delete_expired_tasks(conn, NOW, 3, key)
        assert deleted == 1
        assert await expiry.delete_expired_tasks(conn, NOW, 3, key) == (0, key)
    assert len(await task_ids(pool)) == 1  # the unexpired task


async def test_a_row_another_writer_holds_is_left_for_the_next_pass(
        pool: asyncpg.Pool, database_url: str, aged: list[FakeTask]) -> None:
    async with connected(database_url) as holder, connected(database_url) as conn:
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM tasks WHERE task_id = $1 FOR UPDATE",
                             aged[0].task_id)
        # Not waited for: the batch is answered while the row is still held.
        deleted, _ = await asyncio.wait_for(
            expiry.delete_expired_tasks(conn, NOW, 2, expiry.TaskKey.start()), 60)
        assert deleted == 2
        await holder.execute("ROLLBACK")
    left = await task_ids(pool)
    assert aged[0].task_id in left
    assert not {aged[1].task_id, aged[2].task_id} & left


async def test_tasks_are_walked_through_their_expiry_key_index(
        pool: asyncpg.Pool, database_url: str) -> None:
    conn = await asyncpg.connect(database_url, connection_class=RecordingConnection)
    try:
        assert await expiry.delete_expired_tasks(conn, NOW, 10, expiry.TaskKey.start()) \
            == (0, expiry.TaskKey.start())
        (statement,) = conn.executed
    finally:
        await conn.close()
    await assert_uses(pool, statement, "tasks_expires_task_id")


@pytest.mark.parametrize("table, index", [
    ("index_entries", "index_entries_expires"),
    ("index_namespaces", "index_namespaces_expires"),
    ("mirror_waiting", "mirror_waiting_expires"),
])
async def test_each_table_finds_its_expired_rows_through_its_expiry_index(
        pool: asyncpg.Pool, database_url: str, table: str, index: str) -> None:
    conn = await asyncpg.connect(database_url, connection_class=RecordingConnection)
    try:
        assert await expiry.delete_expired(conn, table, NOW, 10) == 0
        (statement,) = conn.executed
    finally:
        await conn.close()
    await assert_uses(pool, statement, index)


async def test_labels_come_in_order_a_chunk_at_a_time(pool: asyncpg.Pool,
                                                      database_url: str) -> None:
    await store(pool, [FakeTask(label=label) for label in ("c", "a", "b", "a")])
    async with connected(database_url) as conn:
        assert await expiry.labels_after(conn, "", 2) == ["a", "b"]
        assert await expiry.labels_after(conn, "b", 2) == ["c"]
        assert await expiry.labels_after(conn, "c", 2) == []
