"""Reads of the follower's tables (mirror_state, mirror_waiting, mirror_groups), and
the reads the follower makes of `tasks` inside its own write transactions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

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
