"""The synthetic dataset: its shape as generated, and as written through the importer."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from tcgraph.demo import BASE_TIME, DECISION_LABEL, generate, write_demo
from tcgraph.model import State, TaskFilter
from tcgraph.store.queries import index_entries, tasks
from tcgraph.store.pool import Database

SLUGID = re.compile(r"[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]")
LABEL = re.compile(
    r"Gecko Decision Task"
    r"|toolchain-[a-z0-9-]+"
    r"|(build|signing|repackage)-[a-z0-9-]+/(opt|debug)"
    r"|test-[a-z0-9._-]+/(opt|debug)-[a-z0-9-]+-\d+"
)


def elements(documents: list[Any]) -> list[dict[str, Any]]:
    """The {task, status} elements of the listTaskGroup pages."""
    return [e for d in documents if "taskGroupId" in d for e in d["tasks"]]


def entries(documents: list[Any]) -> list[dict[str, Any]]:
    return [e for d in documents if "taskGroupId" not in d for e in d["tasks"]]


def test_generate_is_deterministic_for_a_seed() -> None:
    first = list(generate(500, seed=7))
    assert list(generate(500, seed=7)) == first
    other = list(generate(500, seed=8))
    assert other != first
    # Another seed changes ids and outcomes, not the taskgraph.
    assert {e["task"]["metadata"]["name"] for e in elements(other)} == {
        e["task"]["metadata"]["name"] for e in elements(first)}
    assert not {e["status"]["taskId"] for e in elements(other)} & {
        e["status"]["taskId"] for e in elements(first)}


def test_the_requested_number_of_tasks_about_ten_per_label() -> None:
    assert list(generate(0)) == []
    for count in (1, 7, 95, 1234):
        assert len(elements(list(generate(count)))) == count
    per_label = Counter(e["task"]["metadata"]["name"] for e in elements(list(generate(2000))))
    assert len(per_label) == 200
    assert set(per_label.values()) == {10}
    # 123 tasks a push and 4 left over: the newest four pushes run one label more.
    per_label = Counter(e["task"]["metadata"]["name"] for e in elements(list(generate(1234))))
    assert Counter(per_label.values()) == {10: 123, 4: 1}


def test_every_push_is_a_dag_inside_its_task_group() -> None:
    documents = list(generate(2000, seed=3))
    by_id = {e["status"]["taskId"]: e for e in elements(documents)}
    assert len(by_id) == 2000
    groups: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for task_id, element in by_id.items():
        assert SLUGID.fullmatch(task_id)
        assert element["task"]["taskGroupId"] == element["status"]["taskGroupId"]
        groups[element["task"]["taskGroupId"]].append(element)
    assert len(groups) == 10

    for group_id, members in groups.items():
        decision = by_id[group_id]  # the decision task's taskId is the taskGroupId
        assert decision["task"]["metadata"]["name"] == DECISION_LABEL
        assert decision["task"]["dependencies"] == []
        for element in members:
            task = element["task"]
            label = task["metadata"]["name"]
            assert LABEL.fullmatch(label), label
            assert task.get("tags", {}).get("label", label) == label
            dependencies = [by_id[d]["task"] for d in task["dependencies"]]
            assert all(d["taskGroupId"] == group_id for d in dependencies)
            if label == DECISION_LABEL:
                continue
            assert task["dependencies"][0] == group_id
            parents = [d["metadata"]["name"] for d in dependencies[1:]]
            kind = task["tags"]["kind"]
            if kind in ("build", "toolchain"):
                assert parents == []
            elif kind == "test":
                build_type = label.split("/")[1].split("-")[0]
                [parent] = parents
                assert parent.startswith("build-") and parent.endswith(f"/{build_type}")
                assert dependencies[1]["tags"]["os"] == task["tags"]["os"]
            else:
                [parent] = parents
                assert parent.split("-", 1)[1] == label.split("-", 1)[1]
                assert parent.startswith("build-" if kind == "signing" else "signing-")


def test_definitions_look_like_queue_task_and_timestamps_are_fixed() -> None:
    documents = list(generate(300))
    sizes = [len(orjson.dumps(e["task"])) for e in elements(documents)]
    assert 800 < sum(sizes) / len(sizes) < 2000
    for element in elements(documents):
        task, status = element["task"], element["status"]
        assert {"provisionerId", "workerType", "taskQueueId", "schedulerId", "taskGroupId",
                "dependencies", "routes", "priority", "retries", "created", "deadline",
                "expires", "scopes", "payload", "metadata", "tags", "extra"} <= task.keys()
        created = datetime.fromisoformat(task["created"])
        assert created <= BASE_TIME + timedelta(hours=1)  # the newest push
        assert task["created"].endswith("Z") and len(task["created"]) == 24
        assert (datetime.fromisoformat(task["deadline"]) - created).days == 1
        assert status["state"] == (status["runs"][-1]["state"] if status["runs"] else "unscheduled")
        assert [r["runId"] for r in status["runs"]] == list(range(len(status["runs"])))


def test_older_pushes_are_resolved_and_the_newest_is_running() -> None:
    documents = list(generate(2000))
    newest = max(e["task"]["created"] for e in elements(documents))
    newest_group = next(e["task"]["taskGroupId"] for e in elements(documents)
                        if e["task"]["created"] == newest)
    old = Counter(e["status"]["state"] for e in elements(documents)
                  if e["task"]["taskGroupId"] != newest_group)
    new = Counter(e["status"]["state"] for e in elements(documents)
                  if e["task"]["taskGroupId"] == newest_group)
    assert set(old) == {"completed", "failed", "exception"}
    assert old["completed"] > 0.75 * sum(old.values())
    assert {"running", "pending", "unscheduled", "completed"} <= set(new)
    retried = [e for e in elements(documents) if len(e["status"]["runs"]) > 1]
    assert retried and all(e["status"]["retriesLeft"] < e["task"]["retries"] for e in retried)


async def test_write_demo(pool: asyncpg.Pool) -> None:
    summary = await write_demo(pool, tasks=2000, seed=1)
    assert (summary.source, summary.tasks, summary.statuses) == ("demo", 2000, 2000)
    assert summary.index_entries == len(entries(list(generate(2000, seed=1))))

    assert await pool.fetchval("SELECT count(*) FROM tasks") == 2000
    assert await pool.fetchval("SELECT count(DISTINCT label) FROM tasks") == 200
    assert await pool.fetchval("SELECT count(DISTINCT task_group_id) FROM tasks") == 10
    states = {r["state"] for r in await pool.fetch("SELECT DISTINCT state FROM tasks")}
    assert states == {s.value for s in State}
    # Every edge points at a task of the same group.
    assert await pool.fetchval("""
        SELECT count(*) FROM task_dependencies d
        LEFT JOIN tasks t ON t.task_id = d.task_id
        LEFT JOIN tasks p ON p.task_id = d.dependency_id
        WHERE p.task_id IS NULL OR p.task_group_id <> t.task_group_id""") == 0
    assert await pool.fetchval("SELECT count(*) FROM task_dependencies") > 1900

    stored_entries = await pool.fetchval("SELECT count(*) FROM index_entries")
    assert 2000 / 3 < stored_entries < 2000
    assert await pool.fetchval("SELECT count(*) FROM index_entries WHERE expires <= now()") == 0

    db = Database(pool)
    # latest points at the newest completed build of the project.
    [latest] = await index_entries.index_entries(
        db, [("gecko.v2.mozilla-central.latest.firefox", "linux64-opt")])
    assert latest is not None
    newest_build = await pool.fetchval("""
        SELECT task_id FROM tasks
        WHERE label = 'build-linux64/opt' AND state = 'completed'
          AND definition -> 'metadata' ->> 'source' LIKE '%/mozilla-central/%'
        ORDER BY created DESC LIMIT 1""")
    assert latest.task_id == newest_build
    [success] = await tasks.latest_by_label(db, ["build-linux64/opt"], TaskFilter(), "success")
    assert success is not None and success.state is State.COMPLETED

    # Each completed task's revision route resolves to it; cache routes to it or a newer push.
    completed_ids = [r["task_id"] for r in await pool.fetch(
        "SELECT task_id FROM tasks WHERE state = 'completed'")]
    completed = await tasks.tasks_by_id(db, completed_ids)
    definitions = await tasks.definitions_by_id(db, completed_ids)
    paths = [(completed[t], route.removeprefix("index."))
             for t, text in definitions.items() for route in orjson.loads(text)["routes"]
             if route.startswith("index.")]
    resolved = await index_entries.index_entries(db, [p.rpartition(".")[::2] for _, p in paths])
    assert all(e is not None for e in resolved)
    for (task, path), found in zip(paths, resolved, strict=True):
        assert found is not None
        if ".revision." in path:
            assert found.task_id == task.task_id
        else:
            holder = (await tasks.tasks_by_id(db, [found.task_id]))[found.task_id]
            assert holder.label == task.label and holder.created >= task.created
    assert any(p.startswith("gecko.cache.level-3.test.") for _, p in paths)

    # Writing it again changes nothing.
    every_row = "SELECT xmin::text, * FROM tasks ORDER BY task_id"
    before = [tuple(r) for r in await pool.fetch(every_row)]
    assert await write_demo(pool, tasks=2000, seed=1) == summary
    assert [tuple(r) for r in await pool.fetch(every_row)] == before

