"""The change log (migration 0012's triggers, store/queries/task_changes.py, and
store/expiry.py's delete_old_changes) on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, UTC

import asyncpg

from factories import FakeTask, store
from tcgraph.store import expiry
from tcgraph.store.pool import Database
from tcgraph.store.queries import task_changes
from tcgraph.store.queries.task_changes import Position


async def logged(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    rows = await pool.fetch("SELECT task_id, task_group_id FROM task_changes ORDER BY xid, seq")
    return [(r["task_id"], r["task_group_id"]) for r in rows]


async def test_every_real_change_is_logged_once_per_transaction(pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(task_group_id="g", state="pending") for _ in range(3)]
    # store() inserts the definitions, then updates the statuses: one row per task.
    await store(pool, tasks)
    assert sorted(await logged(pool)) == sorted((t.task_id, "g") for t in tasks)
    # The same statuses again change nothing, and log nothing.
    await store(pool, tasks)
    assert len(await logged(pool)) == 3
    await store(pool, [FakeTask(task_id=tasks[0].task_id, task_group_id="g", state="running")])
    await pool.execute("DELETE FROM tasks WHERE task_id = $1", tasks[1].task_id)
    assert (await logged(pool))[3:] == [(tasks[0].task_id, "g"), (tasks[1].task_id, "g")]


async def test_a_commit_notifies_once(pool: asyncpg.Pool, database_url: str) -> None:
    listener = await asyncpg.connect(database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("tcgraph_changes", lambda *args: heard.put_nowait(args[3]))
    try:
        await store(pool, [FakeTask(task_group_id="g") for _ in range(50)])
        await store(pool, [FakeTask(task_group_id="h")])
        # A transaction that changes nothing notifies nothing; a ping through the
        # same channel marks the end of what the commits sent.
        await pool.execute("SELECT pg_notify('tcgraph_changes', 'end')")
        payloads = [await asyncio.wait_for(heard.get(), 30) for _ in range(3)]
    finally:
        await listener.close()
    assert payloads == ["", "", "end"]


async def test_readers_stop_below_every_running_writer(pool: asyncpg.Pool) -> None:
    db = Database(pool)
    await store(pool, [FakeTask(task_group_id="g")])
    first = await task_changes.new_changes(db, Position(0, 0), 100)
    assert len(first.changes) == 1
    async with pool.acquire() as slow, slow.transaction():
        # A writer that has started (it has an id) but not committed holds the horizon.
        await slow.execute("SELECT pg_current_xact_id()")
        await store(pool, [FakeTask(task_group_id="g")])
        held = await task_changes.new_changes(db, first.changes[-1].position, 100)
        assert held.changes == []
    after = await task_changes.new_changes(db, first.changes[-1].position, 100)
    assert len(after.changes) == 1
    assert after.horizon > after.changes[0].position.xid


async def test_expiry_deletes_a_prefix_and_records_its_end(pool: asyncpg.Pool) -> None:
    await store(pool, [FakeTask(task_group_id="g") for _ in range(5)])
    await pool.execute("UPDATE task_changes SET changed = now() - interval '2 days'")
    await store(pool, [FakeTask(task_group_id="g")])
    # c.xid: the xid8 column (an unqualified `xid` would order by the text output column).
    rows = await pool.fetch("SELECT c.xid::text, c.seq FROM task_changes c ORDER BY c.xid, c.seq")
    cutoff = datetime.now(UTC) - timedelta(days=1)
    async with pool.acquire() as conn:
        assert await expiry.delete_old_changes(conn, cutoff, 2) == 2
        assert await expiry.delete_old_changes(conn, cutoff, 100) == 3
        assert await expiry.delete_old_changes(conn, cutoff, 100) == 0
    bounds = await task_changes.bounds(Database(pool))
    assert bounds.expired == Position(int(rows[4]["xid"]), rows[4]["seq"])
    assert bounds.next_xid > int(rows[5]["xid"])
    assert await pool.fetchval("SELECT count(*) FROM task_changes") == 1
