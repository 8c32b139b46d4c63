"""Reads of the change log (`task_changes`, migration 0012), which subscriptions serve.

A change's position is (xid, seq). A reader delivers only rows whose xid is
below `horizon`, its snapshot's xmin: every transaction below it has ended,
and no transaction can later get an id below it, so nothing can ever appear
behind a position already delivered (see the migration).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import asyncpg

from tcgraph.store.pool import Database


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the log: every change at or before (xid, seq) is behind it.

    `seq` starts at 1, so (x, 0) is "every change of transactions below x".
    """

    xid: int
    seq: int


@dataclass(frozen=True, slots=True)
class Change:
    """One logged change: the task, its group, and where it stands in the log."""

    position: Position
    task_id: str
    task_group_id: str


@dataclass(frozen=True, slots=True)
class NewChanges:
    """What the hub reads per burst: changes in order, and the horizon they stop at."""

    changes: list[Change]
    horizon: int  # xmin of the read's snapshot: no change below it can appear later


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a cursor is checked against: the newest position expiry deleted, and the
    next transaction id PostgreSQL will assign (no change can be at or past it)."""

    expired: Position
    next_xid: int


def _change(r: asyncpg.Record) -> Change:
    return Change(Position(int(r["xid"]), r["seq"]), r["task_id"], r["task_group_id"])


# task_changes_pkey, from the position on. One row comes back even when no
# change is new: it carries the horizon.
_NEW_CHANGES = """
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
SELECT h.xmin::text AS horizon, c.xid::text AS xid, c.seq, c.task_id, c.task_group_id
FROM h LEFT JOIN LATERAL (
    SELECT * FROM task_changes c
    WHERE (c.xid, c.seq) > ($1::text::xid8, $2) AND c.xid < h.xmin
    ORDER BY c.xid, c.seq LIMIT $3
) c ON true
ORDER BY c.xid, c.seq"""


async def new_changes(db: Database, after: Position, limit: int) -> NewChanges:
    """Up to `limit` changes after `after` that no running transaction can precede."""
    rows = await db.fetch(_NEW_CHANGES, str(after.xid), after.seq, limit)
    return NewChanges([_change(r) for r in rows if r["xid"] is not None],
                      int(rows[0]["horizon"]))


async def horizon(db: Database) -> int:
    """The current horizon: every change of a transaction below it is readable now."""
    rows = await db.fetch("SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin")
    return int(rows[0]["xmin"])


# task_changes_group: one group's changes between two positions.
_GROUP_CHANGES = """
SELECT c.xid::text AS xid, c.seq, c.task_id, c.task_group_id FROM task_changes c
WHERE c.task_group_id = $1
  AND (c.xid, c.seq) > ($2::text::xid8, $3) AND (c.xid, c.seq) <= ($4::text::xid8, $5)
ORDER BY c.xid, c.seq LIMIT $6"""

# task_changes_task: one probe per task, merged in order.
_TASK_CHANGES = """
SELECT c.xid::text AS xid, c.seq, c.task_id, c.task_group_id FROM task_changes c
WHERE c.task_id = ANY($1::text[])
  AND (c.xid, c.seq) > ($2::text::xid8, $3) AND (c.xid, c.seq) <= ($4::text::xid8, $5)
ORDER BY c.xid, c.seq LIMIT $6"""


async def group_changes(db: Database, group: str, after: Position, upto: Position,
                        limit: int) -> list[Change]:
    """Up to `limit` changes of `group`'s tasks in (after, upto], in order."""
    rows = await db.fetch(_GROUP_CHANGES, group, str(after.xid), after.seq, str(upto.xid),
                          upto.seq, limit)
    return [_change(r) for r in rows]


async def task_changes(db: Database, task_ids: Sequence[str], after: Position, upto: Position,
                       limit: int) -> list[Change]:
    """Up to `limit` changes of `task_ids` in (after, upto], in order."""
    rows = await db.fetch(_TASK_CHANGES, list(task_ids), str(after.xid), after.seq,
                          str(upto.xid), upto.seq, limit)
    return [_change(r) for r in rows]


# task_changes_expired_pkey (one row).
_BOUNDS = """
SELECT e.xid::text AS xid, e.seq, pg_snapshot_xmax(pg_current_snapshot())::text AS next_xid
FROM task_changes_expired e"""


async def bounds(db: Database) -> Bounds:
    """The retained log's start and the next transaction id."""
    rows = await db.fetch(_BOUNDS)
    return Bounds(Position(int(rows[0]["xid"]), rows[0]["seq"]), int(rows[0]["next_xid"]))


async def snapshot(conn: asyncpg.Connection) -> str:
    """The snapshot of `conn`'s transaction, as PostgreSQL writes it (xmin:xmax:xip,...)."""
    text: str = await conn.fetchval("SELECT pg_current_snapshot()::text")
    return text
