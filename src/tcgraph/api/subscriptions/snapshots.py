"""Opening snapshots, read together: one transaction for every subscription starting at once.

A subscription without `after` starts with every task the mirror holds for
its key, read in one REPEATABLE READ transaction whose snapshot is the
stream's starting point (api/subscriptions/streams.py). When thousands of
clients subscribe at the same moment (a deploy restarts the servers and every
browser reconnects), one transaction each would queue thousands of
connection acquisitions behind the pool and time them out. Instead, the
requests that arrive while a read runs wait for the next one, which reads all
of their keys with one snapshot, through one set of loaders (so the groups'
pages are one statement per page depth, not one per subscription), and hands
each the same deliveries as every other subscription with the same key and
selection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import asyncpg

from tcgraph.api.subscriptions.cursors import Snapshot, encode
from tcgraph.api.subscriptions.frames import Delivery
from tcgraph.config import Settings
from tcgraph.errors import DatabaseUnavailable, StatementTimeout
from tcgraph.loaders import JsonListKey, JsonPageKey, Loaders
from tcgraph.model import JsonNode, Task
from tcgraph.store.pool import CONNECTION_ERRORS, Database, SqlStats
from tcgraph.store.queries import task_changes
from tcgraph.store.sqlfrag import SqlFragment

PAGE = 1_000  # tasks per snapshot statement
MAX_READ = 500  # subscriptions read in one transaction
# What reading the snapshot may fail with when the database cannot answer.
_UNAVAILABLE: tuple[type[BaseException], ...] = (TimeoutError, *CONNECTION_ERRORS)


@dataclass(frozen=True, slots=True)
class Key:
    """What a subscription follows: a task group, or a list of tasks."""

    group: str | None
    task_ids: tuple[str, ...] = ()


Opening = tuple[Snapshot, list[Delivery]]
_Request = tuple[Key, SqlFragment | None]


class _HeldDatabase(Database):
    """The loaders' Database on one connection, inside the snapshot's transaction."""

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        super().__init__(pool, SqlStats())
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> Sequence[asyncpg.Record]:
        rows: Sequence[asyncpg.Record] = await self.conn.fetch(sql, *args)
        self.stats.statements += 1
        self.stats.rows += len(rows)
        return rows


class Snapshots:
    """Reads opening snapshots from `pool`, batching the requests that arrive together."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self._waiting: dict[_Request, asyncio.Future[Opening]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.reads = 0  # transactions run (the tests count them)

    @property
    def waiting(self) -> int:
        """Distinct (key, selection) requests waiting for the next read."""
        return len(self._waiting)

    async def read(self, key: Key, shape: SqlFragment | None) -> Opening:
        """Every task the mirror holds for `key`, as one transaction's snapshot saw them."""
        request = (key, shape)
        waiting = self._waiting.get(request)
        if waiting is None:
            waiting = self._waiting[request] = asyncio.get_running_loop().create_future()
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_all(), name="tcgraph-snapshots")
        # Shielded: one subscriber giving up must not cancel the others' read.
        return await asyncio.shield(waiting)

    async def _read_all(self) -> None:
        try:
            while self._waiting:
                requests = list(self._waiting.items())[:MAX_READ]
                for request, _ in requests:
                    del self._waiting[request]
                try:
                    openings = await self._read([r for r, _ in requests])
                except Exception as e:  # noqa: BLE001 (each waiting subscriber gets it)
                    for _, waiting in requests:
                        if not waiting.done():
                            waiting.set_exception(e)
                    continue
                for (_, waiting), opening in zip(requests, openings, strict=True):
                    if not waiting.done():
                        waiting.set_result(opening)
        finally:
            self._reader = None

    async def _read(self, requests: list[_Request]) -> list[Opening]:
        settings = self.settings
        try:
            async with self.pool.acquire(timeout=settings.pool_timeout_ms / 1000) as conn, \
                    conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = Snapshot.parse(await task_changes.snapshot(conn))
                loaders = Loaders(_HeldDatabase(self.pool, conn), settings.batch_size)
                found = await asyncio.gather(*(_tasks(loaders, key, shape)
                                               for key, shape in requests))
        except asyncpg.QueryCanceledError:
            raise StatementTimeout("the database cancelled the snapshot's read: it ran too "
                                   "long") from None
        except _UNAVAILABLE:
            raise DatabaseUnavailable("the database is unavailable") from None
        finally:
            self.reads += 1
        cursor = encode(snapshot)
        fresh = Loaders(Database(self.pool, SqlStats(),
                                 acquire_timeout=settings.pool_timeout_ms / 1000),
                        settings.batch_size)
        return [(snapshot, [Delivery(None, cursor, task_id, task, fresh)
                            for task_id, task in tasks]) for tasks in found]


async def _tasks(loaders: Loaders, key: Key, shape: SqlFragment | None
                 ) -> list[tuple[str, str | Task]]:
    if key.group is not None:
        return await _group_tasks(loaders, key.group, shape)
    return await _listed_tasks(loaders, key.task_ids, shape)


async def _group_tasks(loaders: Loaders, group: str, shape: SqlFragment | None
                       ) -> list[tuple[str, str | Task]]:
    found: list[tuple[str, str | Task]] = []
    after: str | None = None
    while True:
        if shape is not None:
            page = await loaders.task_group_json_page.load(JsonPageKey(shape, group, after, PAGE))
            nodes: tuple[JsonNode, ...] = page.rows
            found.extend((n.key, n.json) for n in nodes)
        else:
            page = await loaders.task_group_page.load((group, None, after, PAGE))
            rows: tuple[Task, ...] = page.rows
            found.extend((t.task_id, t) for t in rows)
        if not page.has_next or not found:
            return found
        after = found[-1][0]


async def _listed_tasks(loaders: Loaders, task_ids: Sequence[str], shape: SqlFragment | None
                        ) -> list[tuple[str, str | Task]]:
    if shape is not None:
        texts = await asyncio.gather(*(
            loaders.tasks_json.load(JsonListKey(shape, (task_id,), single=True))
            for task_id in task_ids))
        return [(task_id, text) for task_id, text in zip(task_ids, texts, strict=True)
                if text is not None]
    rows = await loaders.task.load_many(list(task_ids))
    return [(task_id, row) for task_id, row in zip(task_ids, rows, strict=True)
            if row is not None]

