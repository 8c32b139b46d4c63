"""Rows -> store.writes, a batch at a time, inside the caller's transaction.

Import, follow and backfill all write through `BatchWriter`, so that the order
rows are written in, and how two rows for one key within a batch are decided,
is the same for all three.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg

from tcgraph.ingest import checkpoints, index_rules
from tcgraph.model import IndexEntryRow, StatusRow, TaskRow
from tcgraph.precedence import entry_replaces, status_replaces
from tcgraph.store import writes

# Rows per write statement by default: large enough that round trips do not
# dominate, small enough that one statement stays well inside the statement
# timeout. Every writer takes its own (`batch_size`), tests small ones.
BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Held:
    """A status kept for later, with `origin`: the caller's note of where it came from."""

    status: StatusRow
    origin: object


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
    in order.
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
        self._tasks = self._statuses = self._entries = 0
        self.writing: asyncio.Task[None] | None = None
        # The time at which entries expire for precedence, as now() in the statements.
        self.now = datetime.now(timezone.utc)

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

        `origin` comes back with a status that `finish` finds has no task.
        """
        if isinstance(row, TaskRow):
            self._tasks += 1
            self.tasks[row.task_id] = row
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
            self.writing = asyncio.create_task(self._write(alone, with_status, statuses, entries))
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

    async def _write(self, alone: list[TaskRow], with_status: list[tuple[TaskRow, StatusRow]],
                     statuses: list[Held], entries: list[IndexEntryRow]) -> None:
        if alone:
            await writes.upsert_tasks(self.conn, alone)
        if with_status:
            await writes.upsert_tasks_with_statuses(self.conn, with_status)
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
        if entries:
            await writes.upsert_index_entries(self.conn, entries)
            await writes.upsert_namespaces(self.conn, index_rules.namespaces(entries))
        checkpoints.reached("batch-written")

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
