"""Expiry, as Taskcluster does it, and optional label retention.

Tasks, index entries and namespaces whose `expires` has passed are deleted
(and so are statuses still waiting for a definition past their task's expiry),
oldest first, in bounded batches, each its own short transaction, so that a
follower or an import writing at the same time is never held up for long.
`tcgraph expire` runs one pass; the follower calls `expire` periodically.

With `keep_per_label`, a label's history is trimmed as debusine's task-history
collection keeps it: per label and project, the last success, the last failure
and the `keep_per_label` newest resolved tasks stay; older resolved tasks go.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC

import asyncpg

from tcgraph.config import Settings
from tcgraph.store import expiry, writes

# Rows deleted per transaction.
BATCH_SIZE = 1000
# Labels trimmed per transaction.
LABEL_BATCH = 200


@dataclass(frozen=True, slots=True)
class Expired:
    """What one pass deleted."""

    tasks: int
    index_entries: int
    namespaces: int
    trimmed: int  # tasks deleted by label retention
    waiting: int = 0  # statuses whose definition never came, past their task's expiry
    changes: int = 0  # change-log rows past their retention (subscriptions' resume window)


async def expire(pool: asyncpg.Pool, *, now: datetime | None = None,
                 keep_per_label: int | None = None, batch_size: int = BATCH_SIZE,
                 max_batches: int | None = None) -> Expired:
    """Delete what expired before `now` (default: the current time), a batch at a time.

    Stops when nothing is left, or after `max_batches` batches per table (a
    periodic caller bounds each pass so; the rest goes next time). Trims label
    history after, when `keep_per_label` is given (0 keeps only the last
    success and failure).
    """
    before = now or datetime.now(UTC)
    counts = {"tasks": await _expire_tasks(pool, before, batch_size, max_batches)}
    for table in ("index_entries", "index_namespaces", "mirror_waiting"):
        counts[table] = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            deleted = await writes.in_transaction(
                pool, functools.partial(expiry.delete_expired, table=table, before=before,
                                        limit=batch_size))
            counts[table] += deleted
            batches += 1
            if deleted < batch_size:
                break
    trimmed = 0
    if keep_per_label is not None:
        trimmed = await trim_labels(pool, keep_per_label)
    changes = await expire_changes(pool, batch_size=batch_size, max_batches=max_batches)
    return Expired(tasks=counts["tasks"], index_entries=counts["index_entries"],
                   namespaces=counts["index_namespaces"], trimmed=trimmed,
                   waiting=counts["mirror_waiting"], changes=changes)


async def expire_changes(pool: asyncpg.Pool, *, retention: timedelta | None = None,
                         batch_size: int = BATCH_SIZE, max_batches: int | None = None) -> int:
    """Delete change-log rows older than `retention` (default: the configured
    `change_retention_hours`), oldest first, a batch per transaction; returns rows deleted.

    Runs after the tasks' expiry, whose deletions are changes of their own.
    """
    if retention is None:
        retention = timedelta(hours=Settings.from_env().change_retention_hours)
    before = datetime.now(UTC) - retention
    deleted = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        count = await writes.in_transaction(
            pool, functools.partial(expiry.delete_old_changes, before=before, limit=batch_size))
        deleted += count
        batches += 1
        if count < batch_size:
            break
    return deleted


async def _expire_tasks(pool: asyncpg.Pool, before: datetime, batch_size: int,
                        max_batches: int | None) -> int:
    """Tasks (and their edges), a batch per transaction, each batch carrying on after
    the last key the one before deleted."""
    deleted = batches = 0
    after = expiry.TaskKey.start()
    while max_batches is None or batches < max_batches:
        count, after = await writes.in_transaction(
            pool, functools.partial(expiry.delete_expired_tasks, before=before,
                                    limit=batch_size, after=after))
        deleted += count
        batches += 1
        if count < batch_size:
            break
    return deleted


async def trim_labels(pool: asyncpg.Pool, keep: int, label_batch: int = LABEL_BATCH) -> int:
    """Trim every label's resolved history to `keep` newest plus its last success and
    last failure, per project; a chunk of labels per transaction. Returns tasks deleted."""
    if keep < 0:
        raise ValueError(f"keep must be at least 0, got {keep}")
    deleted = 0
    after = ""
    while True:
        async with pool.acquire() as conn:
            labels = await expiry.labels_after(conn, after, label_batch)
        if not labels:
            return deleted
        deleted += await writes.in_transaction(
            pool, functools.partial(expiry.trim_label_history, labels=labels, keep=keep))
        after = labels[-1]

