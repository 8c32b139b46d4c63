"""The index's lookups: the path echoed, ranks as written, expired entries left out."""

from __future__ import annotations

import asyncpg
import httpx

from api.rest.expect import PAST, assert_taskcluster_error
from factories import FAR, FakeTask, store


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
