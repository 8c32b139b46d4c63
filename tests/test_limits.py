"""Document-wide limits: cost, depth, aliases, tokens; and the production switches."""

from __future__ import annotations

from typing import Any

import asyncpg
import graphql
import httpx
import pytest
from graphql import parse

from factories import FakeTask, store
from graphql_helpers import execute
from servers import serving
from services.postgres import connected
from tcgraph.config import Settings
from tcgraph.api.schema import sdl
from tcgraph.measure import document_demands
from tcgraph.server import create_app


@pytest.mark.parametrize("document, variables, cost", [
    ("{ task(taskId: \"x\") { taskId } }", {}, 1),
    ("{ task(taskId: \"x\") { taskId status { state } } }", {}, 2),
    ("query ($l: [String!]!) { labels(labels: $l) { latest { status { state } } } }",
     {"l": ["a"] * 10_000}, 30_000),
    ("{ tasks(taskIds: [\"a\", \"b\"]) { taskId } }", {}, 2),
    ("{ taskGroup(taskGroupId: \"g\") { tasks(first: 1000) { nodes { taskId } } } }", {},
     1 * (1 + 1000 * 2)),
    ("{ label(label: \"x\") { history { nodes { taskId } } } }", {}, 1 + 100 * 2),
    ("query { ...F } fragment F on Query "
     "{ task(taskId: \"x\") { ... on Task { status { state } } } }", {}, 2),
])
def test_document_cost(document: str, variables: dict[str, Any], cost: int) -> None:
    assert cost_of(document, variables) == cost


def cost_of(document: str, variables: dict[str, Any] | None = None) -> int:
    """The cost limits.py computes for `document` on the published schema."""
    demands = document_demands(SCHEMA, parse(document), None, variables or {},
                               Settings().default_page_size)
    assert demands is not None
    return demands.cost


SCHEMA = graphql.build_schema(sdl())


async def test_over_cost_is_refused_before_any_sql(pool: asyncpg.Pool, settings: Settings) -> None:
    tight = settings.with_(max_cost=50)
    result = await execute(pool, tight, """{ taskGroup(taskGroupId: "g") {
        tasks(first: 100) { nodes { taskId } } } }""")
    assert result.data is None and result.statements == 0
    assert result.errors[0]["extensions"] == {"code": "LIMIT_EXCEEDED", "limit": "max_cost",
                                              "value": 201, "maximum": 50}
    assert "max_cost" in result.errors[0]["message"]


@pytest.mark.parametrize("setting, document, limit", [
    ({"max_depth": 2}, '{ task(taskId: "x") { status { task { taskId } } } }', "max_depth"),
    ({"max_aliases": 2}, '{ a: task(taskId: "x") { taskId } b: task(taskId: "y") { taskId } '
                         'c: task(taskId: "z") { taskId } }', "max_aliases"),
    ({"max_tokens": 10}, '{ task(taskId: "x") { taskId status { state } } }', "max_tokens"),
])
async def test_document_limits_are_coded_400s(
        pool: asyncpg.Pool, settings: Settings, database_url: str, setting: dict[str, Any],
        document: str, limit: str) -> None:
    with serving(create_app(settings.with_(**setting), database_url)) as url:
        response = httpx.post(f"{url}/graphql", json={"query": document})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert error["extensions"]["limit"] == limit
    assert error["extensions"]["maximum"] == next(iter(setting.values()))
    assert response.json()["extensions"]["sql"]["statements"] == 0


async def test_introspection_can_be_switched_off(pool: asyncpg.Pool, settings: Settings) -> None:
    on = await execute(pool, settings, "{ __schema { queryType { name } } }")
    off = await execute(pool, settings.with_(introspection=False),
                        "{ __schema { queryType { name } } }")
    assert on.data == {"__schema": {"queryType": {"name": "Query"}}}
    assert off.data is None and "introspection" in off.errors[0]["message"].lower()


async def test_masked_errors_name_the_request_id_and_hide_internals(
        pool: asyncpg.Pool, settings: Settings, database_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    await store(pool, [FakeTask(task_id="t1")])
    # A fault the code does not expect, injected in the database: the definitions' column
    # is gone (a schema out of step with the code), so reading one raises PostgreSQL's
    # own error, which names the schema's internals.
    async with connected(database_url) as conn:
        await conn.execute("ALTER TABLE tasks RENAME COLUMN definition TO definition_moved")
    document = {"query": '{ task(taskId: "t1") { taskId metadata { name } } }'}
    with serving(create_app(settings.with_(mask_errors=True, sql_json=False), database_url)) as url:
        masked = httpx.post(f"{url}/graphql", json=document, headers={"x-request-id": "req-42"})
        cursor = httpx.post(f"{url}/graphql", json={
            "query": '{ taskGroup(taskGroupId: "group-a") { '
                     'tasks(after: "junk") { nodes { taskId } } } }'})
    error = masked.json()["errors"][0]
    assert "definition" not in masked.text and "UndefinedColumn" not in masked.text
    assert error["extensions"] == {"code": "INTERNAL_ERROR", "requestId": "req-42"}
    assert "req-42" in error["message"]
    assert any("does not exist" in r.getMessage()
               or (r.exc_info and "does not exist" in str(r.exc_info[1])) for r in caplog.records)
    # Errors the client can act on are not masked.
    assert cursor.json()["errors"][0]["extensions"]["code"] == "BAD_CURSOR"


async def test_an_oversized_first_is_refused_before_any_sql(
        pool: asyncpg.Pool, settings: Settings) -> None:
    # The group does not exist: without the check before execution, the
    # connection would never be resolved and the limit never seen.
    result = await execute(pool, settings, """{ taskGroup(taskGroupId: "none") {
        tasks(first: 1001) { nodes { taskId } } } }""")
    assert result.data is None and result.statements == 0
    assert result.errors[0]["extensions"] == {"code": "LIMIT_EXCEEDED", "limit": "max_page_size",
                                              "value": 1001, "maximum": 1000}


# --- cost bounds what runs: dependencies count as a page ---------------------------


def count_objects(value: object) -> int:
    """The objects in an answer (what cost counts), nulls aside."""
    if isinstance(value, list):
        return sum(count_objects(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(count_objects(v) for v in value.values())
    return 0


@pytest.mark.parametrize("sql_json", [True, False])
async def test_cost_bounds_the_objects_dependencies_return(
        pool: asyncpg.Pool, settings: Settings, sql_json: bool) -> None:
    """The reported reproducer: 1,000 keys of a task with 1,000 dependencies cost 2,000."""
    parents = [FakeTask(label=f"dep-{n}") for n in range(1_000)]
    fan_in = FakeTask(label="fan-in", dependencies=[p.task_id for p in parents])
    await store(pool, [*parents, fan_in])
    document = "query ($ids: [ID!]!) { tasks(taskIds: $ids) { dependencies { taskId } } }"
    ids = {"ids": [fan_in.task_id] * 1_000}
    demands = document_demands(SCHEMA, parse(document), None, ids, settings.default_page_size)
    assert demands is not None and demands.cost == 1_000 * (1 + settings.default_page_size)
    result = await execute(pool, settings.with_(sql_json=sql_json), document, ids)
    assert not result.errors
    first = result.data["tasks"][0]["dependencies"]
    assert [d["taskId"] for d in first] == [p.task_id for p in parents[:100]]
    assert count_objects(result.data["tasks"]) <= demands.cost


async def test_asking_for_every_dependency_of_many_keys_is_refused(
        pool: asyncpg.Pool, settings: Settings) -> None:
    result = await execute(pool, settings, "query ($ids: [ID!]!) { tasks(taskIds: $ids) { "
                           "dependencies(first: 1000) { taskId } } }", {"ids": ["x"] * 1_000})
    assert result.statements == 0
    assert result.errors[0]["extensions"] == {
        "code": "LIMIT_EXCEEDED", "limit": "max_cost", "value": 1_000 * 1_001,
        "maximum": settings.max_cost}


@pytest.mark.parametrize("sql_json", [True, False])
async def test_dependencies_first_from_a_variable(pool: asyncpg.Pool, settings: Settings,
                                                  sql_json: bool) -> None:
    parents = [FakeTask(label=f"var-dep-{n}") for n in range(3)]
    child = FakeTask(label="var-child", dependencies=[p.task_id for p in parents])
    await store(pool, [*parents, child])
    result = await execute(pool, settings.with_(sql_json=sql_json),
                           "query ($id: ID!, $n: Int) { task(taskId: $id) { "
                           "dependencies(first: $n) { taskId } } }", {"id": child.task_id, "n": 2})
    assert result.data == {"task": {"dependencies": [{"taskId": p.task_id} for p in parents[:2]]}}


# --- arguments that cannot be coerced: one coded answer on both paths ---------------


NULL_INCLUDE = [
    "query ($v: Boolean = true, $id: ID!) { task(taskId: $id) { taskId label @include(if: $v) } }",
    "query ($v: Boolean = true, $id: ID!) { task(taskId: $id) { ...F } } "
    "fragment F on Task { taskId status @include(if: $v) { state } }",
    "query ($v: Boolean = false, $id: ID!) { task(taskId: $id) { taskId label @skip(if: $v) } }",
    "query ($v: ID = \"x\", $id: ID!) "
    "{ task(taskId: $v) { taskId } t: task(taskId: $id) { taskId } }",
]


@pytest.mark.parametrize("document", NULL_INCLUDE)
async def test_a_null_variable_in_a_non_null_place_is_refused_alike_on_both_paths(
        pool: asyncpg.Pool, settings: Settings, document: str) -> None:
    task = FakeTask(label="null-include")
    await store(pool, [task])
    answers = []
    for sql_json in (True, False):
        result = await execute(pool, settings.with_(sql_json=sql_json), document,
                               {"v": None, "id": task.task_id})
        assert result.data is None and result.statements == 0
        assert [e["extensions"] for e in result.errors] == [{"code": "BAD_USER_INPUT"}]
        assert "'$v'" in result.errors[0]["message"]
        answers.append(result.errors)
    assert answers[0] == answers[1]


@pytest.mark.parametrize("sql_json", [True, False])
async def test_a_null_include_that_never_runs_is_not_refused(
        pool: asyncpg.Pool, settings: Settings, sql_json: bool) -> None:
    task = FakeTask(label="null-include-skipped")
    await store(pool, [task])
    result = await execute(pool, settings.with_(sql_json=sql_json),
                           "query ($v: Boolean = true, $id: ID!) { task(taskId: $id) { "
                           "taskId ...F @skip(if: true) } } "
                           "fragment F on Task { label @include(if: $v) }",
                           {"v": None, "id": task.task_id})
    assert not result.errors and result.data == {"task": {"taskId": task.task_id}}


# --- introspection off: no schema names in "Did you mean" hints ------------------------


SUGGESTING = [
    ('{ task(taskId: "x") { taskid } }', None),
    ('{ taskGroup(taskGroupId: "g") { tasks(state: FAILD) { nodes { taskId } } } }', None),
    ("query ($s: TaskState) { taskGroup(taskGroupId: \"g\") { tasks(state: $s) { "
     "nodes { taskId } } } }", {"s": "FAILD"}),
    ('{ labels(labels: ["x"], filter: {projectid: "p"}) { label } }', None),
]


@pytest.mark.parametrize("document, variables", SUGGESTING)
async def test_without_introspection_errors_suggest_no_names(
        pool: asyncpg.Pool, settings: Settings, document: str,
        variables: dict[str, Any] | None) -> None:
    shown = await execute(pool, settings, document, variables)
    assert "Did you mean" in shown.errors[0]["message"]
    hidden = await execute(pool, settings.with_(introspection=False), document, variables)
    assert hidden.errors and hidden.statements == 0
    for error in hidden.errors:
        assert "Did you mean" not in error["message"]
        assert error["extensions"]["code"] in ("GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT")
