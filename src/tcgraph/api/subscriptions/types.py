"""The `Subscription` root type and `TaskChange`, served from the change hub."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Optional
from collections.abc import AsyncGenerator, AsyncIterator

import strawberry
from orjson import Fragment
from strawberry.types import Info

from tcgraph import metrics
from tcgraph.store.sqlfrag import SqlFragment
from tcgraph.api.context import Context
from tcgraph.api.sqljson import plan_field, response_keys
from tcgraph.api.subscriptions import frames
from tcgraph.api.subscriptions.frames import Delivery
from tcgraph.api.subscriptions.hub import Hub
from tcgraph.api.subscriptions.snapshots import Key
from tcgraph.api.subscriptions.streams import open_direct, open_stream
from tcgraph.api.subscriptions.transport import Detached, current_operation
from tcgraph.api.types.tasks import Task, storable
from tcgraph.errors import LimitExceeded


@strawberry.type(description="One task of a subscription's stream, as it is after a change "
                             "(or, first, as the mirror holds it).")
class TaskChange:
    cursor: str = strawberry.field(
        description="Opaque, increasing; pass the last one received as `after` to resume.")
    task_id: strawberry.ID
    _delivery: strawberry.Private[Delivery]

    @strawberry.field(description="The task as stored now; null once it is no longer stored "
                                  "(expired).", graphql_type=Optional[Task])
    def task(self) -> Task | Fragment | None:
        found = self._delivery.task
        if found is None:
            return None
        if isinstance(found, str):
            return Fragment(found)
        return Task(_task=found)


def _template(info: Info[Context, Any], shape: SqlFragment | None) -> frames.Template | None:
    return frames.template(response_keys(info), compiled=shape is not None)


def _hub(info: Info[Context, Any]) -> Hub:
    hub: Hub = info.context.request.app.state.hub
    return hub


async def _changes(info: Info[Context, Any], key: Key,
                   after: str | None) -> AsyncIterator[TaskChange | Fragment]:
    context: Context = info.context
    websocket = context.request

    async def close(code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(code, reason)

    # The `task` selection compiled once: the hub loads it for every subscriber
    # that shares it with one statement per burst.
    hub = _hub(info)
    shape = hub.canonical(plan_field(info, "task", "Task", "t"))
    template = hub.canonical(_template(info, shape))
    operation = current_operation()
    try:
        if template is not None and shape is not None and operation is not None:
            # Rendered changes go out as whole `next` messages, written by the hub:
            # nothing is executed per subscriber and event, and the operation keeps
            # no execution state once its snapshot or catch-up is handed over.
            sink = frames.DirectSink.for_operation(operation.handler.outbox, template,
                                                   operation.op_id, str(info.path.key))
            subscriber = await open_direct(hub, key, shape, after, close, sink)
            operation.handler.detach(operation.op_id, functools.partial(hub.release,
                                                                        subscriber))
            # The operation's execution state is left to the garbage collector (its
            # objects refer to each other); what it compiled need not wait with it.
            context.plans.clear()
            return _detached()
        deliveries = await open_stream(hub, key, shape, after, close)
        return _task_changes(context, deliveries, template)
    finally:
        if operation is not None:
            operation.setup.give_back()


async def _detached() -> AsyncIterator[TaskChange | Fragment]:
    raise Detached
    yield  # an async generator: the exception comes from its first step  # noqa: RET503


async def _task_changes(context: Context, deliveries: AsyncGenerator[Delivery, None],
                        template: frames.Template | None
                        ) -> AsyncIterator[TaskChange | Fragment]:
    try:
        async for delivery in deliveries:
            metrics.subscription_events()
            if template is not None:
                yield Fragment(frames.render(template, delivery))
                continue
            # The resolvers of a selection that is not compiled read through
            # loaders as fresh as the change.
            context.loaders = delivery.loaders
            yield TaskChange(cursor=delivery.cursor, task_id=strawberry.ID(delivery.task_id),
                             _delivery=delivery)
    finally:
        # Ends the stream's registration with the hub now, not when collected.
        await deliveries.aclose()


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Every task of the group as it is now, then each change as it commits.",
        graphql_type=TaskChange)
    async def task_group_changes(
        self, info: Info[Context, Any], task_group_id: strawberry.ID, after: Optional[str] = None
    ) -> AsyncIterator[TaskChange | Fragment]:
        storable("taskGroupId", task_group_id)
        return await _changes(info, Key(group=str(task_group_id)), after)

    @strawberry.subscription(description="The same for a list of tasks (up to the key limit).",
                             graphql_type=TaskChange)
    async def task_changes(
        self, info: Info[Context, Any], task_ids: list[strawberry.ID], after: Optional[str] = None
    ) -> AsyncIterator[TaskChange | Fragment]:
        maximum = info.context.settings.max_keys
        if len(task_ids) > maximum:
            raise LimitExceeded("max_keys", len(task_ids), maximum, "`taskIds` has too many keys")
        ids = tuple(dict.fromkeys(storable("taskIds", str(t)) for t in task_ids))
        return await _changes(info, Key(group=None, task_ids=ids), after)
