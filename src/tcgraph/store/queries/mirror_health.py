"""Reads of the mirror's completeness tables (migration 0010_mirror_drift): gaps,
followers, reconciliation, verification, active groups and recent reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tcgraph.store.pool import Database


@dataclass(frozen=True, slots=True)
class Gap:
    """A period in which the mirror may have missed messages."""

    id: int
    started: datetime
    ended: datetime
    reason: str
    follower: str
    detail: str
    repaired_at: datetime | None
    tasks_repaired: int


# mirror_gaps_started
_GAPS = """
SELECT id, started, ended, reason, follower, detail, repaired_at, tasks_repaired
FROM mirror_gaps ORDER BY started DESC, id DESC LIMIT $1"""


async def gaps(db: Database | asyncpg.Pool, limit: int) -> list[Gap]:
    """The newest `limit` gaps, newest first."""
    return [Gap(**dict(r)) for r in await db.fetch(_GAPS, limit)]


@dataclass(frozen=True, slots=True)
class Follower:
    """One follower process, as its heartbeat says."""

    name: str
    queue_name: str
    started: datetime
    last_seen: datetime
    consuming: bool
    messages: int
    batches: int


# mirror_followers_pkey (a handful of rows)
_FOLLOWERS = """
SELECT name, queue_name, started, last_seen, consuming, messages, batches
FROM mirror_followers ORDER BY name"""


async def followers(db: Database | asyncpg.Pool) -> list[Follower]:
    """Every follower that has written to this mirror, by name."""
    return [Follower(**dict(r)) for r in await db.fetch(_FOLLOWERS)]


@dataclass(frozen=True, slots=True)
class Completeness:
    """What the mirror knows of its own completeness: gaps, reconciliation, verification."""

    gaps: int
    unrepaired_gaps: int
    reconcile_passes: int
    last_reconciled: datetime | None  # when the newest complete pass started
    reconcile_calls: int
    tasks_repaired: int
    tasks_unknown: int
    last_verified: datetime | None
    verified_tasks: int
    verified_entries: int
    drift: int | None  # differences the last verification found; None if never verified
    differences: list[str]

    @property
    def verified(self) -> bool:
        """Trustworthy as complete: verified without a difference, and no gap unrepaired."""
        return self.drift == 0 and self.unrepaired_gaps == 0


# One row each (pkeys); mirror_gaps is small, the unrepaired ones by mirror_gaps_unrepaired.
_COMPLETENESS = """
SELECT (SELECT count(*) FROM mirror_gaps) AS gaps,
       (SELECT count(*) FROM mirror_gaps WHERE repaired_at IS NULL) AS unrepaired,
       r.passes, r.last_pass_started, r.calls, r.tasks_repaired, r.tasks_unknown,
       v.verified_at, v.tasks AS verified_tasks, v.index_entries AS verified_entries,
       v.drift, v.differences
FROM (SELECT 1) AS one
LEFT JOIN mirror_reconcile r ON r.id
LEFT JOIN mirror_verification v ON v.id"""


async def completeness(db: Database | asyncpg.Pool) -> Completeness:
    """The mirror's gaps, reconciliation and last verification, in one read."""
    r = (await db.fetch(_COMPLETENESS))[0]
    return Completeness(
        gaps=r["gaps"], unrepaired_gaps=r["unrepaired"], reconcile_passes=r["passes"] or 0,
        last_reconciled=r["last_pass_started"], reconcile_calls=r["calls"] or 0,
        tasks_repaired=r["tasks_repaired"] or 0, tasks_unknown=r["tasks_unknown"] or 0,
        last_verified=r["verified_at"], verified_tasks=r["verified_tasks"] or 0,
        verified_entries=r["verified_entries"] or 0, drift=r["drift"],
        differences=list(r["differences"] or []))


@dataclass(frozen=True, slots=True)
class LastSeen:
    """When a queue was last consumed by any follower, as their heartbeats say."""

    followed_before: bool  # some follower has consumed this queue into this database
    last_seen: datetime | None
    now: datetime


# mirror_followers_pkey (a handful of rows); mirror_state's single row.
_LAST_SEEN = """
SELECT EXISTS (SELECT 1 FROM mirror_followers WHERE queue_name = $1)
           OR EXISTS (SELECT 1 FROM mirror_state WHERE queue_name = $1) AS before,
       GREATEST((SELECT max(last_seen) FROM mirror_followers WHERE queue_name = $1),
                (SELECT last_message FROM mirror_state WHERE queue_name = $1)) AS last_seen,
       now() AS now"""


async def last_seen(db: asyncpg.Pool | asyncpg.Connection, queue_name: str) -> LastSeen:
    """When any follower last consumed `queue_name` (its heartbeat, or the newest batch)."""
    r = (await db.fetch(_LAST_SEEN, queue_name))[0]
    return LastSeen(followed_before=r["before"], last_seen=r["last_seen"], now=r["now"])


# mirror_gaps_unrepaired
_UNREPAIRED = """
SELECT min(started) FROM mirror_gaps WHERE repaired_at IS NULL"""


async def unrepaired_since(db: asyncpg.Pool | asyncpg.Connection) -> datetime | None:
    """When the oldest gap that waits for repair began; None if none waits."""
    found: datetime | None = await db.fetchval(_UNREPAIRED)
    return found


# mirror_active_groups_last_message
_ACTIVE_GROUPS = """
SELECT task_group_id FROM mirror_active_groups WHERE last_message >= $1 ORDER BY task_group_id"""


async def active_groups(db: asyncpg.Pool | asyncpg.Connection, since: datetime) -> list[str]:
    """The task groups that had messages since `since`."""
    return [r["task_group_id"] for r in await db.fetch(_ACTIVE_GROUPS, since)]


# mirror_reconcile_pkey (one row)
_LAST_PASS = "SELECT last_pass_started FROM mirror_reconcile"


async def last_pass_started(db: asyncpg.Pool | asyncpg.Connection) -> datetime | None:
    """When the newest complete reconciliation pass started; None if none has."""
    found: datetime | None = await db.fetchval(_LAST_PASS)
    return found


# mirror_recent_reads_read_at; the newest first, at most `limit`.
_RECENT_READS = """
SELECT key FROM mirror_recent_reads WHERE kind = $1 AND read_at >= $2
ORDER BY read_at DESC LIMIT $3"""


async def recent_reads(db: asyncpg.Pool | asyncpg.Connection, kind: str, since: datetime,
                       limit: int) -> list[str]:
    """The keys of `kind` the API was asked about since `since`, newest first."""
    return [r["key"] for r in await db.fetch(_RECENT_READS, kind, since, limit)]
