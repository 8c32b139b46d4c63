"""tcgraph's own REST method (RFC 188, which Taskcluster never built): label -> status of
its newest task, paged like the queue's batch methods."""

from __future__ import annotations

from starlette.routing import Route

from tcgraph import model
from tcgraph.api import recent_reads
from tcgraph.api.rest import shapes
from tcgraph.api.rest.bodies import body_object, key_list
from tcgraph.api.rest.endpoint import PAGED, Call, Method, routes
from tcgraph.api.rest.errors import ApiError
from tcgraph.api.rest.pages import found_page, loading
from tcgraph.api.types.tasks import TaskFilter

PREFIX = "/api/tcgraph/v1"
REQUEST = "labels-status-request.json"
_FILTER_FIELDS = {"projectId": "project_id", "schedulerId": "scheduler_id",
                  "taskQueueId": "task_queue_id", "tags": "tags"}


def _task_filter(body: dict[str, object]) -> model.TaskFilter:
    given = body.get("filter")
    if given is None:
        return model.TaskFilter()
    if not isinstance(given, dict) or set(given) - set(_FILTER_FIELDS):
        raise ApiError("InputValidationError",
                       f"`filter` must be an object with some of: {', '.join(_FILTER_FIELDS)}")
    for name in ("projectId", "schedulerId", "taskQueueId"):
        if given.get(name) is not None and not isinstance(given[name], str):
            raise ApiError("InputValidationError", f"`filter.{name}` must be a string")
    # GraphQL's filter input checks the tags and writes them the way the SQL matches them.
    return TaskFilter(**{_FILTER_FIELDS[name]: value for name, value in given.items()}).to_model()


async def label_statuses(call: Call) -> object:
    """For each label, the status of its newest task (among those matching `filter`)."""
    body = body_object(call, "tcgraph", REQUEST, {"labels", "filter"})
    labels = list(dict.fromkeys(key_list(call, "tcgraph", REQUEST, body, "labels")))
    recent_reads.note(call.context.db.pool, recent_reads.LABEL, labels)
    task_filter = _task_filter(body)
    page = await found_page(call, labels, loading(call, call.context.loaders.latest,
                                                  lambda label: (label, task_filter)))
    return page.reply({"mapping": {f.key: shapes.status_json(f.value) for f in page.rows}})


METHODS = (
    Method("labelStatuses", "POST", "/labels/status", label_statuses, query=PAGED),
)

ROUTES: list[Route] = routes(PREFIX, METHODS)
