"""Rows -> store.writes, a batch at a time, inside the caller's transaction.

Import, follow and backfill all write through `BatchWriter`, so that the order
rows are written in, and how two rows for one key within a batch are decided,
is the same for all three.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, UTC

import asyncpg

from tcgraph.ingest import checkpoints, index_rules
from tcgraph.model import IndexEntryRow, StatusRow, TaskRow
from tcgraph.precedence import entry_replaces, status_replaces
from tcgraph.store import failures, writes

# Rows per write statement by default: large enough that round trips do not
# dominate, small enough that one statement stays well inside the statement
# timeout. Every writer takes its own (`batch_size`), tests small ones.
BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Held:
    """A status kept for later, with `origin`: the caller's note of where it came from."""

    status: StatusRow
    origin: object


class RowRefused(Exception):
    """PostgreSQL refused one row for what it holds (the error is the cause); `origin`
    is the note the caller added the row with."""

    def __init__(self, origin: object, error: BaseException) -> None:
        super().__init__(failures.refusal(error))
        self.origin = origin


@dataclass(frozen=True, slots=True)
class _Batch:
    """The rows of one batch, and the caller's notes of where each came from."""

    alone: list[TaskRow]
    with_status: list[tuple[TaskRow, StatusRow]]
    statuses: list[Held]
    entries: list[IndexEntryRow]
    origins: dict[tuple[str, object], object]  # ("task", id) / ("entry", key) -> origin

    def rows(self) -> list[tuple[object, _Row]]:
        """Each row alone, with its origin."""
        found: list[tuple[object, _Row]] = []
        found += [(self.origins.get(("task", t.task_id)), t) for t in self.alone]
        found += [(self.origins.get(("task", p[0].task_id)), p) for p in self.with_status]
        found += [(held.origin, held.status) for held in self.statuses]
        found += [(self.origins.get(("entry", (e.namespace, e.name))), e) for e in self.entries]
        return found


# One row of a batch: a definition, a definition with its status, a status, an entry.
_Row = TaskRow | tuple[TaskRow, StatusRow] | StatusRow | IndexEntryRow


async def _write_row(conn: asyncpg.Connection, row: _Row) -> None:
    if isinstance(row, TaskRow):
        await writes.upsert_tasks(conn, [row])
    elif isinstance(row, tuple):
        await writes.upsert_tasks_with_statuses(conn, [row])
    elif isinstance(row, StatusRow):
        await writes.update_statuses(conn, [row])
    else:
        await _write_entries(conn, [row])


async def _write_entries(conn: asyncpg.Connection, entries: list[IndexEntryRow]) -> None:
    await writes.upsert_index_entries(conn, entries)
    await writes.upsert_namespaces(conn, index_rules.namespaces(entries))


@dataclass(frozen=True, slots=True)
class Counts:
    """Rows added, each occurrence counted whether or not it changed a stored row."""

    tasks: int
    statuses: int
    index_entries: int


class BatchWriter:
    """Buffers rows and writes them a batch at a time, in an order that always works.

    A status needs its task stored. Definitions are written before the
    statuses that follow them (with them, when both are in the batch); a
    status whose definition comes later is kept aside and applied by `finish`
    once every definition is written. Within a batch a key appears once (ON
    CONFLICT cannot touch a row twice): the last definition wins, and of
    statuses and of index entries the one tcgraph.precedence keeps, as the
    write statements decide between batches.

    A batch is written while the next one is read: PostgreSQL works on one
    while Python parses the other. Batches are still written one at a time,
    in order, each under a savepoint: when PostgreSQL refuses a batch for what
    it holds, its rows are written one by one to find the one at fault, which
    is raised as RowRefused with the origin it was added with.
    """

    def __init__(self, conn: asyncpg.Connection, batch_size: int = BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.conn = conn
        self.batch_size = batch_size
        self.tasks: dict[str, TaskRow] = {}
        self.statuses: dict[str, Held] = {}
        self.entries: dict[tuple[str, str], IndexEntryRow] = {}
        # Statuses whose task was not stored when their batch was written.
        self.waiting: dict[str, Held] = {}
        # Where the buffered definitions and entries came from (statuses: Held).
        self.origins: dict[tuple[str, object], object] = {}
        self._tasks = self._statuses = self._entries = 0
        self.writing: asyncio.Task[None] | None = None
        # The time at which entries expire for precedence, as now() in the statements.
        self.now = datetime.now(UTC)

    @property
    def counts(self) -> Counts:
        """How many rows of each kind were added."""
        return Counts(self._tasks, self._statuses, self._entries)

    @property
    def added(self) -> int:
        """How many rows were added, of every kind."""
        return self._tasks + self._statuses + self._entries

    def add(self, row: TaskRow | StatusRow | IndexEntryRow, origin: object = None) -> bool:
        """Buffer one row; True when a batch is full and `flush` is due.

        `origin` comes back with a status that `finish` finds has no task, and
        with a row PostgreSQL refuses (RowRefused).
        """
        if isinstance(row, TaskRow):
            self._tasks += 1
            self.tasks[row.task_id] = row
            self.origins[("task", row.task_id)] = origin
            return len(self.tasks) >= self.batch_size
        if isinstance(row, StatusRow):
            self._statuses += 1
            held = self.statuses.get(row.task_id)
            if held is None or status_replaces(row.rank, held.status.rank):
                self.statuses[row.task_id] = Held(row, origin)
            waiting = self.waiting.get(row.task_id)
            if waiting is not None and status_replaces(row.rank, waiting.status.rank):
                del self.waiting[row.task_id]  # this later status replaces it
            return len(self.statuses) >= self.batch_size
        self._entries += 1
        key = (row.namespace, row.name)
        entry = self.entries.get(key)
        if entry is None or entry_replaces(row, entry, self.now):
            self.entries[key] = row
            self.origins[("entry", key)] = origin
        return len(self.entries) >= self.batch_size

    async def flush(self, everything: bool = False) -> None:
        """Start writing the full batches (all of them with `everything`).

        Waits for the previous batch first, and raises its error if it failed.
        """
        await self.wait()
        limit = 1 if everything else self.batch_size
        alone: list[TaskRow] = []
        with_status: list[tuple[TaskRow, StatusRow]] = []
        if len(self.tasks) >= limit or len(self.statuses) >= limit:
            # A status buffered with its definition goes into the same row: a
            # new task is then written once rather than inserted and updated.
            for task_id, row in self.tasks.items():
                held = self.statuses.pop(task_id, None)
                if held is None:
                    alone.append(row)
                else:
                    with_status.append((row, held.status))
            self.tasks = {}
        statuses: list[Held] = []
        if len(self.statuses) >= limit:
            statuses = list(self.statuses.values())
            self.statuses = {}
        entries: list[IndexEntryRow] = []
        if len(self.entries) >= limit:
            entries = list(self.entries.values())
            self.entries = {}
        if alone or with_status or statuses or entries:
            keys: list[tuple[str, object]] = [
                *(("task", t.task_id) for t in alone),
                *(("task", t.task_id) for t, _ in with_status),
                *(("entry", (e.namespace, e.name)) for e in entries)]
            origins = {key: self.origins.pop(key, None) for key in keys}
            batch = _Batch(alone, with_status, statuses, entries, origins)
            self.writing = asyncio.create_task(self._write(batch))
            await asyncio.sleep(0)  # let it send its first statement before parsing goes on

    async def wait(self) -> None:
        """Wait for the batch being written, if any; raise its error."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    async def abandon(self) -> None:
        """After an error: let a batch being written end, so the transaction can roll back."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            with contextlib.suppress(Exception):
                await writing

    async def _write(self, batch: _Batch) -> None:
        try:
            async with self.conn.transaction():  # a savepoint in the caller's transaction
                await self._statements(batch)
        except asyncpg.PostgresError as e:
            if not failures.outage(e):
                await self._refused_row(batch)
            raise
        checkpoints.reached("batch-written")

    async def _refused_row(self, batch: _Batch) -> None:
        """Write the rows of a refused batch one by one; raise RowRefused for the first
        that PostgreSQL refuses (none may be: then the batch's error stands)."""
        for origin, row in batch.rows():
            try:
                async with self.conn.transaction():
                    await _write_row(self.conn, row)
            except asyncpg.PostgresError as e:
                if failures.outage(e):
                    raise
                raise RowRefused(origin, e) from e

    async def _statements(self, batch: _Batch) -> None:
        if batch.alone:
            await writes.upsert_tasks(self.conn, batch.alone)
        if batch.with_status:
            await writes.upsert_tasks_with_statuses(self.conn, batch.with_status)
        statuses = batch.statuses
        if statuses:
            missing = await writes.update_statuses(self.conn, [h.status for h in statuses])
            by_id = {held.status.task_id: held for held in statuses}
            for task_id in missing:
                held = by_id[task_id]
                # Statuses read while this batch was written are still buffered,
                # and one may replace this one. A status already waiting ranks
                # higher, or this one would have replaced it.
                later = self.statuses.get(task_id)
                if task_id not in self.waiting and (
                        later is None or not status_replaces(later.status.rank,
                                                             held.status.rank)):
                    self.waiting[task_id] = held
        if batch.entries:
            await _write_entries(self.conn, batch.entries)

    async def finish(self) -> list[Held]:
        """Write everything left, then the statuses that waited for their task.

        Returns the statuses whose task is still not stored (nothing was
        written for them), in the order they were added.
        """
        await self.flush(everything=True)
        await self.wait()
        waiting = list(self.waiting.values())
        missing: set[str] = set()
        for start in range(0, len(waiting), self.batch_size):
            batch = [held.status for held in waiting[start:start + self.batch_size]]
            missing.update(await writes.update_statuses(self.conn, batch))
        return [held for held in waiting if held.status.task_id in missing]
