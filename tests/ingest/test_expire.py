"""Expiry and label retention against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import asyncpg
import pytest
from factories import BASE, FakeTask, store

from tcgraph.ingest.expire import expire, trim_labels
from tcgraph.model import StatusRow
from tcgraph.store import writes

# FakeTask expires a year after it was created.
NOW = BASE + timedelta(days=365 + 30)
OLD = BASE  # expired at NOW
NEW = BASE + timedelta(days=60)  # not yet


async def ids(pool: asyncpg.Pool) -> set[str]:
    return {r["task_id"] for r in await pool.fetch("SELECT task_id FROM tasks")}


async def test_expired_rows_go_in_bounded_batches(pool: asyncpg.Pool) -> None:
    old = [FakeTask(created=OLD + timedelta(minutes=n)) for n in range(5)]
    new = [FakeTask(created=NEW, dependencies=[old[0].task_id])]
    await store(pool, old + new, entries=[
        ("gone.soon.a", old[0].task_id, 0, NOW - timedelta(days=3)),
        ("kept.later.b", new[0].task_id, 0, NOW + timedelta(days=3)),
    ])
    done = await expire(pool, now=NOW, batch_size=2, max_batches=2)
    # Two batches of two, oldest first: one expired task is left for the next pass.
    assert done.tasks == 4
    assert await ids(pool) == {old[4].task_id, new[0].task_id}
    done = await expire(pool, now=NOW, batch_size=2)
    assert done.tasks == 1 and await ids(pool) == {new[0].task_id}
    assert done.index_entries == 0  # gone in the first pass
    entries = {r["namespace"] for r in await pool.fetch("SELECT namespace FROM index_entries")}
    assert entries == {"kept.later"}
    namespaces = {(r["parent"], r["name"]) for r in await pool.fetch(
        "SELECT parent, name FROM index_namespaces")}
    # `gone.soon` expired a day after its entry, `gone` a day after that: still before NOW.
    assert namespaces == {("", "kept"), ("kept", "later")}
    # The edge from the kept task to an expired one stays with the kept task; the
    # expired tasks' own edges went with them.
    assert await pool.fetchval("SELECT count(*) FROM task_dependencies") == 1
    assert (await expire(pool, now=NOW)).tasks == 0


async def test_tasks_that_expire_at_the_same_time_all_go_across_batches(
        pool: asyncpg.Pool) -> None:
    # The walk carries on after the last (expires, task_id) deleted: a run of equal
    # expiry times longer than a batch is not cut short at the batch's end.
    same = [FakeTask(created=OLD) for _ in range(7)]
    kept = FakeTask(created=NEW)
    await store(pool, same + [kept])
    done = await expire(pool, now=NOW, batch_size=3)
    assert done.tasks == 7 and await ids(pool) == {kept.task_id}


async def test_a_task_another_writer_holds_is_left_for_the_next_pass(
        pool: asyncpg.Pool) -> None:
    old = [FakeTask(created=OLD + timedelta(minutes=n)) for n in range(4)]
    await store(pool, old)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM tasks WHERE task_id = $1 FOR UPDATE",
                             old[1].task_id)
        done = await expire(pool, now=NOW, batch_size=2)
        assert done.tasks == 3 and await ids(pool) == {old[1].task_id}
    assert (await expire(pool, now=NOW)).tasks == 1


def at(days: int) -> datetime:
    return BASE + timedelta(days=days)


async def test_label_history_keeps_last_success_last_failure_and_the_newest(
        pool: asyncpg.Pool) -> None:
    success = FakeTask(label="L", state="completed", created=at(1))
    failure = FakeTask(label="L", state="failed", created=at(2))
    older = [FakeTask(label="L", state="completed", created=at(0))]
    newest = [FakeTask(label="L", state="exception", created=at(10 + n)) for n in range(3)]
    pending = FakeTask(label="L", state="pending", created=at(-5))
    other_project = FakeTask(label="L", state="completed", created=at(-9), project_id="comm")
    other_label = FakeTask(label="M", state="completed", created=at(-9))
    unlabelled = FakeTask(label=None, state="completed", created=at(-9))
    await store(pool, [success, failure, *older, *newest, pending, other_project,
                       other_label, unlabelled])
    deleted = await trim_labels(pool, keep=2, label_batch=1)
    # Kept: the two newest (exceptions), the last failure is the newest exception, so
    # `failure` goes; the last success; unresolved tasks; other projects' and labels' own.
    assert deleted == 3
    assert await ids(pool) == {
        newest[2].task_id, newest[1].task_id, success.task_id, pending.task_id,
        other_project.task_id, other_label.task_id, unlabelled.task_id}
    assert await trim_labels(pool, keep=2) == 0
    await trim_labels(pool, keep=0)
    assert await ids(pool) == {
        newest[2].task_id, success.task_id, pending.task_id, other_project.task_id,
        other_label.task_id, unlabelled.task_id}


async def test_expire_trims_labels_when_asked(pool: asyncpg.Pool) -> None:
    tasks = [FakeTask(label="L", state="completed", created=at(n)) for n in range(4)]
    await store(pool, tasks)
    done = await expire(pool, now=BASE, keep_per_label=1)
    assert (done.tasks, done.trimmed) == (0, 3)
    with pytest.raises(ValueError):
        await trim_labels(pool, keep=-1)


def test_the_expire_command(database_url: str) -> None:
    for args, expected in ((["--keep-per-label", "-1"], 2), (["--keep-per-label", "3"], 0)):
        result = subprocess.run(
            [sys.executable, "-m", "tcgraph", "expire", "--database-url", database_url, *args],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == expected, result.stderr
    assert result.stderr.strip().endswith(
        "expired: 0 tasks, 0 index entries, 0 namespaces, 0 tasks trimmed from label history")


async def test_statuses_whose_definition_never_came_expire_with_their_task(
        pool: asyncpg.Pool) -> None:
    def waiting(n: int, expires: datetime | None) -> writes.WaitingRow:
        status = StatusRow(task_id=f"Waiting{n:015d}", state="pending", runs="[]",
                           retries_left=5, rank=0)
        return writes.WaitingRow(group="WaitingGroupWaitingGr0", status=status,
                                 expires=expires)

    rows = [waiting(n, NOW - timedelta(days=n + 1)) for n in range(3)]
    rows += [waiting(3, NOW + timedelta(days=1)), waiting(4, None)]

    async def keep(conn: asyncpg.Connection) -> None:
        await writes.upsert_waiting(conn, rows)

    await writes.in_transaction(pool, keep)
    done = await expire(pool, now=NOW, batch_size=2, max_batches=1)
    assert done.waiting == 2  # bounded: oldest first, the third next time
    left = {r["task_id"] for r in await pool.fetch("SELECT task_id FROM mirror_waiting")}
    assert left == {rows[0].status.task_id, rows[3].status.task_id, rows[4].status.task_id}
    assert (await expire(pool, now=NOW)).waiting == 1
    left = {r["task_id"] for r in await pool.fetch("SELECT task_id FROM mirror_waiting")}
    assert left == {rows[3].status.task_id, rows[4].status.task_id}
