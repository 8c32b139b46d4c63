"""Backfill: whole task groups and index subtrees read from the upstream's REST API.

Written through the same path as the follower's messages (ingest.mirror), so
an older answer never rolls a newer status back, and a group backfilled while
its messages arrive ends the same as if either came alone.

Each group (or namespace) is walked on its own: one that fails, for whatever
reason (the upstream refuses it, its pages never end, it takes too long), never
holds up the others. The follower's queued groups (mirror_groups) are tried
again later, each time later still, then recorded as failed and retried rarely.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from collections.abc import Awaitable, Sequence

import asyncpg

from tcgraph.config import Settings
from tcgraph.ingest.batches import BATCH_SIZE, BatchWriter
from tcgraph.ingest.mirror import GroupStatus, write_tasks
from tcgraph.ingest.upstream import Upstream
from tcgraph.logs import console
from tcgraph.model import IndexEntryRow, StatusRow, TaskRow
from tcgraph.store import writes
from tcgraph.store.pool import open_pool
from tcgraph.store.queries import mirror as queries

log = logging.getLogger(__name__)

# A queued group whose walk failed is tried again 10 s later, twice as long after
# each further failure; after 5 it is recorded as failed and tried every 30 minutes.
GROUP_RETRY = writes.GroupRetry(attempts=5, first_s=10.0, failed_every_s=1800.0)
# The longest one group's walk may take before it counts as failed.
GROUP_TIMEOUT_S = 600.0
# Queued groups looked at in one pass, and the longest pause between passes.
GROUPS_PER_PASS = 100
IDLE_S = 60.0


@dataclass(frozen=True, slots=True)
class Backfilled:
    """What one walk wrote."""

    what: str  # `task group X` or `index X`
    tasks: int
    index_entries: int
    truncated: bool  # stopped at the bound before the end


async def task_group(pool: asyncpg.Pool, upstream: Upstream, task_group_id: str, *,
                     max_tasks: int | None = None, batch_size: int = BATCH_SIZE) -> Backfilled:
    """Store every task of a group (definition and status), a page a transaction, rows
    `batch_size` to a statement."""
    written = 0
    truncated = False
    async for page in upstream.task_group(task_group_id):
        if max_tasks is not None and written + len(page) > max_tasks:
            page = page[:max_tasks - written]
            truncated = True

        async def work(conn: asyncpg.Connection,
                       page: list[tuple[TaskRow, StatusRow]] = page) -> None:
            await write_tasks(conn, [task for task, _ in page],
                              [GroupStatus(task.task_group_id, status, task.expires)
                               for task, status in page], batch_size=batch_size)

        await writes.in_transaction(pool, work)
        written += len(page)
        if truncated:
            log.warning("backfill of task group %s stopped at %d tasks", task_group_id, written)
            break
    return Backfilled(what=f"task group {task_group_id}", tasks=written, index_entries=0,
                      truncated=truncated)


async def index_namespace(pool: asyncpg.Pool, upstream: Upstream, namespace: str, *,
                          batch_size: int = BATCH_SIZE) -> Backfilled:
    """Store every index entry at or below `namespace`, a page a transaction, rows
    `batch_size` to a statement.

    This is how entries the index service got from `index.insertTask` (not
    from a task's routes) reach a mirror: no message announces them.
    """
    written = 0
    async for page in upstream.index_entries(namespace):
        if not page:
            continue

        async def work(conn: asyncpg.Connection, page: list[IndexEntryRow] = page) -> None:
            writer = BatchWriter(conn, batch_size)
            for entry in page:
                writer.add(entry)
            await writer.finish()

        await writes.in_transaction(pool, work)
        written += len(page)
    return Backfilled(what=f"index {namespace}", tasks=0, index_entries=written,
                      truncated=False)


async def queued_groups(pool: asyncpg.Pool, upstream: Upstream, *,
                        max_tasks: int | None = None,
                        retry: writes.GroupRetry = GROUP_RETRY,
                        timeout_s: float = GROUP_TIMEOUT_S,
                        batch_size: int = BATCH_SIZE) -> float:
    """Walk the follower's queued task groups that are due, one after another; returns
    the seconds until the next one is due (at most IDLE_S).

    A group whose walk fails, whatever the reason, is recorded with the reason
    and tried again as `retry` says; the others go on. Raises only when the
    failure cannot be recorded (the database is away).
    """
    for group in await queries.groups_due(pool, GROUPS_PER_PASS):
        try:
            async with asyncio.timeout(timeout_s):
                done = await task_group(pool, upstream, group, max_tasks=max_tasks,
                                        batch_size=batch_size)
        except Exception as e:
            await _group_failed(pool, group, _problem(e), retry)
            continue

        async def finished(conn: asyncpg.Connection, group: str = group,
                           tasks: int = done.tasks) -> None:
            await writes.group_backfilled(conn, group, tasks)

        await writes.in_transaction(pool, finished)
        log.info("follow: backfilled %s: %d tasks", done.what, done.tasks)
    due = await queries.next_group_due_in(pool)
    return IDLE_S if due is None else min(max(due, 0.0), IDLE_S)


async def _group_failed(pool: asyncpg.Pool, group: str, problem: str,
                        retry: writes.GroupRetry) -> None:
    async def record(conn: asyncpg.Connection) -> bool:
        return await writes.group_attempt_failed(conn, group, problem, retry)

    failed = await writes.in_transaction(pool, record)
    log.warning("follow: backfill of task group %s failed (%s); %s", group, problem,
                "recorded as failed, tried again rarely" if failed else "tried again later")


def _problem(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def run(database_url: str, settings: Settings, root_url: str, task_groups: Sequence[str],
              namespaces: Sequence[str]) -> int:
    """`tcgraph backfill`: copy the groups and index subtrees, reporting each on stderr;
    one that fails is reported and the others are copied all the same. Returns the
    exit status: 1 if any failed."""
    pool = await open_pool(database_url, settings.with_(pool_min_size=1, pool_max_size=2))
    upstream = Upstream(root_url)
    failed = 0
    try:
        for group in task_groups:
            failed += not await _reported(f"task group {group}",
                                          task_group(pool, upstream, group))
        for namespace in namespaces:
            failed += not await _reported(f"index {namespace}",
                                          index_namespace(pool, upstream, namespace))
    finally:
        await upstream.close()
        await pool.close()
    return 1 if failed else 0


async def _reported(what: str, walk: Awaitable[Backfilled]) -> bool:
    """Await one walk and say on stderr what it did; False if it failed."""
    try:
        done = await walk
    except Exception as e:
        console.error("%s: failed: %s", what, _problem(e))
        return False
    console.info("%s: %d tasks, %d index entries", done.what, done.tasks, done.index_entries)
    return True
