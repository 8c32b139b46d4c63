"""The real clients against a server: `taskcluster` and taskgraph, with nothing but their root
URL changed, page through a uvicorn on 127.0.0.1 holding 3,000 tasks."""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import taskcluster
from taskcluster.exceptions import TaskclusterRestFailure

from api.rest.expect import UNKNOWN, expected_status
from conftest import FilledDatabase
from factories import BASE, FAR, FakeTask, slug
from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app

CLIENT_TASKS = 3000
CLIENT_GROUP = slug(2 * 10**12)


def client_state(n: int) -> str:
    """Every 10th task failed, three still running, the rest completed."""
    return "failed" if n % 10 == 0 else "running" if n % 1000 == 5 else "completed"


@pytest.fixture(scope="module")
def dataset(filled_database: FilledDatabase) -> Iterator[tuple[str, list[FakeTask]]]:
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

    pages: list[dict[str, Any]] = []
    queue.tasks(payload={"taskIds": ids}, paginationHandler=pages.append)
    # Full pages; the unknown ids after the last known one make no page of their own.
    assert [len(page["tasks"]) for page in pages] == [1000, 1000, 1000]
    definitions = {t["taskId"]: t["task"] for page in pages for t in page["tasks"]}
    assert len(definitions) == CLIENT_TASKS
    assert definitions[known[2999].task_id] == known[2999].definition()

    statuses: list[dict[str, Any]] = []
    queue.statuses(payload={"taskIds": ids},
                   paginationHandler=lambda page: statuses.extend(page["statuses"]))
    assert [s["taskId"] for s in statuses] == [t.task_id for t in known]
    assert statuses[10]["status"] == expected_status(known[10])

    first = queue.statuses({"taskIds": ids})
    assert len(first["statuses"]) == 1000 and first["continuationToken"]
    limited: list[dict[str, Any]] = []
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
    everything: list[dict[str, Any]] = []
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
    missing_calls: list[Callable[[], object]] = [
        lambda: queue.task(UNKNOWN), lambda: queue.status(UNKNOWN),
        lambda: index.findTask("tcgraph.test.nope")]
    for missing in missing_calls:
        with pytest.raises(TaskclusterRestFailure) as raised:
            missing()
        assert raised.value.status_code == 404
        assert raised.value.body["code"] == "ResourceNotFound"


def test_taskcluster_client_find_tasks_at_index(root_url: str, known: list[FakeTask]) -> None:
    index = taskcluster.Index({"rootUrl": root_url})
    paths = [f"tcgraph.test.{n}" for n in range(CLIENT_TASKS)] + ["tcgraph.test.none"]
    found: list[dict[str, Any]] = []
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
