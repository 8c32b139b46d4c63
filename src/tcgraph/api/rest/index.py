"""The index's read methods, answered from tcgraph's store through the request's loaders."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from starlette.routing import Route

from tcgraph import model
from tcgraph.api import recent_reads
from tcgraph.api.references import root_url
from tcgraph.api.rest import shapes
from tcgraph.api.rest.bodies import body_object, key_list
from tcgraph.api.rest.endpoint import INDEX_PATH, NAMESPACE, PAGED, Call, Method, ping, routes
from tcgraph.api.rest.errors import ApiError
from tcgraph.api.rest.pages import Found, found_page, listing, loading

PREFIX = "/api/index/v1"


async def find_task(call: Call) -> object:
    """`index.findTask`: the unexpired entry at one path."""
    path = call.param("indexPath")
    recent_reads.note(call.context.db.pool, recent_reads.INDEX_PATH, [path])
    found = await call.context.loaders.index_entry.load(model.split_index_path(path))
    if found is None:
        raise ApiError("ResourceNotFound", "Indexed task not found")
    return shapes.indexed_task_json(found, path)


def _repeated(items: Sequence[Found[model.IndexEntry]]) -> tuple[int, int] | None:
    """The pair of identical items Taskcluster's schema validator reports, if any: from the
    end, the first item equal to an earlier one, and the nearest such earlier one."""
    for i in range(len(items) - 1, 0, -1):
        for j in range(i - 1, -1, -1):
            if items[j].key == items[i].key:
                return j, i
    return None


async def find_tasks_at_index(call: Call) -> object:
    """`index.findTasksAtIndex`: the unexpired entries among `indexes`."""
    body = body_object(call, "index", "list-tasks-at-index.json", {"indexes"})
    paths = key_list(call, "index", "list-tasks-at-index.json", body, "indexes")
    recent_reads.note(call.context.db.pool, recent_reads.INDEX_PATH, paths)
    page = await found_page(call, paths, loading(call, call.context.loaders.index_entry,
                                                 model.split_index_path))
    repeated = _repeated(page.rows)
    if repeated is not None:
        # The index answers each path asked for; a path asked twice (and found) gives two
        # identical items, which its output schema forbids: Taskcluster fails with this 500.
        schema = f"{root_url(call.request)}/schemas/index/v1/list-tasks-response.json#"
        raise ApiError("InternalServerError", (
            f"Internal Server Error, incidentId {uuid.uuid4()}. Error (not shown in "
            "production):\n```\nError: Output schema validation error: \nSchema Validation "
            f"Failed!\nRejecting Schema: {schema}\nErrors:\n  * data/tasks must NOT have "
            f"duplicate items (items ## {repeated[0]} and {repeated[1]} are identical)\n```"))
    return page.reply({"tasks": [shapes.indexed_task_json(f.value, f.key) for f in page.rows]})


async def list_namespaces(call: Call) -> object:
    """`index.listNamespaces`: a page of a namespace's children, in Taskcluster's order."""
    page = await listing(call, call.context.loaders.child_namespaces_page_en_us,
                         call.param("namespace"), lambda n: n.path.rpartition(".")[2])
    return page.reply({"namespaces": [shapes.namespace_json(n) for n in page.rows]})


async def list_tasks(call: Call) -> object:
    """`index.listTasks`: a page of the entries directly in a namespace, in Taskcluster's order."""
    page = await listing(call, call.context.loaders.namespace_tasks_page_en_us,
                         call.param("namespace"), lambda e: e.name)
    return page.reply({"tasks": [shapes.indexed_task_json(e, e.path) for e in page.rows]})


METHODS = (
    Method("ping", "GET", "/ping", ping),
    Method("findTask", "GET", "/task/{indexPath}", find_task, params={"indexPath": INDEX_PATH}),
    Method("findTasksAtIndex", "POST", "/tasks/indexes", find_tasks_at_index, query=PAGED),
    Method("listNamespaces", "GET", "/namespaces/{namespace:path}", list_namespaces,
           params={"namespace": NAMESPACE}, query=PAGED),
    Method("listTasks", "GET", "/tasks/{namespace:path}", list_tasks,
           params={"namespace": NAMESPACE}, query=PAGED),
)

ROUTES: list[Route] = routes(PREFIX, METHODS)
