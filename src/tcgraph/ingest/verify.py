"""Verification: the mirror's tasks, statuses and index entries compared with the upstream.

`tcgraph verify` and the follower's periodic check read the same sample (random
tasks and index entries, or every task of one group and the entries pointing
at them) from both sides: definitions with `queue.tasks`, statuses with
`queue.statuses`, entries with `index.findTasksAtIndex` (a group's task list
with `listTaskGroup`). Both sides go through the same shapes as the write
path, so only real differences show. A running run's `takenUntil` is left out:
reclaims move it without a message.

The upstream is read first, then the mirror; what differs is read again after
`settle_s`, since a message can be on its way (the mirror's lag). Only the
differences that persist count as drift. The outcome is kept in
mirror_verification (GraphQL `mirror { verified drift ... }`) and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Sequence

import asyncpg
import orjson

from tcgraph import metrics
from tcgraph.config import Settings
from tcgraph.ingest.upstream import (BATCH_IDS, PAGE_LIMIT, Pages, Upstream, entry_rows,
                                     status_rows)
from tcgraph.model import IndexEntryRow, State, StatusRow
from tcgraph.store import mirror_writes
from tcgraph.store.pool import open_pool
from tcgraph.store.queries import mirror as queries

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = 100
# How long to wait before reading a difference again (a message may be on its way).
SETTLE_S = 2.0


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the mirror differs from the upstream."""

    what: str  # queue.task, queue.status, index.findTask, listTaskGroup
    key: str  # a task id or an index path
    detail: str
    task_id: str | None  # the task to re-read to repair it, if any

    def __str__(self) -> str:
        return f"{self.what} {self.key}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Verification:
    """What a verification compared, and the differences that persisted."""

    tasks: int
    index_entries: int
    differences: list[Difference]


async def verify(pool: asyncpg.Pool, upstream: Upstream, *, sample: int = DEFAULT_SAMPLE,
                 task_group: str | None = None, settle_s: float = SETTLE_S) -> Verification:
    """Compare a sample (or one group) with the upstream; record and return the outcome."""
    differences: list[Difference] = []
    if task_group is not None:
        upstream_ids: set[str] = set()
        async for page in upstream.task_group(task_group):
            upstream_ids.update(task.task_id for task, _ in page)
        held = set(await queries.group_task_ids(pool, task_group))
        differences += [Difference("listTaskGroup", task_group, f"task {t} is not in the mirror",
                                   t) for t in sorted(upstream_ids - held)]
        task_ids = sorted(held | upstream_ids)
        paths = await queries.index_paths_of(pool, task_ids)
    else:
        task_ids = await queries.sample_task_ids(pool, sample)
        paths = await queries.sample_index_paths(pool, sample)
    found = await _compare(pool, upstream, task_ids, paths)
    if found and settle_s > 0:
        await asyncio.sleep(settle_s)
        found = await _compare(pool, upstream, sorted({d.task_id for d in found
                                                        if d.what != "index.findTask"
                                                        and d.task_id is not None}),
                               sorted({d.key for d in found if d.what == "index.findTask"}))
    differences += found
    await mirror_writes.record_verification(
        pool, tasks=len(task_ids), index_entries=len(paths),
        differences=[str(d) for d in differences])
    metrics.mirror_drift(len(differences))
    return Verification(tasks=len(task_ids), index_entries=len(paths), differences=differences)


async def _compare(pool: asyncpg.Pool, upstream: Upstream, task_ids: Sequence[str],
                   paths: Sequence[str]) -> list[Difference]:
    found: list[Difference] = []
    for start in range(0, len(task_ids), BATCH_IDS):
        chunk = task_ids[start:start + BATCH_IDS]
        found += await _definitions(pool, upstream, chunk)
        found += await _statuses(pool, upstream, chunk)
    for start in range(0, len(paths), BATCH_IDS):
        found += await _entries(pool, upstream, paths[start:start + BATCH_IDS])
    return found


async def _definitions(pool: asyncpg.Pool, upstream: Upstream,
                       task_ids: Sequence[str]) -> list[Difference]:
    theirs = await upstream.definitions(task_ids)
    ours = await queries.stored_definitions(pool, task_ids)
    found: list[Difference] = []
    for task_id in task_ids:
        if task_id not in theirs and task_id not in ours:
            continue
        if task_id not in theirs:
            found.append(Difference("queue.task", task_id, "the upstream does not know it",
                                    task_id))
        elif task_id not in ours:
            found.append(Difference("queue.task", task_id, "not in the mirror", task_id))
        elif orjson.loads(theirs[task_id].definition) != orjson.loads(ours[task_id]):
            found.append(Difference("queue.task", task_id, "the definitions differ", task_id))
    return found


def _comparable_runs(runs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in run.items()
             if not (k == "takenUntil" and run.get("state") == State.RUNNING.value)}
            for run in runs]


async def _statuses(pool: asyncpg.Pool, upstream: Upstream,
                    task_ids: Sequence[str]) -> list[Difference]:
    theirs: dict[str, StatusRow] = {}
    pages = Pages("queue.statuses", upstream.max_pages)
    query: dict[str, object] | None = {"limit": PAGE_LIMIT}
    while query is not None:
        answer = await upstream.queue.statuses(payload={"taskIds": list(task_ids)}, query=query)
        page = status_rows(answer, task_ids)
        theirs.update(page)
        query = pages.next_query(answer, len(page))
    ours = await queries.stored_statuses(pool, task_ids)
    found: list[Difference] = []
    for task_id, status in theirs.items():
        held = ours.get(task_id)
        if held is None:
            continue  # reported with its definition
        if (held.state, held.retries_left, _comparable_runs(held.runs)) != (
                status.state, status.retries_left, _comparable_runs(orjson.loads(status.runs))):
            found.append(Difference(
                "queue.status", task_id, f"the mirror says {held.state} with "
                f"{len(held.runs)} runs, the upstream {status.state} with "
                f"{len(orjson.loads(status.runs))} runs", task_id))
    return found


async def _entries(pool: asyncpg.Pool, upstream: Upstream,
                   paths: Sequence[str]) -> list[Difference]:
    wanted = list(dict.fromkeys(paths))  # the same path twice is a 500 upstream
    theirs: dict[str, IndexEntryRow] = {}
    pages = Pages("findTasksAtIndex", upstream.max_pages)
    query: dict[str, object] | None = {"limit": PAGE_LIMIT}
    while query is not None:
        answer = await upstream.index.findTasksAtIndex(payload={"indexes": wanted}, query=query)
        page = entry_rows(answer)
        theirs.update(page)
        query = pages.next_query(answer, len(page))
    ours = await queries.stored_entries(pool, wanted)
    found: list[Difference] = []
    for path in wanted:
        mine, other = ours.get(path), theirs.get(path)
        if mine is None and other is None:
            continue
        if other is None:
            assert mine is not None
            found.append(Difference("index.findTask", path, "the upstream has no entry",
                                    mine.task_id))
        elif mine is None:
            found.append(Difference("index.findTask", path, f"not in the mirror (upstream: "
                                    f"{other.task_id})", other.task_id))
        elif (mine.task_id, mine.rank, mine.data, _ms(mine.expires)) != (
                other.task_id, other.rank, orjson.loads(other.data), _ms(other.expires)):
            found.append(Difference("index.findTask", path, f"the mirror points at "
                                    f"{mine.task_id} (rank {mine.rank:g}), the upstream at "
                                    f"{other.task_id} (rank {other.rank:g})", other.task_id))
    return found


def _ms(t: datetime) -> datetime:
    """A time to the millisecond, as Taskcluster gives it."""
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


async def run(database_url: str, settings: Settings, root_url: str, *, sample: int,
              task_group: str | None) -> int:
    """`tcgraph verify`: print the differences; exit status 1 if there are any."""
    pool = await open_pool(database_url, settings.with_(pool_min_size=1, pool_max_size=2))
    upstream = Upstream(root_url)
    try:
        done = await verify(pool, upstream, sample=sample, task_group=task_group)
    finally:
        await upstream.close()
        await pool.close()
    for d in done.differences:
        print(d)
    print(f"verified {done.tasks} tasks and {done.index_entries} index entries against "
          f"{root_url}: {len(done.differences)} differences", file=sys.stderr)
    return 1 if done.differences else 0
