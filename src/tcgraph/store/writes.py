"""Every upsert tcgraph runs: the write statements import, follow and backfill share
(expiry's deletes are store/expiry.py's).

Each takes a connection inside the caller's transaction, except
`in_transaction`, which owns one and retries it. The rules that keep
re-imports and redelivered messages harmless are tcgraph.precedence's, whose
SQL conditions these statements embed: an older status never replaces a newer
one, and an index entry is replaced only by one of a higher rank, or an equal
rank and a completion that is not earlier.

Every change to a task's stored status or definition (and every deleted task)
is also written to the change log `task_changes`, in the same transaction, by
triggers that migration 0012 puts on `tasks`: no statement here writes it, and
none can forget it. Subscriptions serve that log (api/subscriptions/).

Rows are written in key order within a statement, so two writers touching the
same keys lock them in the same order; writers whose transactions span several
statements can still deadlock, which `in_transaction` retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception_type,
                      stop_after_attempt, wait_incrementing)

from tcgraph.model import IndexEntryRow, NamespaceRow, StatusRow, TaskRow
from tcgraph.precedence import entry_replaces_sql, status_replaces_sql

_log = logging.getLogger(__name__)
T = TypeVar("T")

# Attempts at a transaction that PostgreSQL aborted to break a deadlock or a
# serialization conflict; each one waits a little longer for the other writer.
TRANSACTION_ATTEMPTS = 5
_RETRY_PAUSE_S = 0.05


def _aborted(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    _log.info("write transaction aborted (%s), attempt %d of %d", type(error).__name__,
              state.attempt_number, TRANSACTION_ATTEMPTS)


async def in_transaction(
    pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """Run `work(conn)` in one transaction; retry it when PostgreSQL aborted it
    to break a deadlock or a serialization conflict with another writer.

    `work` must be safe to run again from the start (it is: every write here is
    an idempotent upsert, and the aborted attempt left nothing behind).
    """
    async def attempt() -> T:
        async with pool.acquire() as conn, conn.transaction():
            return await work(conn)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type((asyncpg.DeadlockDetectedError,
                                       asyncpg.SerializationError)),
        stop=stop_after_attempt(TRANSACTION_ATTEMPTS),
        wait=wait_incrementing(start=_RETRY_PAUSE_S, increment=_RETRY_PAUSE_S),
        before_sleep=_aborted, reraise=True)
    return await retrying(attempt)


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


def _task_columns(rows: Sequence[TaskRow]) -> list[list[object]]:
    return [
        [r.task_id for r in rows], [r.task_group_id for r in rows],
        [r.scheduler_id for r in rows], [r.task_queue_id for r in rows],
        [r.project_id for r in rows], [r.label for r in rows], [r.priority for r in rows],
        [r.retries for r in rows], [r.created for r in rows], [r.deadline for r in rows],
        [r.expires for r in rows], [r.definition for r in rows],
    ]


def _status_columns(rows: Sequence[StatusRow]) -> list[list[object]]:
    return [[r.state for r in rows], [r.runs for r in rows], [r.retries_left for r in rows],
            [r.rank for r in rows]]


async def upsert_tasks(conn: asyncpg.Connection, rows: Sequence[TaskRow]) -> None:
    """Insert or update task definitions; a task's status is left as it is.

    A new task is unscheduled until its status comes. Task ids must be unique
    within one call.
    """
    rows = sorted(rows, key=_task_key)
    await conn.execute(_UPSERT_TASKS, *_task_columns(rows))
    await _insert_dependencies(conn, rows)


def _task_key(row: TaskRow) -> str:
    return row.task_id


async def _insert_dependencies(conn: asyncpg.Connection, rows: Sequence[TaskRow]) -> None:
    edges = sorted((row.task_id, dep) for row in rows for dep in row.dependencies)
    if edges:
        await conn.execute(_INSERT_DEPENDENCIES, [e[0] for e in edges], [e[1] for e in edges])


# upsert_tasks and then update_statuses, in one statement: a new task is written
# once with its status instead of inserted and then updated, which halves the
# work (and the dead rows) of importing listTaskGroup pages.
_NEWER_STATUS = status_replaces_sql("EXCLUDED", "tasks")
_UPSERT_TASKS_WITH_STATUSES = f"""
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
    state = CASE WHEN {_NEWER_STATUS} THEN EXCLUDED.state ELSE tasks.state END,
    runs = CASE WHEN {_NEWER_STATUS} THEN EXCLUDED.runs ELSE tasks.runs END,
    retries_left = CASE WHEN {_NEWER_STATUS}
                        THEN EXCLUDED.retries_left ELSE tasks.retries_left END,
    status_rank = CASE WHEN {_NEWER_STATUS}
                       THEN EXCLUDED.status_rank ELSE tasks.status_rank END
WHERE tasks.definition IS DISTINCT FROM EXCLUDED.definition
   OR ({_NEWER_STATUS}
       AND (tasks.state, tasks.runs, tasks.retries_left)
           IS DISTINCT FROM (EXCLUDED.state, EXCLUDED.runs, EXCLUDED.retries_left))"""


async def upsert_tasks_with_statuses(
    conn: asyncpg.Connection, rows: Sequence[tuple[TaskRow, StatusRow]]
) -> None:
    """`upsert_tasks` then `update_statuses` for tasks that come with their status.

    As with `update_statuses`, a stored status is only replaced by one whose
    rank is not lower. Task ids must be unique within one call.
    """
    rows = sorted(rows, key=lambda pair: pair[0].task_id)
    tasks = [task for task, _ in rows]
    columns = _task_columns(tasks) + _status_columns([status for _, status in rows])
    await conn.execute(_UPSERT_TASKS_WITH_STATUSES, *columns)
    await _insert_dependencies(conn, tasks)


# Only a status at least as far along as the stored one replaces it; returns the
# ids that have no task, which the caller decides about (an import reports them).
_UPDATE_STATUSES = f"""
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int[], $5::int[])
         AS u(task_id, state, runs, retries_left, status_rank)
), updated AS (
    UPDATE tasks t
    SET state = u.state, runs = u.runs, retries_left = u.retries_left,
        status_rank = u.status_rank
    FROM u
    WHERE t.task_id = u.task_id AND {status_replaces_sql("u", "t")}
      AND (t.state, t.runs, t.retries_left) IS DISTINCT FROM (u.state, u.runs, u.retries_left)
    RETURNING t.task_id
)
SELECT u.task_id FROM u WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = u.task_id)"""


async def update_statuses(conn: asyncpg.Connection, rows: Sequence[StatusRow]) -> list[str]:
    """Apply statuses to stored tasks; task ids must be unique within one call.

    Returns the task ids that are not stored (nothing is written for them).
    """
    rows = sorted(rows, key=lambda r: r.task_id)
    found = await conn.fetch(_UPDATE_STATUSES, [r.task_id for r in rows], *_status_columns(rows))
    return [r["task_id"] for r in found]


# An entry replaces a stored one as tcgraph.precedence.entry_replaces says (a
# higher rank, or an equal rank and a completion not earlier; an expired entry
# gives way to any other). The primary key (index_entries_pkey) finds the
# stored entry.
_UPSERT_ENTRIES = f"""
INSERT INTO index_entries AS e (namespace, name, task_id, rank, data, expires, resolved)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::jsonb[],
                     $6::timestamptz[], $7::timestamptz[])
ON CONFLICT (namespace, name) DO UPDATE SET
    task_id = EXCLUDED.task_id, rank = EXCLUDED.rank, data = EXCLUDED.data,
    expires = EXCLUDED.expires, resolved = EXCLUDED.resolved
WHERE {entry_replaces_sql("EXCLUDED", "e")}
  AND (e.task_id, e.rank, e.data, e.expires, e.resolved)
      IS DISTINCT FROM (EXCLUDED.task_id, EXCLUDED.rank, EXCLUDED.data, EXCLUDED.expires,
                        EXCLUDED.resolved)"""


async def upsert_index_entries(conn: asyncpg.Connection, rows: Sequence[IndexEntryRow]) -> None:
    """Insert or replace index entries; the namespaces are `upsert_namespaces`'s.

    (namespace, name) pairs must be unique within one call.
    """
    rows = sorted(rows, key=lambda r: (r.namespace, r.name))
    await conn.execute(
        _UPSERT_ENTRIES, [r.namespace for r in rows], [r.name for r in rows],
        [r.task_id for r in rows], [r.rank for r in rows], [r.data for r in rows],
        [r.expires for r in rows], [r.resolved for r in rows])


# A namespace's expiry is only ever extended (index_namespaces_pkey).
_UPSERT_NAMESPACES = """
INSERT INTO index_namespaces AS n (parent, name, expires)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (parent, name) DO UPDATE SET expires = EXCLUDED.expires
WHERE EXCLUDED.expires > n.expires"""


async def upsert_namespaces(conn: asyncpg.Connection, rows: Sequence[NamespaceRow]) -> None:
    """Create namespaces, or extend their expiry; (parent, name) must be unique in one call."""
    rows = sorted(rows, key=lambda r: (r.parent, r.name))
    await conn.execute(_UPSERT_NAMESPACES, [r.parent for r in rows], [r.name for r in rows],
                       [r.expires for r in rows])


# --- the follower's own tables (migration 0003_mirror) --------------------

# A status whose task has no definition stored waits here, under the same
# rank rule as in tasks (mirror_waiting_pkey), until it expires with
# its task (store/expiry.py).
_UPSERT_WAITING = f"""
INSERT INTO mirror_waiting AS w (task_id, task_group_id, state, runs, retries_left, status_rank,
                                 expires)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::int[], $6::int[],
                     $7::timestamptz[])
ON CONFLICT (task_id) DO UPDATE SET
    state = EXCLUDED.state, runs = EXCLUDED.runs, retries_left = EXCLUDED.retries_left,
    status_rank = EXCLUDED.status_rank, expires = COALESCE(EXCLUDED.expires, w.expires)
WHERE {status_replaces_sql("EXCLUDED", "w")}
  AND (w.state, w.runs, w.retries_left) IS DISTINCT FROM
      (EXCLUDED.state, EXCLUDED.runs, EXCLUDED.retries_left)"""


@dataclass(frozen=True, slots=True)
class WaitingRow:
    """A status kept until its task's definition is stored."""

    group: str
    status: StatusRow
    expires: datetime | None  # the task's, as the status gave it


async def upsert_waiting(conn: asyncpg.Connection, rows: Sequence[WaitingRow]) -> None:
    """Keep statuses of tasks whose definition is not stored.

    Task ids must be unique within one call.
    """
    rows = sorted(rows, key=lambda r: r.status.task_id)
    statuses = [r.status for r in rows]
    await conn.execute(_UPSERT_WAITING, [s.task_id for s in statuses],
                       [r.group for r in rows], *_status_columns(statuses),
                       [r.expires for r in rows])


# Waiting statuses of tasks now stored move into tasks (the rank rule again)
# and leave mirror_waiting, in one statement (mirror_waiting_pkey, tasks_pkey).
_PROMOTE_WAITING = f"""
WITH moved AS (
    DELETE FROM mirror_waiting w USING tasks t
    WHERE w.task_id = ANY($1::text[]) AND t.task_id = w.task_id
    RETURNING w.task_id, w.state, w.runs, w.retries_left, w.status_rank
)
UPDATE tasks t
SET state = m.state, runs = m.runs, retries_left = m.retries_left, status_rank = m.status_rank
FROM moved m
WHERE t.task_id = m.task_id AND {status_replaces_sql("m", "t")}
  AND (t.state, t.runs, t.retries_left) IS DISTINCT FROM (m.state, m.runs, m.retries_left)"""


async def promote_waiting(conn: asyncpg.Connection, task_ids: Sequence[str]) -> None:
    """Apply the waiting statuses of `task_ids` whose definition is now stored."""
    await conn.execute(_PROMOTE_WAITING, sorted(task_ids))


# A waiting status whose definition did not come is asked for again after
# `min_s`, twice as long after each further attempt, at most `max_s`
# (mirror_waiting_pkey).
_DEFER_WAITING = """
UPDATE mirror_waiting w
SET attempts = w.attempts + 1, problem = d.problem,
    next_attempt = now() + make_interval(secs => least($3 * power(2, least(w.attempts, 30)),
                                                         $4))
FROM unnest($1::text[], $2::text[]) AS d(task_id, problem)
WHERE w.task_id = d.task_id"""


@dataclass(frozen=True, slots=True)
class Deferred:
    """A waiting status whose definition did not come, and why."""

    task_id: str
    problem: str


async def defer_waiting(conn: asyncpg.Connection, rows: Sequence[Deferred], *,
                        min_s: float, max_s: float) -> None:
    """Ask again later for the definitions of `rows`: the more attempts, the later."""
    rows = sorted(rows, key=lambda r: r.task_id)
    await conn.execute(_DEFER_WAITING, [r.task_id for r in rows], [r.problem for r in rows],
                       min_s, max_s)


_INSERT_REJECTED = """
INSERT INTO mirror_rejected (exchange, routing_key, problem, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])"""


async def insert_rejected(conn: asyncpg.Connection,
                          rows: Sequence[tuple[str, str, str, bytes]]) -> None:
    """Set aside messages (exchange, routing key, problem, body) that were invalid."""
    await conn.execute(_INSERT_REJECTED, *[list(c) for c in zip(*rows, strict=False)])


# One row (mirror_state_pkey); counters add up across batches and restarts.
_RECORD_BATCH = """
INSERT INTO mirror_state AS s (id, queue_name, started, last_message, last_exchange,
                               last_routing_key, last_status_time, lag_ms, messages, errors,
                               batches)
VALUES (true, $1, $2, now(), $3, $4, $5,
        EXTRACT(EPOCH FROM now() - $5::timestamptz) * 1000, $6, $7, 1)
ON CONFLICT (id) DO UPDATE SET
    queue_name = EXCLUDED.queue_name, started = EXCLUDED.started,
    last_message = EXCLUDED.last_message,
    last_exchange = EXCLUDED.last_exchange, last_routing_key = EXCLUDED.last_routing_key,
    last_status_time = GREATEST(s.last_status_time, EXCLUDED.last_status_time),
    lag_ms = COALESCE(EXCLUDED.lag_ms, s.lag_ms),
    messages = s.messages + EXCLUDED.messages, errors = s.errors + EXCLUDED.errors,
    batches = s.batches + 1"""


async def record_batch(conn: asyncpg.Connection, *, queue_name: str, started: datetime,
                       exchange: str, routing_key: str, status_time: datetime | None,
                       messages: int, errors: int) -> None:
    """Count a committed batch of the follower, and what its last message was."""
    await conn.execute(_RECORD_BATCH, queue_name, started, exchange, routing_key, status_time,
                       messages, errors)


# Each group is walked once (mirror_groups_pkey); returns the ids not seen before.
_CLAIM_GROUPS = """
INSERT INTO mirror_groups (task_group_id)
SELECT g FROM unnest($1::text[]) AS g
WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.task_group_id = g)   -- tasks_group
ON CONFLICT (task_group_id) DO NOTHING
RETURNING task_group_id"""


async def claim_groups(conn: asyncpg.Connection, group_ids: Sequence[str]) -> list[str]:
    """Of `group_ids`, those neither held nor queued for backfill before: now queued."""
    rows = await conn.fetch(_CLAIM_GROUPS, sorted(set(group_ids)))
    return [r["task_group_id"] for r in rows]


_GROUP_BACKFILLED = """
UPDATE mirror_groups SET backfilled = now(), tasks = $2, failed = NULL, problem = NULL
WHERE task_group_id = $1"""


async def group_backfilled(conn: asyncpg.Connection, group_id: str, tasks: int) -> None:
    """Record that a queued group's backfill is done, with how many tasks it held."""
    await conn.execute(_GROUP_BACKFILLED, group_id, tasks)


# mirror_groups_pkey. Attempt n (from 1) of `attempts` is followed by a pause of
# first_s * 2^(n-1); once they are spent the group is failed, and tried again
# every failed_every_s.
_GROUP_ATTEMPT_FAILED = """
UPDATE mirror_groups
SET attempts = attempts + 1, problem = $2,
    failed = CASE WHEN attempts + 1 >= $3 THEN COALESCE(failed, now()) END,
    next_attempt = now() + make_interval(secs => CASE WHEN attempts + 1 >= $3 THEN $5
                                                      ELSE $4 * power(2, attempts) END)
WHERE task_group_id = $1
RETURNING failed IS NOT NULL AS failed"""


@dataclass(frozen=True, slots=True)
class GroupRetry:
    """When a queued group whose backfill failed is tried again."""

    attempts: int  # before it is recorded as failed
    first_s: float  # the pause after the first failure; it doubles after each
    failed_every_s: float  # the pause between attempts once it is failed


async def group_attempt_failed(conn: asyncpg.Connection, group_id: str, problem: str,
                               retry: GroupRetry) -> bool:
    """Record a failed backfill of a queued group and when to try again; returns
    whether its attempts are spent (it is recorded as failed)."""
    return bool(await conn.fetchval(_GROUP_ATTEMPT_FAILED, group_id, problem, retry.attempts,
                                    retry.first_s, retry.failed_every_s))
