"""CORS: browsers on the origins in `TCGRAPH_CORS_ORIGINS` may call /graphql, others not."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from factories import FakeTask, store
from tcgraph.config import Settings
from tcgraph.server import create_app

ALLOWED = "https://treeherder.example.com"
ALSO_ALLOWED = "http://localhost:5000"
REFUSED = "https://elsewhere.example.com"
TASK = FakeTask(state="completed")


@pytest.fixture
async def stored(pool: asyncpg.Pool) -> None:
    await store(pool, [TASK])


@contextlib.asynccontextmanager
async def connected(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    # ASGITransport does not run the lifespan, which opens the pool: run it here.
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                  base_url="http://tcgraph.test") as client):
        yield client


@pytest.fixture
async def client(stored: None, database_url: str,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    origins = f" {ALLOWED} ,{ALSO_ALLOWED}"
    # In the environment and in Settings alike, so the test holds wherever the
    # server reads the origins from.
    monkeypatch.setenv("TCGRAPH_CORS_ORIGINS", origins)
    settings = Settings.from_env({"TCGRAPH_CORS_ORIGINS": origins},
                                 database_url=database_url, pool_max_size=2,
                                 allowed_hosts="tcgraph.test")
    async with connected(create_app(settings, database_url)) as client:
        yield client


async def preflight(client: httpx.AsyncClient, origin: str,
                    headers: str = "content-type") -> httpx.Response:
    return await client.options("/graphql", headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": headers,
    })


@pytest.mark.parametrize("origin", [ALLOWED, ALSO_ALLOWED])
async def test_preflight_from_an_allowed_origin(client: httpx.AsyncClient, origin: str) -> None:
    response = await preflight(client, origin, "content-type, authorization")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert set(response.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    allowed = response.headers["access-control-allow-headers"].lower().split(",")
    assert {"content-type", "authorization"} <= {h.strip() for h in allowed}


async def test_preflight_from_a_refused_origin(client: httpx.AsyncClient) -> None:
    response = await preflight(client, REFUSED)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_preflight_asking_for_another_method_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.options("/graphql", headers={
        "origin": ALLOWED, "access-control-request-method": "DELETE"})
    assert response.status_code == 400


async def test_a_post_from_an_allowed_origin_carries_the_header(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", headers={"origin": ALLOWED}, json={
        "query": "query($id: ID!) { status(taskId: $id) { taskId state } }",
        "variables": {"id": TASK.task_id}})
    assert response.status_code == 200
    assert response.json()["data"] == {"status": {"taskId": TASK.task_id, "state": "COMPLETED"}}
    assert response.headers["access-control-allow-origin"] == ALLOWED


async def test_a_post_from_a_refused_origin_carries_no_header(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", headers={"origin": REFUSED},
                           json={"query": "{ status(taskId: \"nope\") { taskId } }"})
    assert response.json()["data"] == {"status": None}
    assert "access-control-allow-origin" not in response.headers


async def test_no_origins_configured_means_no_cors_headers(
        stored: None, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCGRAPH_CORS_ORIGINS", raising=False)
    settings = Settings.from_env({}, database_url=database_url, pool_max_size=2,
                                 allowed_hosts="tcgraph.test")
    async with connected(create_app(settings, database_url)) as client:
        response = await preflight(client, ALLOWED)
        posted = await client.post("/graphql", headers={"origin": ALLOWED},
                             json={"query": "{ status(taskId: \"nope\") { taskId } }"})
    # Without the middleware a preflight is just an OPTIONS the route does not allow.
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers
    assert posted.status_code == 200
    assert "access-control-allow-origin" not in posted.headers
