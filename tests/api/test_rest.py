"""Taskcluster's REST routes: exact shapes and errors, then the real clients against a server.

The first tests talk to the app in-process (httpx's ASGI transport, the fixture's pool); the
last ones run a real uvicorn on 127.0.0.1 with 3,000 tasks and call it through the
`taskcluster` client and taskgraph, which must work with nothing but their root URL changed.
"""

from __future__ import annotations

import os
import re
import types
from datetime import timedelta
from typing import AsyncIterator, Iterator

import asyncpg
import httpx
import orjson
import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from factories import BASE, FAR, FakeTask, slug, store
from servers import serving
from tcgraph.api.rest import shapes
from tcgraph.api.context import Context
from tcgraph.config import Settings
from tcgraph.server import create_app
from tcgraph.store.pool import open_pool

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PAST = BASE - timedelta(days=1)
UNKNOWN = slug(10**12)  # a valid taskId that no test stores


def client_for(app, pool: asyncpg.Pool) -> httpx.AsyncClient:
    # The ASGI transport does not run the lifespan: the fixture's pool stands in for the app's.
    app.state.pool = pool
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tcgraph.test")


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings,
                 database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(settings, database_url), pool) as c:
        yield c


def sql(response: httpx.Response) -> dict:
    return orjson.loads(response.headers["tcgraph-sql"])


def expected_status(t: FakeTask, retries_left: int = 5) -> dict:
    definition = t.definition()
    return {
        "taskId": t.task_id, "provisionerId": definition["provisionerId"],
        "workerType": definition["workerType"], "taskQueueId": t.task_queue_id,
        "schedulerId": t.scheduler_id, "projectId": t.project_id,
        "taskGroupId": t.task_group_id, "priority": "low",
        "deadline": definition["deadline"], "expires": definition["expires"],
        "retriesLeft": retries_left, "state": t.state, "runs": t.run_list(),
    }


def assert_taskcluster_error(response: httpx.Response, status: int, code: str,
                             method: str, says: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "requestInfo"}
    assert body["code"] == code
    assert says in body["message"], body["message"]
    assert f"* errorCode:  {code}" in body["message"]
    assert set(body["requestInfo"]) == {"method", "params", "payload", "time"}
    assert body["requestInfo"]["method"] == method
    assert TIME.match(body["requestInfo"]["time"])
    assert "Traceback" not in response.text
    return body


# --- shapes --------------------------------------------------------------


async def test_tasks_are_the_stored_definitions(pool: asyncpg.Pool,
                                                client: httpx.AsyncClient) -> None:
    a, b = FakeTask(tags={"kind": "build"}), FakeTask(label=None)
    await store(pool, [a, b])
    response = await client.post("/api/queue/v1/tasks",
                                 json={"taskIds": [b.task_id, "unknown", a.task_id, b.task_id]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"tasks": [{"taskId": b.task_id, "task": b.definition()},
                                         {"taskId": a.task_id, "task": a.definition()}]}
    single = await client.get(f"/api/queue/v1/task/{a.task_id}")
    assert single.status_code == 200 and single.json() == a.definition()


async def test_definitions_are_passed_through_as_stored_text(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    t = FakeTask()
    await store(pool, [t])
    stored = await pool.fetchval("SELECT definition::text FROM tasks WHERE task_id = $1", t.task_id)
    response = await client.get(f"/api/queue/v1/task/{t.task_id}")
    assert response.content == stored.encode()
    batch = await client.post("/api/queue/v1/tasks", json={"taskIds": [t.task_id]})
    assert stored.encode() in batch.content


async def test_statuses_have_every_field_of_queue_status(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    failed = FakeTask(state="failed", runs=2)
    unscheduled = FakeTask(state="unscheduled", task_queue_id="proj-x/small")
    running = FakeTask(state="running")
    await store(pool, [failed, unscheduled, running])
    response = await client.post("/api/queue/v1/tasks/status", json={
        "taskIds": [failed.task_id, unscheduled.task_id, running.task_id, "nope"]})
    assert response.status_code == 200
    statuses = response.json()["statuses"]
    assert statuses == [
        {"taskId": failed.task_id, "status": expected_status(failed, retries_left=4)},
        {"taskId": unscheduled.task_id, "status": expected_status(unscheduled)},
        {"taskId": running.task_id, "status": expected_status(running)},
    ]
    assert list(statuses[0]["status"]) == [
        "taskId", "provisionerId", "workerType", "taskQueueId", "schedulerId", "projectId",
        "taskGroupId", "priority", "deadline", "expires", "retriesLeft", "state", "runs"]
    assert statuses[0]["status"]["deadline"] == "2026-11-02T00:00:00.000Z"
    assert statuses[0]["status"]["runs"][1]["resolved"] == "2026-11-01T00:20:00.000Z"
    assert "resolved" not in statuses[2]["status"]["runs"][0]
    single = await client.get(f"/api/queue/v1/task/{failed.task_id}/status")
    assert single.json() == {"status": expected_status(failed, retries_left=4)}


async def test_index_lookups_echo_the_path_and_leave_out_expired_entries(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    live, old = FakeTask(), FakeTask()
    await store(pool, [live, old], entries=[
        ("gecko.v2.trunk.latest.build", live.task_id, 41, FAR),
        ("gecko.v2.trunk.old.build", old.task_id, 0, PAST),
        ("top", live.task_id, 2.5, FAR),
    ])
    paths = ["gecko.v2.trunk.old.build", "gecko.v2.trunk.latest.build", "missing.path", "top",
             "gecko.v2.trunk.old.build"]
    response = await client.post("/api/index/v1/tasks/indexes", json={"indexes": paths})
    assert response.status_code == 200
    assert response.json() == {"tasks": [
        {"namespace": "gecko.v2.trunk.latest.build", "taskId": live.task_id, "rank": 41,
         "data": {"k": 1}, "expires": "2099-01-01T00:00:00.000Z"},
        {"namespace": "top", "taskId": live.task_id, "rank": 2.5, "data": {"k": 1},
         "expires": "2099-01-01T00:00:00.000Z"},
    ]}
    assert b'"rank":41,' in response.content
    single = await client.get("/api/index/v1/task/gecko.v2.trunk.latest.build")
    assert single.json()["taskId"] == live.task_id
    assert single.json()["namespace"] == "gecko.v2.trunk.latest.build"
    expired = await client.get("/api/index/v1/task/gecko.v2.trunk.old.build")
    assert_taskcluster_error(expired, 404, "ResourceNotFound", "findTask", "Indexed task not found")
    # As Taskcluster does: a path found twice gives identical items, which its output
    # schema forbids, and the whole request fails.
    twice = await client.post("/api/index/v1/tasks/indexes",
                              json={"indexes": ["top", "missing.path", "top"]})
    assert_taskcluster_error(twice, 500, "InternalServerError", "findTasksAtIndex",
                             "data/tasks must NOT have duplicate items (items ## 0 and 1 are "
                             "identical)")


async def test_unknown_single_lookups_are_taskcluster_404s(client: httpx.AsyncClient) -> None:
    task = await client.get(f"/api/queue/v1/task/{UNKNOWN}")
    body = assert_taskcluster_error(task, 404, "ResourceNotFound", "task",
                                    f"`{UNKNOWN}` does not correspond to a task that exists")
    assert body["requestInfo"]["params"] == {"taskId": UNKNOWN}
    assert body["requestInfo"]["payload"] == {}
    status = await client.get(f"/api/queue/v1/task/{UNKNOWN}/status")
    assert_taskcluster_error(status, 404, "ResourceNotFound", "status", f"`{UNKNOWN}`")


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
    async with client_for(app, pool) as client:
        response = await client.post("/api/queue/v1/tasks", json={"taskIds": ["x" * 200]})
    body = assert_taskcluster_error(response, 413, "InputTooLarge", "tasks",
                                    "larger than the limit of 100 bytes (max_body_bytes)")
    assert body["requestInfo"]["params"] == {}


async def test_labels_map_to_the_status_of_their_latest_task(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    old = FakeTask(label="build", created=BASE, state="failed")
    new = FakeTask(label="build", created=BASE + timedelta(hours=1), project_id="other")
    test = FakeTask(label="test", created=BASE, tags={"os": "linux"})
    await store(pool, [old, new, test])
    everything = await client.post("/api/tcgraph/v1/labels/status",
                                   json={"labels": ["build", "test", "nothing", "build"]})
    assert everything.status_code == 200
    assert everything.json() == {"mapping": {"build": expected_status(new),
                                             "test": expected_status(test)}}
    gecko = await client.post("/api/tcgraph/v1/labels/status", json={
        "labels": ["build", "test"], "filter": {"projectId": "gecko"}})
    assert gecko.json() == {"mapping": {"build": expected_status(old),
                                        "test": expected_status(test)}}
    tagged = await client.post("/api/tcgraph/v1/labels/status", json={
        "labels": ["build", "test"], "filter": {"tags": {"os": "linux"}, "schedulerId": None}})
    assert tagged.json() == {"mapping": {"test": expected_status(test)}}
    bad = await client.post("/api/tcgraph/v1/labels/status", json={
        "labels": ["build"], "filter": {"tags": {"os": 1}}})
    assert_taskcluster_error(bad, 400, "InputValidationError", "labelStatuses",
                             "filter.tags must be an object of strings")
    unknown = await client.post("/api/tcgraph/v1/labels/status", json={
        "labels": ["build"], "filter": {"label": "x"}})
    assert_taskcluster_error(unknown, 400, "InputValidationError", "labelStatuses", "`filter`")


# --- pages ---------------------------------------------------------------


async def test_pages_cover_every_key_once_with_sql_for_their_own_slice(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    known = [FakeTask() for _ in range(20)]
    await store(pool, known)
    ids = [t.task_id for t in known[:10]] + ["unknown-1"] + [t.task_id for t in known[10:]]
    seen: list[str] = []
    pages = 0
    token = None
    while True:
        params = {"limit": "7", **({"continuationToken": token} if token else {})}
        response = await client.post("/api/queue/v1/tasks/status", params=params,
                                     json={"taskIds": ids})
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += [s["taskId"] for s in body["statuses"]]
        # The page's own keys and the one after, and a few more when that one is unknown.
        assert sql(response)["statements"] <= 2
        assert len(body["statuses"]) == (7 if pages < 3 else 6)
        token = body.get("continuationToken")
        if token is None:
            break
    assert pages == 3  # 21 keys, 7 a page
    assert seen == [t.task_id for t in known]


async def test_a_full_page_of_1000_ids_is_one_statement(pool: asyncpg.Pool,
                                                        client: httpx.AsyncClient) -> None:
    known = [FakeTask() for _ in range(2500)]
    await store(pool, known)
    ids = [t.task_id for t in known]
    first = await client.post("/api/queue/v1/tasks/status", json={"taskIds": ids})
    body = first.json()
    assert len(body["statuses"]) == 1000
    # One statement for the page's keys and the one that says another page follows.
    assert sql(first) == {**sql(first), "statements": 1, "rows": 1001}
    second = await client.post("/api/queue/v1/tasks/status",
                               params={"continuationToken": body["continuationToken"]},
                               json={"taskIds": ids})
    assert [s["taskId"] for s in second.json()["statuses"]] == ids[1000:2000]
    assert sql(second)["statements"] == 1 and sql(second)["rows"] == 1001
    # As Taskcluster's, a token is a position: the same in every batch method.
    last = await client.post("/api/queue/v1/tasks",
                             params={"continuationToken": second.json()["continuationToken"]},
                             json={"taskIds": ids})
    assert [t["taskId"] for t in last.json()["tasks"]] == ids[2000:]
    assert "continuationToken" not in last.json()


async def test_one_page_through_the_shared_loaders_is_one_statement(
        pool: asyncpg.Pool, settings: Settings) -> None:
    known = [FakeTask() for _ in range(1000)]
    await store(pool, known)
    context = Context.create(pool, settings)
    found = await context.loaders.task.load_many([t.task_id for t in known])
    assert [shapes.status_json(t)["taskId"] for t in found] == [t.task_id for t in known]
    assert context.db.stats.statements == 1


async def test_duplicates_are_answered_once_and_paged_over_once(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    a, b = FakeTask(), FakeTask()
    await store(pool, [a, b])
    body = {"taskIds": [a.task_id, a.task_id, a.task_id, b.task_id]}
    first = await client.post("/api/queue/v1/tasks", params={"limit": 1}, json=body)
    assert [t["taskId"] for t in first.json()["tasks"]] == [a.task_id]
    second = await client.post("/api/queue/v1/tasks", json=body, params={
        "limit": 1, "continuationToken": first.json()["continuationToken"]})
    assert second.json() == {"tasks": [{"taskId": b.task_id, "task": b.definition()}]}


async def test_no_keys_and_no_matches(client: httpx.AsyncClient) -> None:
    empty = await client.post("/api/queue/v1/tasks", json={"taskIds": []})
    assert empty.json() == {"tasks": []}
    # A missing list is the empty list, as Taskcluster's input schema defaults it.
    missing = await client.post("/api/queue/v1/tasks/status", json={})
    assert missing.status_code == 200 and missing.json() == {"statuses": []}
    none = await client.post("/api/index/v1/tasks/indexes", json={"indexes": ["a.b", "c"]})
    assert none.json() == {"tasks": []}


# --- errors --------------------------------------------------------------


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
    async with client_for(app, pool) as client:
        response = await client.post("/api/queue/v1/tasks/status", content=content,
                                     headers={"content-type": "application/json"})
    body = assert_taskcluster_error(response, 400, code, "statuses", says)
    if code != "MalformedPayload":
        assert body["requestInfo"]["payload"] == orjson.loads(content)


@pytest.mark.parametrize("limit", ["-1", "ten", "1.5", "١٢", ""])
async def test_bad_limits(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.post("/api/index/v1/tasks/indexes", params={"limit": limit},
                                 json={"indexes": ["a"]})
    assert_taskcluster_error(response, 400, "InvalidRequestArguments", "findTasksAtIndex",
                             f'Query-string parameter: limit="{limit}" does not match '
                             "expression: /^[0-9]+$/")


async def test_limits_are_clamped_and_zero_is_an_empty_page(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    known = [FakeTask() for _ in range(1005)]
    await store(pool, known)
    ids = [t.task_id for t in known]
    for limit in ("1001", "5000", "1" * 5000):
        clamped = await client.post("/api/queue/v1/tasks/status", params={"limit": limit},
                                    json={"taskIds": ids})
        assert clamped.status_code == 200, clamped.text
        assert len(clamped.json()["statuses"]) == 1000 and clamped.json()["continuationToken"]
    zero = await client.post("/api/queue/v1/tasks/status", params={"limit": "0"},
                             json={"taskIds": ids})
    assert zero.json() == {"statuses": []}


async def test_tokens_are_read_as_taskcluster_reads_its_own(
        pool: asyncpg.Pool, client: httpx.AsyncClient) -> None:
    known = [FakeTask(label=f"label-{n}") for n in range(3)]
    await store(pool, known)
    labels = {"labels": [t.label for t in known]}
    first = await client.post("/api/tcgraph/v1/labels/status", params={"limit": 2}, json=labels)
    assert list(first.json()["mapping"]) == ["label-0", "label-1"]
    token = first.json()["continuationToken"]
    assert token.isalnum()
    again = await client.post("/api/tcgraph/v1/labels/status",
                              params={"continuationToken": token, "limit": 2}, json=labels)
    assert again.json() == {"mapping": {"label-2": expected_status(known[2])}}
    # Letters and digits that decode to nothing start from the beginning; anything else is
    # refused.
    for bogus in ("bogus", "AAAA"):
        restart = await client.post("/api/tcgraph/v1/labels/status",
                                    params={"continuationToken": bogus, "limit": 2}, json=labels)
        assert restart.json() == first.json()
    for bad in ("bogus-token", "not a token!"):
        response = await client.post("/api/tcgraph/v1/labels/status",
                                     params={"continuationToken": bad}, json=labels)
        assert_taskcluster_error(response, 400, "InputError", "labelStatuses",
                                 "Invalid continuation token")


async def test_an_unavailable_database_is_a_503(pool: asyncpg.Pool, settings: Settings,
                                               database_url: str) -> None:
    closed = await open_pool(database_url, settings)
    await closed.close()
    async with client_for(create_app(settings, database_url), closed) as client:
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


# --- the real clients ----------------------------------------------------

CLIENT_TASKS = 3000
CLIENT_GROUP = slug(2 * 10**12)


def client_state(n: int) -> str:
    """Every 10th task failed, three still running, the rest completed."""
    return "failed" if n % 10 == 0 else "running" if n % 1000 == 5 else "completed"


@pytest.fixture(scope="module")
def dataset(filled_database) -> Iterator[tuple[str, list[FakeTask]]]:
    """A database with 3,000 tasks of one group (`client_state`), each indexed under
    `tcgraph.test.<n>`."""
    # The `database_url` fixture is per test; one server with 3,000 tasks serves the module.
    known = [FakeTask(label=f"task-{n}", state=client_state(n), task_group_id=CLIENT_GROUP,
                      created=BASE + timedelta(seconds=n)) for n in range(CLIENT_TASKS)]
    entries = [(f"tcgraph.test.{n}", t.task_id, 1, FAR) for n, t in enumerate(known)]
    with filled_database(known, entries) as url:
        yield url, known


@pytest.fixture(scope="module")
def root_url(dataset: tuple[str, list[FakeTask]]) -> Iterator[str]:
    url, _ = dataset
    with serving(create_app(Settings(database_url=url, pool_max_size=4), url)) as root:
        yield root


@pytest.fixture
def known(dataset: tuple[str, list[FakeTask]]) -> list[FakeTask]:
    return dataset[1]


@pytest.fixture
def taskgraph_env(root_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """taskgraph pointed at the test server, its per-process caches emptied before and after."""
    from taskgraph.util import taskcluster as tc

    def forget() -> None:
        tc.get_root_url.cache_clear()
        tc.get_taskcluster_client.cache_clear()
        tc._task_definitions_cache.cache.clear()

    for variable in list(os.environ):
        if variable.startswith("TASKCLUSTER_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("TASKCLUSTER_ROOT_URL", root_url)
    forget()
    yield
    forget()


def test_taskcluster_client_batch_methods_page_through_everything(
        root_url: str, known: list[FakeTask]) -> None:
    queue = taskcluster.Queue({"rootUrl": root_url})
    ids = [t.task_id for t in known] + ["unknown-a", "unknown-b"]

    pages: list[dict] = []
    queue.tasks(payload={"taskIds": ids}, paginationHandler=pages.append)
    # Full pages; the unknown ids after the last known one make no page of their own.
    assert [len(page["tasks"]) for page in pages] == [1000, 1000, 1000]
    definitions = {t["taskId"]: t["task"] for page in pages for t in page["tasks"]}
    assert len(definitions) == CLIENT_TASKS
    assert definitions[known[2999].task_id] == known[2999].definition()

    statuses: list[dict] = []
    queue.statuses(payload={"taskIds": ids},
                   paginationHandler=lambda page: statuses.extend(page["statuses"]))
    assert [s["taskId"] for s in statuses] == [t.task_id for t in known]
    assert statuses[10]["status"] == expected_status(known[10])

    first = queue.statuses({"taskIds": ids})
    assert len(first["statuses"]) == 1000 and first["continuationToken"]
    limited: list[dict] = []
    queue.statuses(payload={"taskIds": ids[:30]}, paginationLimit=10,
                   paginationHandler=limited.append)
    assert [len(page["statuses"]) for page in limited] == [10, 10, 10]


def test_taskcluster_client_limits_above_1000_are_clamped(
        root_url: str, known: list[FakeTask]) -> None:
    queue = taskcluster.Queue({"rootUrl": root_url})
    index = taskcluster.Index({"rootUrl": root_url})
    ids = [t.task_id for t in known]
    statuses = queue.statuses(payload={"taskIds": ids}, query={"limit": 5000})
    assert len(statuses["statuses"]) == 1000 and statuses["continuationToken"]
    tasks = queue.tasks(payload={"taskIds": ids}, query={"limit": 5000})
    assert len(tasks["tasks"]) == 1000 and tasks["continuationToken"]
    found = index.findTasksAtIndex(payload={"indexes": [f"tcgraph.test.{n}" for n in range(1500)]},
                                   query={"limit": 5000})
    assert len(found["tasks"]) == 1000 and found["continuationToken"]
    group = queue.listTaskGroup(CLIENT_GROUP, query={"limit": 5000})
    assert len(group["tasks"]) == 1000 and group["continuationToken"]
    everything: list[dict] = []
    queue.listTaskGroup(CLIENT_GROUP, query={"limit": 5000},
                        paginationHandler=lambda page: everything.extend(page["tasks"]))
    assert sorted(t["status"]["taskId"] for t in everything) == sorted(ids)


def test_taskcluster_client_single_lookups(root_url: str, known: list[FakeTask]) -> None:
    queue = taskcluster.Queue({"rootUrl": root_url})
    index = taskcluster.Index({"rootUrl": root_url})
    t = known[7]
    assert queue.task(t.task_id) == t.definition()
    assert queue.status(t.task_id) == {"status": expected_status(t)}
    assert index.findTask("tcgraph.test.7") == {
        "namespace": "tcgraph.test.7", "taskId": t.task_id, "rank": 1, "data": {"k": 1},
        "expires": "2099-01-01T00:00:00.000Z"}
    for missing in (lambda: queue.task(UNKNOWN), lambda: queue.status(UNKNOWN),
                    lambda: index.findTask("tcgraph.test.nope")):
        with pytest.raises(TaskclusterRestFailure) as raised:
            missing()
        assert raised.value.status_code == 404
        assert raised.value.body["code"] == "ResourceNotFound"


def test_taskcluster_client_find_tasks_at_index(root_url: str, known: list[FakeTask]) -> None:
    index = taskcluster.Index({"rootUrl": root_url})
    paths = [f"tcgraph.test.{n}" for n in range(CLIENT_TASKS)] + ["tcgraph.test.none"]
    found: list[dict] = []
    index.findTasksAtIndex(payload={"indexes": paths},
                           paginationHandler=lambda page: found.extend(page["tasks"]))
    assert [f["namespace"] for f in found] == paths[:-1]
    assert [f["taskId"] for f in found] == [t.task_id for t in known]


def test_taskgraph_batched_lookups(taskgraph_env: None, known: list[FakeTask]) -> None:
    from taskgraph.util.taskcluster import (
        find_task_id_batched, get_task_definitions, status_task_batched)

    paths = [f"tcgraph.test.{n}" for n in range(CLIENT_TASKS)] + ["tcgraph.test.none"]
    index_to_task = find_task_id_batched(paths)
    assert index_to_task == {f"tcgraph.test.{n}": t.task_id for n, t in enumerate(known)}
    task_to_status = status_task_batched(list(index_to_task.values()))
    assert len(task_to_status) == CLIENT_TASKS
    assert task_to_status[known[20].task_id]["state"] == "failed"
    definitions = get_task_definitions([t.task_id for t in known] + ["nope"])
    assert len(definitions) == CLIENT_TASKS
    assert definitions[known[0].task_id] == known[0].definition()


def test_taskgraph_lists_a_task_groups_incomplete_tasks(
        taskgraph_env: None, known: list[FakeTask]) -> None:
    from taskgraph.util.taskcluster import list_task_group_incomplete_tasks

    running = [t.task_id for n, t in enumerate(known) if client_state(n) == "running"]
    assert sorted(list_task_group_incomplete_tasks(CLIENT_GROUP)) == sorted(running)


def test_taskgraph_index_search_replaces_only_usable_tasks(
        taskgraph_env: None, known: list[FakeTask]) -> None:
    from taskgraph.optimize.strategies import IndexSearch
    from taskgraph.util.taskcluster import find_task_id_batched, status_task_batched

    paths = [f"tcgraph.test.{n}" for n in range(CLIENT_TASKS)]
    index_to_task = find_task_id_batched(paths)
    task_to_status = status_task_batched(list(index_to_task.values()))
    search = IndexSearch()
    soon, late = "2026-12-01T00:00:00.000Z", "2100-01-01T00:00:00.000Z"
    replaced = [search.should_replace_task(types.SimpleNamespace(label=path), {}, soon,
                                           ([path], index_to_task, task_to_status))
                for path in paths]
    # Failed tasks are not reused; completed and running ones are.
    assert replaced == [False if client_state(n) == "failed" else t.task_id
                        for n, t in enumerate(known)]
    # Every stored task expires in 2027: none may stand in for one needed until 2100.
    assert not any(search.should_replace_task(types.SimpleNamespace(label=path), {}, late,
                                              ([path], index_to_task, task_to_status))
                   for path in paths[:100])
    # Unbatched, it calls index.findTask and queue.status; a 404 just means "not replaced".
    assert search.should_replace_task(types.SimpleNamespace(label="x"), {}, soon,
                                      ["tcgraph.test.none", "tcgraph.test.1"]) == known[1].task_id
