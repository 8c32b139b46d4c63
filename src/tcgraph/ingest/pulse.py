"""The pulse consumer: a durable queue bound to the queue's exchanges, read in batches.

Messages are taken with a prefetch window and handed over in batches (up to
`batch_size` messages, or whatever came within `batch_wait_ms` of the first);
a batch is acknowledged, with one `multiple` ack, only after the handler has
committed it. Until then nothing is lost: a crash, a kill or a broker restart
leaves the batch unacknowledged and the broker delivers it again, and the
handler's writes are idempotent.

What could have lost messages is reported to a `Watcher` as it happens: the
queue found missing when the consumer (re)connects (declared anew: whatever it
held is gone), the broker cancelling the consumer (the queue was deleted under
it), the connection lost, and a batch that could not be written for a while.

Nothing transient ends the consumer: a broker that is away, a connection that
drops, exchanges that do not exist yet (a fresh deployment answers QueueBind
with 404 NOT_FOUND until the queue service declares them) and a handler that
fails (the database is down) are all retried with a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq.exceptions
import taskcluster
from aio_pika.abc import AbstractIncomingMessage
from tenacity import (AsyncRetrying, RetryCallState, wait_exponential,
                      wait_random_exponential)

from tcgraph import metrics
from tcgraph.ingest.events import EXCHANGES, TASK_EXCHANGES
from tcgraph.ingest.mirror import Delivery

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 30.0
# The code under which a batch that must be tried again is counted (tcgraph_follower_errors_total).
BATCH_RETRIED = "BATCH_RETRIED"


@dataclass(frozen=True, slots=True)
class Binding:
    """One queue binding: an exchange and a routing-key pattern."""

    exchange: str
    routing_key: str


def bindings(patterns: Sequence[str] = ()) -> tuple[Binding, ...]:
    """Bindings from `[EXCHANGE=]PATTERN` strings (EXCHANGE as `task-completed`).

    A pattern without an exchange binds every task exchange; with no patterns,
    every exchange tcgraph follows is bound with `#`. Exchange names come from
    `taskcluster.QueueEvents`.
    """
    # Any root URL gives the same exchange names; the client only needs one.
    queue_events = taskcluster.QueueEvents({"rootUrl": "https://taskcluster.invalid"})
    methods = {
        "task-defined": queue_events.taskDefined, "task-pending": queue_events.taskPending,
        "task-running": queue_events.taskRunning, "task-completed": queue_events.taskCompleted,
        "task-failed": queue_events.taskFailed, "task-exception": queue_events.taskException,
        "task-group-resolved": queue_events.taskGroupResolved,
    }
    found: list[Binding] = []
    for pattern in patterns or [f"{name}=#" for name in EXCHANGES]:
        name, sep, key = pattern.rpartition("=")
        names = [name] if sep else list(TASK_EXCHANGES)
        for n in names:
            if n not in methods:
                raise ValueError(f"--binding {pattern!r}: {n!r} is not an exchange tcgraph "
                                 f"follows (one of {', '.join(EXCHANGES)})")
            topic = methods[n](key)
            found.append(Binding(exchange=topic["exchange"],
                                 routing_key=topic["routingKeyPattern"]))
    return tuple(dict.fromkeys(found))


def queue_name(pulse_url: str, name: str) -> str:
    """`name` as pulse requires it, `queue/<user>/<name>` (kept if it already is one)."""
    if name.startswith("queue/"):
        return name
    user = unquote(urlsplit(pulse_url).username or "guest")
    return f"queue/{user}/{name}"


@dataclass(frozen=True, slots=True)
class PulseOptions:
    """Where to read from and how."""

    url: str
    queue_name: str  # the full name, queue/<user>/<name>
    bindings: tuple[Binding, ...]
    prefetch: int = 4000
    batch_size: int = 1000
    batch_wait_ms: float = 5.0


Handler = Callable[[Sequence[Delivery]], Awaitable[object]]

# What a Watcher is told (PulseEvent.kind).
DECLARED = "declared"  # the queue is declared and bound; consuming starts next
CANCELLED = "cancelled"  # the broker cancelled the consumer (its queue was deleted)
DISCONNECTED = "disconnected"  # the connection or channel was lost
WRITE_FAILING = "write-failing"  # a batch could not be written (the database is away)
WRITE_OK = "write-ok"  # a batch was written after failing


@dataclass(frozen=True, slots=True)
class PulseEvent:
    """Something that happened to the consumer that may have cost messages."""

    kind: str
    detail: str = ""
    queue_existed: bool = True  # DECLARED: whether the queue was there before this session


Watcher = Callable[[PulseEvent], Awaitable[None]]


async def _ignore(event: PulseEvent) -> None:
    """The watcher of a consumer nobody watches."""


class _ChannelClosed(Exception):
    """The channel went away while a batch was in hand: the broker redelivers it."""


# The n-th pause in a row: between half and all of BACKOFF_MIN_S * 2^(n-1), at
# most BACKOFF_MAX_S (half fixed, half random, so that retries spread out).
_PAUSE = (wait_exponential(multiplier=BACKOFF_MIN_S / 2, max=BACKOFF_MAX_S / 2)
          + wait_random_exponential(multiplier=BACKOFF_MIN_S / 2, max=BACKOFF_MAX_S / 2))


class Backoff:
    """Pauses that grow (with jitter) while a thing keeps failing, and reset once it works
    (tenacity's wait strategy, for loops that must go on for ever)."""

    def __init__(self) -> None:
        self.reset()

    async def pause(self) -> None:
        """Wait before the next attempt: longer the more attempts have failed in a row."""
        await asyncio.sleep(_PAUSE(self._state))
        self._state.prepare_for_next_attempt()

    def reset(self) -> None:
        """The thing worked: the next failure pauses briefly again."""
        self._state = RetryCallState(AsyncRetrying(wait=_PAUSE), None, (), {})


async def consume(options: PulseOptions, handle: Handler, watch: Watcher = _ignore) -> None:
    """Consume for ever (until cancelled), reconnecting after every transient failure;
    `watch` hears of everything that may have cost messages."""
    backoff = Backoff()
    while True:
        try:
            await _session(options, handle, backoff, watch)
        except asyncio.CancelledError:
            raise
        except aiormq.exceptions.ChannelNotFoundEntity as e:
            log.warning("pulse: an exchange does not exist yet (%s); binding again later", e)
        except _ConsumerCancelled as e:
            log.warning("pulse: %s; declaring the queue again", e)
        except Exception as e:  # every failure of the broker or its connection is transient
            log.warning("pulse: %s: %s; reconnecting", type(e).__name__, e)
            await watch(PulseEvent(DISCONNECTED, f"{type(e).__name__}: {e}"))
        await backoff.pause()


class _ConsumerCancelled(Exception):
    """The broker cancelled the consumer: its queue was deleted (or the node went away)."""


async def _queue_exists(connection: aio_pika.abc.AbstractConnection, name: str) -> bool:
    """Whether the queue exists, by a passive declare (on a channel of its own: a
    declare refused with 404 closes the channel it was made on)."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def _session(options: PulseOptions, handle: Handler, backoff: Backoff,
                   watch: Watcher) -> None:
    connection = await aio_pika.connect(options.url, timeout=30)
    try:
        existed = await _queue_exists(connection, options.queue_name)
        channel = await connection.channel()
        closed = asyncio.Event()
        cancelled = asyncio.Event()
        channel.close_callbacks.add(lambda *_: closed.set())
        connection.close_callbacks.add(lambda *_: closed.set())

        def on_cancel(frame: object) -> None:
            cancelled.set()
            closed.set()

        (await channel.get_underlay_channel()).on_consumer_cancel_callbacks.add(on_cancel)
        await channel.set_qos(prefetch_count=options.prefetch)
        queue = await channel.declare_queue(options.queue_name, durable=True)
        for b in options.bindings:
            await queue.bind(b.exchange, b.routing_key)
        await watch(PulseEvent(DECLARED, queue_existed=existed))
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def receive(message: AbstractIncomingMessage) -> None:
            inbox.put_nowait(message)

        await queue.consume(receive)
        log.info("pulse: consuming %s (%d bindings)", options.queue_name, len(options.bindings))
        backoff.reset()
        try:
            while True:
                batch = await _next_batch(inbox, closed, options)
                await _handle(batch, handle, closed, watch)
                await batch[-1].ack(multiple=True)
        except _ChannelClosed:
            if cancelled.is_set():
                await watch(PulseEvent(CANCELLED, "the broker cancelled the consumer"))
                raise _ConsumerCancelled("the broker cancelled the consumer") from None
            raise
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


async def _next_batch(inbox: asyncio.Queue[AbstractIncomingMessage], closed: asyncio.Event,
                      options: PulseOptions) -> list[AbstractIncomingMessage]:
    """The next batch: at least one message, then whatever comes within the wait."""
    first = await _until_closed(inbox.get(), closed)
    batch = [first]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.batch_wait_ms / 1000
    while len(batch) < options.batch_size:
        if not inbox.empty():
            batch.append(inbox.get_nowait())
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(inbox.get(), remaining))
        except TimeoutError:
            break
    return batch


async def _until_closed(work: Awaitable[AbstractIncomingMessage],
                        closed: asyncio.Event) -> AbstractIncomingMessage:
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        raise _ChannelClosed("the channel closed")
    return task.result()


async def _handle(batch: list[AbstractIncomingMessage], handle: Handler,
                  closed: asyncio.Event, watch: Watcher) -> None:
    """Hand a batch over until it is committed; give up only if the channel closes."""
    deliveries = [Delivery(exchange=m.exchange or "", routing_key=m.routing_key or "",
                           body=m.body) for m in batch]
    backoff = Backoff()
    failing = False
    while True:
        try:
            await handle(deliveries)
            if failing:
                await watch(PulseEvent(WRITE_OK))
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the database is away (or a write failed): try again
            if not failing:
                failing = True
                await watch(PulseEvent(WRITE_FAILING, f"{type(e).__name__}: {e}"))
            metrics.follower_error(BATCH_RETRIED)
            log.warning("pulse: a batch of %d messages was not written (%s: %s); retrying",
                        len(batch), type(e).__name__, e)
        if closed.is_set():
            raise _ChannelClosed("the channel closed while a batch waited to be written")
        await backoff.pause()
