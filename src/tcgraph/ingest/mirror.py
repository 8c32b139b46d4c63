"""The mirror's write path: a batch of pulse messages -> one transaction.

For each batch: the messages are parsed (an invalid one is set aside, not
retried); each task's highest-ranked status is kept; the definitions of tasks
not stored yet are fetched from the upstream (bounded in time); then, in one
transaction, statuses are written (those still without a definition wait in
mirror_waiting), completed tasks are indexed as the index service would, new
task groups are queued for backfill, and the batch is counted in mirror_state.
Every step is idempotent, so a batch written twice (redelivered after a crash
between commit and acknowledgement) changes nothing the second time.

A batch that fails for anything but an outage of the database
(store.failures.outage: a lost connection, a shutdown, resources exhausted)
failed for what it holds, whatever the error's SQLSTATE class (a value out of
range, a label over PostgreSQL's index row limit, ...), and would fail again
every time: it is split in halves, each written on its own, until the
message(s) at fault are alone; those are set aside in mirror_rejected with the
error, and every other message is written. An outage is raised, for the
consumer to try the batch again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Collection, Mapping, Sequence

import asyncpg

from tcgraph.ingest import events, index_rules
from tcgraph.ingest.batches import BATCH_SIZE, BatchWriter
from tcgraph.ingest.upstream import Upstream
from tcgraph.model import StatusRow, TaskRow
from tcgraph.precedence import status_replaces
from tcgraph.store import failures, writes
from tcgraph.store.queries import mirror as queries
from tcgraph.timefmt import format_time, parse_time

log = logging.getLogger(__name__)

# A batch waits at most this long for the upstream's definitions; those not in
# by then are fetched again later (the statuses wait meanwhile).
FETCH_TIMEOUT_S = 5.0
# A waiting status's definition that did not come is asked for again after
# RETRY_MIN_S, twice as long after each further attempt, at most RETRY_MAX_S
# apart: one that never comes costs at most one call in RETRY_MAX_S.
RETRY_MIN_S = 2.0
RETRY_MAX_S = 600.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as the broker delivered it."""

    exchange: str
    routing_key: str
    body: bytes


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one committed batch did."""

    messages: int
    rejected: int
    statuses: int
    waiting: int  # statuses kept until their definition comes
    new_groups: tuple[str, ...]  # groups queued for backfill
    status_time: datetime | None
    refused: int = 0  # of `rejected`, those valid messages the store refused


def _combined(a: BatchResult, b: BatchResult) -> BatchResult:
    times = [t for t in (a.status_time, b.status_time) if t is not None]
    return BatchResult(messages=a.messages + b.messages, rejected=a.rejected + b.rejected,
                       statuses=a.statuses + b.statuses, waiting=a.waiting + b.waiting,
                       new_groups=a.new_groups + b.new_groups,
                       status_time=max(times) if times else None,
                       refused=a.refused + b.refused)


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A status to write, with its task's group and expiry (kept if it has to wait)."""

    group: str
    status: StatusRow
    expires: datetime | None


@dataclass(frozen=True, slots=True)
class Expected:
    """What a task's status says of it, which a definition fetched for it must agree with
    (an upstream that answers with another task's definition is not believed)."""

    group: str
    expires: datetime | None

    def disagreement(self, row: TaskRow) -> str | None:
        """How `row` disagrees with the status, or None."""
        if row.task_group_id != self.group:
            return (f"its definition's taskGroupId {row.task_group_id} is not its status's "
                    f"{self.group}")
        if self.expires is not None and row.expires != self.expires:
            return (f"its definition expires {format_time(row.expires)}, its status "
                    f"{format_time(self.expires)}")
        return None


@dataclass(frozen=True, slots=True)
class Fetched:
    """Definitions fetched, by task id, and why each of the others did not come."""

    rows: dict[str, TaskRow]
    missing: dict[str, str]


@dataclass
class _Collected:
    statuses: dict[str, StatusRow] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # task id -> task group id
    expires: dict[str, datetime | None] = field(default_factory=dict)  # task id -> expiry
    completed: set[str] = field(default_factory=set)  # tasks with a task-completed message
    rejected: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    status_time: datetime | None = None


def _collect(deliveries: Sequence[Delivery]) -> _Collected:
    found = _Collected()
    for d in deliveries:
        try:
            event = events.parse(d.exchange, d.routing_key, d.body)
        except events.InvalidMessage as e:
            log.warning("message set aside: %s", e)
            found.rejected.append((d.exchange, d.routing_key, e.problem, d.body))
            continue
        if not isinstance(event, events.TaskEvent):
            continue
        held = found.statuses.get(event.task_id)
        if held is None or status_replaces(event.status.rank, held.rank):
            found.statuses[event.task_id] = event.status
        found.groups[event.task_id] = event.task_group_id
        found.expires[event.task_id] = event.expires
        if event.exchange == "task-completed":
            found.completed.add(event.task_id)
        if event.status_time is not None and (found.status_time is None
                                              or event.status_time > found.status_time):
            found.status_time = event.status_time
    return found


async def index_tasks(conn: asyncpg.Connection, task_ids: Collection[str],
                      batch_size: int = BATCH_SIZE) -> int:
    """Index the completed tasks among `task_ids` from what is stored; returns the entries.

    Reading the stored status (not the message) makes the result the same
    whatever order the messages came in: the latest completed run decides.
    """
    if not task_ids:
        return 0
    writer = BatchWriter(conn, batch_size)
    for found in await queries.index_inputs(conn, list(task_ids)):
        indexing = index_rules.task_entries(found.task_id, found.definition,
                                            parse_time(found.resolved))
        for skipped in indexing.skipped:
            log.info("task %s: route %s not indexed: %s", found.task_id, skipped.route,
                     skipped.reason)
        for entry in indexing.entries:
            writer.add(entry)
    await writer.finish()
    return writer.counts.index_entries


async def write_tasks(conn: asyncpg.Connection, definitions: Sequence[TaskRow],
                      statuses: Sequence[GroupStatus] = (),
                      completed: Collection[str] = (), *,
                      batch_size: int = BATCH_SIZE) -> int:
    """Store definitions and statuses, keep those statuses
    whose task is still not stored in mirror_waiting, apply statuses that waited for
    the definitions, and index what completed among the definitions' tasks and
    `completed`: the part backfill and the follower share.

    Returns how many statuses wait. Rows are written `batch_size` to a statement.
    """
    writer = BatchWriter(conn, batch_size)
    for row in definitions:
        writer.add(row)
    for s in statuses:
        writer.add(s.status, origin=s)
    waiting = await writer.finish()
    if waiting:
        await writes.upsert_waiting(conn, [
            writes.WaitingRow(group=h.origin.group, status=h.status, expires=h.origin.expires)
            for h in waiting if isinstance(h.origin, GroupStatus)])
    ids = [row.task_id for row in definitions]
    if ids:
        await writes.promote_waiting(conn, ids)
    await index_tasks(conn, {*ids, *completed}, batch_size)
    return len(waiting)


class Mirror:
    """Writes batches of messages into one database, fetching definitions as needed."""

    def __init__(self, pool: asyncpg.Pool, upstream: Upstream | None, *, queue_name: str,
                 started: datetime, backfill: bool, batch_size: int = BATCH_SIZE,
                 retry_min_s: float = RETRY_MIN_S, retry_max_s: float = RETRY_MAX_S) -> None:
        self.pool = pool
        self.batch_size = batch_size  # rows per write statement
        self.retry_min_s = retry_min_s  # see RETRY_MIN_S
        self.retry_max_s = retry_max_s
        self.upstream = upstream
        self.queue_name = queue_name
        self.started = started
        self.backfill = backfill

    async def fetch(self, expected: Mapping[str, Expected]) -> Fetched:
        """The definitions of the tasks in `expected` that the upstream gives in time and
        that agree with what their statuses say; why each of the others did not come."""
        if not expected:
            return Fetched({}, {})
        if self.upstream is None:
            return Fetched({}, dict.fromkeys(expected, "no upstream to ask"))
        invalid: dict[str, str] = {}
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                given = await self.upstream.definitions(expected.keys(), invalid)
        except Exception as e:  # the upstream is away, slow or misbehaving: the statuses wait
            problem = f"not fetched ({type(e).__name__}: {e})"
            log.warning("definitions of %d tasks %s; their statuses wait", len(expected), problem)
            return Fetched({}, dict.fromkeys(expected, problem))
        rows: dict[str, TaskRow] = {}
        missing: dict[str, str] = {}
        for task_id, says in expected.items():
            row = given.get(task_id)
            if row is None:
                missing[task_id] = invalid.get(task_id, "the upstream did not give it")
            elif (disagreement := says.disagreement(row)) is not None:
                log.warning("definition of %s not stored: %s", task_id, disagreement)
                missing[task_id] = disagreement
            else:
                rows[task_id] = row
        return Fetched(rows, missing)

    async def write(self, deliveries: Sequence[Delivery]) -> BatchResult:
        """Write a batch; the messages the store refuses are set aside, the rest written.

        Raises when the batch could not be committed for an outage of the database.
        """
        try:
            return await self.apply(deliveries)
        except Exception as e:
            if failures.outage(e):
                raise
            problem = f"the store refused it: {failures.refusal(e)}"
        if len(deliveries) == 1:
            return await self.set_aside(deliveries[0], problem)
        log.warning("a batch of %d messages was refused (%s); writing it in halves",
                    len(deliveries), problem)
        half = len(deliveries) // 2
        first = await self.write(deliveries[:half])
        return _combined(first, await self.write(deliveries[half:]))

    async def set_aside(self, delivery: Delivery, problem: str) -> BatchResult:
        """Keep a message the store refused in mirror_rejected, and count it."""
        log.warning("message set aside: %s %s: %s", delivery.exchange, delivery.routing_key,
                    problem)

        async def work(conn: asyncpg.Connection) -> None:
            await writes.insert_rejected(conn, [(delivery.exchange, delivery.routing_key,
                                                 problem, delivery.body)])
            await writes.record_batch(
                conn, queue_name=self.queue_name, started=self.started,
                exchange=delivery.exchange, routing_key=delivery.routing_key, status_time=None,
                messages=1, errors=1)

        await writes.in_transaction(self.pool, work)
        return BatchResult(messages=1, rejected=1, statuses=0, waiting=0, new_groups=(),
                           status_time=None, refused=1)

    async def apply(self, deliveries: Sequence[Delivery]) -> BatchResult:
        """Write one batch in one transaction; raises if it could not be committed."""
        found = _collect(deliveries)
        missing = set(found.statuses) - await queries.stored_task_ids(self.pool,
                                                                      list(found.statuses))
        fetched = await self.fetch({t: Expected(found.groups[t], found.expires[t])
                                    for t in missing})

        async def work(conn: asyncpg.Connection) -> BatchResult:
            new_groups: list[str] = []
            if self.backfill and missing:
                new_groups = await writes.claim_groups(conn, [found.groups[t] for t in missing])
            waiting = await write_tasks(
                conn, list(fetched.rows.values()),
                [GroupStatus(found.groups[t], status, found.expires[t])
                 for t, status in found.statuses.items()],
                found.completed, batch_size=self.batch_size)
            # This was an attempt at the definitions of the statuses that now wait.
            await self._defer(conn, fetched.missing)
            if found.rejected:
                await writes.insert_rejected(conn, found.rejected)
            last = deliveries[-1]
            await writes.record_batch(
                conn, queue_name=self.queue_name, started=self.started, exchange=last.exchange,
                routing_key=last.routing_key, status_time=found.status_time,
                messages=len(deliveries), errors=len(found.rejected))
            return BatchResult(messages=len(deliveries), rejected=len(found.rejected),
                               statuses=len(found.statuses), waiting=waiting,
                               new_groups=tuple(new_groups), status_time=found.status_time)

        return await writes.in_transaction(self.pool, work)

    async def fetch_waiting(self, limit: int = 1000) -> int:
        """Fetch and store the definitions of waiting statuses that are due; returns how
        many were stored. Those that did not come (or that the store refused) are
        asked for again later, each time later still."""
        due = await queries.waiting_due(self.pool, limit)
        fetched = await self.fetch({w.task_id: Expected(w.task_group_id, w.expires)
                                    for w in due})
        refused = await self._store_definitions(list(fetched.rows.values()))
        deferred = {**fetched.missing, **refused}
        if deferred:
            async def defer(conn: asyncpg.Connection) -> None:
                await self._defer(conn, deferred)

            await writes.in_transaction(self.pool, defer)
        return len(fetched.rows) - len(refused)

    async def _defer(self, conn: asyncpg.Connection, problems: Mapping[str, str]) -> None:
        """Ask again later for the definitions of waiting statuses, saying why."""
        if problems:
            await writes.defer_waiting(conn, [writes.Deferred(t, p) for t, p in problems.items()],
                                       min_s=self.retry_min_s, max_s=self.retry_max_s)

    async def _store_definitions(self, rows: Sequence[TaskRow]) -> dict[str, str]:
        """Store `rows` with the statuses that waited for them; those the store refuses
        (each then tried alone) are left out: returns why, by task id."""
        async def work(conn: asyncpg.Connection, rows: Sequence[TaskRow] = rows) -> None:
            await write_tasks(conn, rows, batch_size=self.batch_size)

        if not rows:
            return {}
        try:
            await writes.in_transaction(self.pool, work)
            return {}
        except Exception as e:
            if failures.outage(e):
                raise
            if len(rows) == 1:
                log.warning("definition of %s refused by the store: %s", rows[0].task_id,
                            failures.refusal(e))
                return {rows[0].task_id: f"the store refused it: {failures.refusal(e)}"}
        refused: dict[str, str] = {}
        for row in rows:
            refused.update(await self._store_definitions([row]))
        return refused
