"""What Taskcluster's REST answers look like: a task's status, an error body, the SQL header."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import orjson

from factories import BASE, FakeTask, slug

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PAST = BASE - timedelta(days=1)
UNKNOWN = slug(10**12)  # a valid taskId that no test stores


def sql(response: httpx.Response) -> dict[str, Any]:
    """The statements and rows the answer took, as the tcgraph-sql header reports them."""
    report: dict[str, Any] = orjson.loads(response.headers["tcgraph-sql"])
    return report


def expected_status(t: FakeTask, retries_left: int = 5) -> dict[str, Any]:
    """The queue's status structure of `t`, in Taskcluster's key order."""
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
                             method: str, says: str) -> dict[str, Any]:
    """Assert `response` is Taskcluster's error body for `code` from `method`; return the body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "requestInfo"}
    assert body["code"] == code
    assert says in body["message"], body["message"]
    assert f"* errorCode:  {code}" in body["message"]
    assert set(body["requestInfo"]) == {"method", "params", "payload", "time"}
    assert body["requestInfo"]["method"] == method
    assert TIME.match(body["requestInfo"]["time"])
    assert "Traceback" not in response.text
    return body
