"""tcgraph.precedence: its rules, and the write statements keeping exactly what they say.

Every pair of a generated set goes through the Python rule and through the real
statements of store/writes.py (which embed the rule's SQL) on a real
PostgreSQL; both must keep the same row.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from tcgraph.model import RUN_STATES, IndexEntryRow, StatusRow, TaskRow
from tcgraph.precedence import entry_replaces, status_rank, status_replaces
from tcgraph.store import writes

T0 = datetime(2026, 12, 1, tzinfo=UTC)
LATER = datetime(2099, 1, 1, tzinfo=UTC)
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)

# Every sequence of up to two runs: 31 sequences, 961 ordered pairs.
SEQUENCES: list[tuple[str, ...]] = [
    seq for n in range(3) for seq in itertools.product(RUN_STATES, repeat=n)]
PAIRS = list(itertools.product(SEQUENCES, repeat=2))


def test_status_rank_orders_runs_then_progress() -> None:
    ranks = [status_rank(s) for s in (
        [], ["pending"], ["running"], ["completed"], ["exception", "pending"],
        ["exception", "running"], ["exception", "failed"])]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert status_rank(["completed"]) == status_rank(["failed"])


def _task_id(i: int) -> str:
    return f"T{i:021d}"


def _status(task_id: str, states: Sequence[str]) -> StatusRow:
    runs = [{"runId": i, "state": s, "reasonCreated": "scheduled",
             "scheduled": "2026-12-01T00:00:00.000Z"} for i, s in enumerate(states)]
    return StatusRow(task_id=task_id, state=states[-1] if states else "unscheduled",
                     runs=orjson.dumps(runs).decode(), retries_left=len(states),
                     rank=status_rank(states))


def _task(task_id: str) -> TaskRow:
    return TaskRow(task_id=task_id, task_group_id="G" * 22, scheduler_id="-",
                   task_queue_id="p/w", project_id="none", label="l", priority="low",
                   retries=5, created=T0, deadline=T0, expires=LATER, definition="{}",
                   dependencies=())


def _kept(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """The run states that the Python rule keeps after `old`, then `new`."""
    return list(new if status_replaces(status_rank(new), status_rank(old)) else old)


async def _stored_runs(conn: asyncpg.Connection, table: str) -> dict[str, list[str]]:
    rows = await conn.fetch(f"SELECT task_id, runs::text AS runs FROM {table}")
    return {r["task_id"]: [run["state"] for run in orjson.loads(r["runs"])] for r in rows}


async def test_every_status_statement_keeps_what_status_replaces_keeps(
        pool: asyncpg.Pool) -> None:
    ids = [_task_id(i) for i in range(len(PAIRS))]
    expected = {task_id: _kept(old, new) for task_id, (old, new) in zip(ids, PAIRS, strict=True)}
    olds = [_status(t, old) for t, (old, _) in zip(ids, PAIRS, strict=True)]
    news = [_status(t, new) for t, (_, new) in zip(ids, PAIRS, strict=True)]
    async with pool.acquire() as conn:
        # upsert_tasks_with_statuses over a stored status.
        await writes.upsert_tasks_with_statuses(conn, [(_task(s.task_id), s) for s in olds])
        await writes.upsert_tasks_with_statuses(conn, [(_task(s.task_id), s) for s in news])
        assert await _stored_runs(conn, "tasks") == expected
        # update_statuses over a stored status.
        await writes.update_statuses(conn, olds)
        assert await writes.update_statuses(conn, news) == []
        assert await _stored_runs(conn, "tasks") == expected
        # upsert_waiting over a waiting status.
        await writes.upsert_waiting(conn, [writes.WaitingRow("G" * 22, s, LATER) for s in olds])
        await writes.upsert_waiting(conn, [writes.WaitingRow("G" * 22, s, LATER) for s in news])
        assert await _stored_runs(conn, "mirror_waiting") == expected
        # promote_waiting: a waiting status (new) over a stored one (old).
        await conn.execute("DELETE FROM mirror_waiting")
        await writes.update_statuses(conn, olds)
        await writes.upsert_waiting(conn, [writes.WaitingRow("G" * 22, s, LATER) for s in news])
        await writes.promote_waiting(conn, ids)
        assert await _stored_runs(conn, "tasks") == expected
        assert await conn.fetchval("SELECT count(*) FROM mirror_waiting") == 0


def _entries() -> list[IndexEntryRow]:
    """Entries that tie and differ on each term: rank, completion (unknown, equal,
    earlier, later), task id (in both cases, which orders differently under some
    collations), expired or not."""
    found = []
    for rank, resolved, task, expires in itertools.product(
            (0.0, 1.0), (None, T0, T0 + timedelta(seconds=1)), ("a", "B", "b"),
            (LATER, LONG_AGO)):
        found.append(IndexEntryRow(namespace="ns", name="", task_id=task * 22, rank=rank,
                                   data=orjson.dumps({"t": task}).decode(), expires=expires,
                                   resolved=resolved))
    return found


async def test_the_entry_statement_keeps_what_entry_replaces_keeps(pool: asyncpg.Pool) -> None:
    entries = _entries()
    pairs = list(itertools.product(entries, repeat=2))
    olds = [replace(old, name=f"p{i}") for i, (old, _) in enumerate(pairs)]
    news = [replace(new, name=f"p{i}") for i, (_, new) in enumerate(pairs)]
    async with pool.acquire() as conn, conn.transaction():
        now = await conn.fetchval("SELECT now()")
        await writes.upsert_index_entries(conn, olds)
        await writes.upsert_index_entries(conn, news)
        stored = {r["name"]: (r["task_id"], r["rank"], r["resolved"], r["expires"])
                  for r in await conn.fetch("SELECT * FROM index_entries")}
    expected = {}
    for old, new in zip(olds, news, strict=True):
        won = new if entry_replaces(new, old, now) else old
        expected[old.name] = (won.task_id, won.rank, won.resolved, won.expires)
    assert stored == expected
    # The pairs cover each outcome of each term.
    outcomes = {entry_replaces(new, old, now) for old, new in zip(olds, news, strict=True)
                if old.rank == new.rank and old.expires > now}
    assert outcomes == {True, False}
