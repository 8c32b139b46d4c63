"""The index: the task at a path, and namespaces to browse."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import orjson
import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from tcgraph import model, pagination
from tcgraph.api.context import Context
from tcgraph.api.sqljson import sql
from tcgraph.api.types.connections import Connection, connection
from tcgraph.api.types.tasks import Task
from tcgraph.store.queries.tasks import TASK_JSON
from tcgraph.timefmt import sql_format_time

ContextInfo = Info[Context, Any]


@strawberry.type(description="The task at an index path.")
class IndexedTask:
    _entry: strawberry.Private[model.IndexEntry]
    _path: strawberry.Private[str]

    @strawberry.field(description="The path exactly as it was asked for.",
                      metadata=sql("{row}.index_path"))
    def index_path(self) -> str:
        return self._path

    @strawberry.field(description="The namespace holding the entry (the path up to its last dot).",
                      metadata=sql("{row}.namespace"))
    def namespace(self) -> str:
        return self._entry.namespace

    @strawberry.field(description="The entry's name within its namespace.",
                      metadata=sql("{row}.name"))
    def name(self) -> str:
        return self._entry.name

    @strawberry.field(metadata=sql("{row}.task_id"))
    def task_id(self) -> strawberry.ID:
        return strawberry.ID(self._entry.task_id)

    @strawberry.field(metadata=sql("{row}.rank"))
    def rank(self) -> float:
        return self._entry.rank

    @strawberry.field(metadata=sql("{row}.data"))
    def data(self) -> JSON:
        return JSON(orjson.Fragment(self._entry.data))

    @strawberry.field(metadata=sql(sql_format_time("{row}.expires")))
    def expires(self) -> datetime:
        return self._entry.expires

    @strawberry.field(description="The task, if it is stored.", metadata=sql(TASK_JSON))
    async def task(self, info: ContextInfo) -> Optional[Task]:
        found = await info.context.loaders.task.load(self._entry.task_id)
        return Task(_task=found) if found is not None else None


@strawberry.type(description="A namespace of the index: child namespaces and the entries in it.")
class Namespace:
    _namespace: strawberry.Private[model.Namespace]

    @strawberry.field(description="The full path; the root namespace is the empty string.")
    def path(self) -> str:
        return self._namespace.path

    @strawberry.field(description="The last part of the path.")
    def name(self) -> str:
        return self._namespace.path.rpartition(".")[2]

    @strawberry.field(description="When the namespace's last entry expires (null for the root).")
    def expires(self) -> Optional[datetime]:
        return self._namespace.expires

    @strawberry.field(description="The namespaces directly below this one, by name.")
    async def namespaces(
        self, info: ContextInfo, first: Optional[int] = None, after: Optional[str] = None
    ) -> Connection[Namespace]:
        context = info.context
        limit = pagination.page_size(first, context.settings)
        after_name = pagination.decode_key(pagination.NAMESPACES, after)
        page = await context.loaders.child_namespaces_page.load(
            (self._namespace.path, after_name, limit))
        return connection(
            [Namespace(_namespace=n) for n in page.rows],
            [pagination.encode(pagination.NAMESPACES, n.path.rpartition(".")[2])
             for n in page.rows],
            page, after,
        )

    @strawberry.field(description="The unexpired entries directly in this namespace, by name.")
    async def tasks(
        self, info: ContextInfo, first: Optional[int] = None, after: Optional[str] = None
    ) -> Connection[IndexedTask]:
        context = info.context
        limit = pagination.page_size(first, context.settings)
        after_name = pagination.decode_key(pagination.NAMESPACE_TASKS, after)
        page = await context.loaders.namespace_tasks_page.load(
            (self._namespace.path, after_name, limit))
        return connection(
            [IndexedTask(_entry=e, _path=e.path) for e in page.rows],
            [pagination.encode(pagination.NAMESPACE_TASKS, e.name) for e in page.rows],
            page, after,
        )
