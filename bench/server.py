"""tcgraph's app plus the floor endpoints, on one uvicorn: `python -m bench.server URL PORT`.

The benchmark starts this in a subprocess so that the server's peak RSS can be
read from /proc/<pid>/status (VmHWM) apart from the harness. tcgraph runs as
`tcgraph serve` runs it (`create_app`, uvicorn's defaults) with `explain` on,
so every GraphQL response carries `extensions.sql` and every REST response a
`Tcgraph-Sql` header; access logging is off (it would cost the same on both
sides, but thousands of lines in W4 (a)).

`POST /bench/floor/{W1|W2|W3|W4}` takes the same body as `/graphql` (the
variables are what it reads) and answers with `bench.floor`: the same JSON body
from hand-written SQL, through the same uvicorn, Starlette and pool.
"""

from __future__ import annotations

import sys

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import floor
from tcgraph.config import Settings
from tcgraph.server import create_app

FLOOR_PATH = "/bench/floor"


async def floor_endpoint(request: Request) -> Response:
    workload = request.path_params["workload"]
    body = orjson.loads(await request.body())
    answer, statements, ms = await floor.FLOORS[workload](request.app.state.pool,
                                                          body["variables"])
    sql = {"statements": statements, "ms": round(ms, 3)}
    return Response(answer, media_type="application/json",
                    headers={"Tcgraph-Sql": orjson.dumps(sql).decode()})


def settings() -> Settings:
    """tcgraph's defaults (not the caller's TCGRAPH_* variables), with explain on."""
    return Settings(explain=True)


def app(url: str) -> Starlette:
    application = create_app(settings(), url)
    application.router.routes.append(
        Route(f"{FLOOR_PATH}/{{workload}}", floor_endpoint, methods=["POST"]))
    return application


def main(argv: list[str]) -> None:
    import uvicorn

    url, port = argv[0], int(argv[1])
    uvicorn.run(app(url), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="on")


if __name__ == "__main__":
    main(sys.argv[1:])
