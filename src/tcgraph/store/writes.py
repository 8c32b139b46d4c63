"""Every write statement tcgraph runs: upserts that import, follow and backfill share.

Each takes a connection inside the caller's transaction. The rules that keep
re-imports and redelivered messages harmless live here only: an older status
never replaces a newer one (`status_rank`), and an index entry is replaced only
by one of an equal or higher rank.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import asyncpg

_UPSERT_TASKS = """
INSERT INTO tasks (task_id, task_group_id, scheduler_id, task_queue_id, project_id, label,
                   priority, retries, retries_left, created, deadline, expires, state,
                   definition)
SELECT u.task_id, u.task_group_id, u.scheduler_id, u.task_queue_id, u.project_id, u.label,
       u.priority, u.retries, u.retries, u.created, u.deadline, u.expires, 'unscheduled',
       u.definition::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::int[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::text[])
     AS u(task_id, task_group_id, scheduler_id, task_queue_id, project_id, label, priority,
          retries, created, deadline, expires, definition)
ON CONFLICT (task_id) DO UPDATE SET
    task_group_id = EXCLUDED.task_group_id, scheduler_id = EXCLUDED.scheduler_id,
    task_queue_id = EXCLUDED.task_queue_id, project_id = EXCLUDED.project_id,
    label = EXCLUDED.label, priority = EXCLUDED.priority, retries = EXCLUDED.retries,
    created = EXCLUDED.created, deadline = EXCLUDED.deadline, expires = EXCLUDED.expires,
    definition = EXCLUDED.definition
WHERE tasks.definition IS DISTINCT FROM EXCLUDED.definition"""

_INSERT_DEPENDENCIES = """
INSERT INTO task_dependencies (task_id, dependency_id)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT DO NOTHING"""


async def upsert_tasks(conn: asyncpg.Connection, rows: Sequence[tuple]) -> None:
    """Insert or update task definitions; a task's status is left as it is.

    Each row is (task_id, task_group_id, scheduler_id, task_queue_id, project_id,
    label, priority, retries, created, deadline, expires, definition JSON text,
    dependency ids). Task ids must be unique within one call.
    """
    columns = list(zip(*(row[:12] for row in rows)))
    await conn.execute(_UPSERT_TASKS, *[list(c) for c in columns])
    await _insert_dependencies(conn, rows)


async def _insert_dependencies(conn: asyncpg.Connection, rows: Sequence[tuple]) -> None:
    edges = [(row[0], dep) for row in rows for dep in row[12]]
    if edges:
        await conn.execute(_INSERT_DEPENDENCIES, [e[0] for e in edges], [e[1] for e in edges])


# upsert_tasks and then update_statuses, in one statement: a new task is written
# once with its status instead of inserted and then updated, which halves the
# work (and the dead rows) of importing listTaskGroup pages.
_UPSERT_TASKS_WITH_STATUSES = """
INSERT INTO tasks (task_id, task_group_id, scheduler_id, task_queue_id, project_id, label,
                   priority, retries, retries_left, created, deadline, expires, state, runs,
                   status_rank, definition)
SELECT u.task_id, u.task_group_id, u.scheduler_id, u.task_queue_id, u.project_id, u.label,
       u.priority, u.retries, u.retries_left, u.created, u.deadline, u.expires, u.state,
       u.runs, u.status_rank, u.definition::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::int[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::text[],
            $13::text[], $14::jsonb[], $15::int[], $16::int[])
     AS u(task_id, task_group_id, scheduler_id, task_queue_id, project_id, label, priority,
          retries, created, deadline, expires, definition, state, runs, retries_left,
          status_rank)
ON CONFLICT (task_id) DO UPDATE SET
    task_group_id = EXCLUDED.task_group_id, scheduler_id = EXCLUDED.scheduler_id,
    task_queue_id = EXCLUDED.task_queue_id, project_id = EXCLUDED.project_id,
    label = EXCLUDED.label, priority = EXCLUDED.priority, retries = EXCLUDED.retries,
    created = EXCLUDED.created, deadline = EXCLUDED.deadline, expires = EXCLUDED.expires,
    definition = EXCLUDED.definition,
    state = CASE WHEN EXCLUDED.status_rank >= tasks.status_rank
                 THEN EXCLUDED.state ELSE tasks.state END,
    runs = CASE WHEN EXCLUDED.status_rank >= tasks.status_rank
                THEN EXCLUDED.runs ELSE tasks.runs END,
    retries_left = CASE WHEN EXCLUDED.status_rank >= tasks.status_rank
                        THEN EXCLUDED.retries_left ELSE tasks.retries_left END,
    status_rank = GREATEST(EXCLUDED.status_rank, tasks.status_rank)
WHERE tasks.definition IS DISTINCT FROM EXCLUDED.definition
   OR (EXCLUDED.status_rank >= tasks.status_rank
       AND (tasks.state, tasks.runs, tasks.retries_left)
           IS DISTINCT FROM (EXCLUDED.state, EXCLUDED.runs, EXCLUDED.retries_left))"""


async def upsert_tasks_with_statuses(conn: asyncpg.Connection, rows: Sequence[tuple]) -> None:
    """`upsert_tasks` then `update_statuses` for tasks that come with their status.

    Each row is an `upsert_tasks` row followed by the status: (state, runs JSON
    text, retries_left, status_rank). As with `update_statuses`, a stored status
    is only replaced by one whose rank is not lower. Task ids must be unique
    within one call.
    """
    columns = list(zip(*(row[:12] + row[13:17] for row in rows)))
    await conn.execute(_UPSERT_TASKS_WITH_STATUSES, *[list(c) for c in columns])
    await _insert_dependencies(conn, rows)


# Only a status at least as far along as the stored one replaces it; returns the
# ids that have no task, which the importer reports as an error.
_UPDATE_STATUSES = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int[], $5::int[])
         AS u(task_id, state, runs, retries_left, status_rank)
), updated AS (
    UPDATE tasks t
    SET state = u.state, runs = u.runs, retries_left = u.retries_left,
        status_rank = u.status_rank
    FROM u
    WHERE t.task_id = u.task_id AND u.status_rank >= t.status_rank
      AND (t.state, t.runs, t.retries_left) IS DISTINCT FROM (u.state, u.runs, u.retries_left)
    RETURNING t.task_id
)
SELECT u.task_id FROM u WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = u.task_id)"""


async def update_statuses(conn: asyncpg.Connection, rows: Sequence[tuple]) -> list[str]:
    """Apply statuses (task_id, state, runs JSON text, retries_left, status_rank).

    Returns the task ids that are not stored (nothing is written for them).
    """
    columns = [list(c) for c in zip(*rows)]
    return [r["task_id"] for r in await conn.fetch(_UPDATE_STATUSES, *columns)]


_UPSERT_ENTRIES = """
INSERT INTO index_entries (namespace, name, task_id, rank, data, expires)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::jsonb[],
                     $6::timestamptz[])
ON CONFLICT (namespace, name) DO UPDATE SET
    task_id = EXCLUDED.task_id, rank = EXCLUDED.rank, data = EXCLUDED.data,
    expires = EXCLUDED.expires
WHERE (EXCLUDED.rank >= index_entries.rank OR index_entries.expires <= now())
  AND (index_entries.task_id, index_entries.rank, index_entries.data, index_entries.expires)
      IS DISTINCT FROM (EXCLUDED.task_id, EXCLUDED.rank, EXCLUDED.data, EXCLUDED.expires)"""

_UPSERT_NAMESPACES = """
INSERT INTO index_namespaces (parent, name, expires)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (parent, name) DO UPDATE SET expires = EXCLUDED.expires
WHERE EXCLUDED.expires > index_namespaces.expires"""


async def upsert_index_entries(conn: asyncpg.Connection, rows: Sequence[tuple]) -> None:
    """Insert entries (namespace, name, task_id, rank, data JSON text, expires).

    As the index service does, an entry replaces a stored one only with an equal
    or higher rank, or when the stored one has expired. Every ancestor
    namespace is recorded so the index can be browsed by prefix. (namespace,
    name) pairs must be unique within one call.
    """
    columns = [list(c) for c in zip(*rows)]
    await conn.execute(_UPSERT_ENTRIES, *columns)
    spans: dict[tuple[str, str], datetime] = {}
    for namespace, _, _, _, _, expires in rows:
        parent = ""
        for part in namespace.split(".") if namespace else []:
            key = (parent, part)
            if key not in spans or spans[key] < expires:
                spans[key] = expires
            parent = f"{parent}.{part}" if parent else part
    if spans:
        keys = sorted(spans)
        await conn.execute(_UPSERT_NAMESPACES, [k[0] for k in keys], [k[1] for k in keys],
                           [spans[k] for k in keys])
