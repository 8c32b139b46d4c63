"""Refusals and failures as Taskcluster reports them: bad URLs, bodies and an unwell database."""

from __future__ import annotations

import re

import asyncpg
import httpx
import orjson
import pytest

from api.rest.expect import UNKNOWN, assert_taskcluster_error
from factories import FakeTask, store
from servers import asgi_client
from tcgraph.config import Settings
from tcgraph.server import create_app
from tcgraph.store.pool import open_pool


@pytest.mark.parametrize(("path", "method", "param"), [
    ("/api/queue/v1/task/nope", "task", "taskId"),
    ("/api/queue/v1/task/nope/status", "status", "taskId"),
    ("/api/queue/v1/task/nope/dependents", "listDependentTasks", "taskId"),
    ("/api/queue/v1/task-group/nope/list", "listTaskGroup", "taskGroupId"),
    ("/api/queue/v1/task-group/nope", "getTaskGroup", "taskGroupId"),
    ("/api/index/v1/task/bad..path", "findTask", "indexPath"),
    ("/api/index/v1/namespaces/a..b", "listNamespaces", "namespace"),
])
async def test_malformed_ids_are_refused_as_taskcluster_does(
        client: httpx.AsyncClient, path: str, method: str, param: str) -> None:
    response = await client.get(path)
    assert_taskcluster_error(response, 400, "InvalidRequestArguments", method,
                             f"URL parameter '{param}' given as ")


async def test_unknown_query_parameters_and_methods_are_refused(
        client: httpx.AsyncClient) -> None:
    unknown = await client.get(f"/api/queue/v1/task/{UNKNOWN}", params={"limit": "5"})
    assert_taskcluster_error(unknown, 400, "InvalidRequestArguments", "task",
                             "Query-string parameter: limit is not supported!")
    posted = await client.post(f"/api/queue/v1/task/{UNKNOWN}/status", json={})
    body = assert_taskcluster_error(posted, 405, "MethodNotAllowed", "status",
                                    "POST is not a method of this route")
    assert body["requestInfo"]["params"] == {"taskId": UNKNOWN}
    assert "GET" in posted.headers["allow"]
    nowhere = await client.get("/api/queue/v1/no-such-route")
    assert_taskcluster_error(nowhere, 404, "ResourceNotFound", "", "No such route")


async def test_an_oversized_rest_body_is_a_taskcluster_413(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    app = create_app(settings.with_(max_body_bytes=100), database_url)
    async with asgi_client(app, pool) as client:
        response = await client.post("/api/queue/v1/tasks", json={"taskIds": ["x" * 200]})
    body = assert_taskcluster_error(response, 413, "InputTooLarge", "tasks",
                                    "larger than the limit of 100 bytes (max_body_bytes)")
    assert body["requestInfo"]["params"] == {}


@pytest.mark.parametrize(("content", "code", "says"), [
    (b"{", "MalformedPayload", "the request body is not JSON"),
    (b"", "MalformedPayload", "the request body is not JSON"),
    (b'["a"]', "InputValidationError", "  * data must be object"),
    (b'{"taskIds": "abc"}', "InputValidationError",
     "\nSchema Validation Failed!\nRejecting Schema: http://tcgraph.test/schemas/queue/v1/"
     "tasks-request.json#\nErrors:\n  * data/taskIds must be array"),
    (b'{"taskIds": ["a", 1]}', "InputValidationError", "  * data/taskIds/1 must be string"),
    (b'{"taskIds": [], "x": 1}', "InputValidationError",
     "  * data must NOT have additional properties ('x' is not one of taskIds)"),
    (b'{"taskIds": ["a", "b", "c", "d", "e", "f"]}', "InputError",
     "`taskIds` has too many keys: 6 is over the limit of 5 (max_keys)"),
])
async def test_bad_bodies(pool: asyncpg.Pool, settings: Settings, database_url: str,
                          content: bytes, code: str, says: str) -> None:
    app = create_app(settings.with_(max_keys=5), database_url)
    async with asgi_client(app, pool) as client:
        response = await client.post("/api/queue/v1/tasks/status", content=content,
                                     headers={"content-type": "application/json"})
    body = assert_taskcluster_error(response, 400, code, "statuses", says)
    if code != "MalformedPayload":
        assert body["requestInfo"]["payload"] == orjson.loads(content)


async def test_an_unavailable_database_is_a_503(pool: asyncpg.Pool, settings: Settings,
                                               database_url: str) -> None:
    closed = await open_pool(database_url, settings)
    await closed.close()
    async with asgi_client(create_app(settings, database_url), closed) as client:
        response = await client.post("/api/queue/v1/tasks", json={"taskIds": ["a"]})
    assert_taskcluster_error(response, 503, "ServiceUnavailable", "tasks",
                             "the database is unavailable")


async def test_other_failures_are_500s_without_internals(pool: asyncpg.Pool,
                                                         client: httpx.AsyncClient) -> None:
    t = FakeTask()
    await store(pool, [t])
    # A row the model cannot read: a run state the queue never writes.
    await pool.execute("""UPDATE tasks SET runs = jsonb_set(runs, '{0,state}', '"bogus"')
                          WHERE task_id = $1""", t.task_id)
    response = await client.get(f"/api/queue/v1/task/{t.task_id}/status")
    body = assert_taskcluster_error(response, 500, "InternalServerError", "status",
                                    "Internal Server Error, incidentId: ")
    assert "bogus" not in response.text and "ValueError" not in response.text
    assert re.search(r"incidentId: [0-9a-f-]{36}\n", body["message"])
