"""RFC 128: the deployment describes itself, under its root URL.

`/references/manifest.json` lists fully-qualified URLs of tcgraph's reference documents:
one API reference per Taskcluster service whose routes tcgraph answers (`queue` and `index`,
restricted to those routes, and `tcgraph` for its own), plus the GraphQL schema. Each API
reference is in Taskcluster's format (`api-reference-v0`), so a client generator builds every
URL as `<rootUrl>/api/<serviceName>/<apiVersion><route>` and lands on a route tcgraph serves.
The input and output schemas are served under `/schemas/<serviceName>/v1/`, where the
references' relative `input`/`output` names point, and refer to one another by relative `$ref`.

The root URL is `TCGRAPH_ROOT_URL` when set (a deployment behind a proxy knows its public
address), else the base URL of the request.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from tcgraph import timefmt
from tcgraph.keys import DEFAULT_MAX_PAGE_SIZE
from tcgraph.api.schema import sdl
from tcgraph.model import RUN_STATES, TASK_STATES

API_VERSION = "v1"
JSON_SCHEMA = "http://json-schema.org/draft-06/schema#"
# A JSON schema, as a document.
Schema = dict[str, Any]


def root_url(request: Request) -> str:
    """The deployment's root URL, without a trailing slash."""
    configured = request.app.state.settings.root_url.strip()
    return (configured or str(request.base_url)).rstrip("/")


# --- schemas -------------------------------------------------------------

STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
# Taskcluster's JSON timestamps have milliseconds and `Z`; taskgraph parses them that way.
TIMESTAMP = {"type": "string", "format": "date-time", "pattern": f"^{timefmt.PATTERN}$"}
CONTINUATION_TOKEN = {
    "title": "Continuation Token",
    "type": "string",
    "description": "Present when more results follow: send the same body again with "
                   "`?continuationToken=<this>` for the next page.",
}
def _object(properties: Schema, required: list[str] | None = None, closed: bool = True,
            **extra: object) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _keys_request(title: str, key: str, description: str, repeats: str) -> Schema:
    # As in Taskcluster's input schemas, a missing list is the empty list.
    return _object({key: {**STRINGS, "default": [], "description": description}}, required=[],
                   title=title, description=f"`{key}` to look up; {repeats}")


def _page(title: str, key: str, items: Schema) -> Schema:
    return _object({key: {"type": "array", "uniqueItems": True, "items": items},
                    "continuationToken": CONTINUATION_TOKEN}, required=[key], title=title)


TASK = _object(
    {
        "provisionerId": STRING, "workerType": STRING, "taskQueueId": STRING,
        "schedulerId": STRING, "projectId": STRING, "taskGroupId": STRING,
        "dependencies": STRINGS, "requires": STRING, "routes": STRINGS, "priority": STRING,
        "retries": {"type": "integer"}, "created": TIMESTAMP, "deadline": TIMESTAMP,
        "expires": TIMESTAMP, "scopes": STRINGS, "payload": {"type": "object"},
        "metadata": {"type": "object"}, "tags": {"type": "object"}, "extra": {"type": "object"},
    },
    required=["provisionerId", "workerType", "taskQueueId", "schedulerId", "taskGroupId",
              "dependencies", "requires", "routes", "priority", "retries", "created",
              "deadline", "scopes", "payload", "metadata", "tags", "extra"],
    # The definition is passed through exactly as the queue returned it.
    closed=False,
    title="Task Definition",
    description="A task definition exactly as `queue.task` returns it.",
)

RUN = _object(
    {
        "runId": {"type": "integer", "minimum": 0}, "state": {"enum": list(RUN_STATES)},
        "reasonCreated": STRING, "reasonResolved": STRING, "workerGroup": STRING,
        "workerId": STRING, "takenUntil": TIMESTAMP, "scheduled": TIMESTAMP,
        "started": TIMESTAMP, "resolved": TIMESTAMP,
    },
    required=["runId", "state", "reasonCreated", "scheduled"],
    title="Run",
)

TASK_STATUS = _object(
    {
        "taskId": STRING, "provisionerId": STRING, "workerType": STRING,
        "taskQueueId": STRING, "schedulerId": STRING, "projectId": STRING,
        "taskGroupId": STRING, "priority": STRING, "deadline": TIMESTAMP, "expires": TIMESTAMP,
        "retriesLeft": {"type": "integer", "minimum": 0},
        "state": {"enum": list(TASK_STATES)},
        "runs": {"type": "array", "items": RUN},
    },
    title="Task Status",
    description="A task's status exactly as `queue.status` returns it.",
)

INDEXED_TASK = _object(
    {
        "namespace": {**STRING, "description": "The index path, exactly as it was asked for."},
        "taskId": STRING, "rank": {"type": "number"}, "data": {"type": "object"},
        "expires": TIMESTAMP,
    },
    title="Indexed Task",
)

LABELS_REQUEST = _object(
    {
        "labels": {**STRINGS, "description": "Labels (`tags.label`, else `metadata.name`)."},
        "filter": _object(
            {"projectId": STRING, "schedulerId": STRING, "taskQueueId": STRING,
             "tags": {"type": "object", "additionalProperties": STRING}},
            required=[],
            description="Only tasks that match every field given; `tags` by containment."),
    },
    required=["labels"],
    title="Label Statuses Request",
)

LABELS_RESPONSE = _object(
    {
        "mapping": {"type": "object", "additionalProperties": {
            "$ref": "../../queue/v1/task-status.json#"}},
        "continuationToken": CONTINUATION_TOKEN,
    },
    required=["mapping"],
    title="Label Statuses",
    description="For each label that has a task: the status of its newest task.",
)


_NULLABLE_TIME = {"oneOf": [TIMESTAMP, {"type": "null"}]}
_NULLABLE_TEXT = {"type": ["string", "null"]}
_INTEGER = {"type": "integer"}
_NULLABLE_INTEGER = {"type": ["integer", "null"]}
MIRROR_GAP = _object(
    {
        "started": TIMESTAMP, "ended": _NULLABLE_TIME, "reason": STRING,
        "follower": _NULLABLE_TEXT, "detail": _NULLABLE_TEXT, "repairedAt": _NULLABLE_TIME,
        "tasksRepaired": _NULLABLE_INTEGER,
    },
    title="Mirror Gap",
    description="A period in which messages may have been lost, and its repair.",
)
MIRROR_FOLLOWER = _object(
    {
        "name": STRING, "queueName": STRING, "started": TIMESTAMP, "lastSeen": TIMESTAMP,
        "consuming": {"type": "boolean"}, "messages": _INTEGER,
    },
    title="Mirror Follower",
)
MIRROR_RESPONSE = _object(
    {
        "queueName": STRING, "started": TIMESTAMP, "lastMessage": _NULLABLE_TIME,
        "lastStatusTime": _NULLABLE_TIME, "lastExchange": _NULLABLE_TEXT,
        "lastRoutingKey": _NULLABLE_TEXT, "lagMs": {"type": ["number", "null"]},
        "messages": _INTEGER, "errors": _INTEGER,
        "batches": _INTEGER, "waitingDefinitions": _INTEGER,
        "verified": {"type": "boolean", "description": "The last verification found nothing "
                     "and no gap is unrepaired: a decision task may trust this mirror."},
        "lastVerified": _NULLABLE_TIME, "drift": _NULLABLE_INTEGER,
        "differences": STRINGS, "gapCount": _INTEGER, "unrepairedGaps": _INTEGER,
        "lastReconciled": _NULLABLE_TIME, "reconcilePasses": _INTEGER,
        "reconcileCalls": _INTEGER, "tasksRepaired": _INTEGER, "tasksUnknown": _INTEGER,
        "gaps": {"type": "array", "items": MIRROR_GAP},
        "followers": {"type": "array", "items": MIRROR_FOLLOWER},
    },
    title="Mirror State",
    description="How fresh and how complete a mirror is, as `tcgraph follow` recorded it.",
)


# --- references ----------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One method of an API reference (an entry of type `function`)."""

    name: str
    method: str
    route: str  # under /api/<serviceName>/<apiVersion>; <arg> marks a path argument
    title: str
    description: str
    stability: str = "stable"
    args: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    input: str | None = None
    output: str | None = None

    def as_json(self, max_page_size: int = DEFAULT_MAX_PAGE_SIZE) -> dict[str, object]:
        """The entry, its description naming the page size the server was given."""
        description = self.description.replace(_PAGE_SIZE, str(max_page_size))
        entry: dict[str, object] = {
            "type": "function", "method": self.method, "route": self.route,
            "query": list(self.query), "args": list(self.args), "name": self.name,
            "stability": self.stability, "title": self.title, "description": description,
        }
        if self.input is not None:
            entry["input"] = self.input
        if self.output is not None:
            entry["output"] = self.output
        return entry


@dataclass(frozen=True)
class Service:
    """The routes tcgraph answers under /api/<name>/v1, and the schemas they use."""

    name: str
    title: str
    description: str
    entries: tuple[Entry, ...]
    schemas: dict[str, Schema] = field(default_factory=dict)  # "v1/x.json" -> JSON schema

    def reference(self, root: str,
                  max_page_size: int = DEFAULT_MAX_PAGE_SIZE) -> dict[str, object]:
        """The API reference document, Taskcluster's `api-reference-v0` format."""
        return {
            "$schema": f"{root}/schemas/common/api-reference-v0.json#",
            "apiVersion": API_VERSION,
            "serviceName": self.name,
            "title": self.title,
            "description": self.description,
            "entries": [entry.as_json(max_page_size) for entry in self.entries],
        }


# Stands for the served `max_page_size` in descriptions (Entry.as_json writes it).
_PAGE_SIZE = "<max_page_size>"
_PAGES = (f"It answers at most `limit` results (default and maximum: {_PAGE_SIZE}; a larger "
          f"`limit` is {_PAGE_SIZE}) a page; when more follow, the reply has a "
          "`continuationToken`: send the same body again with `?continuationToken=` for the "
          "next page.")
_LIST = ("In Taskcluster's order (PostgreSQL's en-US collation), at most `limit` a page "
         f"(default and maximum: {_PAGE_SIZE}); when more follow, the reply has a "
         "`continuationToken` for `?continuationToken=`.")
_PING = "Respond without doing anything: the service is up."

STATUS_AND_TASK = _object({"status": {"$ref": "task-status.json#"}, "task": {"$ref": "task.json#"}})
TASK_GROUP = {"taskGroupId": STRING, "schedulerId": STRING, "expires": TIMESTAMP}

SERVICES = {
    service.name: service for service in (
        Service(
            name="queue",
            title="Queue (read-only, served by tcgraph)",
            description="The queue's read methods, answered from tcgraph's store with "
                        "Taskcluster's routes, checks and shapes. Unknown task ids are left out "
                        "of batch replies.",
            entries=(
                Entry("ping", "get", "/ping", "Ping Server", _PING),
                Entry("task", "get", "/task/<taskId>", "Get Task Definition",
                      "The task's definition, as stored.", args=("taskId",),
                      output="v1/task.json#"),
                Entry("status", "get", "/task/<taskId>/status", "Get task status",
                      "The task's status.", args=("taskId",),
                      output="v1/task-status-response.json#"),
                Entry("listTaskGroup", "get", "/task-group/<taskGroupId>/list", "List Task Group",
                      "The task group, and the status and definition of its tasks. " + _LIST,
                      args=("taskGroupId",), query=("continuationToken", "limit"),
                      output="v1/list-task-group-response.json#"),
                Entry("getTaskGroup", "get", "/task-group/<taskGroupId>", "Get Task Group",
                      "The task group: its schedulerId and expiry.", args=("taskGroupId",),
                      output="v1/task-group-response.json#"),
                Entry("listDependentTasks", "get", "/task/<taskId>/dependents",
                      "List Dependent Tasks",
                      "The status and definition of the tasks that depend on a task. " + _LIST,
                      args=("taskId",), query=("continuationToken", "limit"),
                      output="v1/list-dependent-tasks-response.json#"),
                Entry("tasks", "post", "/tasks", "Get multiple task definitions",
                      "The definition of each task that exists among `taskIds`. " + _PAGES,
                      stability="experimental", query=("continuationToken", "limit"),
                      input="v1/tasks-request.json#", output="v1/tasks-response.json#"),
                Entry("statuses", "post", "/tasks/status", "Get multiple task statuses",
                      "The status of each task that exists among `taskIds`. " + _PAGES,
                      stability="experimental", query=("continuationToken", "limit"),
                      input="v1/tasks-request.json#",
                      output="v1/tasks-statuses-response.json#"),
            ),
            schemas={
                "v1/task.json": TASK,
                "v1/task-status.json": TASK_STATUS,
                "v1/task-status-response.json": _object(
                    {"status": {"$ref": "task-status.json#"}}, title="Task Status Response"),
                "v1/tasks-request.json": _keys_request(
                    "Tasks Request", "taskIds", "Task ids.", "repeated ones are answered once."),
                "v1/tasks-response.json": _page("Tasks Response", "tasks", _object(
                    {"taskId": STRING, "task": {"$ref": "task.json#"}})),
                "v1/tasks-statuses-response.json": _page("Tasks Statuses Response", "statuses",
                                                         _object({"taskId": STRING, "status": {
                                                             "$ref": "task-status.json#"}})),
                "v1/task-group-response.json": _object(TASK_GROUP, title="Task Group Response"),
                "v1/list-task-group-response.json": _object(
                    {**TASK_GROUP, **_page("", "tasks", STATUS_AND_TASK)["properties"]},
                    required=[*TASK_GROUP, "tasks"], title="List Task Group Response"),
                "v1/list-dependent-tasks-response.json": _object(
                    {"taskId": STRING, **_page("", "tasks", STATUS_AND_TASK)["properties"]},
                    required=["taskId", "tasks"], title="List Dependent Tasks Response"),
            },
        ),
        Service(
            name="index",
            title="Index (read-only, served by tcgraph)",
            description="The index's read methods, answered from tcgraph's store with "
                        "Taskcluster's routes, checks and shapes. Absent and expired paths are "
                        "left out of batch replies.",
            entries=(
                Entry("ping", "get", "/ping", "Ping Server", _PING),
                Entry("findTask", "get", "/task/<indexPath>", "Find Indexed Task",
                      "The unexpired task at an index path.", args=("indexPath",),
                      output="v1/indexed-task-response.json#"),
                Entry("findTasksAtIndex", "post", "/tasks/indexes", "Find tasks at indexes",
                      "The unexpired task at each of `indexes`; `namespace` is the path "
                      "exactly as asked. " + _PAGES,
                      stability="experimental", query=("continuationToken", "limit"),
                      input="v1/list-tasks-at-index.json#",
                      output="v1/list-tasks-response.json#"),
                Entry("listNamespaces", "get", "/namespaces/<namespace>", "List Namespaces",
                      "The unexpired namespaces directly under `namespace` (`\"\"`: the root). "
                      + _LIST, args=("namespace",), query=("continuationToken", "limit"),
                      output="v1/list-namespaces-response.json#"),
                Entry("listTasks", "get", "/tasks/<namespace>", "List Tasks",
                      "The unexpired entries directly in `namespace`. " + _LIST,
                      args=("namespace",), query=("continuationToken", "limit"),
                      output="v1/list-tasks-response.json#"),
            ),
            schemas={
                "v1/indexed-task-response.json": INDEXED_TASK,
                "v1/list-tasks-at-index.json": _keys_request(
                    "List Tasks At Index Request", "indexes", "Index paths.",
                    "a path asked twice and found fails the request with a 500, as in "
                    "Taskcluster."),
                "v1/list-tasks-response.json": _page(
                    "List Tasks Response", "tasks", {"$ref": "indexed-task-response.json#"}),
                "v1/list-namespaces-response.json": _page(
                    "List Namespaces Response", "namespaces",
                    _object({"namespace": STRING, "name": STRING, "expires": TIMESTAMP})),
            },
        ),
        Service(
            name="tcgraph",
            title="tcgraph",
            description="What tcgraph adds to Taskcluster's API: lookups by label (RFC 188). "
                        "The GraphQL endpoint is `/graphql`; its schema is published "
                        "beside this reference as `schema.graphql`.",
            entries=(
                Entry("labelStatuses", "post", "/labels/status", "Status of latest task by label",
                      "For each label, the status of its newest task (by creation time) among "
                      "those matching `filter`; labels with no such task are left out. "
                      + _PAGES,
                      stability="experimental", query=("continuationToken", "limit"),
                      input="v1/labels-status-request.json#",
                      output="v1/labels-status-response.json#"),
                Entry("mirror", "get", "/mirror", "How fresh this mirror is",
                      "What `tcgraph follow` recorded: the newest message committed, its "
                      "status time and lag, and the messages and errors counted. "
                      "404 when this database is not a mirror.",
                      stability="experimental", output="v1/mirror-response.json#"),
            ),
            schemas={
                "v1/labels-status-request.json": LABELS_REQUEST,
                "v1/labels-status-response.json": LABELS_RESPONSE,
                "v1/mirror-response.json": MIRROR_RESPONSE,
            },
        ),
    )
}


def manifest_json(root: str) -> dict[str, object]:
    """RFC 128's manifest: every reference document, as a fully-qualified URL."""
    references = [f"{root}/references/{name}/{API_VERSION}/api.json" for name in SERVICES]
    references.append(f"{root}/references/tcgraph/{API_VERSION}/schema.graphql")
    return {"version": 1, "references": references}


def schema_json(root: str, service: str, name: str) -> dict[str, object]:
    """A served schema, with the `$id` its relative `$ref`s resolve against."""
    found = SERVICES[service].schemas[name]
    return {"$schema": JSON_SCHEMA, "$id": f"{root}/schemas/{service}/{name}#", **found}


# --- routes --------------------------------------------------------------


async def manifest(request: Request) -> JSONResponse:
    """`/references/manifest.json`."""
    return JSONResponse(manifest_json(root_url(request)))


async def api_reference(request: Request) -> JSONResponse:
    """`/references/<service>/v1/api.json`."""
    service = SERVICES.get(request.path_params["service"])
    if service is None:
        raise HTTPException(status_code=404)
    return JSONResponse(service.reference(root_url(request),
                                          request.app.state.settings.max_page_size))


@functools.cache
def _sdl() -> str:
    return sdl()


async def graphql_schema(request: Request) -> PlainTextResponse:
    """`/references/tcgraph/v1/schema.graphql`: the GraphQL schema (SDL)."""
    return PlainTextResponse(_sdl())


async def schema(request: Request) -> JSONResponse:
    """`/schemas/<service>/v1/<name>.json`."""
    service = SERVICES.get(request.path_params["service"])
    name = f"{API_VERSION}/{request.path_params['name']}"
    if service is None or name not in service.schemas:
        raise HTTPException(status_code=404)
    return JSONResponse(schema_json(root_url(request), service.name, name))


routes = [
    Route("/references/manifest.json", manifest, methods=["GET"]),
    Route(f"/references/tcgraph/{API_VERSION}/schema.graphql", graphql_schema, methods=["GET"]),
    Route(f"/references/{{service}}/{API_VERSION}/api.json", api_reference, methods=["GET"]),
    Route(f"/schemas/{{service}}/{API_VERSION}/{{name}}", schema, methods=["GET"]),
]
