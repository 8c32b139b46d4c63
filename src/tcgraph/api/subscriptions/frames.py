"""Subscriptions written as whole `next` messages, without executing anything per subscriber.

A selection of `TaskChange` made only of `cursor`, `taskId`, `__typename` and a
compiled `task` (aliases, fragments and `@skip`/`@include` applied) is
rendered as JSON text once per change and selection (`Delivery.rendered`), for
every subscriber that shares both; each subscriber's frame is that text between
its own prefix (its operation id, its response key) and suffix.

Such a subscription is *direct*: once its snapshot or catch-up is handed over,
the hub puts its frames straight into its connection's `Outbox`, and the
operation keeps no execution state (no task, no generator, no execution
context): a few hundred bytes in the hub and the outbox instead of Strawberry's
per-operation state. One task per connection writes the outbox in order, so
the frames of one burst for the ten subscriptions of a connection wake one
task, not ten.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import orjson
from starlette.websockets import WebSocketDisconnect

from tcgraph import metrics
from tcgraph.loaders import Loaders
from tcgraph.model import Task
from tcgraph.store.queries.task_changes import Position

if TYPE_CHECKING:
    from tcgraph.api.subscriptions.hub import Subscriber

# The TaskChange fields a rendered selection may pick.
RENDERED_FIELDS = ("cursor", "taskId", "task", "__typename")
Template = tuple[tuple[str, str], ...]  # (response key as JSON, field name), in order
_WRITE_BATCH = 64  # frames written before the writer lets other tasks run


@dataclass(frozen=True, slots=True)
class Delivery:
    """One change as a subscriber receives it: its cursor, and the task as it is now.

    `task` is the subscriber's compiled selection of the task (JSON text), a
    task row for the resolvers when the selection cannot be compiled, or None
    if the task is no longer stored. `loaders` are fresh ones for whatever the
    resolvers still need. One Delivery is shared by every subscriber with the
    same selection of `task`; `rendered` keeps its whole TaskChange, rendered
    once per selection (api/subscriptions/types.py), for all of them.
    """

    position: Position | None  # None for the opening snapshot
    cursor: str
    task_id: str
    task: str | Task | None
    loaders: Loaders
    rendered: dict[object, str] = field(default_factory=dict)


def template(keys: list[tuple[str, str, int]], compiled: bool) -> Template | None:
    """The template of a TaskChange selection (response key, field name, sub-selections),
    or None when some field of it cannot be rendered (`task` not `compiled`, say)."""
    if any(name not in RENDERED_FIELDS or (name == "task" and not compiled)
           for _, name, _ in keys):
        return None
    return tuple((orjson.dumps(key).decode(), name) for key, name, _ in keys)


def render(shape: Template, delivery: Delivery) -> str:
    """The TaskChange of `delivery` under `shape`, as JSON text (rendered once per shape)."""
    rendered = delivery.rendered.get(shape)
    if rendered is None:
        parts = []
        for key, name in shape:
            if name == "cursor":
                value = orjson.dumps(delivery.cursor).decode()
            elif name == "taskId":
                value = orjson.dumps(delivery.task_id).decode()
            elif name == "task":
                value = delivery.task if isinstance(delivery.task, str) else "null"
            else:
                value = '"TaskChange"'
            parts.append(f"{key}:{value}")
        rendered = delivery.rendered[shape] = "{" + ",".join(parts) + "}"
    return rendered


class TextSocket(Protocol):
    """What the outbox writes to (a Starlette WebSocket)."""

    async def send_text(self, data: str) -> None: ...


class Outbox:
    """One connection's outgoing frames, written in order by one task at a time."""

    def __init__(self, websocket: TextSocket) -> None:
        self.websocket = websocket
        self._frames: deque[tuple[Subscriber, str]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def put(self, owner: Subscriber, text: str) -> None:
        """Queue `text` for `owner`'s client (counted in `owner.pending` until written)."""
        if self._closed:
            return
        self._frames.append((owner, text))
        owner.pending += 1
        self._idle.clear()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="tcgraph-outbox")

    def close(self) -> None:
        """Stop writing (the connection is ending): queued frames are discarded."""
        self._closed = True
        self._frames.clear()
        self._idle.set()
        if self._writer is not None:
            self._writer.cancel()

    async def idle(self) -> None:
        """Wait until every queued frame is written (or the outbox is closed): a
        catch-up hands its pages over one at a time, as a generator's consumer would."""
        await self._idle.wait()

    async def _write(self) -> None:
        frames = self._frames
        try:
            while frames:
                written = 0
                while frames and written < _WRITE_BATCH:
                    owner, text = frames.popleft()
                    owner.pending -= 1
                    if not owner.dropped:
                        await self.websocket.send_text(text)
                        written += 1
                metrics.subscription_events(written)
                # Each send may complete without yielding (nothing in the way):
                # let the hub and the other connections run between batches.
                await asyncio.sleep(0)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The connection is gone (a disconnect, a send after close): its
            # handler ends its operations; nothing more goes out here.
            self._closed = True
            frames.clear()
        finally:
            self._writer = None
            self._idle.set()


@dataclass(frozen=True, slots=True)
class DirectSink:
    """Where a direct subscription's frames go: its connection's outbox, between its
    operation's prefix and suffix, rendered with its template."""

    outbox: Outbox
    template: Template
    prefix: str
    suffix: str

    @classmethod
    def for_operation(cls, outbox: Outbox, shape: Template, operation_id: str,
                      response_key: str) -> DirectSink:
        """The sink of operation `operation_id`, whose field answers under `response_key`."""
        prefix = ('{"id":' + orjson.dumps(operation_id).decode()
                  + ',"type":"next","payload":{"data":{'
                  + orjson.dumps(response_key).decode() + ":")
        return cls(outbox, shape, prefix, "}}}")

    def put(self, owner: Subscriber, delivery: Delivery) -> None:
        """Queue `delivery` as `owner`'s whole `next` message."""
        self.outbox.put(owner, self.prefix + render(self.template, delivery) + self.suffix)

