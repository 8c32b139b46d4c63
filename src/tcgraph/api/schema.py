"""The root Query type and the schema built from it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional
from collections.abc import Callable, Sequence

import orjson
import strawberry
from orjson import Fragment
from graphql import GraphQLError
from strawberry.extensions import (
    DisableIntrospection, MaskErrors, SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types.scalar import ScalarDefinition
from strawberry.types import Info

from tcgraph import observe
from tcgraph.api.documents import DocumentCache, Documents
from tcgraph.api.sqljson import executor, plan
from tcgraph.api.subscriptions.types import Subscription
from tcgraph.api.types.index import IndexedTask, Namespace
from tcgraph.api.types.labels import LabelHistory, TaskGroup
from tcgraph.api.types.mirror import Mirror
from tcgraph.api.types.tasks import Task, TaskFilter, TaskStatus, storable, task_filter
from tcgraph.config import Settings
from tcgraph.errors import ClientError, ServiceUnavailable, check_key_count
from tcgraph.limits import Limits
from tcgraph.logs import request_id
from tcgraph.loaders import JsonListKey
from tcgraph.model import split_index_path
from tcgraph.store.queries import mirror as mirror_queries
from tcgraph.timefmt import format_time, parse_time


def _keys(info: Info, argument: str, values: Sequence[str]) -> list[str]:
    check_key_count(argument, len(values), info.context.settings.max_keys)
    for value in values:
        storable(argument, value)
    return list(values)


def _json(text: str | None) -> orjson.Fragment | None:
    return None if text is None else orjson.Fragment(text)


def _json_value(text: str | None) -> orjson.Fragment:
    # Lists always have their array, and a label its history.
    assert text is not None
    return orjson.Fragment(text)


# Each root field answers a selection that api/sqljson.py can compile with one
# statement building its JSON; any other selection goes to the resolvers.
@strawberry.type
class Query:
    @strawberry.field(description="The task with this id, or null.", graphql_type=Optional[Task])
    async def task(self, info: Info, task_id: strawberry.ID) -> Task | Fragment | None:
        storable("taskId", task_id)
        shape = plan(info, "Task", "t")
        if shape is not None:
            return _json(await info.context.loaders.tasks_json.load(
                JsonListKey(shape, (str(task_id),), single=True)))
        found = await info.context.loaders.task.load(str(task_id))
        return Task(_task=found) if found is not None else None

    @strawberry.field(description="One entry per id, in order; null where no task matches.",
                      graphql_type=list[Optional[Task]])
    async def tasks(self, info: Info,
                    task_ids: list[strawberry.ID]) -> list[Task | None] | Fragment:
        ids = _keys(info, "taskIds", task_ids)
        shape = plan(info, "Task", "t")
        if shape is not None:
            return _json_value(await info.context.loaders.tasks_json.load(
                JsonListKey(shape, tuple(ids))))
        found = await info.context.loaders.task.load_many(ids)
        return [Task(_task=t) if t is not None else None for t in found]

    @strawberry.field(description="The status of the task with this id, or null.",
                      graphql_type=Optional[TaskStatus])
    async def status(self, info: Info, task_id: strawberry.ID) -> TaskStatus | Fragment | None:
        storable("taskId", task_id)
        shape = plan(info, "TaskStatus", "t")
        if shape is not None:
            return _json(await info.context.loaders.tasks_json.load(
                JsonListKey(shape, (str(task_id),), single=True)))
        found = await info.context.loaders.task.load(str(task_id))
        return TaskStatus(_task=found) if found is not None else None

    @strawberry.field(description="One status per id, in order; null where no task matches.",
                      graphql_type=list[Optional[TaskStatus]])
    async def statuses(
        self, info: Info, task_ids: list[strawberry.ID]
    ) -> list[TaskStatus | None] | Fragment:
        ids = _keys(info, "taskIds", task_ids)
        shape = plan(info, "TaskStatus", "t")
        if shape is not None:
            return _json_value(await info.context.loaders.tasks_json.load(
                JsonListKey(shape, tuple(ids))))
        found = await info.context.loaders.task.load_many(ids)
        return [TaskStatus(_task=t) if t is not None else None for t in found]

    @strawberry.field(description="The task at an index path; null if absent or expired.",
                      graphql_type=Optional[IndexedTask])
    async def indexed_task(self, info: Info, index_path: str) -> IndexedTask | Fragment | None:
        storable("indexPath", index_path)
        shape = plan(info, "IndexedTask", "e")
        if shape is not None:
            return _json(await info.context.loaders.entries_json.load(
                JsonListKey(shape, (index_path,), single=True)))
        found = await info.context.loaders.index_entry.load(split_index_path(index_path))
        return IndexedTask(_entry=found, _path=index_path) if found is not None else None

    @strawberry.field(description="One entry per path, in order; null where absent or expired.",
                      graphql_type=list[Optional[IndexedTask]])
    async def indexed_tasks(
        self, info: Info, index_paths: list[str]
    ) -> list[IndexedTask | None] | Fragment:
        paths = _keys(info, "indexPaths", index_paths)
        shape = plan(info, "IndexedTask", "e")
        if shape is not None:
            return _json_value(await info.context.loaders.entries_json.load(
                JsonListKey(shape, tuple(paths))))
        found = await info.context.loaders.index_entry.load_many(
            [split_index_path(p) for p in paths])
        return [IndexedTask(_entry=e, _path=p) if e is not None else None
                for e, p in zip(found, paths, strict=False)]

    @strawberry.field(description="The history of one label (tags.label, else metadata.name).",
                      graphql_type=LabelHistory)
    async def label(self, info: Info, label: str,
                    filter: Optional[TaskFilter] = None) -> LabelHistory | Fragment:
        storable("label", label)
        chosen = task_filter(filter)
        shape = plan(info, "LabelHistory", "k")
        if shape is not None:
            return _json_value(await info.context.loaders.labels_json.load(
                JsonListKey(shape, (label,), single=True, task_filter=chosen)))
        return LabelHistory(label=label, _filter=chosen)

    @strawberry.field(description="One history per label, in order.",
                      graphql_type=list[LabelHistory])
    async def labels(
        self, info: Info, labels: list[str], filter: Optional[TaskFilter] = None
    ) -> list[LabelHistory] | Fragment:
        chosen = task_filter(filter)
        wanted = _keys(info, "labels", labels)
        shape = plan(info, "LabelHistory", "k")
        if shape is not None:
            return _json_value(await info.context.loaders.labels_json.load(
                JsonListKey(shape, tuple(wanted), task_filter=chosen)))
        return [LabelHistory(label=label, _filter=chosen) for label in wanted]

    @strawberry.field(description="The task group with this id, or null if it has no tasks.")
    async def task_group(self, info: Info, task_group_id: strawberry.ID) -> Optional[TaskGroup]:
        storable("taskGroupId", task_group_id)
        exists = await info.context.loaders.task_group_exists.load(str(task_group_id))
        return TaskGroup(task_group_id=task_group_id) if exists else None

    @strawberry.field(description="How fresh this mirror is, or null if it is not one.")
    async def mirror(self, info: Info) -> Optional[Mirror]:
        found = await mirror_queries.mirror_state(info.context.db)
        return Mirror(_state=found) if found is not None else None

    @strawberry.field(description='An index namespace ("" is the root), or null if absent.')
    async def namespace(self, info: Info, path: str) -> Optional[Namespace]:
        storable("path", path)
        found = await info.context.loaders.namespace.load(path)
        return Namespace(_namespace=found) if found is not None else None


class SqlReport(SchemaExtension):
    """Adds `extensions.sql = {statements, rows, ms}` for the request."""

    def get_results(self) -> dict[str, object]:
        context = self.execution_context.context
        return {"sql": context.db.stats.as_dict()} if context is not None else {}


def _parse_datetime(value: object) -> datetime:
    try:
        return parse_time(value)
    except ValueError as e:
        raise GraphQLError(f"DateTime: {e}") from None


SCALARS: dict[object, ScalarDefinition] = {
    datetime: strawberry.scalar(
        name="DateTime",
        description="A timestamp as Taskcluster writes it: 2026-11-23T12:00:00.000Z",
        serialize=format_time,
        parse_value=_parse_datetime,
    ),
}


class Schema(strawberry.Schema):
    """Strawberry's schema, whose executor takes JSON built in PostgreSQL (api/sqljson.py).

    `documents` holds the documents it has parsed and checked (api/documents.py).
    """

    def __init__(self, documents: DocumentCache, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Strawberry's own executor class (its public attribute), extended.
        self.execution_context_class = executor(self.execution_context_class)
        self.documents = documents

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # Errors about the request (bad documents, limits, cursors, outages)
        # are answered to the client; only the unexpected ones are worth a
        # traceback in the log.
        super().process_errors([e for e in errors if _unexpected(e)], execution_context)


def _unexpected(error: GraphQLError) -> bool:
    """Mask what the client cannot act on: anything but our coded errors and GraphQL's own."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False  # parse, validation and rule errors: about the document itself
    return not isinstance(original, (ClientError, ServiceUnavailable))


class _MaskUnexpected(MaskErrors):
    """Masks unexpected errors; the message names the request id of the logged traceback."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_unexpected)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        rid = request_id.get()
        masked.message = (f"Unexpected error (request {rid}); "
                          "the server log has the details.")
        masked.extensions = {"code": "INTERNAL_ERROR", "requestId": rid}
        return masked


def build_schema(settings: Settings | None = None) -> Schema:
    """The schema, with the limits and reporting `settings` ask for."""
    settings = settings or Settings()
    documents = DocumentCache(settings.document_cache_entries, settings.document_cache_bytes)
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        lambda: Documents(settings, documents),
        lambda: Limits(settings),
        observe.OperationType,
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    if settings.mask_errors:
        extensions.append(_MaskUnexpected)
    if settings.explain:
        extensions.append(SqlReport)
    return Schema(documents, query=Query, subscription=Subscription, extensions=extensions,
                  config=StrawberryConfig(scalar_map=SCALARS))


def sdl() -> str:
    """The published schema (`schema.graphql`)."""
    return build_schema().as_str() + "\n"
