"""Tasks, their statuses, runs and metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional, TypeAlias

import orjson
import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from tcgraph import model, pagination
from tcgraph.api.context import Context
from tcgraph.api.sqljson import plan_nodes, sql
from tcgraph.api.types.connections import Connection, connection
from tcgraph.errors import BadInput
from tcgraph.loaders import JsonPageKey
from tcgraph.store.queries.tasks import DEPENDENCIES_JSON, RUNS_JSON
from tcgraph.timefmt import sql_format_time

ContextInfo = Info[Context, Any]


# GraphQL's enum TaskState is the model's State itself: strawberry.enum marks the
# class (in place), so fields typed `model.State` are that enum.
strawberry.enum(model.State, name="TaskState",
                description="A task's state, derived from its last run.")
TaskState: TypeAlias = model.State


# The enum's GraphQL value is its name: the stored state in capitals.
def _sql_state(expression: str) -> str:
    return f"upper({expression})"


def storable(argument: str, value: str) -> str:
    """`value`, refused when it holds U+0000, which no stored text can hold.

    Refused up front, so that a document is refused the same way whether or
    not the rest of it would have sent this value to the database.
    """
    if "\x00" in value:
        raise BadInput(f"`{argument}` holds U+0000, which no stored value holds",
                       argument=argument)
    return value


@strawberry.input(description="Restricts label lookups; every field given must match.")
class TaskFilter:
    project_id: Optional[str] = None
    scheduler_id: Optional[str] = None
    task_queue_id: Optional[str] = None
    tags: Optional[JSON] = strawberry.field(
        default=None, description="Tasks whose tags contain this object (JSON containment).")

    def to_model(self) -> model.TaskFilter:
        for argument, value in (("filter.projectId", self.project_id),
                                ("filter.schedulerId", self.scheduler_id),
                                ("filter.taskQueueId", self.task_queue_id)):
            if value is not None:
                storable(argument, value)
        tags = None
        if self.tags is not None:
            if not isinstance(self.tags, dict) or not all(
                    isinstance(v, str) for v in self.tags.values()):
                raise BadInput("filter.tags must be an object of strings", argument="filter.tags")
            for key, value in self.tags.items():
                storable("filter.tags", key)
                storable("filter.tags", value)
            tags = orjson.dumps(self.tags, option=orjson.OPT_SORT_KEYS).decode()
        return model.TaskFilter(self.project_id, self.scheduler_id, self.task_queue_id, tags)


def task_filter(given: TaskFilter | None) -> model.TaskFilter:
    """The model's filter for the GraphQL argument (none given: no restriction)."""
    return given.to_model() if given is not None else model.TaskFilter()


def _metadata_sql(key: str) -> str:
    return f"COALESCE({{row}}.definition -> 'metadata' ->> '{key}', '')"


@strawberry.type(description="The `metadata` of a task definition.")
class TaskMetadata:
    name: str = strawberry.field(metadata=sql(_metadata_sql("name")))
    description: str = strawberry.field(metadata=sql(_metadata_sql("description")))
    owner: str = strawberry.field(metadata=sql(_metadata_sql("owner")))
    source: str = strawberry.field(metadata=sql(_metadata_sql("source")))


def _run_sql(key: str) -> dict[str, Any]:
    # Absent keys are SQL nulls, which JSON writes as null.
    return sql(f"{{row}}.run -> '{key}'")


@strawberry.type(description="One run of a task, as in `queue.status`.")
class TaskRun:
    # Run timestamps are stored as Taskcluster's text; DateTime passes it through.
    _run: strawberry.Private[model.Run]

    @strawberry.field(metadata=_run_sql("runId"))
    def run_id(self) -> int:
        return self._run.run_id

    @strawberry.field(metadata=sql(_sql_state("{row}.run ->> 'state'")))
    def state(self) -> TaskState:
        return self._run.state

    @strawberry.field(metadata=_run_sql("reasonCreated"))
    def reason_created(self) -> str:
        return self._run.reason_created

    @strawberry.field(metadata=_run_sql("reasonResolved"))
    def reason_resolved(self) -> Optional[str]:
        return self._run.reason_resolved

    @strawberry.field(metadata=_run_sql("workerGroup"))
    def worker_group(self) -> Optional[str]:
        return self._run.worker_group

    @strawberry.field(metadata=_run_sql("workerId"))
    def worker_id(self) -> Optional[str]:
        return self._run.worker_id

    @strawberry.field(graphql_type=Optional[datetime], metadata=_run_sql("takenUntil"))
    def taken_until(self) -> Optional[str]:
        return self._run.taken_until

    @strawberry.field(graphql_type=datetime, metadata=_run_sql("scheduled"))
    def scheduled(self) -> str:
        return self._run.scheduled

    @strawberry.field(graphql_type=Optional[datetime], metadata=_run_sql("started"))
    def started(self) -> Optional[str]:
        return self._run.started

    @strawberry.field(graphql_type=Optional[datetime], metadata=_run_sql("resolved"))
    def resolved(self) -> Optional[str]:
        return self._run.resolved


@strawberry.type
class TaskRowFields:
    """The fields TaskStatus and Task share, each with its one resolver and its one SQL.

    Both types inherit them; the class itself is in no answer, so not in the schema.
    """

    _task: strawberry.Private[model.Task]

    @strawberry.field(metadata=sql("{row}.task_id"))
    def task_id(self) -> strawberry.ID:
        return strawberry.ID(self._task.task_id)

    @strawberry.field(metadata=sql("split_part({row}.task_queue_id, '/', 1)"))
    def provisioner_id(self) -> str:
        return self._task.provisioner_id

    @strawberry.field(metadata=sql(
        "CASE WHEN strpos({row}.task_queue_id, '/') > 0 "
        "THEN substr({row}.task_queue_id, strpos({row}.task_queue_id, '/') + 1) ELSE '' END"))
    def worker_type(self) -> str:
        return self._task.worker_type

    @strawberry.field(metadata=sql("{row}.task_queue_id"))
    def task_queue_id(self) -> str:
        return self._task.task_queue_id

    @strawberry.field(metadata=sql("{row}.scheduler_id"))
    def scheduler_id(self) -> str:
        return self._task.scheduler_id

    @strawberry.field(metadata=sql("{row}.project_id"))
    def project_id(self) -> str:
        return self._task.project_id

    @strawberry.field(metadata=sql("{row}.task_group_id"))
    def task_group_id(self) -> strawberry.ID:
        return strawberry.ID(self._task.task_group_id)

    @strawberry.field(metadata=sql("{row}.priority"))
    def priority(self) -> str:
        return self._task.priority

    @strawberry.field(metadata=sql(sql_format_time("{row}.deadline")))
    def deadline(self) -> datetime:
        return self._task.deadline

    @strawberry.field(metadata=sql(sql_format_time("{row}.expires")))
    def expires(self) -> datetime:
        return self._task.expires


@strawberry.type(description="A task's status: every field of `queue.status`, and the task.")
class TaskStatus(TaskRowFields):
    @strawberry.field(metadata=sql("{row}.retries_left"))
    def retries_left(self) -> int:
        return self._task.retries_left

    @strawberry.field(metadata=sql(_sql_state("{row}.state")))
    def state(self) -> TaskState:
        return self._task.state

    @strawberry.field(metadata=sql(RUNS_JSON))
    def runs(self) -> list[TaskRun]:
        return [TaskRun(_run=run) for run in self._task.runs]

    @strawberry.field(metadata=sql("{json}", same_row=True))
    def task(self) -> Task:
        return Task(_task=self._task)


# Python's `tags or {}`: JSON null, false, 0, "", [] and {} all answer {}.
_TAGS_SQL = ("CASE WHEN ({row}.definition -> 'tags') IS NULL OR ({row}.definition -> 'tags') IN "
             "('null', 'false', '0', '\"\"', '[]', '{{}}') THEN '{{}}'::jsonb "
             "ELSE ({row}.definition -> 'tags') END")


@strawberry.type(
    description="A task: its definition as `queue.task` returns it, and its relations.")
class Task(TaskRowFields):
    _text: strawberry.Private[Optional[str]] = None
    _parsed: strawberry.Private[Optional[dict[str, Any]]] = None

    async def _definition_text(self, info: ContextInfo) -> str:
        if self._text is None:
            text = self._task.definition
            if text is None:
                text = await info.context.loaders.definition.load(self._task.task_id)
            self._text = text if text is not None else "{}"
        return self._text

    async def _definition(self, info: ContextInfo) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = orjson.loads(await self._definition_text(info))
        return self._parsed

    @strawberry.field(description="`tags.label`, else `metadata.name`.",
                      metadata=sql("{row}.label"))
    def label(self) -> Optional[str]:
        return self._task.label

    @strawberry.field(metadata=sql("{row}.retries"))
    def retries(self) -> int:
        return self._task.retries

    @strawberry.field(metadata=sql(sql_format_time("{row}.created")))
    def created(self) -> datetime:
        return self._task.created

    @strawberry.field(metadata=sql("{json}", same_row=True))
    async def metadata(self, info: ContextInfo) -> TaskMetadata:
        meta = (await self._definition(info)).get("metadata") or {}
        return TaskMetadata(
            name=meta.get("name", ""), description=meta.get("description", ""),
            owner=meta.get("owner", ""), source=meta.get("source", ""),
        )

    @strawberry.field(metadata=sql(_TAGS_SQL))
    async def tags(self, info: ContextInfo) -> JSON:
        return JSON((await self._definition(info)).get("tags") or {})

    @strawberry.field(metadata=sql(
        "CASE WHEN jsonb_typeof({row}.definition -> 'routes') = 'array' "
        "THEN {row}.definition -> 'routes' ELSE '[]'::jsonb END"))
    async def routes(self, info: ContextInfo) -> list[str]:
        return list((await self._definition(info)).get("routes") or [])

    @strawberry.field(description="The definition exactly as `queue.task` returns it.",
                      metadata=sql("{row}.definition"))
    async def definition(self, info: ContextInfo) -> JSON:
        # The stored text goes into the response as it is: numbers stay exactly
        # as they were stored, however large.
        return JSON(orjson.Fragment(await self._definition_text(info)))

    # Bounded like a page (a definition may list 10,000), so that the document's
    # cost bounds what it returns.
    @strawberry.field(description=(
        "The tasks this task depends on, among the first `first` its definition lists (in "
        "its order; those that are stored). `first` defaults to the default page size (100) "
        "and is at most the page-size limit."), metadata=sql(DEPENDENCIES_JSON, paged=True))
    async def dependencies(self, info: ContextInfo, first: Optional[int] = None) -> list[Task]:
        limit = pagination.page_size(first, info.context.settings)
        ids = ((await self._definition(info)).get("dependencies") or [])[:limit]
        found = await info.context.loaders.task.load_many(ids)
        return [Task(_task=task) for task in found if task is not None]

    @strawberry.field(description="The tasks that depend on this one, by task id.")
    async def dependents(
        self, info: ContextInfo, first: Optional[int] = None, after: Optional[str] = None
    ) -> Connection[Task]:
        context = info.context
        limit = pagination.page_size(first, context.settings)
        after_id = pagination.decode_key(pagination.DEPENDENTS, after)
        shape = plan_nodes(info, "Task", "t")
        if shape is not None:
            page = await context.loaders.dependents_json_page.load(
                JsonPageKey(shape, self._task.task_id, after_id, limit))
            return json_connection(pagination.DEPENDENTS, page, after)
        page = await context.loaders.dependents_page.load((self._task.task_id, after_id, limit))
        return connection(
            [Task(_task=t) for t in page.rows],
            [pagination.encode(pagination.DEPENDENTS, t.task_id) for t in page.rows],
            page, after,
        )

    @strawberry.field(metadata=sql("{json}", same_row=True))
    def status(self) -> TaskStatus:
        return TaskStatus(_task=self._task)


def json_connection(kind: str, page: model.Page, after: str | None) -> Connection[Any]:
    """A Connection over a page of JsonNode rows (cursors from their keys)."""
    return connection(
        [orjson.Fragment(node.json) for node in page.rows],
        [pagination.encode(kind, node.key) for node in page.rows],
        page, after,
    )
