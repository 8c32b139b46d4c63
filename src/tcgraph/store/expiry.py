"""The delete statements of expiry and label retention (ingest/expire.py decides when).

Each takes a connection inside the caller's transaction and deletes a bounded
batch, so that a pass never holds many locks, nor holds them long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, UTC
from collections.abc import Sequence

import asyncpg

# Oldest first through tasks_expires_task_id, carrying on after the last key a
# batch deleted ($3, $4): a batch never walks again over the index entries of rows
# earlier batches deleted, which stay in the index until VACUUM (and which a long
# transaction elsewhere keeps from being skipped cheaply). Rows another writer
# holds are left for the next pass rather than waited for. Returns the last key.
_DELETE_EXPIRED_TASKS = """
WITH doomed AS (
    SELECT task_id, expires FROM tasks
    WHERE expires < $1 AND (expires, task_id) > ($3, $4)
    ORDER BY expires, task_id LIMIT $2
    FOR UPDATE SKIP LOCKED
), edges AS (
    DELETE FROM task_dependencies d USING doomed WHERE d.task_id = doomed.task_id
), deleted AS (
    DELETE FROM tasks t USING doomed WHERE t.task_id = doomed.task_id
    RETURNING t.expires, t.task_id
)
SELECT count(*) AS deleted, max(expires) AS expires,
       (array_agg(task_id ORDER BY expires DESC, task_id DESC))[1] AS task_id
FROM deleted"""

# index_entries_expires
_DELETE_EXPIRED_ENTRIES = """
WITH doomed AS (
    SELECT namespace, name FROM index_entries WHERE expires < $1 ORDER BY expires LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM index_entries e USING doomed
WHERE (e.namespace, e.name) = (doomed.namespace, doomed.name)"""

# index_namespaces_expires
_DELETE_EXPIRED_NAMESPACES = """
WITH doomed AS (
    SELECT parent, name FROM index_namespaces WHERE expires < $1 ORDER BY expires LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM index_namespaces n USING doomed
WHERE (n.parent, n.name) = (doomed.parent, doomed.name)"""

# Statuses whose definition never came go when their task would have
# (mirror_waiting_expires); those that do not say when wait on.
_DELETE_EXPIRED_WAITING = """
WITH doomed AS (
    SELECT task_id FROM mirror_waiting WHERE expires < $1 ORDER BY expires LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM mirror_waiting w USING doomed WHERE w.task_id = doomed.task_id"""

_EXPIRED = {"index_entries": _DELETE_EXPIRED_ENTRIES,
            "index_namespaces": _DELETE_EXPIRED_NAMESPACES,
            "mirror_waiting": _DELETE_EXPIRED_WAITING}


@dataclass(frozen=True, slots=True)
class TaskKey:
    """Where a walk over tasks_expires_task_id stands: the last (expires, task_id) passed."""

    expires: datetime
    task_id: str

    @classmethod
    def start(cls) -> TaskKey:
        return cls(datetime(1, 1, 1, tzinfo=UTC), "")


async def delete_expired_tasks(conn: asyncpg.Connection, before: datetime, limit: int,
                               after: TaskKey) -> tuple[int, TaskKey]:
    """Delete up to `limit` tasks that expired before `before` and sort after `after`,
    oldest first, with their dependency edges. Returns how many, and the key to
    carry on after (`after` itself when none were deleted)."""
    row = await conn.fetchrow(_DELETE_EXPIRED_TASKS, before, limit, after.expires,
                              after.task_id)
    if not row["deleted"]:
        return 0, after
    return row["deleted"], TaskKey(row["expires"], row["task_id"])


async def delete_expired(conn: asyncpg.Connection, table: str, before: datetime,
                         limit: int) -> int:
    """Delete up to `limit` rows of `table` (index_entries, index_namespaces or
    mirror_waiting) that expired before `before`, oldest first. Returns how many
    rows were deleted."""
    status = await conn.execute(_EXPIRED[table], before, limit)
    return int(status.split()[-1])


# Labels in order, a chunk at a time (tasks_label_created).
_LABELS_AFTER = """
SELECT label FROM tasks WHERE label > $1 GROUP BY label ORDER BY label LIMIT $2"""

# Among the resolved tasks of each (label, project), keep the newest `keep`, the
# last success and the last failure (an exception counts as a failure); the
# rest of those labels' resolved tasks go. Unresolved tasks are never trimmed.
# tasks_label_created gives each label's tasks newest first.
_TRIM_LABELS = """
WITH ranked AS (
    SELECT task_id,
           row_number() OVER (PARTITION BY label, project_id
                              ORDER BY created DESC, task_id DESC) AS newest,
           row_number() OVER (PARTITION BY label, project_id, state = 'completed'
                              ORDER BY created DESC, task_id DESC) AS newest_of_outcome
    FROM tasks
    WHERE label = ANY($1::text[]) AND state IN ('completed', 'failed', 'exception')
), doomed AS (
    SELECT task_id FROM ranked WHERE newest > $2 AND newest_of_outcome > 1
), edges AS (
    DELETE FROM task_dependencies d USING doomed WHERE d.task_id = doomed.task_id
)
DELETE FROM tasks t USING doomed WHERE t.task_id = doomed.task_id"""


async def labels_after(conn: asyncpg.Connection, after: str, limit: int) -> list[str]:
    """Up to `limit` distinct task labels that sort after `after`, in order."""
    return [r["label"] for r in await conn.fetch(_LABELS_AFTER, after, limit)]


async def trim_label_history(conn: asyncpg.Connection, labels: Sequence[str], keep: int) -> int:
    """Trim the resolved history of `labels`, per label and project, to the `keep`
    newest tasks plus the last success and the last failure; returns tasks deleted."""
    status = await conn.execute(_TRIM_LABELS, list(labels), keep)
    return int(status.split()[-1])


# The change log's oldest rows first (task_changes_pkey), stopping at the
# first one still within retention, so that what is deleted is always a
# prefix of the log and task_changes_expired names its end: a subscription
# cursor before it may have missed a change, and is refused.
_DELETE_OLD_CHANGES = """
WITH head AS (
    SELECT xid, seq, bool_or(changed >= $1) OVER (ORDER BY xid, seq) AS kept
    FROM (SELECT xid, seq, changed FROM task_changes ORDER BY xid, seq LIMIT $2) oldest
), deleted AS (
    DELETE FROM task_changes c USING head h
    WHERE (c.xid, c.seq) = (h.xid, h.seq) AND NOT h.kept
    RETURNING c.xid, c.seq
), moved AS (
    UPDATE task_changes_expired e SET xid = n.xid, seq = n.seq
    FROM (SELECT xid, seq FROM deleted ORDER BY xid DESC, seq DESC LIMIT 1) n
    WHERE (n.xid, n.seq) > (e.xid, e.seq)
)
SELECT count(*) FROM deleted"""


async def delete_old_changes(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` of the oldest change-log rows written before `before`;
    returns how many were deleted."""
    deleted: int = await conn.fetchval(_DELETE_OLD_CHANGES, before, limit)
    return deleted
