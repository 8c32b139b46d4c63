"""The writes of the follower's completeness tables (migration 0010_mirror_drift):
gaps, follower heartbeats, the reconciliation's lease and figures, the last
verification.

They sit apart from store/writes.py, which holds the data's write path (tasks,
statuses, the index) and its rank rules; nothing here touches those tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from collections.abc import Sequence

import asyncpg

# mirror_gaps_pkey
_OPEN_GAP = """
INSERT INTO mirror_gaps (started, ended, reason, follower, detail)
VALUES (LEAST($1, now()), now(), $2, $3, $4)
RETURNING id"""


async def record_gap(db: asyncpg.Pool | asyncpg.Connection, *, started: datetime,
                     reason: str, follower: str, detail: str = "") -> int:
    """Record a period in which messages may have been lost, from `started` to now
    (the follower consumes again); returns its id."""
    gap_id: int = await db.fetchval(_OPEN_GAP, started, reason, follower, detail)
    return gap_id


# mirror_gaps_unrepaired: the gaps that ended before the pass started are repaired by it.
_REPAIRED = """
UPDATE mirror_gaps SET repaired_at = now(), tasks_repaired = $2
WHERE repaired_at IS NULL AND ended <= $1"""


async def gaps_repaired(db: asyncpg.Pool | asyncpg.Connection, pass_started: datetime,
                        tasks: int) -> None:
    """Mark the gaps that ended before a completed pass began as repaired by it."""
    await db.execute(_REPAIRED, pass_started, tasks)


# mirror_active_groups_pkey; in key order, so that followers lock rows alike.
_GROUPS_ACTIVE = """
INSERT INTO mirror_active_groups AS g (task_group_id, last_message)
SELECT g, now() FROM unnest($1::text[]) AS g
ON CONFLICT (task_group_id) DO UPDATE SET last_message = now()"""
# mirror_active_groups_last_message
_FORGET_GROUPS = "DELETE FROM mirror_active_groups WHERE last_message < $1"


async def groups_active(db: asyncpg.Pool | asyncpg.Connection, groups: Sequence[str]) -> None:
    """Note that `groups` had messages now (reconciliation walks them)."""
    if groups:
        await db.execute(_GROUPS_ACTIVE, sorted(set(groups)))


async def forget_groups(db: asyncpg.Pool | asyncpg.Connection, before: datetime) -> None:
    """Forget the groups that had no message since `before`."""
    await db.execute(_FORGET_GROUPS, before)


# mirror_recent_reads_pkey, and mirror_recent_reads_read_at for what is forgotten.
_NOTE_READS = """
WITH forgotten AS (
    DELETE FROM mirror_recent_reads WHERE read_at < now() - make_interval(secs => $3)
)
INSERT INTO mirror_recent_reads AS r (kind, key, read_at)
SELECT k, v, now() FROM unnest($1::text[], $2::text[]) AS u(k, v)
ON CONFLICT (kind, key) DO UPDATE SET read_at = now()"""


# The kinds of key noted in mirror_recent_reads.
LABEL = "label"
INDEX_PATH = "index-path"


async def note_reads(db: asyncpg.Pool | asyncpg.Connection, kinds: Sequence[str],
                     keys: Sequence[str], keep_s: float) -> None:
    """Record that (kind, key) pairs were read now (unique pairs, in key order); forget
    those not read for `keep_s` seconds."""
    await db.execute(_NOTE_READS, list(kinds), list(keys), keep_s)


# mirror_followers_pkey
_HEARTBEAT = """
INSERT INTO mirror_followers AS f (name, queue_name, started, last_seen, consuming, messages,
                                   batches)
VALUES ($1, $2, $3, now(), $4, $5, $6)
ON CONFLICT (name) DO UPDATE SET
    queue_name = EXCLUDED.queue_name, started = EXCLUDED.started, last_seen = now(),
    consuming = EXCLUDED.consuming, messages = EXCLUDED.messages, batches = EXCLUDED.batches"""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What one follower says of itself every few seconds."""

    name: str
    queue_name: str
    started: datetime
    consuming: bool
    messages: int
    batches: int


async def heartbeat(db: asyncpg.Pool | asyncpg.Connection, beat: Heartbeat) -> None:
    """Record that a follower is alive, and what it has done since it started."""
    await db.execute(_HEARTBEAT, beat.name, beat.queue_name, beat.started, beat.consuming,
                     beat.messages, beat.batches)


# mirror_reconcile_pkey (one row). The lease is taken when free, expired or ours.
_CLAIM_LEASE = """
INSERT INTO mirror_reconcile AS r (id, holder, lease_until)
VALUES (true, $1, now() + make_interval(secs => $2))
ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until
WHERE r.holder IS NULL OR r.holder = EXCLUDED.holder OR r.lease_until < now()
RETURNING now() AS now"""


async def claim_lease(db: asyncpg.Pool | asyncpg.Connection, holder: str,
                      seconds: float) -> datetime | None:
    """Take (or extend) the reconciliation lease; the database's time now, or None if
    another follower holds it."""
    now: datetime | None = await db.fetchval(_CLAIM_LEASE, holder, seconds)
    return now


# Only a complete pass counts, and moves last_pass_started on.
_PASS_DONE = """
UPDATE mirror_reconcile SET
       passes = passes + $5::int,
       last_pass_started = CASE WHEN $5 = 1 THEN $1 ELSE last_pass_started END,
       last_pass_ended = CASE WHEN $5 = 1 THEN now() ELSE last_pass_ended END,
       calls = calls + $2, tasks_repaired = tasks_repaired + $3,
       tasks_unknown = tasks_unknown + $4
WHERE id"""


@dataclass(frozen=True, slots=True)
class PassFigures:
    """What one reconciliation pass cost and did."""

    started: datetime
    calls: int
    repaired: int
    unknown: int
    complete: bool  # every call succeeded


async def pass_done(db: asyncpg.Pool | asyncpg.Connection, figures: PassFigures) -> None:
    """Count a pass's calls and repairs; a complete one also as a pass."""
    await db.execute(_PASS_DONE, figures.started, figures.calls, figures.repaired,
                     figures.unknown, int(figures.complete))


# mirror_verification_pkey (one row)
_VERIFIED = """
INSERT INTO mirror_verification AS v (id, verified_at, tasks, index_entries, drift, differences)
VALUES (true, now(), $1, $2, $3, $4::jsonb)
ON CONFLICT (id) DO UPDATE SET verified_at = now(), tasks = EXCLUDED.tasks,
    index_entries = EXCLUDED.index_entries, drift = EXCLUDED.drift,
    differences = EXCLUDED.differences"""


async def record_verification(db: asyncpg.Pool | asyncpg.Connection, *, tasks: int,
                              index_entries: int, differences: list[str]) -> None:
    """Keep the outcome of a verification (the first differences, described)."""
    await db.execute(_VERIFIED, tasks, index_entries, len(differences), differences[:20])
