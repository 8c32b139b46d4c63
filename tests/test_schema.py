"""The GraphQL contract: the published schema, every field, limits and errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson

from factories import BASE, FAR, FakeTask, store
from graphql_helpers import STATUS_FIELDS, TASK_FIELDS, execute
from tcgraph.api.schema import build_schema, sdl
from tcgraph.config import Settings

ROOT = Path(__file__).resolve().parent.parent



def test_published_schema_is_what_the_code_builds() -> None:
    assert (ROOT / "schema.graphql").read_text() == sdl()


def test_schema_does_not_depend_on_settings() -> None:
    tight = Settings(explain=True, max_depth=3, max_keys=5)
    assert build_schema(tight).as_str() == build_schema(Settings()).as_str()


async def test_task_every_field(pool: asyncpg.Pool, settings: Settings) -> None:
    dep = FakeTask(label="build-linux64/opt")
    task = FakeTask(label="test-linux64/opt-xpcshell-1", dependencies=[dep.task_id, "unknown"],
                    state="failed", runs=2, tags={"kind": "test"})
    other = FakeTask(label="other", dependencies=[task.task_id])
    await store(pool, [dep, task, other])
    result = await execute(pool, settings, f"""{{ task(taskId: "{task.task_id}") {{
        {TASK_FIELDS}
        dependencies {{ taskId }}
        dependents {{ nodes {{ taskId }} }}
        status {{ {STATUS_FIELDS} task {{ taskId }} }} }} }}""")
    assert result.errors == []
    got = result.data["task"]
    definition = task.definition()
    assert got["definition"] == definition
    assert got["taskId"] == task.task_id and got["taskGroupId"] == task.task_group_id
    assert got["label"] == "test-linux64/opt-xpcshell-1"
    assert (got["provisionerId"], got["workerType"], got["taskQueueId"]) == (
        "gecko-3", "b-linux", "gecko-3/b-linux")
    assert (got["schedulerId"], got["projectId"], got["priority"], got["retries"]) == (
        "gecko-level-3", "gecko", "low", 5)
    assert (got["created"], got["deadline"], got["expires"]) == (
        definition["created"], definition["deadline"], definition["expires"])
    assert got["created"] == "2026-11-01T00:00:00.000Z"
    assert got["metadata"] == definition["metadata"]
    assert got["tags"] == {"kind": "test", "label": "test-linux64/opt-xpcshell-1"}
    assert got["routes"] == definition["routes"]
    # A dependency that is not stored is left out, not an error.
    assert got["dependencies"] == [{"taskId": dep.task_id}]
    assert got["dependents"]["nodes"] == [{"taskId": other.task_id}]

    status = got["status"]
    assert status["state"] == "FAILED" and status["retriesLeft"] == 4
    assert status["task"] == {"taskId": task.task_id}
    assert (status["deadline"], status["expires"]) == (definition["deadline"],
                                                       definition["expires"])
    runs = task.run_list()
    assert [r["runId"] for r in status["runs"]] == [0, 1]
    assert [r["state"] for r in status["runs"]] == ["EXCEPTION", "FAILED"]
    for got_run, run in zip(status["runs"], runs, strict=True):
        for field in ("reasonCreated", "reasonResolved", "workerGroup", "workerId", "takenUntil",
                      "scheduled", "started", "resolved"):
            assert got_run[field] == run.get(field), field


async def test_status_root_fields_and_unknown_ids(pool: asyncpg.Pool, settings: Settings) -> None:
    pending = FakeTask(state="pending")
    fresh = FakeTask(state="unscheduled")
    await store(pool, [pending, fresh])
    result = await execute(pool, settings, f"""{{
        a: status(taskId: "{pending.task_id}") {{ state runs {{ state started workerId }} }}
        b: status(taskId: "{fresh.task_id}") {{ state runs {{ runId }} }}
        c: status(taskId: "nope") {{ state }}
        d: task(taskId: "nope") {{ taskId }} }}""")
    assert result.data == {
        "a": {"state": "PENDING",
              "runs": [{"state": "PENDING", "started": None, "workerId": None}]},
        "b": {"state": "UNSCHEDULED", "runs": []},
        "c": None, "d": None,
    }


async def test_indexed_task_every_field_and_expiry(pool: asyncpg.Pool, settings: Settings) -> None:
    task = FakeTask()
    past = datetime.now(UTC) - timedelta(days=1)
    await store(pool, [task], [("gecko.v2.mc.latest.firefox.linux64-opt", task.task_id, 5, FAR),
                               ("gecko.v2.mc.old", task.task_id, 1, past),
                               ("toplevel", task.task_id, 0, FAR)])
    result = await execute(pool, settings, """{
        indexedTask(indexPath: "gecko.v2.mc.latest.firefox.linux64-opt") {
            indexPath namespace name taskId rank data expires task { taskId } }
        expired: indexedTask(indexPath: "gecko.v2.mc.old") { taskId }
        top: indexedTask(indexPath: "toplevel") { namespace name }
        many: indexedTasks(indexPaths: ["toplevel", "gecko.v2.mc.old", "toplevel"]) {
            indexPath } }""")
    assert result.errors == []
    assert result.data["indexedTask"] == {
        "indexPath": "gecko.v2.mc.latest.firefox.linux64-opt",
        "namespace": "gecko.v2.mc.latest.firefox", "name": "linux64-opt",
        "taskId": task.task_id, "rank": 5.0, "data": {"k": 1},
        "expires": "2099-01-01T00:00:00.000Z", "task": {"taskId": task.task_id}}
    # An expired entry reads as absent, as index.findTask answers 404.
    assert result.data["expired"] is None
    assert result.data["top"] == {"namespace": "", "name": "toplevel"}
    assert result.data["many"] == [{"indexPath": "toplevel"}, None, {"indexPath": "toplevel"}]


async def test_label_history_every_field(pool: asyncpg.Pool, settings: Settings) -> None:
    ok = FakeTask(label="L", created=BASE, state="completed")
    bad = FakeTask(label="L", created=BASE + timedelta(hours=1), state="exception")
    running = FakeTask(label="L", created=BASE + timedelta(hours=2), state="running")
    named = FakeTask(label=None, created=BASE)  # falls back to metadata.name
    await store(pool, [ok, bad, running, named])
    result = await execute(pool, settings, """{
        label(label: "L") { label latest { taskId } lastSuccess { taskId } lastFailure { taskId }
                            history { nodes { taskId } } }
        byName: label(label: "unnamed") { latest { taskId label } }
        none: label(label: "nothing") { latest { taskId } lastSuccess { taskId }
                                        history {
                                            nodes { taskId } pageInfo { hasNextPage } } } }""")
    assert result.errors == []
    assert result.data["label"] == {
        "label": "L", "latest": {"taskId": running.task_id},
        "lastSuccess": {"taskId": ok.task_id}, "lastFailure": {"taskId": bad.task_id},
        "history": {"nodes": [{"taskId": running.task_id}, {"taskId": bad.task_id},
                              {"taskId": ok.task_id}]}}
    assert result.data["byName"] == {"latest": {"taskId": named.task_id, "label": "unnamed"}}
    assert result.data["none"] == {"latest": None, "lastSuccess": None,
                                   "history": {"nodes": [], "pageInfo": {"hasNextPage": False}}}


async def test_task_group(pool: asyncpg.Pool, settings: Settings) -> None:
    task = FakeTask(task_group_id="g1")
    await store(pool, [task])
    result = await execute(pool, settings, """{
        taskGroup(taskGroupId: "g1") { taskGroupId tasks { nodes { taskId } } }
        missing: taskGroup(taskGroupId: "g2") { taskGroupId } }""")
    assert result.data == {"taskGroup": {"taskGroupId": "g1", "tasks": {
        "nodes": [{"taskId": task.task_id}]}}, "missing": None}


async def test_too_many_keys_is_refused_before_any_sql(
        pool: asyncpg.Pool, settings: Settings) -> None:
    tight = settings.with_(max_keys=3)
    result = await execute(pool, tight, """{ tasks(taskIds: ["a", "b", "c", "d"]) { taskId } }""")
    assert result.data is None
    error = result.errors[0]
    assert error["extensions"] == {"code": "LIMIT_EXCEEDED", "limit": "max_keys", "value": 4,
                                   "maximum": 3}
    assert "taskIds" in error["message"]
    assert result.statements == 0
    for field, arg in (("labels", "labels"), ("indexedTasks", "indexPaths"),
                       ("statuses", "taskIds")):
        result = await execute(pool, tight,
                               f'{{ {field}({arg}: ["a","b","c","d"]) {{ __typename }} }}')
        assert result.errors[0]["extensions"]["code"] == "LIMIT_EXCEEDED", field


async def test_depth_limit(pool: asyncpg.Pool, settings: Settings) -> None:
    shallow = settings.with_(max_depth=3)
    result = await execute(pool, shallow, """{ task(taskId: "x") { status { task { status {
        task { taskId } } } } } }""")
    assert result.data is None
    assert "exceeds maximum operation depth of 3" in result.errors[0]["message"]
    assert result.statements == 0


async def test_bad_filter_tags(pool: asyncpg.Pool, settings: Settings) -> None:
    result = await execute(pool, settings, """{ label(label: "x", filter: {tags: [1]}) {
        latest { taskId } } }""")
    assert result.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "filter.tags" in result.errors[0]["message"]


async def test_definition_is_returned_verbatim(pool: asyncpg.Pool, settings: Settings) -> None:
    task = FakeTask()
    await store(pool, [task])
    result = await execute(pool, settings, f'{{ task(taskId: "{task.task_id}") {{ definition }} }}')
    assert orjson.dumps(result.data["task"]["definition"], option=orjson.OPT_SORT_KEYS) == \
        orjson.dumps(task.definition(), option=orjson.OPT_SORT_KEYS)
