"""One subscription's stream: its opening snapshot or its catch-up, then the hub's changes.

Without `after`, the subscriber is registered with the hub first (changes
queue from then on), then the key's tasks are read in one REPEATABLE READ
transaction (api/subscriptions/snapshots.py, shared with the subscriptions
starting at the same moment) whose snapshot becomes the stream's starting point: queued and
later changes are delivered only if that snapshot did not see them, so
nothing is missed between the snapshot and the live changes, and nothing is
sent twice. With `after`, the changes logged between the cursor and the
hub's position at registration are read from the log, a page at a time, and
then the queued ones follow, each after the cursor.

`open_stream` returns the deliveries as a generator, for a selection that is
executed per event; `open_direct` hands them to a sink and leaves the rest to
the hub (api/subscriptions/frames.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from tcgraph.api.subscriptions import cursors
from tcgraph.api.subscriptions.cursors import decode, encode
from tcgraph.api.subscriptions.frames import Delivery, DirectSink
from tcgraph.api.subscriptions.hub import Closer, Hub, Subscriber, load_tasks
from tcgraph.api.subscriptions.snapshots import Key
from tcgraph.errors import DatabaseUnavailable
from tcgraph.loaders import Loaders
from tcgraph.store.queries import task_changes
from tcgraph.store.queries.task_changes import Position
from tcgraph.store.sqlfrag import SqlFragment

PAGE = 1_000  # changes per catch-up statement; frames handed to a sink between waits


async def _register(hub: Hub, key: Key, shape: SqlFragment | None, after: str | None,
                    close: Closer) -> tuple[Subscriber, cursors.Cursor | None, Position]:
    """Check `after`, register a subscriber for `key`: it, its cursor, the hub's position."""
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
    return subscriber, cursor, registered


async def open_stream(hub: Hub, key: Key, shape: SqlFragment | None, after: str | None,
                      close: Closer) -> AsyncGenerator[Delivery, None]:
    """Check `after`, register with the hub, read the snapshot if there is no `after`;
    then the stream of deliveries. Errors here (a bad or expired cursor, an outage)
    reach the client as the subscription's error, before any event."""
    subscriber, cursor, registered = await _register(hub, key, shape, after, close)
    try:
        opening: list[Delivery] | None = None
        if cursor is None:
            snapshot, opening = await hub.snapshots.read(key, shape)
            subscriber.start_after(snapshot)
    except BaseException:
        hub.unregister(subscriber)
        raise
    return _stream(hub, subscriber, key, cursor, registered, opening)


async def open_direct(hub: Hub, key: Key, shape: SqlFragment, after: str | None,
                      close: Closer, sink: DirectSink) -> Subscriber:
    """As `open_stream`, for a subscription whose frames the hub writes to `sink`: the
    snapshot or catch-up is handed to the sink a page at a time (each page once the
    client has read the one before), then the subscriber goes direct."""
    subscriber, cursor, registered = await _register(hub, key, shape, after, close)
    try:
        if cursor is None:
            snapshot, opening = await hub.snapshots.read(key, shape)
            subscriber.start_after(snapshot)
            deliveries: AsyncIterator[Delivery] = _listed(opening)
        else:
            deliveries = _catch_up(hub, subscriber, key, cursor, registered)
        handed = 0
        async for delivery in deliveries:
            sink.put(subscriber, delivery)
            handed += 1
            if handed % PAGE == 0:
                await sink.outbox.idle()
        subscriber.go_direct(sink)
    except BaseException:
        hub.unregister(subscriber)
        raise
    return subscriber


async def _listed(deliveries: list[Delivery]) -> AsyncIterator[Delivery]:
    for delivery in deliveries:
        yield delivery


async def _stream(hub: Hub, subscriber: Subscriber, key: Key, cursor: cursors.Cursor | None,
                  registered: Position, opening: list[Delivery] | None
                  ) -> AsyncGenerator[Delivery, None]:
    wake = subscriber.wake = asyncio.Event()
    try:
        if opening is not None:
            for delivery in opening:
                yield delivery
        elif cursor is not None:
            async for delivery in _catch_up(hub, subscriber, key, cursor, registered):
                yield delivery
        while not subscriber.dropped:
            # Taken but not yet handed out still counts against the queue's limit.
            batch = subscriber.take()
            subscriber.pending += len(batch)
            for delivery in batch:
                if subscriber.dropped:
                    break
                subscriber.pending -= 1
                yield delivery
            wake.clear()
            if not subscriber.dropped and not subscriber.queue:
                await wake.wait()
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
