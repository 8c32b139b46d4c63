"""Backfill: whole task groups and index subtrees read from the upstream's REST API.

Written through the same path as the follower's messages (ingest.mirror), so
an older answer never rolls a newer status back, and a group backfilled while
its messages arrive ends the same as if either came alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import asyncpg

from tcgraph.config import Settings
from tcgraph.ingest.batches import BatchWriter
from tcgraph.ingest.mirror import GroupStatus, write_tasks
from tcgraph.ingest.upstream import Upstream
from tcgraph.logs import console
from tcgraph.model import IndexEntryRow, StatusRow, TaskRow
from tcgraph.store import writes
from tcgraph.store.pool import open_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backfilled:
    """What one walk wrote."""

    what: str  # `task group X` or `index X`
    tasks: int
    index_entries: int
    truncated: bool  # stopped at the bound before the end


async def task_group(pool: asyncpg.Pool, upstream: Upstream, task_group_id: str, *,
                     max_tasks: int | None = None) -> Backfilled:
    """Store every task of a group (definition and status), a page a transaction."""
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
                               for task, status in page])

        await writes.in_transaction(pool, work)
        written += len(page)
        if truncated:
            log.warning("backfill of task group %s stopped at %d tasks", task_group_id, written)
            break
    return Backfilled(what=f"task group {task_group_id}", tasks=written, index_entries=0,
                      truncated=truncated)


async def index_namespace(pool: asyncpg.Pool, upstream: Upstream, namespace: str) -> Backfilled:
    """Store every index entry at or below `namespace`, a page a transaction.

    This is how entries the index service got from `index.insertTask` (not
    from a task's routes) reach a mirror: no message announces them.
    """
    written = 0
    async for page in upstream.index_entries(namespace):
        if not page:
            continue

        async def work(conn: asyncpg.Connection, page: list[IndexEntryRow] = page) -> None:
            writer = BatchWriter(conn)
            for entry in page:
                writer.add(entry)
            await writer.finish()

        await writes.in_transaction(pool, work)
        written += len(page)
    return Backfilled(what=f"index {namespace}", tasks=0, index_entries=written,
                      truncated=False)


async def run(database_url: str, settings: Settings, root_url: str, task_groups: Sequence[str],
              namespaces: Sequence[str]) -> list[Backfilled]:
    """`tcgraph backfill`: copy the groups and index subtrees, reporting each on stderr."""
    pool = await open_pool(database_url, settings.with_(pool_min_size=1, pool_max_size=2))
    upstream = Upstream(root_url)
    done: list[Backfilled] = []
    try:
        for group in task_groups:
            done.append(await task_group(pool, upstream, group))
        for namespace in namespaces:
            done.append(await index_namespace(pool, upstream, namespace))
    finally:
        await upstream.close()
        await pool.close()
    for d in done:
        console.info("%s: %d tasks, %d index entries", d.what, d.tasks, d.index_entries)
    return done
