"""The `Subscription` root type and `TaskChange`, served from the change hub."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncGenerator, AsyncIterator, Optional

import orjson
import strawberry
from orjson import Fragment
from strawberry.types import Info

from tcgraph import metrics
from tcgraph.api.context import Context
from tcgraph.api.sqljson import plan_field
from tcgraph.api.subscriptions.hub import Delivery, Hub
from tcgraph.api.subscriptions.streams import Key, open_stream
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
        if found is None or isinstance(found, orjson.Fragment):
            return found
        return Task(_task=found)


def _hub(info: Info[Context, Any]) -> Hub:
    hub: Hub = info.context.request.app.state.hub
    return hub


async def _changes(info: Info[Context, Any], key: Key,
                   after: str | None) -> AsyncIterator[TaskChange]:
    context: Context = info.context
    websocket = context.request

    async def close(code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(code, reason)

    # The `task` selection compiled once: the hub loads it for every subscriber
    # that shares it with one statement per burst.
    shape = plan_field(info, "task", "Task", "t")
    deliveries = await open_stream(_hub(info), key, shape, after, close)
    return _task_changes(context, deliveries)


async def _task_changes(context: Context,
                        deliveries: AsyncGenerator[Delivery, None]) -> AsyncIterator[TaskChange]:
    try:
        async for delivery in deliveries:
            # The resolvers of a selection that is not compiled read through
            # loaders as fresh as the change.
            context.loaders = delivery.loaders
            metrics.subscription_events()
            yield TaskChange(cursor=delivery.cursor, task_id=strawberry.ID(delivery.task_id),
                             _delivery=delivery)
    finally:
        # Ends the stream's registration with the hub now, not when collected.
        await deliveries.aclose()


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Every task of the group as it is now, then each change as it commits.")
    async def task_group_changes(self, info: Info[Context, Any], task_group_id: strawberry.ID,
                                 after: Optional[str] = None) -> AsyncIterator[TaskChange]:
        storable("taskGroupId", task_group_id)
        return await _changes(info, Key(group=str(task_group_id)), after)

    @strawberry.subscription(description="The same for a list of tasks (up to the key limit).")
    async def task_changes(self, info: Info[Context, Any], task_ids: list[strawberry.ID],
                           after: Optional[str] = None) -> AsyncIterator[TaskChange]:
        maximum = info.context.settings.max_keys
        if len(task_ids) > maximum:
            raise LimitExceeded("max_keys", len(task_ids), maximum, "`taskIds` has too many keys")
        ids = tuple(dict.fromkeys(storable("taskIds", str(t)) for t in task_ids))
        return await _changes(info, Key(group=None, task_ids=ids), after)
