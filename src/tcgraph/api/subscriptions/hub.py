"""The change hub: one per serving process, every subscription of the process fed by it.

The hub holds one dedicated connection that LISTENs on `tcgraph_changes`
(migration 0012's triggers notify it once per committing transaction). Each
notification burst, and a poll every `POLL_S` (which also covers a change
held back behind a transaction that then aborted), runs one read of every
new change since the hub's position, whoever is subscribed, then loads the
changed tasks once for all subscribers (one compiled JSON selection per
distinct `task` selection, through the same loaders as queries), and fans the
changes out in Python by task group and task id. So the SQL of a burst does
not grow with the number of subscribers.

If the listener's connection or the database goes away, the hub reconnects
and reads on from its position: nothing committed in between is lost. A feed
that stays unreachable for `feed_outage_ms` closes its subscribers' clients
with code 4503 instead of leaving them waiting in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from collections.abc import Callable, Coroutine, Iterable

import asyncpg

from tcgraph import metrics
from tcgraph.store.sqlfrag import SqlFragment
from tcgraph.api.subscriptions.cursors import Snapshot, encode
from tcgraph.api.subscriptions.frames import Delivery
from tcgraph.api.subscriptions.snapshots import Snapshots
from tcgraph.config import Settings
from tcgraph.errors import ServiceUnavailable
from tcgraph.loaders import JsonListKey, Loaders
from tcgraph.model import Task
from tcgraph.store.pool import CONNECTION_ERRORS, Database, SqlStats
from tcgraph.store.queries import task_changes
from tcgraph.store.queries.task_changes import Change, Position

if TYPE_CHECKING:
    from tcgraph.api.subscriptions.frames import DirectSink

log = logging.getLogger(__name__)

CHANNEL = "tcgraph_changes"
POLL_S = 2.0  # read even without a notification this often
BURST_ROWS = 5_000  # changes per read; a larger burst is read in several
_RECONNECT_S = (0.1, 0.2, 0.5, 1.0, 2.0)

# WebSocket close codes (graphql-transport-ws leaves 4xxx to the server).
CLOSE_SLOW = 4413  # more changes queued than max_queued_changes: the client does not read
CLOSE_FEED_LOST = 4503  # the change feed was unreachable for feed_outage_ms


T = TypeVar("T")
_CANONICAL = 1_000  # distinct selections kept canonical


class Canonical(Generic[T]):
    """One instance of each equal value: a selection (compiled SQL, a frame's template)
    held once for the thousands of subscriptions that make it, not once each. Bounded:
    past `limit` values the oldest is forgotten (its holders keep their own)."""

    def __init__(self, limit: int = _CANONICAL) -> None:
        self.limit = limit
        self._known: dict[T, T] = {}

    def __call__(self, value: T) -> T:
        """The instance equal to `value` that was seen first."""
        found = self._known.get(value)
        if found is None:
            if len(self._known) >= self.limit:
                del self._known[next(iter(self._known))]
            found = self._known[value] = value
        return found


Closer = Callable[[int, str], Coroutine[Any, Any, None]]


class Subscriber:
    """One subscription's place in the hub: its key, what it has seen, where its changes go.

    Changes queue in `queue` (for the stream that executes them, or while a
    direct subscription's snapshot is read); a direct subscription's then go
    straight to its `sink`, counted in `pending` until written.
    """

    __slots__ = ("group", "task_ids", "shape", "seen", "limit", "close", "queue", "wake",
                 "dropped", "sink", "pending")

    def __init__(self, *, group: str | None, task_ids: Iterable[str], shape: SqlFragment | None,
                 seen: Position | Snapshot | None, limit: int, close: Closer) -> None:
        self.group = group
        self.task_ids = frozenset(task_ids)
        self.shape = shape  # the compiled selection of `task`, or None
        # What the client has already: a position, the snapshot it started
        # from, or None while its snapshot is being read (everything queues).
        self.seen = seen
        self.limit = limit
        self.close = close
        self.queue: list[Delivery] = []
        self.wake: asyncio.Event | None = None  # made by a stream that waits on it
        self.dropped = False  # closed or released: nothing more goes out for it
        self.sink: DirectSink | None = None
        self.pending = 0  # taken from the queue, not yet sent: outbox frames, or a stream's batch

    def wants(self, position: Position) -> bool:
        """Whether a change at `position` is new to this subscriber."""
        seen = self.seen
        if seen is None:
            return True
        if isinstance(seen, Snapshot):
            return not seen.sees(position.xid)
        return position > seen

    def start_after(self, seen: Position | Snapshot) -> None:
        """Set what the client has; drop what was queued meanwhile that it already has."""
        self.seen = seen
        self.queue = [d for d in self.queue if d.position is None or self.wants(d.position)]

    def take(self) -> list[Delivery]:
        """What is queued, in order; the queue is left empty."""
        queued, self.queue = self.queue, []
        return queued

    def go_direct(self, sink: DirectSink) -> None:
        """From now on, changes go to `sink`; what is queued goes there first."""
        for delivery in self.take():
            sink.put(self, delivery)
        self.sink = sink


class Hub:
    """Reads the change log once per burst and fans it out (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, listen_url: str) -> None:
        self.pool = pool
        self.settings = settings
        self.listen_url = listen_url
        self.position = Position(0, 0)
        self.by_group: dict[str, set[Subscriber]] = defaultdict(set)
        self.by_task: dict[str, set[Subscriber]] = defaultdict(set)
        self.ready = asyncio.Event()  # the position is known: registrations may start
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self.bursts = 0
        self.snapshots = Snapshots(pool, settings)
        self.canonical: Canonical[Any] = Canonical()

    def start(self) -> None:
        """Run the listener and the burst loop until `stop`."""
        self._task = asyncio.create_task(self._run(), name="tcgraph-change-hub")

    async def stop(self) -> None:
        """Stop listening; subscribers are left to their connections' ends."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listener()

    def database(self) -> Database:
        """A Database view of the pool for one unit of the hub's work."""
        return Database(self.pool, SqlStats(),
                        acquire_timeout=self.settings.pool_timeout_ms / 1000)

    async def register(self, subscriber: Subscriber) -> Position:
        """Add `subscriber`; every change after the returned position will reach it.

        Waits for a burst in progress, so the position is exact.
        """
        async with asyncio.timeout(self.settings.feed_outage_ms / 1000):
            await self.ready.wait()
        async with self._lock:
            if subscriber.group is not None:
                self.by_group[subscriber.group].add(subscriber)
            for task_id in subscriber.task_ids:
                self.by_task[task_id].add(subscriber)
            metrics.subscriptions(1)
            return self.position

    def unregister(self, subscriber: Subscriber) -> None:
        """Remove `subscriber` (idempotent)."""
        removed = False
        if subscriber.group is not None:
            members = self.by_group.get(subscriber.group)
            if members is not None and subscriber in members:
                members.discard(subscriber)
                removed = True
                if not members:
                    del self.by_group[subscriber.group]
        for task_id in subscriber.task_ids:
            members = self.by_task.get(task_id)
            if members is not None and subscriber in members:
                members.discard(subscriber)
                removed = True
                if not members:
                    del self.by_task[task_id]
        if removed:
            metrics.subscriptions(-1)

    def release(self, subscriber: Subscriber) -> None:
        """End `subscriber` (its client completed it, or its connection ended): nothing
        more goes out for it, not even what is already queued."""
        subscriber.dropped = True
        self.unregister(subscriber)

    def subscribers(self) -> set[Subscriber]:
        """Every registered subscriber."""
        found: set[Subscriber] = set()
        for members in (*self.by_group.values(), *self.by_task.values()):
            found |= members
        return found

    def drop(self, subscriber: Subscriber, code: int, reason: str, label: str) -> None:
        """Close `subscriber`'s client with `code` and stop feeding it."""
        if subscriber.dropped:
            return
        subscriber.dropped = True
        subscriber.queue.clear()
        if subscriber.wake is not None:
            subscriber.wake.set()
        self.unregister(subscriber)
        metrics.client_dropped(label)
        log.warning("closing a subscription's client (%s): %s", code, reason)
        # The close waits behind whatever the client has not read yet; it must
        # not hold up the hub.
        closer = asyncio.create_task(subscriber.close(code, reason))
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    # --- the loop ----------------------------------------------------------

    async def _run(self) -> None:
        outage_since: float | None = None
        attempt = 0
        while True:
            try:
                await self._listen()
                if not self.ready.is_set():
                    self.position = Position(await task_changes.horizon(self.database()), 0)
                    self.ready.set()
                outage_since, attempt = None, 0
                await self.burst()
                while not self._lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_S):
                            await self._wake.wait()
                    self._wake.clear()
                    await self.burst()
                raise ConnectionError("the change feed's listener connection was lost")
            except (ServiceUnavailable, OSError, asyncpg.PostgresError,
                    *CONNECTION_ERRORS) as e:
                await self._close_listener()
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                    log.warning("change feed unavailable (%s: %s); reconnecting",
                                type(e).__name__, e)
                if (now - outage_since) * 1000 >= self.settings.feed_outage_ms:
                    for subscriber in self.subscribers():
                        self.drop(subscriber, CLOSE_FEED_LOST,
                                  "the change feed is unavailable; subscribe again later",
                                  "feed_lost")
                await asyncio.sleep(_RECONNECT_S[min(attempt, len(_RECONNECT_S) - 1)])
                attempt += 1

    async def _listen(self) -> None:
        self._lost.clear()
        conn = await asyncpg.connect(self.listen_url, timeout=self.settings.pool_timeout_ms / 1000)
        conn.add_termination_listener(lambda _: self._on_lost())
        await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
        self._listener = conn

    def _on_lost(self) -> None:
        self._lost.set()
        self._wake.set()

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            conn.terminate()

    async def burst(self) -> None:
        """Read every change no running transaction can precede, and deliver it."""
        async with self._lock:
            db = self.database()
            read = 0
            while True:
                new = await task_changes.new_changes(db, self.position, BURST_ROWS)
                read += len(new.changes)
                if new.changes:
                    await self._dispatch(new.changes, db)
                if len(new.changes) == BURST_ROWS:
                    self.position = new.changes[-1].position
                    continue
                self.position = max(self.position, Position(new.horizon, 0))
                break
            if read:
                self.bursts += 1
                metrics.burst_statements(db.stats.statements)

    async def _dispatch(self, changes: list[Change], db: Database) -> None:
        targets: list[tuple[Change, list[Subscriber]]] = []
        wanted: dict[SqlFragment | None, set[str]] = defaultdict(set)
        for change in changes:
            found = [s for s in (*self.by_group.get(change.task_group_id, ()),
                                 *self.by_task.get(change.task_id, ()))
                     if s.wants(change.position)]
            if found:
                targets.append((change, found))
                for subscriber in found:
                    wanted[subscriber.shape].add(change.task_id)
        if not targets:
            return
        loaders = Loaders(db, self.settings.batch_size)
        tasks = await load_tasks(loaders, wanted)
        fresh = Loaders(self.database(), self.settings.batch_size)
        for change, found in targets:
            cursor = encode(change.position)
            # One Delivery per change and selection, shared by its subscribers.
            shared: dict[SqlFragment | None, Delivery] = {}
            for subscriber in found:
                delivery = shared.get(subscriber.shape)
                if delivery is None:
                    delivery = shared[subscriber.shape] = Delivery(
                        change.position, cursor, change.task_id,
                        tasks[subscriber.shape].get(change.task_id), fresh)
                self.offer(subscriber, [delivery])

    def offer(self, subscriber: Subscriber, deliveries: list[Delivery]) -> None:
        """Queue `deliveries` for `subscriber`, or drop it if its queue is over its limit."""
        if subscriber.dropped:
            return
        sink = subscriber.sink
        if sink is not None:
            for delivery in deliveries:
                sink.put(subscriber, delivery)
            waiting = subscriber.pending
        else:
            subscriber.queue.extend(deliveries)
            waiting = len(subscriber.queue) + subscriber.pending
        if waiting > subscriber.limit:
            self.drop(subscriber, CLOSE_SLOW,
                      f"more than {subscriber.limit} changes queued: the client does not "
                      f"read them (max_queued_changes)", "slow")
            return
        if subscriber.wake is not None:
            subscriber.wake.set()


async def load_tasks(loaders: Loaders, wanted: dict[SqlFragment | None, set[str]]
                     ) -> dict[SqlFragment | None, dict[str, str | Task | None]]:
    """The tasks `wanted` per compiled selection (None: rows for the resolvers), loaded in
    one tick so that the loaders batch them: one statement per batch of keys, whatever
    the number of selections."""
    keys: list[tuple[SqlFragment | None, str]] = [(shape, task_id) for shape, ids in wanted.items()
                                          for task_id in sorted(ids)]

    async def one(shape: SqlFragment | None, task_id: str) -> str | Task | None:
        if shape is None:
            found: Task | None = await loaders.task.load(task_id)
            return found
        text: str | None = await loaders.tasks_json.load(
            JsonListKey(shape, (task_id,), single=True))
        return text

    answers = await asyncio.gather(*(one(shape, task_id) for shape, task_id in keys))
    loaded: dict[SqlFragment | None, dict[str, str | Task | None]] = defaultdict(dict)
    for (shape, task_id), answer in zip(keys, answers, strict=False):
        loaded[shape][task_id] = answer
    return loaded
