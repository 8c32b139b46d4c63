"""Importing over what is stored: the same file twice, older statuses, statuses before their
definitions, index ranks, and the caller's transaction."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from ingest.dumps import (GROUP, TASK_A, TASK_B, TASK_C, definition, entry, run, snapshot,
                          status, write, write_lines)
from tcgraph.ingest.files import ImportFailed, import_documents, import_source
from tcgraph.model import State
from tcgraph.store.pool import Database
from tcgraph.store.queries import index_entries, tasks


async def test_importing_twice_changes_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = write(tmp_path / "dump.json", [
        {"taskGroupId": GROUP, "tasks": [
            {"status": status(TASK_A, [run(0, "completed")]), "task": definition()},
            {"status": status(TASK_B, []), "task": definition(dependencies=[TASK_A])},
        ]},
        {"tasks": [entry("a.b.c", TASK_A, 5, {"k": 1}), entry("a.d", TASK_B, 1)]},
        {"taskId": TASK_C, "task": definition(tags={"label": "c"})},
    ])
    first = await import_source(pool, path)
    before = await snapshot(pool)
    assert [len(rows) for rows in before.values()] == [3, 1, 2, 2]
    assert await import_source(pool, path) == first
    assert await snapshot(pool) == before


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
async def test_an_older_status_never_replaces_a_newer_one(
    pool: asyncpg.Pool, tmp_path: Path, batch_size: int
) -> None:
    task = {"taskId": TASK_A, "task": definition()}
    newer = status(TASK_A, [run(0, "exception"), run(1, "running")])  # rank 22
    older = status(TASK_A, [run(0, "running")])  # rank 12
    await import_source(pool, write_lines(tmp_path / "a.jsonl", [
        task, {"status": newer}, {"status": older}]), batch_size=batch_size)
    assert (await tasks.tasks_by_id(Database(pool), [TASK_A]))[TASK_A].state is State.RUNNING
    assert await pool.fetchval("SELECT status_rank FROM tasks") == 22

    # A later file with the older status changes nothing either...
    await import_source(pool, write(tmp_path / "old.json", {"status": older}),
                        batch_size=batch_size)
    assert await pool.fetchval("SELECT status_rank FROM tasks") == 22
    # ...and one with a newer status replaces it.
    await import_source(pool, write(tmp_path / "new.json", {
        "status": status(TASK_A, [run(0, "exception"), run(1, "completed")])}),
        batch_size=batch_size)
    stored = (await tasks.tasks_by_id(Database(pool), [TASK_A]))[TASK_A]
    assert (stored.state, len(stored.runs)) == (State.COMPLETED, 2)


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
async def test_statuses_may_come_before_their_definitions(
    pool: asyncpg.Pool, tmp_path: Path, batch_size: int
) -> None:
    # Of the statuses of one task in one file, the highest rank wins, the later on ties:
    # A: a newer status first, an older one after its definition -> the newer.
    # B: two statuses of equal rank around the definition -> the later (worker "second").
    # C: the same, both before the definition.
    await import_source(pool, write_lines(tmp_path / "out-of-order.jsonl", [
        {"status": status(TASK_C, [run(0, "completed", workerId="first")])},
        {"status": status(TASK_C, [run(0, "completed", workerId="second")])},
        {"statuses": [
            {"taskId": TASK_A, "status": status(TASK_A, [run(0, "exception"), run(1, "failed")])},
            {"taskId": TASK_B, "status": status(TASK_B, [run(0, "completed", workerId="first")])},
        ]},
        {"tasks": [{"taskId": TASK_A, "task": definition()},
                   {"taskId": TASK_B, "task": definition(tags={"label": "b"})},
                   {"taskId": TASK_C, "task": definition(tags={"label": "c"})}]},
        {"status": status(TASK_A, [run(0, "running")])},
        {"status": status(TASK_B, [run(0, "completed", workerId="second")])},
    ]), batch_size=batch_size)
    found = await tasks.tasks_by_id(Database(pool), [TASK_A, TASK_B, TASK_C])
    assert (found[TASK_A].state, len(found[TASK_A].runs)) == (State.FAILED, 2)
    assert found[TASK_B].runs[0].worker_id == "second"
    assert found[TASK_C].runs[0].worker_id == "second"


@pytest.mark.parametrize("batch_size", [1, 1000])
async def test_index_entries_keep_the_highest_rank(
    pool: asyncpg.Pool, tmp_path: Path, batch_size: int
) -> None:
    await import_source(pool, write(tmp_path / "one.json", {"tasks": [
        entry("ns.high-first", TASK_A, 10), entry("ns.high-first", TASK_B, 5),
        entry("ns.low-first", TASK_A, 5), entry("ns.low-first", TASK_B, 10),
        entry("ns.tie", TASK_A, 7), entry("ns.tie", TASK_B, 7),
        # An expired entry gives way to any other.
        entry("ns.expired", TASK_A, 10, expires="2020-01-01T00:00:00Z"),
        entry("ns.expired", TASK_B, 1),
    ]}), batch_size=batch_size)
    found = await index_entries.index_entries(Database(pool), [
        ("ns", "high-first"), ("ns", "low-first"), ("ns", "tie"), ("ns", "expired")])
    assert [e.task_id if e else None for e in found] == [TASK_A, TASK_B, TASK_B, TASK_B]

    # Across files: a lower rank is ignored, an equal one replaces.
    await import_source(pool, write(tmp_path / "two.json", {"tasks": [
        entry("ns.high-first", TASK_C, 9), entry("ns.tie", TASK_C, 7)]}),
        batch_size=batch_size)
    high_first, tie = await index_entries.index_entries(
        Database(pool), [("ns", "high-first"), ("ns", "tie")])
    assert (high_first and high_first.task_id, tie and tie.task_id) == (TASK_A, TASK_C)


async def test_import_documents_uses_the_callers_transaction(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        summary = await import_documents(
            conn, [("document 1", {"taskId": TASK_A, "task": definition()})], "generated")
        assert summary.tasks == 1
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 1
        await transaction.rollback()
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0

    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(ImportFailed) as failed:
            await import_documents(conn, [
                ("line 7", {"taskGroupId": GROUP, "tasks": [{"task": definition()}]})], "gen")
    assert failed.value.where == "line 7, tasks[0]"
    assert failed.value.problem == "missing required field 'taskId'"
