"""Batching: documents with thousands of nested lookups run a handful of statements."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from factories import BASE, FAR, FakeTask, store
from graphql_helpers import execute
from tcgraph.config import Settings


async def _label_dataset(pool: asyncpg.Pool, labels: int) -> dict[str, FakeTask]:
    """`labels` labels with three pushes each; returns the newest task per label."""
    tasks: list[FakeTask] = []
    newest: dict[str, FakeTask] = {}
    for push in range(3):
        builds: dict[int, FakeTask] = {}
        for i in range(labels):
            label = f"test-linux64/opt-suite-{i}" if i % 2 else f"build-linux64/opt-{i}"
            dep = builds.get(i - 1) if i % 2 else None
            task = FakeTask(label=label, task_group_id=f"push-{push}",
                            created=BASE + timedelta(hours=push),
                            dependencies=[dep.task_id] if dep else [])
            builds[i] = task
            tasks.append(task)
            newest[label] = task
    await store(pool, tasks)
    return newest


async def test_2000_labels_latest_status_dependencies_in_at_most_5_statements(
        pool: asyncpg.Pool, settings: Settings) -> None:
    newest = await _label_dataset(pool, 2000)
    labels = list(newest)
    query = """query ($labels: [String!]!) { labels(labels: $labels) {
        label latest { taskId status { state expires }
                       dependencies(first: 10) {
                           taskId status { state runs { runId state } } } } } }"""
    result = await execute(pool, settings, query, {"labels": labels})
    assert result.errors == []
    assert result.statements <= 5, result.statements
    got = result.data["labels"]
    assert [h["label"] for h in got] == labels
    for history in got:
        expected = newest[history["label"]]
        assert history["latest"]["taskId"] == expected.task_id
        assert [d["taskId"] for d in history["latest"]["dependencies"]] == expected.dependencies


async def test_2000_index_paths_task_status_in_at_most_3_statements(
        pool: asyncpg.Pool, settings: Settings) -> None:
    tasks = [FakeTask(label=f"l{i}") for i in range(2000)]
    paths = [f"gecko.v2.autoland.latest.firefox.platform-{i}" for i in range(2000)]
    await store(pool, tasks, [(p, t.task_id, 0, FAR) for p, t in zip(paths, tasks, strict=True)])
    query = """query ($paths: [String!]!) { indexedTasks(indexPaths: $paths) {
        indexPath taskId task { taskId status { state expires runs { state } } } } }"""
    result = await execute(pool, settings, query, {"paths": paths})
    assert result.errors == []
    assert result.statements <= 3, result.statements
    assert [e["task"]["taskId"] for e in result.data["indexedTasks"]] == [t.task_id for t in tasks]


async def test_lists_keep_length_order_duplicates_and_nulls(
        pool: asyncpg.Pool, settings: Settings) -> None:
    a, b = FakeTask(), FakeTask()
    await store(pool, [a, b])
    ids = [b.task_id, "missing", a.task_id, b.task_id]
    result = await execute(pool, settings, """query ($ids: [ID!]!) {
        tasks(taskIds: $ids) { taskId } statuses(taskIds: $ids) { taskId } }""", {"ids": ids})
    assert result.data["tasks"] == [{"taskId": b.task_id}, None, {"taskId": a.task_id},
                                    {"taskId": b.task_id}]
    assert result.data["statuses"] == result.data["tasks"]
    # Both fields and the duplicate share one statement through the task loader.
    assert result.statements == 1


async def test_batches_above_the_batch_size_are_chunked(
        pool: asyncpg.Pool, settings: Settings) -> None:
    tasks = [FakeTask() for _ in range(250)]
    await store(pool, tasks)
    chunked = settings.with_(batch_size=100)
    result = await execute(pool, chunked,
                           "query ($ids: [ID!]!) { tasks(taskIds: $ids) { taskId } }",
                           {"ids": [t.task_id for t in tasks]})
    assert [t["taskId"] for t in result.data["tasks"]] == [t.task_id for t in tasks]
    assert result.statements == 3


async def test_label_filters_are_batched_per_filter(pool: asyncpg.Pool, settings: Settings) -> None:
    old = FakeTask(label="x", project_id="alpha", created=BASE)
    new = FakeTask(label="x", project_id="beta", created=BASE + timedelta(hours=1),
                   tags={"kind": "build"})
    await store(pool, [old, new])
    result = await execute(pool, settings, """{
        any: labels(labels: ["x", "y"]) { latest { taskId } }
        alpha: labels(labels: ["x"], filter: {projectId: "alpha"}) { latest { taskId } }
        tagged: label(label: "x", filter: {tags: {kind: "build"}}) { latest { taskId } }
        untagged: label(label: "x", filter: {tags: {kind: "test"}}) { latest { taskId } }
    }""")
    assert result.errors == []
    assert result.data["any"] == [{"latest": {"taskId": new.task_id}}, {"latest": None}]
    assert result.data["alpha"] == [{"latest": {"taskId": old.task_id}}]
    assert result.data["tagged"] == {"latest": {"taskId": new.task_id}}
    assert result.data["untagged"] == {"latest": None}
    # One statement per distinct filter.
    assert result.statements == 4


async def test_tasks_found_by_label_are_not_fetched_again(
        pool: asyncpg.Pool, settings: Settings) -> None:
    build = FakeTask(label="build")
    test = FakeTask(label="test", dependencies=[build.task_id])
    await store(pool, [build, test])
    query = """{
        labels(labels: ["build", "test"]) { latest { taskId dependencies { taskId } } } }"""
    result = await execute(pool, settings.with_(sql_json=False), query)
    assert result.data["labels"][1]["latest"]["dependencies"] == [{"taskId": build.task_id}]
    # The labels, then the definitions that name the dependencies; the
    # dependency itself was primed into the task loader by the label lookup.
    assert result.statements == 2
    # Compiled, the whole selection is one statement.
    compiled = await execute(pool, settings, query)
    assert compiled.data == result.data
    assert compiled.statements == 1
