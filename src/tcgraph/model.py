"""Frozen rows shared by the layers.

These are what crosses from the store to the API: neither asyncpg records nor
Strawberry types leak across. Timestamps are timezone-aware datetimes; JSON
documents that are usually passed through untouched (task definitions, index
data) stay as raw JSON text until something needs to look inside them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class State(str, enum.Enum):
    """A task's state, derived from its last run as the queue does."""

    UNSCHEDULED = "unscheduled"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXCEPTION = "exception"


TASK_STATES = tuple(state.value for state in State)
# A run is created pending, so it is never unscheduled.
RUN_STATES = tuple(state.value for state in State if state is not State.UNSCHEDULED)


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a task, as in the `runs` list of `queue.status`.

    Its timestamps are text in Taskcluster's format (`...T12:00:00.000Z`), as
    import stored them: they are only ever passed through, and parsing
    and re-formatting four timestamps per run is a real cost at 10,000 tasks.
    """

    run_id: int
    state: State
    reason_created: str
    reason_resolved: str | None
    worker_group: str | None
    worker_id: str | None
    taken_until: str | None
    scheduled: str
    started: str | None
    resolved: str | None


@dataclass(frozen=True, slots=True)
class Task:
    """A task: its columns, its current status, and its definition once loaded."""

    task_id: str
    task_group_id: str
    scheduler_id: str
    task_queue_id: str
    project_id: str
    label: str | None
    priority: str
    retries: int
    retries_left: int
    created: datetime
    deadline: datetime
    expires: datetime
    state: State
    runs: tuple[Run, ...]
    # The definition (raw JSON text) is fetched only for documents that read
    # it (loaders.definition): most questions are about status, and shipping
    # 1-2 KB of definition per task would dominate their cost.
    definition: str | None = None

    @property
    def provisioner_id(self) -> str:
        return self.task_queue_id.split("/", 1)[0]

    @property
    def worker_type(self) -> str:
        return self.task_queue_id.split("/", 1)[1] if "/" in self.task_queue_id else ""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """An index entry: `namespace.name` points at a task."""

    namespace: str
    name: str
    task_id: str
    rank: float
    data: str
    expires: datetime

    @property
    def path(self) -> str:
        return f"{self.namespace}.{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace of the index, browsable by prefix."""

    path: str
    expires: datetime | None


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Restricts label lookups; every field that is set must match."""

    project_id: str | None = None
    scheduler_id: str | None = None
    task_queue_id: str | None = None
    tags: str | None = None  # a JSON object, matched by containment


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """A task group as the queue describes it (`getTaskGroup`)."""

    task_group_id: str
    scheduler_id: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class JsonNode:
    """A row of a page answered as JSON built in PostgreSQL: its sort key and its JSON text."""

    key: str
    json: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a keyset-paginated list: `rows` plus whether more follow."""

    rows: tuple[Any, ...]
    has_next: bool


def split_index_path(path: str) -> tuple[str, str]:
    """`a.b.c` -> (`a.b`, `c`), the way the index service splits a path."""
    namespace, _, name = path.rpartition(".")
    return namespace, name


# --- rows on their way in ------------------------------------------------
# What the write side (import, follow, backfill) hands to store/writes.py,
# validated by ingest/shapes.py.


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task definition as it is stored: its lookup columns and its JSON text."""

    task_id: str
    task_group_id: str
    scheduler_id: str
    task_queue_id: str
    project_id: str
    label: str | None
    priority: str
    retries: int
    created: datetime
    deadline: datetime
    expires: datetime
    definition: str  # JSON text, exactly as queue.task answers it
    dependencies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StatusRow:
    """A task's status as `queue.status` gives it, with its rank
    (tcgraph.precedence.status_rank)."""

    task_id: str
    state: str
    runs: str  # JSON text of the runs, timestamps in Taskcluster's format
    retries_left: int
    rank: int


@dataclass(frozen=True, slots=True)
class IndexEntryRow:
    """An index entry to store; `resolved` breaks rank ties (None: unknown, loses ties)."""

    namespace: str
    name: str
    task_id: str
    rank: float
    data: str  # JSON text of an object
    expires: datetime
    resolved: datetime | None = None


@dataclass(frozen=True, slots=True)
class NamespaceRow:
    """A namespace of the index (`parent`.`name`) and how long it lives."""

    parent: str
    name: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class MirrorState:
    """How far `tcgraph follow` has got: what a client checks before trusting freshness."""

    queue_name: str
    started: datetime
    last_message: datetime | None  # when the newest batch was committed
    last_exchange: str | None
    last_routing_key: str | None
    last_status_time: datetime | None  # the newest status change written
    lag_ms: float | None  # commit time - status time, for the newest batch
    messages: int
    errors: int  # messages set aside as invalid
    batches: int
    waiting: int  # tasks whose status is held until their definition is fetched
