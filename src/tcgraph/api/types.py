"""The GraphQL object types: thin views over `tcgraph.model` rows.

Every relation a type exposes goes through the request's loaders
(`info.context.loaders`); no resolver here runs SQL itself.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Optional, TypeVar

import orjson
import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from tcgraph import model, pagination
from tcgraph.errors import BadInput

if TYPE_CHECKING:
    from tcgraph.api.context import Context

N = TypeVar("N")


@strawberry.enum(description="A task's state, derived from its last run.")
class TaskState(enum.Enum):
    UNSCHEDULED = "unscheduled"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXCEPTION = "exception"


def _state(state: model.State) -> TaskState:
    return TaskState(state.value)


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: Optional[str]
    end_cursor: Optional[str]


@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


@strawberry.type(description="A page of a list, in the Relay connection shape.")
class Connection(Generic[N]):
    edges: list[Edge[N]]
    page_info: PageInfo

    @strawberry.field
    def nodes(self) -> list[N]:
        return [edge.node for edge in self.edges]


def connection(nodes: list, cursors: list[str], page: model.Page, after: str | None) -> Connection:
    """A Connection over one page; a cursor given as `after` implies rows before."""
    edges = [Edge(cursor=c, node=n) for c, n in zip(cursors, nodes)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=after is not None,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        ),
    )


def _context(info: Info) -> "Context":
    return info.context


@strawberry.input(description="Restricts label lookups; every field given must match.")
class TaskFilter:
    project_id: Optional[str] = None
    scheduler_id: Optional[str] = None
    task_queue_id: Optional[str] = None
    tags: Optional[JSON] = strawberry.field(
        default=None, description="Tasks whose tags contain this object (JSON containment).")

    def to_model(self) -> model.TaskFilter:
        tags = None
        if self.tags is not None:
            if not isinstance(self.tags, dict) or not all(
                    isinstance(v, str) for v in self.tags.values()):
                raise BadInput("filter.tags must be an object of strings", argument="filter.tags")
            tags = orjson.dumps(self.tags, option=orjson.OPT_SORT_KEYS).decode()
        return model.TaskFilter(self.project_id, self.scheduler_id, self.task_queue_id, tags)


def task_filter(given: TaskFilter | None) -> model.TaskFilter:
    return given.to_model() if given is not None else model.TaskFilter()


@strawberry.type(description="The `metadata` of a task definition.")
class TaskMetadata:
    name: str
    description: str
    owner: str
    source: str


@strawberry.type(description="One run of a task, as in `queue.status`.")
class TaskRun:
    # Run timestamps are stored as Taskcluster's text; DateTime passes it through.
    _run: strawberry.Private[model.Run]

    @strawberry.field
    def run_id(self) -> int:
        return self._run.run_id

    @strawberry.field
    def state(self) -> TaskState:
        return _state(self._run.state)

    @strawberry.field
    def reason_created(self) -> str:
        return self._run.reason_created

    @strawberry.field
    def reason_resolved(self) -> Optional[str]:
        return self._run.reason_resolved

    @strawberry.field
    def worker_group(self) -> Optional[str]:
        return self._run.worker_group

    @strawberry.field
    def worker_id(self) -> Optional[str]:
        return self._run.worker_id

    @strawberry.field(graphql_type=Optional[datetime])
    def taken_until(self) -> Optional[str]:
        return self._run.taken_until

    @strawberry.field(graphql_type=datetime)
    def scheduled(self) -> str:
        return self._run.scheduled

    @strawberry.field(graphql_type=Optional[datetime])
    def started(self) -> Optional[str]:
        return self._run.started

    @strawberry.field(graphql_type=Optional[datetime])
    def resolved(self) -> Optional[str]:
        return self._run.resolved


@strawberry.type(description="A task's status: every field of `queue.status`, and the task.")
class TaskStatus:
    _task: strawberry.Private[model.Task]

    @strawberry.field
    def task_id(self) -> strawberry.ID:
        return strawberry.ID(self._task.task_id)

    @strawberry.field
    def provisioner_id(self) -> str:
        return self._task.provisioner_id

    @strawberry.field
    def worker_type(self) -> str:
        return self._task.worker_type

    @strawberry.field
    def task_queue_id(self) -> str:
        return self._task.task_queue_id

    @strawberry.field
    def scheduler_id(self) -> str:
        return self._task.scheduler_id

    @strawberry.field
    def project_id(self) -> str:
        return self._task.project_id

    @strawberry.field
    def task_group_id(self) -> strawberry.ID:
        return strawberry.ID(self._task.task_group_id)

    @strawberry.field
    def priority(self) -> str:
        return self._task.priority

    @strawberry.field
    def deadline(self) -> datetime:
        return self._task.deadline

    @strawberry.field
    def expires(self) -> datetime:
        return self._task.expires

    @strawberry.field
    def retries_left(self) -> int:
        return self._task.retries_left

    @strawberry.field
    def state(self) -> TaskState:
        return _state(self._task.state)

    @strawberry.field
    def runs(self) -> list[TaskRun]:
        return [TaskRun(_run=run) for run in self._task.runs]

    @strawberry.field
    def task(self) -> Task:
        return Task(_task=self._task)


@strawberry.type(description="A task: its definition as `queue.task` returns it, and its relations.")
class Task:
    _task: strawberry.Private[model.Task]
    _parsed: strawberry.Private[Optional[dict]] = None

    async def _definition(self, info: Info) -> dict:
        if self._parsed is None:
            text = self._task.definition
            if text is None:
                text = await _context(info).loaders.definition.load(self._task.task_id)
            self._parsed = orjson.loads(text) if text is not None else {}
        return self._parsed

    @strawberry.field
    def task_id(self) -> strawberry.ID:
        return strawberry.ID(self._task.task_id)

    @strawberry.field
    def task_group_id(self) -> strawberry.ID:
        return strawberry.ID(self._task.task_group_id)

    @strawberry.field(description="`tags.label`, else `metadata.name`.")
    def label(self) -> Optional[str]:
        return self._task.label

    @strawberry.field
    def scheduler_id(self) -> str:
        return self._task.scheduler_id

    @strawberry.field
    def task_queue_id(self) -> str:
        return self._task.task_queue_id

    @strawberry.field
    def provisioner_id(self) -> str:
        return self._task.provisioner_id

    @strawberry.field
    def worker_type(self) -> str:
        return self._task.worker_type

    @strawberry.field
    def project_id(self) -> str:
        return self._task.project_id

    @strawberry.field
    def priority(self) -> str:
        return self._task.priority

    @strawberry.field
    def retries(self) -> int:
        return self._task.retries

    @strawberry.field
    def created(self) -> datetime:
        return self._task.created

    @strawberry.field
    def deadline(self) -> datetime:
        return self._task.deadline

    @strawberry.field
    def expires(self) -> datetime:
        return self._task.expires

    @strawberry.field
    async def metadata(self, info: Info) -> TaskMetadata:
        meta = (await self._definition(info)).get("metadata") or {}
        return TaskMetadata(
            name=meta.get("name", ""), description=meta.get("description", ""),
            owner=meta.get("owner", ""), source=meta.get("source", ""),
        )

    @strawberry.field
    async def tags(self, info: Info) -> JSON:
        return (await self._definition(info)).get("tags") or {}

    @strawberry.field
    async def routes(self, info: Info) -> list[str]:
        return list((await self._definition(info)).get("routes") or [])

    @strawberry.field(description="The definition exactly as `queue.task` returns it.")
    async def definition(self, info: Info) -> JSON:
        return await self._definition(info)

    @strawberry.field(description="The tasks this task depends on (those that are stored).")
    async def dependencies(self, info: Info) -> list[Task]:
        ids = (await self._definition(info)).get("dependencies") or []
        found = await _context(info).loaders.task.load_many(ids)
        return [Task(_task=task) for task in found if task is not None]

    @strawberry.field(description="The tasks that depend on this one, by task id.")
    async def dependents(
        self, info: Info, first: Optional[int] = None, after: Optional[str] = None
    ) -> Connection[Task]:
        context = _context(info)
        limit = pagination.page_size(first, context.settings)
        after_id = pagination.decode_key(pagination.DEPENDENTS, after)
        page = await context.loaders.dependents_page.load((self._task.task_id, after_id, limit))
        return connection(
            [Task(_task=t) for t in page.rows],
            [pagination.encode(pagination.DEPENDENTS, t.task_id) for t in page.rows],
            page, after,
        )

    @strawberry.field
    def status(self) -> TaskStatus:
        return TaskStatus(_task=self._task)


@strawberry.type(description="The task at an index path.")
class IndexedTask:
    _entry: strawberry.Private[model.IndexEntry]
    _path: strawberry.Private[str]

    @strawberry.field(description="The path exactly as it was asked for.")
    def index_path(self) -> str:
        return self._path

    @strawberry.field(description="The namespace holding the entry (the path up to its last dot).")
    def namespace(self) -> str:
        return self._entry.namespace

    @strawberry.field(description="The entry's name within its namespace.")
    def name(self) -> str:
        return self._entry.name

    @strawberry.field
    def task_id(self) -> strawberry.ID:
        return strawberry.ID(self._entry.task_id)

    @strawberry.field
    def rank(self) -> float:
        return self._entry.rank

    @strawberry.field
    def data(self) -> JSON:
        return orjson.loads(self._entry.data)

    @strawberry.field
    def expires(self) -> datetime:
        return self._entry.expires

    @strawberry.field(description="The task, if it is stored.")
    async def task(self, info: Info) -> Optional[Task]:
        found = await _context(info).loaders.task.load(self._entry.task_id)
        return Task(_task=found) if found is not None else None


@strawberry.type(description="A label's tasks over time, newest first (after debusine's task history).")
class LabelHistory:
    label: str
    _filter: strawberry.Private[model.TaskFilter]

    async def _load(self, info: Info, loader_name: str) -> Optional[Task]:
        loader = getattr(_context(info).loaders, loader_name)
        found = await loader.load((self.label, self._filter))
        return Task(_task=found) if found is not None else None

    @strawberry.field(description="The newest task with this label.")
    async def latest(self, info: Info) -> Optional[Task]:
        return await self._load(info, "latest")

    @strawberry.field(description="The newest completed task with this label.")
    async def last_success(self, info: Info) -> Optional[Task]:
        return await self._load(info, "last_success")

    @strawberry.field(description="The newest failed or exception task with this label.")
    async def last_failure(self, info: Info) -> Optional[Task]:
        return await self._load(info, "last_failure")

    @strawberry.field(description="Every task with this label, newest first.")
    async def history(
        self, info: Info, first: Optional[int] = None, after: Optional[str] = None
    ) -> Connection[Task]:
        context = _context(info)
        limit = pagination.page_size(first, context.settings)
        after_key = pagination.decode_time_key(pagination.LABEL_HISTORY, after)
        page = await context.loaders.label_history.load((self.label, self._filter, after_key, limit))
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
        self, info: Info, first: Optional[int] = None, after: Optional[str] = None,
        state: Optional[TaskState] = None,
    ) -> Connection[Task]:
        context = _context(info)
        limit = pagination.page_size(first, context.settings)
        after_id = pagination.decode_key(pagination.TASK_GROUP, after)
        wanted = model.State(state.value) if state is not None else None
        page = await context.loaders.task_group_page.load(
            (str(self.task_group_id), wanted, after_id, limit))
        return connection(
            [Task(_task=t) for t in page.rows],
            [pagination.encode(pagination.TASK_GROUP, t.task_id) for t in page.rows],
            page, after,
        )


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
        self, info: Info, first: Optional[int] = None, after: Optional[str] = None
    ) -> Connection[Namespace]:
        context = _context(info)
        limit = pagination.page_size(first, context.settings)
        after_name = pagination.decode_key(pagination.NAMESPACES, after)
        page = await context.loaders.child_namespaces_page.load(
            (self._namespace.path, after_name, limit))
        return connection(
            [Namespace(_namespace=n) for n in page.rows],
            [pagination.encode(pagination.NAMESPACES, n.path.rpartition(".")[2]) for n in page.rows],
            page, after,
        )

    @strawberry.field(description="The unexpired entries directly in this namespace, by name.")
    async def tasks(
        self, info: Info, first: Optional[int] = None, after: Optional[str] = None
    ) -> Connection[IndexedTask]:
        context = _context(info)
        limit = pagination.page_size(first, context.settings)
        after_name = pagination.decode_key(pagination.NAMESPACE_TASKS, after)
        page = await context.loaders.namespace_tasks_page.load(
            (self._namespace.path, after_name, limit))
        return connection(
            [IndexedTask(_entry=e, _path=e.path) for e in page.rows],
            [pagination.encode(pagination.NAMESPACE_TASKS, e.name) for e in page.rows],
            page, after,
        )


@strawberry.type(description="How fresh a mirror is: the state `tcgraph follow` records.")
class Mirror:
    _state: strawberry.Private[model.MirrorState]

    @strawberry.field(description="The pulse queue the follower reads.")
    def queue_name(self) -> str:
        return self._state.queue_name

    @strawberry.field(description="When the current follower started.")
    def started(self) -> datetime:
        return self._state.started

    @strawberry.field(description="When the newest batch of messages was committed.")
    def last_message(self) -> Optional[datetime]:
        return self._state.last_message

    @strawberry.field(description="The exchange of the newest message.")
    def last_exchange(self) -> Optional[str]:
        return self._state.last_exchange

    @strawberry.field(description="The routing key of the newest message.")
    def last_routing_key(self) -> Optional[str]:
        return self._state.last_routing_key

    @strawberry.field(description="The newest status change written (a run scheduled, "
                                  "started or resolved).")
    def last_status_time(self) -> Optional[datetime]:
        return self._state.last_status_time

    @strawberry.field(description="Milliseconds from that status change to its commit, for "
                                  "the newest batch.")
    def lag_ms(self) -> Optional[float]:
        return self._state.lag_ms

    @strawberry.field(description="Messages written, counted across restarts.")
    def messages(self) -> float:
        return float(self._state.messages)

    @strawberry.field(description="Messages set aside because they did not match their schema.")
    def errors(self) -> float:
        return float(self._state.errors)

    @strawberry.field(description="Tasks whose status is held until their definition is fetched.")
    def waiting_definitions(self) -> int:
        return self._state.waiting
