"""The queue's read methods, answered from tcgraph's store through the request's loaders."""

from __future__ import annotations

from starlette.routing import Route

from tcgraph import model
from tcgraph.api.rest import shapes
from tcgraph.api.rest.bodies import body_object, key_list
from tcgraph.api.rest.endpoint import PAGED, SLUGID, Call, Method, ping, routes
from tcgraph.api.rest.errors import ApiError
from tcgraph.api.rest.pages import Listing, found_page, listing, loading

PREFIX = "/api/queue/v1"
TASKS_REQUEST = "tasks-request.json"


async def task(call: Call) -> object:
    """`queue.task`: the definition as stored."""
    task_id = call.param("taskId")
    definition = await call.context.loaders.definition.load(task_id)
    if definition is None:
        raise ApiError("ResourceNotFound", f"`{task_id}` does not correspond to a task that "
                                           "exists.\nAre you sure this task has already been "
                                           "submitted?")
    return shapes.definition_json(definition)


async def status(call: Call) -> object:
    """`queue.status`."""
    task_id = call.param("taskId")
    found = await call.context.loaders.task.load(task_id)
    if found is None:
        raise ApiError("ResourceNotFound", f"`{task_id}` does not correspond to a task that "
                                           "exists.\nAre you sure this task exists?")
    return {"status": shapes.status_json(found)}


def _task_ids(call: Call) -> list[str]:
    body = body_object(call, "queue", TASKS_REQUEST, {"taskIds"})
    # The queue looks the ids up with `= ANY(...)`: a repeated id is answered once.
    return list(dict.fromkeys(key_list(call, "queue", TASKS_REQUEST, body, "taskIds")))


async def tasks(call: Call) -> object:
    """`queue.tasks`: definitions of the tasks that exist among `taskIds`."""
    page = await found_page(call, _task_ids(call), loading(call, call.context.loaders.definition))
    return page.reply({"tasks": [{"taskId": f.key, "task": shapes.definition_json(f.value)}
                                 for f in page.rows]})


async def statuses(call: Call) -> object:
    """`queue.statuses`: statuses of the tasks that exist among `taskIds`."""
    page = await found_page(call, _task_ids(call), loading(call, call.context.loaders.task))
    return page.reply({"statuses": [{"taskId": f.key, "status": shapes.status_json(f.value)}
                                    for f in page.rows]})


def _no_group(group_id: str) -> ApiError:
    return ApiError("ResourceNotFound", f"No task-group with taskGroupId: `{group_id}`")


async def get_task_group(call: Call) -> object:
    """`queue.getTaskGroup`."""
    group_id = call.param("taskGroupId")
    group = await call.context.loaders.task_group.load(group_id)
    if group is None:
        raise _no_group(group_id)
    return shapes.task_group_json(group)


async def _with_definitions(call: Call, page: Listing[model.Task]) -> list[dict[str, object]]:
    """`{status, task}` for each task of a page (one statement for all their definitions)."""
    loaders = call.context.loaders
    definitions = await loaders.definition.load_many([t.task_id for t in page.rows])
    return [shapes.status_and_task_json(t, d) for t, d in zip(page.rows, definitions, strict=False)
            if d is not None]


async def list_task_group(call: Call) -> object:
    """`queue.listTaskGroup`: the group, and a page of its tasks in Taskcluster's order."""
    group_id = call.param("taskGroupId")
    loaders = call.context.loaders
    group = await loaders.task_group.load(group_id)
    if group is None:
        raise _no_group(group_id)
    page = await listing(call, loaders.task_group_page_en_us, group_id, lambda t: t.task_id)
    return page.reply({**shapes.task_group_json(group),
                       "tasks": await _with_definitions(call, page)})


async def list_dependent_tasks(call: Call) -> object:
    """`queue.listDependentTasks`: a page of the tasks that depend on a task."""
    task_id = call.param("taskId")
    loaders = call.context.loaders
    if await loaders.task.load(task_id) is None:
        raise ApiError("ResourceNotFound", f"Task with taskId: `{task_id}` was not found")
    page = await listing(call, loaders.dependents_page_en_us, task_id, lambda t: t.task_id)
    return page.reply({"taskId": task_id, "tasks": await _with_definitions(call, page)})


METHODS = (
    Method("ping", "GET", "/ping", ping),
    Method("task", "GET", "/task/{taskId}", task, params={"taskId": SLUGID}),
    Method("status", "GET", "/task/{taskId}/status", status, params={"taskId": SLUGID}),
    Method("listTaskGroup", "GET", "/task-group/{taskGroupId}/list", list_task_group,
           params={"taskGroupId": SLUGID}, query=PAGED),
    Method("getTaskGroup", "GET", "/task-group/{taskGroupId}", get_task_group,
           params={"taskGroupId": SLUGID}),
    Method("listDependentTasks", "GET", "/task/{taskId}/dependents", list_dependent_tasks,
           params={"taskId": SLUGID}, query=PAGED),
    Method("tasks", "POST", "/tasks", tasks, query=PAGED),
    Method("statuses", "POST", "/tasks/status", statuses, query=PAGED),
)

ROUTES: list[Route] = routes(PREFIX, METHODS)
