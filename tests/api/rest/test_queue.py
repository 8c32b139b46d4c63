"""The queue's single and batch lookups: stored definitions and every field of a status."""

from __future__ import annotations

import asyncpg
import httpx

from api.rest.expect import UNKNOWN, assert_taskcluster_error, expected_status
from factories import FakeTask, store


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


async def test_unknown_single_lookups_are_taskcluster_404s(client: httpx.AsyncClient) -> None:
    task = await client.get(f"/api/queue/v1/task/{UNKNOWN}")
    body = assert_taskcluster_error(task, 404, "ResourceNotFound", "task",
                                    f"`{UNKNOWN}` does not correspond to a task that exists")
    assert body["requestInfo"]["params"] == {"taskId": UNKNOWN}
    assert body["requestInfo"]["payload"] == {}
    status = await client.get(f"/api/queue/v1/task/{UNKNOWN}/status")
    assert_taskcluster_error(status, 404, "ResourceNotFound", "status", f"`{UNKNOWN}`")
