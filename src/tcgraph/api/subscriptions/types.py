"""The `Subscription` root type and `TaskChange`, served from the change hub."""

from __future__ import annotations

import contextlib
from typing import Any, Optional
from collections.abc import AsyncGenerator, AsyncIterator

import orjson
import strawberry
from orjson import Fragment
from starlette.websockets import WebSocketDisconnect
from strawberry.types import Info

from tcgraph import metrics
from tcgraph.store.sqlfrag import SqlFragment
from tcgraph.api.context import Context
from tcgraph.api.sqljson import plan_field, response_keys
from tcgraph.api.subscriptions.hub import Delivery, Hub
from tcgraph.api.subscriptions.streams import Key, open_stream
from tcgraph.api.subscriptions.transport import operation_id
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


# A selection of TaskChange made only of these fields (with `task` compiled) is
# rendered as JSON text once per change and selection, for every subscriber that
# shares both, and spliced into each subscriber's response as it is: no field is
# resolved per subscriber.
_RENDERED = ("cursor", "taskId", "task", "__typename")
Template = tuple[tuple[str, str], ...]  # (response key as JSON, field name)


def _template(info: Info[Context, Any], shape: SqlFragment | None) -> Template | None:
    keys = response_keys(info)
    if any(name not in _RENDERED or (name == "task" and shape is None)
           for _, name, _ in keys):
        return None
    return tuple((orjson.dumps(key).decode(), name) for key, name, _ in keys)


def _render(template: Template, delivery: Delivery) -> str:
    rendered = delivery.rendered.get(template)
    if rendered is None:
        parts = []
        for key, name in template:
            if name == "cursor":
                value = orjson.dumps(delivery.cursor).decode()
            elif name == "taskId":
                value = orjson.dumps(delivery.task_id).decode()
            elif name == "task":
                value = delivery.task if isinstance(delivery.task, str) else "null"
            else:
                value = '"TaskChange"'
            parts.append(f"{key}:{value}")
        rendered = delivery.rendered[template] = "{" + ",".join(parts) + "}"
    return rendered


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
    shape = plan_field(info, "task", "Task", "t")
    template = _template(info, shape)
    frame = None
    op_id = operation_id()
    if template is not None and op_id is not None:
        # A rendered change goes out as the whole `next` message, written here:
        # nothing is executed per subscriber and event.
        frame = ('{"id":' + orjson.dumps(op_id).decode() + ',"type":"next","payload":{"data":{'
                 + orjson.dumps(info.path.key).decode() + ":", "}}}")
    deliveries = await open_stream(_hub(info), key, shape, after, close)
    return _task_changes(context, deliveries, template, frame)


async def _task_changes(context: Context, deliveries: AsyncGenerator[Delivery, None],
                        template: Template | None, frame: tuple[str, str] | None
                        ) -> AsyncIterator[TaskChange | Fragment]:
    websocket = context.request
    try:
        async for delivery in deliveries:
            metrics.subscription_events()
            if template is not None and frame is not None:
                try:
                    await websocket.send_text(frame[0] + _render(template, delivery) + frame[1])
                except (WebSocketDisconnect, RuntimeError):
                    return  # the connection is ending; its handler ends the operation
                continue
            if template is not None:
                yield Fragment(_render(template, delivery))
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
