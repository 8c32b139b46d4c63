"""Compiled selections (api/sqljson.py) answer exactly what the resolvers answer.

Documents that hypothesis-graphql generates from the published schema run
twice in process against the same data: with `sql_json` on (selections whose
every field has an SQL declaration answered with JSON built in PostgreSQL) and
off (graphql-core's standard execution of every resolver of the same schema).
Data and errors must be the same. The examples are derandomized (a fixed
seed), so CI runs the same few hundred documents every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import graphql
import httpx
import orjson
import pytest

from needs import need

need("hypothesis")  # before the imports it guards

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from hypothesis_graphql import nodes, queries

from factories import BASE, FAR, FakeTask
from servers import serving
from services.postgres import connected
from tcgraph import pagination
from tcgraph.api.context import Context
from tcgraph.api.schema import build_schema
from tcgraph.config import Settings
from tcgraph.server import create_app
from tcgraph.store.pool import open_pool

SDL = (Path(__file__).resolve().parents[2] / "schema.graphql").read_text()
BIG = "12345678901234567890123"  # beyond 64 bits: must come out digit for digit

DECISION = FakeTask(task_id="DiffDecisionTask000001", task_group_id="DiffDecisionTask000001",
                    label="Gecko Decision Task", tags={"kind": "decision-task"})
TASKS = [DECISION] + [
    FakeTask(task_id=f"DiffTask{n:014d}", task_group_id=DECISION.task_id,
             label="build-linux64/opt" if n % 2 else f"test-linux64/opt-{n % 3}",
             created=BASE + timedelta(hours=n),
             state=["completed", "failed", "exception", "running", "pending", "unscheduled"][n % 6],
             runs=1 + n % 3,
             dependencies=[DECISION.task_id, "DiffMissingTask0000001"] + (
                 [f"DiffTask{n - 1:014d}"] * (1 + n % 2) if n else []),
             project_id="autoland" if n % 2 else "mozilla-central",
             tags={"kind": "build" if n % 2 else "test", "os": "linux"})
    for n in range(10)
]
ENTRIES: list[tuple[str, str, float, datetime]] = [
    (f"gecko.v2.{project}.latest.firefox.{name}", task.task_id, rank, FAR)
    for rank, (project, name, task) in enumerate(
        [("autoland", "linux64-opt", TASKS[2]), ("autoland", "linux64-debug", TASKS[4]),
         ("mozilla-central", "linux64-opt", TASKS[6]), ("try", "win64", TASKS[8])])]
ENTRIES.append(("gecko.v2.autoland.latest.firefox.expired", TASKS[1].task_id, 1.5,
                BASE - timedelta(days=1)))
ENTRIES.append(("gecko.v2.dangling", "DiffMissingTask0000001", 0.25, FAR))

TASK_IDS = [t.task_id for t in TASKS] + ["DiffMissingTask0000001"]
LABELS = sorted({t.label for t in TASKS if t.label}) + ["no-such-label"]
PATHS = [path for path, *_ in ENTRIES] + ["gecko.v2", "nothing.here"]
CURSORS = [pagination.encode(pagination.TASK_GROUP, TASKS[3].task_id),
           pagination.encode(pagination.DEPENDENTS, TASKS[1].task_id), "junk"]


class Server:
    """One event loop and pool for the module, on a database holding the data above."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.settings = Settings(database_url=url, explain=True, pool_max_size=2)
        self.pool: asyncpg.Pool = self.loop.run_until_complete(open_pool(url, self.settings))
        self.schemas = {on: build_schema(self.settings.with_(sql_json=on)) for on in (True, False)}

    def run(self, document: str, sql_json: bool) -> tuple[Any, list[Any], int]:
        async def execute() -> tuple[Any, list[Any], int]:
            settings = self.settings.with_(sql_json=sql_json)
            context = Context.create(self.pool, settings)
            result = await self.schemas[sql_json].execute(document, context_value=context)
            # Read the answer as a client would: the JSON the view writes.
            data = orjson.loads(orjson.dumps(result.data))
            errors = sorted((orjson.loads(orjson.dumps(e.formatted)) for e in result.errors or ()),
                            key=lambda e: orjson.dumps(e))
            return data, errors, context.db.stats.statements

        return self.loop.run_until_complete(execute())

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.close())
        self.loop.close()


@pytest.fixture(scope="module")
def database(filled_database: Any) -> Iterator[str]:
    with filled_database(TASKS, ENTRIES) as url:
        async def big_number() -> None:
            async with connected(url) as conn:
                await conn.execute(
                    "UPDATE tasks SET definition = jsonb_set(definition, '{extra}', "
                    f"jsonb_build_object('big', {BIG}::numeric, 'small', 0.1)) "
                    "WHERE task_id = $1", DECISION.task_id)

        asyncio.run(big_number())
        yield url


@pytest.fixture(scope="module")
def server(database: str) -> Iterator[Server]:
    served = Server(database)
    yield served
    served.close()


def _values() -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    ids = st.one_of(st.sampled_from(TASK_IDS), st.text(max_size=8))
    strings = st.one_of(st.sampled_from(LABELS + PATHS + CURSORS), st.text(max_size=8))
    ints = st.one_of(st.integers(0, 4), st.sampled_from([-1, 1000, 1001]))
    tags = st.sampled_from(['{kind: "build"}', '{os: "linux"}', "{}", '{kind: 1}']).map(
        lambda text: graphql.parse_value(text))
    return {"ID": ids.map(nodes.String), "String": strings.map(nodes.String),
            "Int": ints.map(nodes.Int), "JSON": tags}


def same_keys(left: Any, right: Any) -> bool:
    """The same keys in the same order, at every level."""
    if isinstance(left, dict) and isinstance(right, dict):
        return list(left) == list(right) and all(same_keys(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_keys, left, right))
    return True


@hypothesis_settings(max_examples=300, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture])
@given(document=queries(SDL, custom_scalars=_values()))
def test_compiled_and_standard_execution_answer_the_same(server: Server, document: str) -> None:
    compiled = server.run(document, sql_json=True)
    standard = server.run(document, sql_json=False)
    assert compiled[:2] == standard[:2], document
    assert same_keys(compiled[0], standard[0]), document


FIXED = {
    "every task field": f"""{{ tasks(taskIds: {orjson.dumps(TASK_IDS).decode()}) {{
        __typename taskId taskGroupId label schedulerId taskQueueId provisionerId workerType
        projectId priority retries created deadline expires
        metadata {{ name description owner source }} tags routes definition
        dependencies {{ taskId status {{ state }} }}
        status {{ taskId provisionerId workerType taskQueueId schedulerId projectId taskGroupId
          priority deadline expires retriesLeft state
          runs {{ runId state reasonCreated reasonResolved workerGroup workerId takenUntil
                  scheduled started resolved }} task {{ taskId }} }} }} }}""",
    "labels with filters": f"""{{ labels(labels: {orjson.dumps(LABELS).decode()},
        filter: {{projectId: "autoland", tags: {{kind: "build"}}}}) {{
        label latest {{ taskId }} lastSuccess {{ taskId }} lastFailure {{ taskId created }} }}
        one: label(label: "build-linux64/opt") {{ latest {{ status {{ state }} }} }} }}""",
    "index paths": f"""{{ indexedTasks(indexPaths: {orjson.dumps(PATHS).decode()}) {{
        indexPath namespace name taskId rank data expires task {{ taskId label }} }}
        indexedTask(indexPath: "{PATHS[0]}") {{ taskId }} }}""",
    "pages": f"""{{ taskGroup(taskGroupId: "{DECISION.task_id}") {{
        tasks(first: 3, after: "{CURSORS[0]}") {{ nodes {{ taskId dependencies {{ taskId }} }}
        pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} edges {{ cursor }} }}
        completed: tasks(state: COMPLETED) {{ nodes {{ taskId }} }} }}
        task(taskId: "{DECISION.task_id}") {{ dependents(first: 2) {{ nodes {{ taskId }}
          pageInfo {{ endCursor }} }} }} }}""",
    "fragments, aliases, skip and include": f"""query ($no: Boolean = false) {{
        a: task(taskId: "{TASKS[1].task_id}") {{ ...T id: taskId status {{ state }} }}
        b: task(taskId: "{TASKS[1].task_id}") {{ taskId @skip(if: true) ...T @include(if: $no) }}
        statuses(taskIds: ["{TASKS[2].task_id}"]) {{ ... on TaskStatus {{ state }}
          ... {{ state runs {{ runId }} }} }} }}
        fragment T on Task {{ label status {{ expires }} }}""",
}


@pytest.mark.parametrize("name", FIXED)
def test_fixed_documents_answer_the_same(server: Server, name: str) -> None:
    compiled = server.run(FIXED[name], sql_json=True)
    standard = server.run(FIXED[name], sql_json=False)
    assert compiled[0] is not None and compiled[1] == [], compiled
    assert compiled[:2] == standard[:2]
    assert same_keys(compiled[0], standard[0])
    assert compiled[2] <= standard[2]


def test_a_compiled_level_is_one_statement(server: Server) -> None:
    # labels -> latest -> status -> runs, and index paths -> task: one statement each.
    _, errors, statements = server.run(
        f"""{{ labels(labels: {orjson.dumps(LABELS).decode()}) {{ label latest {{
               status {{ state runs {{ runId }} }} }} }}
             indexedTasks(indexPaths: {orjson.dumps(PATHS).decode()}) {{ task {{ taskId }} }} }}""",
        sql_json=True)
    assert errors == [] and statements == 2
    # A page of a task group with each task's dependencies: the group, then the page.
    _, errors, statements = server.run(
        f"""{{ taskGroup(taskGroupId: "{DECISION.task_id}") {{ tasks(first: 1000) {{
               nodes {{ taskId status {{ state }} dependencies {{ taskId status {{ state }} }} }}
               pageInfo {{ endCursor }} }} }} }}""", sql_json=True)
    assert errors == [] and statements == 2


@pytest.mark.parametrize("sql_json", [True, False])
def test_numbers_come_out_exactly_as_stored(database: str, sql_json: bool) -> None:
    document = f'{{ task(taskId: "{DECISION.task_id}") {{ definition }} }}'
    app = create_app(Settings(database_url=database, sql_json=sql_json), database)
    with serving(app) as url:
        response = httpx.post(f"{url}/graphql", json={"query": document})
    assert response.status_code == 200
    assert f'"big":{BIG}' in response.text.replace(" ", "")
    assert '"small":0.1' in response.text.replace(" ", "")


@pytest.mark.parametrize("sql_json", [True, False])
def test_a_shared_load_survives_a_sibling_cancelled_by_an_error(database: str,
                                                               sql_json: bool) -> None:
    # b's bad cursor nulls b, and graphql-core cancels b's pending fields; the
    # definition load that a shares with b must still answer a.
    task_id = DECISION.task_id
    document = f"""{{ a: task(taskId: "{task_id}") {{ definition }}
        b: task(taskId: "{task_id}") {{
            definition dependents(after: "junk") {{ nodes {{ taskId }} }} }} }}"""
    app = create_app(Settings(database_url=database, sql_json=sql_json), database)
    with serving(app) as url:
        response = httpx.post(f"{url}/graphql", json={"query": document})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"]["a"]["definition"]["taskGroupId"] == task_id
    assert body["data"]["b"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_CURSOR"]
