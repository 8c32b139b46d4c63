"""Label histories and task groups."""

from __future__ import annotations

from typing import Any, Optional

import strawberry
from strawberry.types import Info

from tcgraph import model, pagination
from tcgraph.api.context import Context
from tcgraph.api.sqljson import plan_nodes, sql
from tcgraph.api.types.connections import Connection, connection
from tcgraph.api.types.tasks import Task, TaskState, json_connection
from tcgraph.loaders import JsonPageKey, Loader
from tcgraph.store.queries.tasks import LATEST_JSON

ContextInfo = Info[Context, Any]


@strawberry.type(
    description="A label's tasks over time, newest first (after debusine's task history).")
class LabelHistory:
    label: str = strawberry.field(metadata=sql("{row}.label"))
    _filter: strawberry.Private[model.TaskFilter]

    async def _load(self, loader: Loader) -> Optional[Task]:
        found = await loader.load((self.label, self._filter))
        return Task(_task=found) if found is not None else None

    @strawberry.field(description="The newest task with this label.",
                      metadata=sql(LATEST_JSON["latest"]))
    async def latest(self, info: ContextInfo) -> Optional[Task]:
        return await self._load(info.context.loaders.latest)

    @strawberry.field(description="The newest completed task with this label.",
                      metadata=sql(LATEST_JSON["success"]))
    async def last_success(self, info: ContextInfo) -> Optional[Task]:
        return await self._load(info.context.loaders.last_success)

    @strawberry.field(description="The newest failed or exception task with this label.",
                      metadata=sql(LATEST_JSON["failure"]))
    async def last_failure(self, info: ContextInfo) -> Optional[Task]:
        return await self._load(info.context.loaders.last_failure)

    @strawberry.field(description="Every task with this label, newest first.")
    async def history(
        self, info: ContextInfo, first: Optional[int] = None, after: Optional[str] = None
    ) -> Connection[Task]:
        context = info.context
        limit = pagination.page_size(first, context.settings)
        after_key = pagination.decode_time_key(pagination.LABEL_HISTORY, after)
        page = await context.loaders.label_history.load(
            (self.label, self._filter, after_key, limit))
        return connection(
            [Task(_task=t) for t in page.rows],
            [pagination.encode(pagination.LABEL_HISTORY, t.created.isoformat(), t.task_id)
             for t in page.rows],
            page, after,
        )


@strawberry.type(description="The tasks of one task group.")
class TaskGroup:
    task_group_id: strawberry.ID

    @strawberry.field(description="The group's tasks by task id, optionally in one state.")
    async def tasks(
        self, info: ContextInfo, first: Optional[int] = None, after: Optional[str] = None,
        state: Optional[TaskState] = None,
    ) -> Connection[Task]:
        context = info.context
        limit = pagination.page_size(first, context.settings)
        after_id = pagination.decode_key(pagination.TASK_GROUP, after)
        shape = plan_nodes(info, "Task", "t")
        if shape is not None:
            page = await context.loaders.task_group_json_page.load(
                JsonPageKey(shape, str(self.task_group_id), after_id, limit, state))
            return json_connection(pagination.TASK_GROUP, page, after)
        page = await context.loaders.task_group_page.load(
            (str(self.task_group_id), state, after_id, limit))
        return connection(
            [Task(_task=t) for t in page.rows],
            [pagination.encode(pagination.TASK_GROUP, t.task_id) for t in page.rows],
            page, after,
        )
