"""Reads of the follower's tables (mirror_state, mirror_waiting, mirror_groups), and
the reads the follower, reconciliation and verification make of `tasks` and
`index_entries`. The mirror's completeness tables are read in mirror_health.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from collections.abc import Sequence

import asyncpg

from tcgraph.model import MirrorState
from tcgraph.store.pool import Database

# mirror_state_pkey (one row); the count of mirror_waiting is small: statuses
# wait there only while the upstream has not answered.
_STATE = """
SELECT s.*, (SELECT count(*) FROM mirror_waiting) AS waiting FROM mirror_state s"""


async def mirror_state(db: Database) -> MirrorState | None:
    """The follower's state, or None when this database has never been a mirror."""
    rows = await db.fetch(_STATE)
    if not rows:
        return None
    r = rows[0]
    return MirrorState(
        queue_name=r["queue_name"], started=r["started"], last_message=r["last_message"],
        last_exchange=r["last_exchange"], last_routing_key=r["last_routing_key"],
        last_status_time=r["last_status_time"], lag_ms=r["lag_ms"], messages=r["messages"],
        errors=r["errors"], batches=r["batches"], waiting=r["waiting"])


# tasks_pkey
_STORED = "SELECT task_id FROM tasks WHERE task_id = ANY($1::text[])"


async def stored_task_ids(conn: asyncpg.Connection | asyncpg.Pool,
                          task_ids: Sequence[str]) -> set[str]:
    """The ids among `task_ids` whose task (with its definition) is stored."""
    return {r["task_id"] for r in await conn.fetch(_STORED, list(task_ids))}


@dataclass(frozen=True, slots=True)
class Waiting:
    """A task whose status waits for its definition, and what the status said of it."""

    task_id: str
    task_group_id: str
    expires: datetime | None


# mirror_waiting_next_attempt: the longest due first, so none waits for ever
# behind newer ones; those asked for in vain wait until their next attempt.
_WAITING = """
SELECT task_id, task_group_id, expires FROM mirror_waiting
WHERE next_attempt <= now() ORDER BY next_attempt, task_id LIMIT $1"""


async def waiting_due(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[Waiting]:
    """Up to `limit` tasks whose status waits for its definition and is due to ask again."""
    return [Waiting(r["task_id"], r["task_group_id"], r["expires"])
            for r in await conn.fetch(_WAITING, limit)]


# mirror_groups_due (a partial index: only groups queued and not yet walked).
_GROUPS_DUE = """
SELECT task_group_id FROM mirror_groups
WHERE backfilled IS NULL AND next_attempt <= now()
ORDER BY next_attempt, task_group_id LIMIT $1"""


async def groups_due(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[str]:
    """Up to `limit` task groups queued for backfill, not walked yet and due for an attempt."""
    return [r["task_group_id"] for r in await conn.fetch(_GROUPS_DUE, limit)]


# mirror_groups_due
_NEXT_GROUP_DUE = """
SELECT EXTRACT(EPOCH FROM min(next_attempt) - now()) FROM mirror_groups
WHERE backfilled IS NULL"""


async def next_group_due_in(conn: asyncpg.Connection | asyncpg.Pool) -> float | None:
    """Seconds until the next queued group is due (0 or less: now), None if none is queued."""
    due = await conn.fetchval(_NEXT_GROUP_DUE)
    return None if due is None else float(due)


@dataclass(frozen=True, slots=True)
class IndexInput:
    """What the index rules need of a stored task that has completed."""

    task_id: str
    definition: dict[str, object]  # routes, extra.index and expires only
    resolved: str  # the latest completed run's resolved time, Taskcluster's format


# tasks_pkey; only tasks with a completed run are indexed, as the index
# service indexes on task-completed. Only the parts of the definition the
# rules read are sent.
_INDEX_INPUTS = """
SELECT t.task_id,
       jsonb_build_object('routes', t.definition -> 'routes',
                          'extra', jsonb_build_object('index', t.definition #> '{extra,index}'),
                          'expires', t.definition -> 'expires') AS definition,
       (SELECT r ->> 'resolved' FROM jsonb_array_elements(t.runs) r
        WHERE r ->> 'state' = 'completed'
        ORDER BY (r ->> 'runId')::int DESC LIMIT 1) AS resolved
FROM tasks t
WHERE t.task_id = ANY($1::text[]) AND t.runs @> '[{"state": "completed"}]'"""


async def index_inputs(conn: asyncpg.Connection, task_ids: Sequence[str]) -> list[IndexInput]:
    """The completed tasks among `task_ids`, with what indexing them needs."""
    rows = await conn.fetch(_INDEX_INPUTS, sorted(task_ids))
    return [IndexInput(task_id=r["task_id"], definition=r["definition"], resolved=r["resolved"])
            for r in rows if r["resolved"] is not None]


# tasks_pkey
_RUN_COUNTS = """
SELECT task_id, jsonb_array_length(runs) AS runs FROM tasks WHERE task_id = ANY($1::text[])"""


async def run_counts(db: asyncpg.Pool | asyncpg.Connection,
                     task_ids: Sequence[str]) -> dict[str, int]:
    """How many runs the stored status of each of `task_ids` has (stored tasks only)."""
    return {r["task_id"]: r["runs"] for r in await db.fetch(_RUN_COUNTS, list(task_ids))}


# tasks_unresolved (0011): the predicate is the index's, literally, so that the
# planner can use it; walked by task_id from where the last page ended.
_UNRESOLVED = """
SELECT task_id, task_group_id FROM tasks
WHERE state IN ('unscheduled', 'pending', 'running') AND task_id > $1
ORDER BY task_id LIMIT $2"""


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A task and its group."""

    task_id: str
    task_group_id: str


async def unresolved_tasks(db: asyncpg.Pool | asyncpg.Connection, after: str,
                           limit: int) -> list[TaskRef]:
    """Up to `limit` unresolved tasks (unscheduled, pending, running) after `after`."""
    return [TaskRef(r["task_id"], r["task_group_id"])
            for r in await db.fetch(_UNRESOLVED, after, limit)]


@dataclass(frozen=True, slots=True)
class StoredStatus:
    """A stored task's status, as the write path compares statuses."""

    task_id: str
    task_group_id: str
    state: str
    runs: list[dict[str, object]]
    retries_left: int
    rank: int
    expires: datetime


# tasks_pkey
_STATUSES = """
SELECT task_id, task_group_id, state, runs, retries_left, status_rank, expires
FROM tasks WHERE task_id = ANY($1::text[])"""


async def stored_statuses(db: asyncpg.Pool | asyncpg.Connection,
                          task_ids: Sequence[str]) -> dict[str, StoredStatus]:
    """The stored statuses of those of `task_ids` that are stored."""
    return {r["task_id"]: StoredStatus(r["task_id"], r["task_group_id"], r["state"], r["runs"],
                                       r["retries_left"], r["status_rank"], r["expires"])
            for r in await db.fetch(_STATUSES, list(task_ids))}


# tasks_pkey; the definition as text, exactly as queue.task answers it.
_DEFINITIONS = """
SELECT task_id, definition::text AS definition FROM tasks WHERE task_id = ANY($1::text[])"""


async def stored_definitions(db: asyncpg.Pool | asyncpg.Connection,
                             task_ids: Sequence[str]) -> dict[str, str]:
    """The stored definitions (JSON text) of those of `task_ids` that are stored."""
    return {r["task_id"]: r["definition"] for r in await db.fetch(_DEFINITIONS, list(task_ids))}


# TABLESAMPLE SYSTEM reads a few pages instead of the whole table; the fraction
# is raised until enough rows come back (a small table gives them all at 100%).
_SAMPLE_TASKS = """
SELECT task_id FROM tasks TABLESAMPLE SYSTEM ($1) ORDER BY random() LIMIT $2"""
_SAMPLE_ENTRIES = """
SELECT namespace || '.' || name AS path FROM index_entries TABLESAMPLE SYSTEM ($1)
WHERE expires > now() ORDER BY random() LIMIT $2"""
_GROUP_TASKS = "SELECT task_id FROM tasks WHERE task_group_id = $1 ORDER BY task_id"  # tasks_group
# index_entries_pkey is (namespace, name); a group's entries are found by task.
_TASK_ENTRIES = """
SELECT namespace || '.' || name AS path FROM index_entries
WHERE task_id = ANY($1::text[]) AND expires > now() ORDER BY 1"""


async def sample_task_ids(db: asyncpg.Pool | asyncpg.Connection, count: int) -> list[str]:
    """About `count` task ids picked at random."""
    return [r["task_id"] for r in await _sample(db, _SAMPLE_TASKS, count)]


async def sample_index_paths(db: asyncpg.Pool | asyncpg.Connection, count: int) -> list[str]:
    """About `count` unexpired index paths picked at random."""
    return [r["path"] for r in await _sample(db, _SAMPLE_ENTRIES, count)]


async def _sample(db: asyncpg.Pool | asyncpg.Connection, sql: str,
                  count: int) -> list[asyncpg.Record]:
    percent = 1.0
    while True:
        rows: list[asyncpg.Record] = await db.fetch(sql, percent, count)
        if len(rows) >= count or percent >= 100.0:
            return rows
        percent = min(percent * 10, 100.0)


async def group_task_ids(db: asyncpg.Pool | asyncpg.Connection, group: str) -> list[str]:
    """The ids of the tasks of `group` that are stored."""
    return [r["task_id"] for r in await db.fetch(_GROUP_TASKS, group)]


async def index_paths_of(db: asyncpg.Pool | asyncpg.Connection,
                         task_ids: Sequence[str]) -> list[str]:
    """The unexpired index paths that point at any of `task_ids`."""
    return [r["path"] for r in await db.fetch(_TASK_ENTRIES, list(task_ids))]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An index entry as stored."""

    path: str
    task_id: str
    rank: float
    data: object
    expires: datetime


# index_entries_pkey
_ENTRIES = """
SELECT namespace || '.' || name AS path, task_id, rank, data, expires FROM index_entries
WHERE (namespace, name) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND expires > now()"""


async def stored_entries(db: asyncpg.Pool | asyncpg.Connection,
                         paths: Sequence[str]) -> dict[str, StoredEntry]:
    """The unexpired stored entries at `paths`."""
    split = [p.rpartition(".") for p in paths]
    rows = await db.fetch(_ENTRIES, [s[0] for s in split], [s[2] for s in split])
    return {r["path"]: StoredEntry(r["path"], r["task_id"], r["rank"], r["data"], r["expires"])
            for r in rows}


# tasks_unresolved (0011) for the unresolved tasks' groups (few); the others come
# from what the follower saw in messages.
_UNRESOLVED_GROUPS = """
SELECT DISTINCT task_group_id FROM tasks WHERE state IN ('unscheduled', 'pending', 'running')"""


async def unresolved_groups(db: asyncpg.Pool | asyncpg.Connection) -> list[str]:
    """The groups that hold an unresolved task."""
    return sorted(r["task_group_id"] for r in await db.fetch(_UNRESOLVED_GROUPS))


# tasks_label_created, filtered to the unresolved states.
_UNRESOLVED_WITH_LABELS = """
SELECT task_id FROM tasks
WHERE label = ANY($1::text[]) AND state IN ('unscheduled', 'pending', 'running')"""


async def unresolved_with_labels(db: asyncpg.Pool | asyncpg.Connection,
                                 labels: Sequence[str]) -> list[str]:
    """The unresolved tasks that carry one of `labels`."""
    return [r["task_id"] for r in await db.fetch(_UNRESOLVED_WITH_LABELS, list(labels))]
