"""Taskcluster's read API for tasks, statuses and the index, answered from tcgraph's store.

Tools that call Taskcluster through the `taskcluster` client (taskgraph's optimizer among
them) work unchanged with their root URL pointed here: the routes, bodies, page tokens,
timestamps and error replies are Taskcluster's. One route is tcgraph's own: RFC 188's
label -> status of the latest task, which Taskcluster never built.

Every lookup goes through the request's loaders (`Context.create`), the DataLoaders and SQL
that GraphQL uses. A batch request is answered a page at a time, and each page asks the
loaders for its own slice of the request's keys only: a page of 1000 ids is one statement
however long the list. The continuation token is the offset of the next slice, bound to the
body it belongs to, so the server keeps no state between pages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tcgraph import model
from tcgraph.api.context import Context
from tcgraph.api.types import TaskFilter
from tcgraph.errors import BadCursor, ClientError, LimitExceeded, ServiceUnavailable
from tcgraph.timefmt import format_time

logger = logging.getLogger(__name__)

QUEUE = "/api/queue/v1"
INDEX = "/api/index/v1"
TCGRAPH = "/api/tcgraph/v1"

# Taskcluster's error codes and the HTTP status of each (from its API library).
STATUS_OF_CODE = {
    "MalformedPayload": 400,  # the body is not JSON
    "InvalidRequestArguments": 400,  # a query-string parameter is wrong
    "InputValidationError": 400,  # the body does not have the documented shape
    "InputError": 400,  # the body has the shape, but asks for too much
    "ResourceNotFound": 404,
    "InternalServerError": 500,
    # Not one of Taskcluster's codes: its clients retry any 5xx, and this one says "later".
    "ServiceUnavailable": 503,
}

# Digits only, and few enough that int() is cheap and never refuses them.
_LIMIT = re.compile(r"[0-9]{1,9}")
# A token is the offset of the next slice of keys and a digest of the request it belongs to.
_TOKEN = struct.Struct(">I8s")
_DIGEST_SIZE = 8


class ApiError(Exception):
    """A reply in Taskcluster's error shape; `code` is one of `STATUS_OF_CODE`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def wrap(cls, code: str, error: ClientError) -> "ApiError":
        """The same complaint as the GraphQL endpoint makes, under Taskcluster's `code`."""
        return cls(code, error.message)


class JSON(Response):
    """JSON through orjson, so stored documents go out as `orjson.Fragment`s, never re-encoded."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


# --- Taskcluster's shapes ------------------------------------------------


def run_json(run: model.Run) -> dict[str, object]:
    """One entry of `queue.status`'s `runs`."""
    fields: dict[str, object | None] = {
        "runId": run.run_id,
        "state": run.state.value,
        "reasonCreated": run.reason_created,
        "reasonResolved": run.reason_resolved,
        "workerGroup": run.worker_group,
        "workerId": run.worker_id,
        # Run timestamps are stored in Taskcluster's format already.
        "takenUntil": run.taken_until,
        "scheduled": run.scheduled,
        "started": run.started,
        "resolved": run.resolved,
    }
    # The queue leaves out what a run does not have yet rather than writing null.
    return {name: value for name, value in fields.items() if value is not None}


def status_json(task: model.Task) -> dict[str, object]:
    """The task's status exactly as `queue.status` returns it (inside `{"status": ...}`)."""
    return {
        "taskId": task.task_id,
        "provisionerId": task.provisioner_id,
        "workerType": task.worker_type,
        "taskQueueId": task.task_queue_id,
        "schedulerId": task.scheduler_id,
        "projectId": task.project_id,
        "taskGroupId": task.task_group_id,
        "priority": task.priority,
        "deadline": format_time(task.deadline),
        "expires": format_time(task.expires),
        "retriesLeft": task.retries_left,
        "state": task.state.value,
        "runs": [run_json(run) for run in task.runs],
    }


def indexed_task_json(entry: model.IndexEntry, path: str) -> dict[str, object]:
    """An index entry as `index.findTask` returns it, its `namespace` being `path` as asked."""
    # The index stores ranks as integers; a float column must not turn 41 into 41.0.
    rank = int(entry.rank) if entry.rank.is_integer() else entry.rank
    return {
        "namespace": path,
        "taskId": entry.task_id,
        "rank": rank,
        "data": orjson.Fragment(entry.data),
        "expires": format_time(entry.expires),
    }


# --- one call ------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request to a method, as its handler sees it."""

    request: Request
    context: Context
    method: str  # Taskcluster's name for the method, reported in `requestInfo`
    payload: object  # the JSON body; `{}` for a GET


Handler = Callable[[Call], Awaitable[object]]


def _error(method: str, request: Request, payload: object, error: ApiError) -> JSON:
    status = STATUS_OF_CODE[error.code]
    now = format_time(datetime.now(timezone.utc))
    # As Taskcluster does, the message ends with a summary the client shows in its exception.
    message = (f"{error.message}\n\n---\n\n* method:     {method}\n* errorCode:  {error.code}"
               f"\n* statusCode: {status}\n* time:       {now}")
    request_info = {"method": method, "params": dict(request.path_params), "payload": payload,
                    "time": now}
    return JSON({"code": error.code, "message": message, "requestInfo": request_info},
                status_code=status)


def _parse_body(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError("MalformedPayload", f"the request body is not JSON: {e}") from None


def endpoint(method: str, handler: Handler, *,
             reads_body: bool) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that runs `handler` with a fresh Context and replies as Taskcluster."""

    async def serve(request: Request) -> Response:
        payload: object = {}
        context: Context | None = None
        try:
            if reads_body:
                payload = _parse_body(await request.body())
            context = Context.create(request.app.state.pool, request.app.state.settings,
                                     request=request)
            response: Response = JSON(await handler(Call(request, context, method, payload)))
        except ApiError as e:
            response = _error(method, request, payload, e)
        except ClientError as e:
            response = _error(method, request, payload, ApiError.wrap("InputValidationError", e))
        except ServiceUnavailable as e:
            response = _error(method, request, payload, ApiError("ServiceUnavailable", e.message))
        except Exception:
            # Whatever broke stays in the log, under an id the client can quote.
            incident = uuid.uuid4()
            logger.exception("incident %s: %s %s failed", incident, request.method,
                             request.url.path)
            response = _error(method, request, payload, ApiError(
                "InternalServerError", f"Internal Server Error, incidentId: {incident}"))
        if context is not None and request.app.state.settings.explain:
            response.headers["Tcgraph-Sql"] = orjson.dumps(context.db.stats.as_dict()).decode()
        return response

    return serve


# --- batch pages ---------------------------------------------------------


@dataclass(frozen=True)
class KeySlice:
    """The keys one page answers, and the token for the next page (None on the last)."""

    keys: list[str]
    continuation_token: str | None

    def reply(self, body: dict[str, object]) -> dict[str, object]:
        """`body`, with `continuationToken` when another page follows."""
        if self.continuation_token is not None:
            body["continuationToken"] = self.continuation_token
        return body


def _body_object(call: Call, allowed: set[str]) -> dict[str, object]:
    body = call.payload
    if not isinstance(body, dict):
        raise ApiError("InputValidationError",
                       f"the request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError("InputValidationError",
                       f"the request body has unknown keys: {', '.join(unknown)} "
                       f"(allowed: {', '.join(sorted(allowed))})")
    return body


def _key_list(call: Call, body: dict[str, object], field: str) -> list[str]:
    """The body's list of keys, checked and without repeats (the first one of each counts)."""
    if field not in body:
        raise ApiError("InputValidationError", f"the request body has no `{field}` list")
    values = body[field]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ApiError("InputValidationError", f"`{field}` must be a list of strings")
    maximum = call.context.settings.max_keys
    if len(values) > maximum:
        raise ApiError.wrap("InputError", LimitExceeded(
            "max_keys", len(values), maximum, f"`{field}` has too many keys"))
    # Taskcluster answers each key once: its replies are lists of unique items.
    return list(dict.fromkeys(values))


def _limit(call: Call) -> int:
    maximum = call.context.settings.max_page_size
    raw = call.request.query_params.get("limit")
    if raw is None:
        return maximum
    if not _LIMIT.fullmatch(raw) or int(raw) == 0:
        raise ApiError("InvalidRequestArguments",
                       f"`limit` must be a whole number from 1 to {maximum}, got {raw!r}")
    if int(raw) > maximum:
        raise ApiError.wrap("InvalidRequestArguments", LimitExceeded(
            "max_page_size", int(raw), maximum, "`limit` is too large"))
    return int(raw)


def _digest(method: str, keys: list[str], bound_to: object) -> bytes:
    """What a token must match: the method and everything in the body that picks the keys."""
    return hashlib.blake2b(orjson.dumps([method, keys, bound_to]),
                           digest_size=_DIGEST_SIZE).digest()


def encode_token(offset: int, digest: bytes) -> str:
    """The opaque continuation token for the slice of keys starting at `offset`."""
    return base64.urlsafe_b64encode(_TOKEN.pack(offset, digest)).decode().rstrip("=")


def _offset(token: str, digest: bytes, count: int) -> int:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        offset, belongs_to = _TOKEN.unpack(raw)
    except (binascii.Error, ValueError, struct.error):
        raise ApiError.wrap("InvalidRequestArguments", BadCursor(
            f"the continuationToken {token!r} is malformed", cursor=token)) from None
    if belongs_to != digest or not 0 < offset < count:
        raise ApiError.wrap("InvalidRequestArguments", BadCursor(
            f"the continuationToken {token!r} belongs to another request: send it with the "
            "same body as the request that returned it", cursor=token))
    return offset


def key_slice(call: Call, keys: list[str], bound_to: object = None) -> KeySlice:
    """The slice of `keys` this page answers: `?limit=` keys from `?continuationToken=`."""
    limit = _limit(call)
    digest = _digest(call.method, keys, bound_to)
    token = call.request.query_params.get("continuationToken")
    start = _offset(token, digest, len(keys)) if token else 0
    end = start + limit
    return KeySlice(keys[start:end], encode_token(end, digest) if end < len(keys) else None)


def _task_filter(body: dict[str, object]) -> model.TaskFilter:
    given = body.get("filter")
    if given is None:
        return model.TaskFilter()
    fields = {"projectId": "project_id", "schedulerId": "scheduler_id",
              "taskQueueId": "task_queue_id", "tags": "tags"}
    if not isinstance(given, dict) or set(given) - set(fields):
        raise ApiError("InputValidationError",
                       f"`filter` must be an object with some of: {', '.join(fields)}")
    for name in ("projectId", "schedulerId", "taskQueueId"):
        if given.get(name) is not None and not isinstance(given[name], str):
            raise ApiError("InputValidationError", f"`filter.{name}` must be a string")
    # GraphQL's filter input checks the tags and writes them the way the SQL matches them.
    return TaskFilter(**{fields[name]: value for name, value in given.items()}).to_model()


# --- the methods ---------------------------------------------------------


def _not_found(what: str) -> ApiError:
    return ApiError("ResourceNotFound", what)


async def task(call: Call) -> object:
    """`queue.task`: the definition as stored."""
    task_id = call.request.path_params["taskId"]
    definition = await call.context.loaders.definition.load(task_id)
    if definition is None:
        raise _not_found(f"`{task_id}` does not correspond to a task that exists.")
    return orjson.Fragment(definition)


async def status(call: Call) -> object:
    """`queue.status`."""
    task_id = call.request.path_params["taskId"]
    found = await call.context.loaders.task.load(task_id)
    if found is None:
        raise _not_found(f"`{task_id}` does not correspond to a task that exists.")
    return {"status": status_json(found)}


async def tasks(call: Call) -> object:
    """`queue.tasks`: definitions of the tasks that exist among `taskIds`."""
    body = _body_object(call, {"taskIds"})
    page = key_slice(call, _key_list(call, body, "taskIds"))
    found = await call.context.loaders.definition.load_many(page.keys)
    return page.reply({"tasks": [{"taskId": task_id, "task": orjson.Fragment(definition)}
                                 for task_id, definition in zip(page.keys, found)
                                 if definition is not None]})


async def statuses(call: Call) -> object:
    """`queue.statuses`: statuses of the tasks that exist among `taskIds`."""
    body = _body_object(call, {"taskIds"})
    page = key_slice(call, _key_list(call, body, "taskIds"))
    found = await call.context.loaders.task.load_many(page.keys)
    return page.reply({"statuses": [{"taskId": t.task_id, "status": status_json(t)}
                                    for t in found if t is not None]})


async def find_task(call: Call) -> object:
    """`index.findTask`: the unexpired entry at one path."""
    path = call.request.path_params["indexPath"]
    found = await call.context.loaders.index_entry.load(model.split_index_path(path))
    if found is None:
        raise _not_found(f"Indexed task not found: `{path}`")
    return indexed_task_json(found, path)


async def find_tasks_at_index(call: Call) -> object:
    """`index.findTasksAtIndex`: the unexpired entries among `indexes`."""
    body = _body_object(call, {"indexes"})
    page = key_slice(call, _key_list(call, body, "indexes"))
    found = await call.context.loaders.index_entry.load_many(
        [model.split_index_path(path) for path in page.keys])
    return page.reply({"tasks": [indexed_task_json(entry, path)
                                 for entry, path in zip(found, page.keys) if entry is not None]})


async def label_statuses(call: Call) -> object:
    """RFC 188: for each label, the status of its newest task (that matches `filter`)."""
    body = _body_object(call, {"labels", "filter"})
    labels = _key_list(call, body, "labels")
    task_filter = _task_filter(body)
    page = key_slice(call, labels, bound_to=task_filter)
    found = await call.context.loaders.latest.load_many(
        [(label, task_filter) for label in page.keys])
    return page.reply({"mapping": {label: status_json(t)
                                   for label, t in zip(page.keys, found) if t is not None}})


routes = [
    Route(f"{QUEUE}/task/{{taskId}}", endpoint("task", task, reads_body=False), methods=["GET"]),
    Route(f"{QUEUE}/task/{{taskId}}/status", endpoint("status", status, reads_body=False),
          methods=["GET"]),
    Route(f"{QUEUE}/tasks", endpoint("tasks", tasks, reads_body=True), methods=["POST"]),
    Route(f"{QUEUE}/tasks/status", endpoint("statuses", statuses, reads_body=True),
          methods=["POST"]),
    Route(f"{INDEX}/task/{{indexPath}}", endpoint("findTask", find_task, reads_body=False),
          methods=["GET"]),
    Route(f"{INDEX}/tasks/indexes",
          endpoint("findTasksAtIndex", find_tasks_at_index, reads_body=True), methods=["POST"]),
    Route(f"{TCGRAPH}/labels/status", endpoint("labelStatuses", label_statuses, reads_body=True),
          methods=["POST"]),
]
