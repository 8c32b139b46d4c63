"""Reconciliation: what the mirror may have missed, re-read from the upstream's REST API.

A pass re-reads, in this order: what decision tasks asked tcgraph about lately
(api/recent_reads.py: the entries at the index paths they read, with `findTasksAtIndex`,
and the unresolved tasks of the labels they read), the tasks something pointed at
(messages that skipped runs, differences a verification found), every unresolved task
(unscheduled, pending, running; `queue.statuses`, 1,000 ids a call), and the task groups
that had messages since the previous pass began (any follower's, mirror_active_groups)
with `listTaskGroup`, which also brings the tasks whose every message was lost. After a
gap, the groups walked are also those that had messages in the day before it began (a
task's default deadline: a group older than that no longer changes) and every group
holding an unresolved task. Whatever comes back goes through the follower's write path
(ingest.mirror.write_tasks): a status is written only when it ranks above the stored
one, and the write path's rank rule holds besides, so an answer older than a message
never rolls a task back. A task that completes this way is indexed as a message would
have indexed it.

Passes run continuously: one starts `every_s` after the last ended, or at once
when a gap is recorded; the gaps that ended before a complete pass started are
then marked repaired. Every upstream call (each page) takes a token from a
bucket refilled at `rate` calls a second, whatever the outcome, so a failing or
slow upstream is never asked more often; a call that fails is tried again
later in the same pass, and a pass with calls that never succeeded repairs no
gap. With several followers on one database, one reconciles at a time (a
lease in mirror_reconcile).

A task the upstream no longer knows (left out of `queue.statuses`) is past its
`expires` when Taskcluster has deleted it, and the follower's expiry pass
deletes it here too; one that is not past its expiry is counted as unknown
(`mirror.tasksUnknown`), never deleted on the upstream's word alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from collections.abc import Awaitable, Callable, Collection, Sequence

import aiohttp
import asyncpg
from taskcluster.exceptions import TaskclusterConnectionError, TaskclusterRestFailure

from tcgraph import metrics
from tcgraph.ingest import shapes
from tcgraph.ingest.mirror import GroupStatus, write_tasks
from tcgraph.ingest.upstream import (BATCH_IDS, PAGE_LIMIT, Pages, Upstream, entry_rows,
                                     status_rows)
from tcgraph.model import StatusRow, TaskRow
from tcgraph.store import mirror_writes, writes
from tcgraph.store.queries import mirror as queries
from tcgraph.store.queries import mirror_health

log = logging.getLogger(__name__)

T = TypeVar("T")

# The default budget of upstream calls a second (--reconcile-rate, TCGRAPH_RECONCILE_RATE).
DEFAULT_RATE = 2.0
# The default pause between passes when nothing calls for one sooner.
DEFAULT_EVERY_S = 300.0
# A call that does not answer in this time counts as failed (and is tried again).
CALL_TIMEOUT_S = 30.0
# Attempts at one call within a pass; each attempt takes a token.
CALL_ATTEMPTS = 4
# How long the reconciliation lease lasts; it is extended between calls.
LEASE_S = 30.0
# The pause after a pass in which calls failed.
FAILED_PASS_PAUSE_S = 1.0
# Recently read labels and index paths taken into one pass, at most.
RECENT_READS = 10_000
# After a gap, the groups that had messages this long before it are walked.
GROUP_HORIZON = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """How hard reconciliation may press the upstream."""

    rate: float = DEFAULT_RATE  # upstream calls a second; 0: no reconciliation
    every_s: float = DEFAULT_EVERY_S


class TokenBucket:
    """At most `rate` takes a second on average, and `burst` at once."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tokens = self.burst
        self.updated = time.monotonic()

    async def take(self) -> None:
        """Wait for a token and take it."""
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


class CallFailed(Exception):
    """An upstream call failed every attempt in this pass."""


@dataclass
class _Pass:
    started: datetime
    calls: int = 0
    repaired: int = 0
    unknown: int = 0
    failed: int = 0


class Reconciler:
    """Re-reads what may be stale from the upstream, within a budget of calls."""

    def __init__(self, pool: asyncpg.Pool, root_url: str, *, name: str,
                 options: ReconcileOptions) -> None:
        self.pool = pool
        # The client's own retries would spend calls outside the budget: none.
        self.upstream = Upstream(root_url, max_retries=0)
        self.name = name
        self.options = options
        self.bucket = TokenBucket(options.rate)
        self.wake = asyncio.Event()
        self.priority: set[str] = set()

    async def close(self) -> None:
        await self.upstream.close()

    def prioritize(self, task_ids: Collection[str]) -> None:
        """Tasks to re-read first in the next pass; starts one now."""
        if task_ids:
            self.priority.update(task_ids)
            self.wake.set()

    async def run(self, gap_recorded: asyncio.Event) -> None:
        """Pass after pass until cancelled; a gap recorded starts the next one at once."""
        while True:
            try:
                done = await self.one_pass()
            except Exception as e:  # the database is away: the next pass
                log.warning("reconcile: pass abandoned (%s: %s)", type(e).__name__, e)
                done = None
            if done is None:  # another follower holds the lease, or the pass failed
                await _either(self.wake, gap_recorded, min(LEASE_S / 2, self.options.every_s))
                continue
            if done.failed:  # try again soon: the gaps wait for a complete pass
                await _either(self.wake, gap_recorded, FAILED_PASS_PAUSE_S)
                continue
            await _either(self.wake, gap_recorded, self.options.every_s)

    async def one_pass(self) -> _Pass | None:
        """One complete pass; None if another follower holds the lease."""
        started = await mirror_writes.claim_lease(self.pool, self.name, LEASE_S)
        if started is None:
            return None
        self.wake.clear()
        gap_since = await mirror_health.unrepaired_since(self.pool)
        since = await mirror_health.last_pass_started(self.pool) or started - GROUP_HORIZON
        gap_groups: list[str] = []
        if gap_since is not None:
            since = min(since, gap_since - GROUP_HORIZON)
            # Read before the statuses resolve them: a group that had an unresolved
            # task may hold tasks whose every message was lost.
            gap_groups = await queries.unresolved_groups(self.pool)
        groups = list(dict.fromkeys([*await mirror_health.active_groups(self.pool, since),
                                     *gap_groups]))
        done = _Pass(started=started)
        # What decision tasks asked about lately comes first: the entries at the index
        # paths they read, and the unresolved tasks of the labels they read.
        await self._index_paths(done, await mirror_health.recent_reads(
            self.pool, mirror_writes.INDEX_PATH, since, RECENT_READS))
        self.priority.update(await queries.unresolved_with_labels(self.pool, await (
            mirror_health.recent_reads(self.pool, mirror_writes.LABEL, since, RECENT_READS))))
        priority, self.priority = sorted(self.priority), set()
        for start in range(0, len(priority), BATCH_IDS):
            await self._statuses(done, priority[start:start + BATCH_IDS])
        after = ""
        while True:
            page = await queries.unresolved_tasks(self.pool, after, BATCH_IDS)
            if not page:
                break
            await self._statuses(done, [t.task_id for t in page])
            after = page[-1].task_id
        for group in groups:
            await self._group(done, group)
        # An incomplete pass neither repairs gaps nor moves `since` on: its groups
        # are walked again by the next.
        await mirror_writes.pass_done(self.pool, mirror_writes.PassFigures(
            started=done.started, calls=done.calls, repaired=done.repaired,
            unknown=done.unknown, complete=not done.failed))
        if done.failed:
            log.warning("reconcile: %d calls failed; the pass repairs no gap", done.failed)
        else:
            await mirror_writes.gaps_repaired(self.pool, done.started, done.repaired)
        metrics.mirror_repaired(done.repaired)
        if done.repaired or gap_since is not None:
            log.info("reconcile: pass of %d calls repaired %d tasks (%d unknown upstream)",
                     done.calls, done.repaired, done.unknown)
        return done

    async def _call(self, done: _Pass, call: Callable[[], Awaitable[T]]) -> T:
        """One upstream call within the budget, tried again (with a new token) on failure."""
        for attempt in range(1, CALL_ATTEMPTS + 1):
            await self.bucket.take()
            done.calls += 1
            await mirror_writes.claim_lease(self.pool, self.name, LEASE_S)
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    answer = await call()
                metrics.mirror_reconcile_call("ok")
                return answer
            except TaskclusterRestFailure as e:
                if e.status_code is not None and e.status_code < 500:
                    metrics.mirror_reconcile_call(str(e.status_code))
                    raise
                outcome = "5xx"
            except (TimeoutError, TaskclusterConnectionError, aiohttp.ClientError):
                outcome = "unreachable"
            metrics.mirror_reconcile_call(outcome)
            log.info("reconcile: upstream call failed (%s), attempt %d of %d", outcome,
                     attempt, CALL_ATTEMPTS)
        done.failed += 1
        raise CallFailed(f"an upstream call failed {CALL_ATTEMPTS} times")

    async def _statuses(self, done: _Pass, task_ids: Sequence[str]) -> None:
        """Re-read the statuses of `task_ids` (one call a page); write those that rank
        above the stored ones, and the tasks not stored at all with their definitions."""
        stored = await queries.stored_statuses(self.pool, task_ids)
        ids = sorted(set(task_ids))
        answered: dict[str, StatusRow] = {}
        pages = Pages("queue.statuses", self.upstream.max_pages)
        query: dict[str, object] | None = {"limit": PAGE_LIMIT} if ids else None
        while query is not None:
            async def call(query: dict[str, object] = query) -> dict[str, object]:
                answer: dict[str, object] = await self.upstream.queue.statuses(
                    payload={"taskIds": ids}, query=query)
                return answer

            try:
                answer = await self._call(done, call)
            except CallFailed:
                return
            page = status_rows(answer, ids)
            answered.update(page)
            query = pages.next_query(answer, len(page))
        done.unknown += sum(1 for t in stored if t not in answered
                            and stored[t].expires > done.started)
        newer = [GroupStatus(group=stored[t].task_group_id, status=s, expires=stored[t].expires)
                 for t, s in answered.items() if t in stored and s.rank > stored[t].rank]
        missing = sorted(t for t in answered if t not in stored)
        definitions: list[TaskRow] = []
        if missing:
            async def fetch() -> dict[str, TaskRow]:
                return await self.upstream.definitions(missing)

            # Without their definitions, their statuses are written when those come.
            with contextlib.suppress(CallFailed):
                definitions = list((await self._call(done, fetch)).values())
        newer += [GroupStatus(group=d.task_group_id, status=answered[d.task_id],
                              expires=d.expires) for d in definitions]
        await self._write(done, definitions, newer)

    async def _index_paths(self, done: _Pass, paths: Sequence[str]) -> None:
        """Ask the upstream for the entries at `paths` (findTasksAtIndex); a task an entry
        points at that the mirror does not point at there is re-read first (its status,
        and its definition if need be): the write path then indexes it by its routes."""
        for start in range(0, len(paths), BATCH_IDS):
            chunk = list(dict.fromkeys(paths[start:start + BATCH_IDS]))
            theirs: dict[str, str] = {}  # path -> task id
            pages = Pages("findTasksAtIndex", self.upstream.max_pages)
            query: dict[str, object] | None = {"limit": PAGE_LIMIT}
            while query is not None:
                async def call(query: dict[str, object] = query,
                               chunk: list[str] = chunk) -> dict[str, object]:
                    answer: dict[str, object] = await self.upstream.index.findTasksAtIndex(
                        payload={"indexes": chunk}, query=query)
                    return answer

                try:
                    answer = await self._call(done, call)
                except CallFailed:
                    return
                page = entry_rows(answer)
                theirs.update((path, row.task_id) for path, row in page.items())
                query = pages.next_query(answer, len(page))
            # An entry the mirror already has is current unless its task changed,
            # which the unresolved tasks' statuses find.
            ours = await queries.stored_entries(self.pool, list(theirs))
            self.priority.update(task_id for path, task_id in theirs.items()
                                 if path not in ours or ours[path].task_id != task_id)

    async def _group(self, done: _Pass, group: str) -> None:
        """Walk one group with listTaskGroup (one call a page); write what is new or newer."""
        query: dict[str, object] = {"limit": PAGE_LIMIT}
        while True:
            async def call(query: dict[str, object] = query) -> dict[str, object]:
                answer: dict[str, object] = await self.upstream.queue.listTaskGroup(
                    params={"taskGroupId": group}, query=query)
                return answer

            try:
                answer = await self._call(done, call)
            except CallFailed:
                return
            except TaskclusterRestFailure as e:
                if e.status_code == 404:  # not created yet, or expired
                    return
                raise
            page = _group_page(group, answer)
            stored = await queries.stored_statuses(self.pool, [t.task_id for t, _ in page])
            new = [(t, s) for t, s in page if t.task_id not in stored]
            newer = [GroupStatus(group, s, t.expires) for t, s in page
                     if t.task_id in stored and s.rank > stored[t.task_id].rank]
            await self._write(done, [t for t, _ in new],
                              [GroupStatus(group, s, t.expires) for t, s in new] + newer)
            token = answer.get("continuationToken")
            if not token:
                return
            query = {"limit": PAGE_LIMIT, "continuationToken": token}

    async def _write(self, done: _Pass, definitions: list[TaskRow],
                     statuses: list[GroupStatus]) -> None:
        """Through the follower's write path, in one transaction."""
        if not definitions and not statuses:
            return
        # The write path indexes those of them that have a completed run.
        changed = [s.status.task_id for s in statuses]

        async def work(conn: asyncpg.Connection) -> None:
            await write_tasks(conn, definitions, statuses, changed)

        await writes.in_transaction(self.pool, work)
        done.repaired += len(statuses)
        if statuses:
            log.info("reconcile: %d tasks repaired (%s ...)", len(statuses),
                     ", ".join(s.status.task_id for s in statuses[:3]))


def _group_page(group: str, answer: dict[str, object]) -> list[tuple[TaskRow, StatusRow]]:
    """A listTaskGroup page as rows; items that do not parse are logged and skipped."""
    rows: list[tuple[TaskRow, StatusRow]] = []
    tasks = answer.get("tasks")
    for i, item in enumerate(tasks if isinstance(tasks, list) else []):
        where = f"listTaskGroup {group} tasks[{i}]"
        try:
            status = item.get("status") if isinstance(item, dict) else None
            task_id = status.get("taskId") if isinstance(status, dict) else None
            if not isinstance(task_id, str) or not shapes.SLUGID.fullmatch(task_id):
                raise shapes.Invalid(f"{shapes.describe(task_id)} is not a taskId",
                                     ("status", "taskId"))
            rows.append((shapes.task_row(task_id, item.get("task")),
                         shapes.status_row(status, task_id)))
        except shapes.Invalid as e:
            log.warning("%s: %s: %s (skipped)", where, shapes.where("", e.path), e.problem)
    return rows


async def _either(first: asyncio.Event, second: asyncio.Event, timeout: float) -> None:
    """Wait until either event is set, or `timeout` seconds; clears `second`."""
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    second.clear()

