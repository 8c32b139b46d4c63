"""The live task-group page, `GET /task-group/<taskGroupId>`: an example client of the API.

One HTML file and one script (static/live/), plus the vendored graphql-ws client
GraphiQL uses too; no build step, nothing from another host. The script
subscribes to `taskGroupChanges` and keeps counts per state and a table of the
group's tasks up to date (see its header for how it stays fast at 10,000 tasks).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from tcgraph.api import graphiql

STATIC_DIR = Path(__file__).parent / "static" / "live"
_FILES = {
    "task-group.js": STATIC_DIR / "task-group.js",
    "graphql-ws.min.js": graphiql.STATIC_DIR / "graphql-ws.min.js",
}


async def page(request: Request) -> Response:
    """The page; the script reads the group id from the address."""
    return FileResponse(STATIC_DIR / "task-group.html", media_type="text/html")


async def asset(request: Request) -> Response:
    """The page's script, or the graphql-ws client."""
    found = _FILES.get(request.path_params["name"])
    if found is None or not found.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(found, media_type="text/javascript")


routes = [
    Route("/task-group/{task_group_id}", page, methods=["GET"]),
    Route("/live/static/{name}", asset, methods=["GET"]),
]
