"""bench/dataset_fast.py writes the rows the importer writes for the same dataset.

A build of `Shape.demo(tasks)` and `tcgraph.demo.write_demo(tasks)` through the
importer are compared table by table: the same labels, groups and group sizes,
the same definitions once ids, times, revisions, owners and input hashes are
masked, the same run shapes, and the rules that tie the columns together
(status rank, retries left, dependencies, index entries and their namespaces).
Outcomes are drawn differently (a hash in SQL, Python's random in the demo), so
the state mix is compared within a tolerance.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
from conftest import create_database, drop_database
from services.postgres import connected

from bench import dataset_fast
from tcgraph.config import Settings
from tcgraph.demo import write_demo
from tcgraph.ingest import index_rules
from tcgraph.model import IndexEntryRow
from tcgraph.precedence import status_rank
from tcgraph.store.pool import open_pool

TASKS = 3_000
_MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"), "<time>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<hash>"),
    (re.compile(r"\b[0-9a-f]{40}\b"), "<revision>"),
    (re.compile(r"\b[0-9a-f]{12}\b"), "<rev12>"),
    (re.compile(r"developer\d+@example\.com"), "<owner>"),
    (re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])"), "<slugid>"),
]


def _mask(text: str) -> str:
    for pattern, mark in _MASKS:
        text = pattern.sub(mark, text)
    return text


@pytest.fixture
async def built(server_url: str, template_database: str) -> AsyncIterator[str]:
    name, url = await create_database(server_url, template_database)
    try:
        async with connected(url) as conn:
            await dataset_fast.build(conn, dataset_fast.Shape.demo(TASKS))
        yield url
    finally:
        await drop_database(server_url, name)


@pytest.fixture
async def imported(database_url: str) -> str:
    pool = await open_pool(database_url, Settings(pool_max_size=2))
    try:
        await write_demo(pool, tasks=TASKS)
    finally:
        await pool.close()
    return database_url


async def _definitions(conn: asyncpg.Connection) -> Counter[str]:
    rows = await conn.fetch("SELECT definition::text AS d FROM tasks")
    return Counter(_mask(r["d"]) for r in rows)


async def test_the_same_tasks_groups_and_masked_definitions(built: str, imported: str) -> None:
    async with connected(built) as fast, connected(imported) as slow:
        for query in ("SELECT label, count(*) FROM tasks GROUP BY 1 ORDER BY 1",
                      "SELECT n, count(*) FROM (SELECT count(*) n FROM tasks "
                      "GROUP BY task_group_id) s GROUP BY 1 ORDER BY 1",
                      "SELECT project_id, count(*) FROM tasks GROUP BY 1 ORDER BY 1",
                      "SELECT count(*) FROM task_dependencies",
                      "SELECT count(*) FROM tasks WHERE task_id = task_group_id"):
            assert [tuple(r) for r in await fast.fetch(query)] == \
                [tuple(r) for r in await slow.fetch(query)], query
        assert await _definitions(fast) == await _definitions(slow)
        # Every column the importer derives from the definition, derived alike.
        consistent = """SELECT count(*) FROM tasks WHERE
            (task_group_id, scheduler_id, task_queue_id, project_id, priority, retries,
             label) IS DISTINCT FROM
            (definition->>'taskGroupId', definition->>'schedulerId', definition->>'taskQueueId',
             definition->>'projectId', definition->>'priority', (definition->>'retries')::int,
             coalesce(definition->'tags'->>'label', definition->'metadata'->>'name'))
            OR to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
               <> definition->>'created'
            OR to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
               <> definition->>'expires'"""
        assert await fast.fetchval(consistent) == 0
        assert await slow.fetchval(consistent) == 0


async def _runs(conn: asyncpg.Connection) -> tuple[Counter[str], float, list[str]]:
    """(masked run shapes, the share of completed tasks, broken invariants)."""
    shapes: Counter[str] = Counter()
    broken = []
    rows = await conn.fetch(
        "SELECT task_id, state, runs::text AS runs, status_rank, retries, retries_left FROM tasks")
    for r in rows:
        runs = orjson.loads(r["runs"])
        states = [run["state"] for run in runs]
        shapes[_mask(orjson.dumps([sorted(run) + [run["state"], run["reasonCreated"],
                                                  run.get("reasonResolved", "")]
                                   for run in runs]).decode())] += 1
        if r["state"] != (states[-1] if states else "unscheduled"):
            broken.append(f"{r['task_id']}: state {r['state']}, runs {states}")
        if r["status_rank"] != status_rank(states):
            broken.append(f"{r['task_id']}: rank {r['status_rank']} for {states}")
        retried = sum(run["reasonCreated"] == "retry" for run in runs)
        if r["retries_left"] != r["retries"] - retried:
            broken.append(f"{r['task_id']}: retries left {r['retries_left']}")
    completed = sum(r["state"] == "completed" for r in rows) / len(rows)
    return shapes, completed, broken


async def test_runs_and_status_ranks(built: str, imported: str) -> None:
    async with connected(built) as fast, connected(imported) as slow:
        fast_shapes, fast_completed, fast_broken = await _runs(fast)
        slow_shapes, slow_completed, slow_broken = await _runs(slow)
    assert fast_broken == [] and slow_broken == []
    # Every kind of run history the importer holds, the build holds too (and no other).
    assert set(fast_shapes) == set(slow_shapes)
    assert abs(fast_completed - slow_completed) < 0.05


async def _index(conn: asyncpg.Connection) -> tuple[set[str], list[str]]:
    """(masked entry paths, broken rules) of a database's index."""
    broken = []
    entries = await conn.fetch("SELECT namespace, name, task_id, rank, data::text AS data, "
                               "expires, resolved FROM index_entries")
    rows = [IndexEntryRow(namespace=e["namespace"], name=e["name"], task_id=e["task_id"],
                          rank=e["rank"], data=e["data"], expires=e["expires"],
                          resolved=e["resolved"]) for e in entries]
    want = {(n.parent, n.name, n.expires) for n in index_rules.namespaces(rows)}
    rows = await conn.fetch("SELECT parent, name, expires FROM index_namespaces")
    have = {tuple(r) for r in rows}
    if want != have:
        broken.append(f"namespaces: {len(want ^ have)} differ from index_rules.namespaces")
    # Each entry is its task's route, the task completed, and no completed task of a
    # higher rank has the same route.
    broken += [f"entry {r['p']}" for r in await conn.fetch("""
        SELECT e.namespace || '.' || e.name AS p FROM index_entries e
        JOIN tasks t USING (task_id)
        WHERE t.state <> 'completed'
           OR NOT t.definition->'routes' ? ('index.' || e.namespace || '.' || e.name)
           OR EXISTS (SELECT 1 FROM tasks o JOIN tasks g ON g.task_id = o.task_group_id
                      WHERE o.state = 'completed'
                        AND o.definition->'routes' ? ('index.' || e.namespace || '.' || e.name)
                        AND extract(epoch FROM g.created) > e.rank)""")]
    return {_mask(f"{e['namespace']}.{e['name']}") for e in entries}, broken


async def test_index_entries_and_namespaces_follow_the_index_rules(built: str,
                                                                    imported: str) -> None:
    async with connected(built) as fast, connected(imported) as slow:
        fast_paths, fast_broken = await _index(fast)
        slow_paths, slow_broken = await _index(slow)
        for query in ("SELECT DISTINCT data::text, resolved IS NULL, expires FROM index_entries",):
            assert [tuple(r) for r in await fast.fetch(query)] == \
                [tuple(r) for r in await slow.fetch(query)]
    assert fast_broken == [] and slow_broken == []
    assert fast_paths == slow_paths


async def test_a_deployment_shaped_build_has_a_days_worth_expired(database_url: str) -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    shape = dataset_fast.Shape.firefox(60_000, now)
    async with connected(database_url) as conn:
        await dataset_fast.build(conn, shape)
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 60_000
        sizes = [r[0] for r in await conn.fetch(
            "SELECT count(*) FROM tasks GROUP BY task_group_id")]
        assert len(sizes) == shape.pushes and max(sizes) <= dataset_fast.FIREFOX_LABELS
        # The oldest push is 29 days old: its tests (most of its tasks), which live 28
        # days, have expired; nothing else has.
        expired = await conn.fetch("SELECT DISTINCT task_group_id, kind FROM ("
                                   "SELECT task_group_id, definition->'tags'->>'kind' AS kind "
                                   "FROM tasks WHERE expires < $1) s", now)
        oldest = await conn.fetchval("SELECT task_group_id FROM tasks ORDER BY created LIMIT 1")
        assert [tuple(r) for r in expired] == [(oldest, "test")]
        assert await conn.fetchval(
            "SELECT count(*) FROM index_entries e JOIN tasks t USING (task_id) "
            "WHERE e.expires <> t.expires") == 0
        assert await conn.fetchval("SELECT count(DISTINCT label) FROM tasks") > 5_000
