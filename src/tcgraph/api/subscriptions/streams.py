"""One subscription's stream: its opening snapshot or its catch-up, then the hub's changes.

Without `after`, the subscriber is registered with the hub first (changes
queue from then on), then the key's tasks are read in one REPEATABLE READ
transaction whose snapshot becomes the stream's starting point: queued and
later changes are delivered only if that snapshot did not see them, so
nothing is missed between the snapshot and the live changes, and nothing is
sent twice. With `after`, the changes logged between the cursor and the
hub's position at registration are read from the log, a page at a time, and
then the queued ones follow, each after the cursor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import asyncpg

from tcgraph.store.sqlfrag import SqlFragment
from tcgraph.api.subscriptions import cursors
from tcgraph.api.subscriptions.cursors import Snapshot, decode, encode
from tcgraph.api.subscriptions.hub import Closer, Delivery, Hub, Subscriber, load_tasks
from tcgraph.errors import DatabaseUnavailable, StatementTimeout
from tcgraph.loaders import JsonListKey, JsonPageKey, Loaders
from tcgraph.model import JsonNode, Task
from tcgraph.store.pool import CONNECTION_ERRORS, Database, SqlStats
from tcgraph.store.queries import task_changes
from tcgraph.store.queries.task_changes import Position

PAGE = 1_000  # tasks per snapshot statement, changes per catch-up statement
# What reading the snapshot may fail with when the database cannot answer.
_UNAVAILABLE: tuple[type[BaseException], ...] = (TimeoutError, *CONNECTION_ERRORS)


@dataclass(frozen=True, slots=True)
class Key:
    """What a subscription follows: a task group, or a list of tasks."""

    group: str | None
    task_ids: tuple[str, ...] = ()


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


async def open_stream(hub: Hub, key: Key, shape: SqlFragment | None, after: str | None,
                      close: Closer) -> AsyncGenerator[Delivery, None]:
    """Check `after`, register with the hub, read the snapshot if there is no `after`;
    then the stream of deliveries. Errors here (a bad or expired cursor, an outage)
    reach the client as the subscription's error, before any event."""
    cursor = decode(after) if after is not None else None
    if cursor is not None:
        cursors.check(cursor, await task_changes.bounds(hub.database()))
    subscriber = Subscriber(group=key.group, task_ids=key.task_ids, shape=shape, seen=cursor,
                            limit=hub.settings.max_queued_changes, close=close)
    try:
        registered = await hub.register(subscriber)
    except TimeoutError:
        raise DatabaseUnavailable("the change feed is unavailable; subscribe again later") \
            from None
    try:
        opening: list[Delivery] | None = None
        if cursor is None:
            snapshot, opening = await read_snapshot(hub, key, shape)
            subscriber.start_after(snapshot)
    except BaseException:
        hub.unregister(subscriber)
        raise
    return _stream(hub, subscriber, key, cursor, registered, opening)


async def _stream(hub: Hub, subscriber: Subscriber, key: Key, cursor: cursors.Cursor | None,
                  registered: Position, opening: list[Delivery] | None
                  ) -> AsyncGenerator[Delivery, None]:
    try:
        if opening is not None:
            for delivery in opening:
                yield delivery
        elif cursor is not None:
            async for delivery in _catch_up(hub, subscriber, key, cursor, registered):
                yield delivery
        while not subscriber.dropped:
            while subscriber.queue and not subscriber.dropped:
                yield subscriber.queue.popleft()
            subscriber.wake.clear()
            if not subscriber.dropped:
                await subscriber.wake.wait()
        # Dropped: the client is being closed with a code; nothing more is sent
        # (the connection's end cancels this wait).
        await asyncio.Event().wait()
    finally:
        hub.unregister(subscriber)


async def _catch_up(hub: Hub, subscriber: Subscriber, key: Key, cursor: cursors.Cursor,
                    upto: Position) -> AsyncIterator[Delivery]:
    """The key's changes after `cursor` up to the hub's position at registration."""
    after = cursor if isinstance(cursor, Position) else Position(cursor.xmin, 0)
    while after < upto:
        db = hub.database()
        if key.group is not None:
            changes = await task_changes.group_changes(db, key.group, after, upto, PAGE)
        else:
            changes = await task_changes.task_changes(db, key.task_ids, after, upto, PAGE)
        wanted = [c for c in changes if subscriber.wants(c.position)]
        loaders = Loaders(db, hub.settings.batch_size)
        tasks = await load_tasks(loaders, {subscriber.shape: {c.task_id for c in wanted}})
        for change in wanted:
            yield Delivery(change.position, encode(change.position), change.task_id,
                           tasks[subscriber.shape].get(change.task_id), loaders)
        if len(changes) < PAGE:
            break
        after = changes[-1].position


async def read_snapshot(hub: Hub, key: Key, shape: SqlFragment | None
                        ) -> tuple[Snapshot, list[Delivery]]:
    """Every task the mirror holds for `key`, as one transaction's snapshot saw them."""
    try:
        async with hub.pool.acquire(timeout=hub.settings.pool_timeout_ms / 1000) as conn, \
                conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = Snapshot.parse(await task_changes.snapshot(conn))
            loaders = Loaders(_HeldDatabase(hub.pool, conn), hub.settings.batch_size)
            if key.group is not None:
                found = await _group_tasks(loaders, key.group, shape)
            else:
                found = await _listed_tasks(loaders, key.task_ids, shape)
    except asyncpg.QueryCanceledError:
        raise StatementTimeout("the database cancelled the snapshot's read: it ran too long") \
            from None
    except _UNAVAILABLE:
        raise DatabaseUnavailable("the database is unavailable") from None
    cursor = encode(snapshot)
    fresh = Loaders(hub.database(), hub.settings.batch_size)
    return snapshot, [Delivery(None, cursor, task_id, task, fresh) for task_id, task in found]


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
