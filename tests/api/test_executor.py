"""The compiled fast path (api/executor.py) answers exactly what the standard executor answers.

Every document of the corpus runs twice against the same data: once on a schema whose
fast path is off (Strawberry's executor), once on a schema whose fast path is on. Data
(compared as orjson bytes, so key order counts), errors (messages, paths, locations,
extensions) and the path taken must be as expected; the fast path never runs more SQL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from factories import BASE, FAR, FakeTask, slug, store
from graphql_helpers import STATUS_FIELDS, TASK_FIELDS
from tcgraph import pagination
from tcgraph.api import executor
from tcgraph.api.context import Context
from tcgraph.api.schema import build_schema
from tcgraph.config import Settings
from tcgraph.errors import DatabaseUnavailable
from tcgraph.server import create_app
from tcgraph.store.queries import tasks as task_queries
from tcgraph.timefmt import format_time

# --- the data every corpus document runs against ------------------------------------

B1, B2, B3, T1, T2, U1 = (slug(9000 + i) for i in range(6))
G3 = [slug(9100 + i) for i in range(5)]
PAST = datetime.now(timezone.utc) - timedelta(days=1)
H = timedelta(hours=1)
LINUX = "gecko.v2.mc.latest.firefox.linux64-opt"
WIN = "gecko.v2.mc.latest.firefox.win64-opt"


async def seed(pool: asyncpg.Pool) -> None:
    tasks = [
        FakeTask(task_id=B1, label="build", task_group_id="g1", created=BASE,
                 tags={"kind": "build"}),
        FakeTask(task_id=B2, label="build", task_group_id="g1", created=BASE + H, state="failed",
                 runs=2),
        FakeTask(task_id=B3, label="build", task_group_id="g2", created=BASE + 2 * H,
                 state="running", project_id="beta", tags={"kind": "build"}),
        FakeTask(task_id=T1, label="test", task_group_id="g1", created=BASE + H,
                 state="exception", runs=3, dependencies=[B1, B2, "unknown", B1]),
        FakeTask(task_id=T2, label="test", task_group_id="g2", created=BASE + 3 * H,
                 state="pending", dependencies=[B3, T1]),
        FakeTask(task_id=U1, label=None, task_group_id="g2", state="unscheduled"),
        *(FakeTask(task_id=t, label=f"page-{i % 2}", task_group_id="g3", created=BASE + i * H,
                   state="completed" if i % 2 else "failed", dependencies=[B1])
          for i, t in enumerate(G3)),
    ]
    await store(pool, tasks, [
        (LINUX, B1, 5, FAR), (WIN, B2, 3, FAR), ("gecko.v2.mc.pushdate.2026.11.01", B3, 1, FAR),
        ("gecko.v2.old", B1, 1, PAST), ("toplevel", T1, 0, FAR),
        *((f"gecko.v2.try.latest.firefox.p{i}", t, i, FAR) for i, t in enumerate(G3)),
    ])


PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"


def cursor(kind: str, *key: str) -> str:
    return pagination.encode(kind, *key)


# --- the corpus --------------------------------------------------------------------------

@dataclass
class Case:
    query: str
    variables: dict | None = None
    path: str = "fast"  # "fast", "fallback", or "none" (refused before execution)
    operation_name: str | None = None
    error: bool | None = None  # does the standard executor report an error? (default: path != fast)
    settings: dict = field(default_factory=dict)


CORPUS: dict[str, Case] = {
    "task every field": Case(f"""{{ task(taskId: "{T1}") {{ {TASK_FIELDS}
        dependencies {{ taskId }} dependents {{ nodes {{ taskId }} }}
        status {{ {STATUS_FIELDS} task {{ taskId }} }} }} }}"""),
    "aliases": Case(f"""{{ a: task(taskId: "{B1}") {{ id: taskId l: label when: created }}
        b: task(taskId: "{B2}") {{ taskId s: status {{ st: state }} }}
        c: status(taskId: "{B1}") {{ state }} }}"""),
    "same field twice is merged": Case(f"""{{ task(taskId: "{T1}") {{ taskId
        status {{ state }} label status {{ expires runs {{ runId }} }} taskId
        status {{ runs {{ state }} }} }} }}"""),
    "named fragments": Case(f"""query {{ task(taskId: "{T1}") {{ ...T status {{ ...S }} }} }}
        fragment T on Task {{ taskId label dependencies {{ ...T2 }} }}
        fragment T2 on Task {{ taskId status {{ ...S }} }}
        fragment S on TaskStatus {{ state expires }}"""),
    "inline fragments": Case(f"""{{ task(taskId: "{B2}") {{ ... on Task {{ taskId }}
        ... {{ label status {{ ... on TaskStatus {{ state }} }} }} }} }}"""),
    "nested fragments and repeats": Case(f"""{{ ...Q }}
        fragment Q on Query {{ task(taskId: "{B1}") {{ ...A }} }}
        fragment A on Task {{ ...B taskId ... on Task {{ ...B label }} }}
        fragment B on Task {{ status {{ state }} taskId }}"""),
    "variables with defaults": Case(f"""query ($id: ID! = "{T1}", $first: Int = 1) {{
        task(taskId: $id) {{ taskId dependents(first: $first) {{ nodes {{ taskId }} {PAGE_INFO} }}
        }} }}"""),
    "variable given as null": Case("""query ($f: TaskFilter) {
        labels(labels: ["build"], filter: $f) { latest { taskId } } }""", {"f": None}),
    "filter variables": Case("""query ($f: TaskFilter) {
        labels(labels: ["build", "test"], filter: $f) { label latest { taskId } } }""",
                             {"f": {"projectId": "beta", "tags": {"kind": "build"}}}),
    "filter literals": Case("""{ a: label(label: "build", filter: {projectId: "gecko"}) {
        latest { taskId } lastSuccess { taskId } lastFailure { taskId } }
        b: label(label: "build", filter: {tags: {kind: "build"}}) { latest { taskId } } }"""),
    "skip and include literals": Case(f"""{{ task(taskId: "{T1}") {{
        taskId @skip(if: true) label @include(if: false)
        status @include(if: true) {{ state runs @skip(if: false) {{ runId }} }}
        ... on Task @skip(if: true) {{ created }} }} }}"""),
    "skip and include variables (on)": Case(f"""query ($s: Boolean!, $i: Boolean = true) {{
        task(taskId: "{T1}") {{ taskId @skip(if: $s) label @include(if: $i)
        ...F @include(if: $i) }} }} fragment F on Task {{ created @skip(if: $s) }}""",
                                            {"s": False}),
    "skip and include variables (off)": Case(f"""query ($s: Boolean!, $i: Boolean = true) {{
        task(taskId: "{T1}") {{ taskId @skip(if: $s) label @include(if: $i)
        ...F @include(if: $i) }} }} fragment F on Task {{ created @skip(if: $s) }}""",
                                             {"s": True, "i": False}),
    "unknown ids are null": Case(f"""{{ task(taskId: "nope") {{ taskId }}
        status(taskId: "nope") {{ state }} indexedTask(indexPath: "no.such.path") {{ taskId }}
        tasks(taskIds: ["{B1}", "missing", "{B2}"]) {{ taskId }}
        taskGroup(taskGroupId: "nope") {{ taskGroupId }} namespace(path: "no.such") {{ path }} }}"""),
    "missing latest": Case("""{ labels(labels: ["build", "nothing", "test"]) {
        label latest { taskId } lastSuccess { taskId } lastFailure { taskId label } } }"""),
    "duplicates in key lists": Case("""query ($ids: [ID!]!, $paths: [String!]!) {
        statuses(taskIds: $ids) { taskId state } tasks(taskIds: $ids) { taskId }
        labels(labels: ["build", "build", "test"]) { latest { taskId } }
        indexedTasks(indexPaths: $paths) { indexPath taskId task { taskId } } }""",
                                    {"ids": [B1, B1, "x", B2, B1],
                                     "paths": [LINUX, "nope", LINUX, "gecko.v2.old"]}),
    "every root field": Case(f"""{{ task(taskId: "{B1}") {{ taskId }}
        tasks(taskIds: ["{B2}"]) {{ taskId }} status(taskId: "{B3}") {{ state }}
        statuses(taskIds: ["{T1}", "{T2}"]) {{ state }} indexedTask(indexPath: "toplevel") {{ name }}
        indexedTasks(indexPaths: ["{WIN}"]) {{ rank }} label(label: "test") {{ label }}
        labels(labels: ["test"]) {{ latest {{ taskId }} }} taskGroup(taskGroupId: "g1") {{
        taskGroupId }} namespace(path: "gecko") {{ path }} }}"""),
    "indexed task every field": Case(f"""{{ indexedTask(indexPath: "{LINUX}") {{
        indexPath namespace name taskId rank data expires task {{ taskId status {{ state }} }} }}
        top: indexedTask(indexPath: "toplevel") {{ namespace name task {{ label }} }}
        expired: indexedTask(indexPath: "gecko.v2.old") {{ taskId }} }}"""),
    "runs of every state": Case(f"""query ($ids: [ID!]!) {{ statuses(taskIds: $ids) {{
        {STATUS_FIELDS} }} }}""", {"ids": [B1, B2, B3, T1, T2, U1]}),
    "unlabelled task": Case(f"""{{ task(taskId: "{U1}") {{ label metadata {{ name }} tags routes
        status {{ state runs {{ runId }} }} }} byName: label(label: "unnamed") {{
        latest {{ taskId }} }} }}"""),
    "dependencies and their statuses": Case("""query ($labels: [String!]!) {
        labels(labels: $labels) { label latest { taskId status { state expires }
        dependencies { taskId status { state runs { runId state } }
        dependencies { taskId } } } } }""", {"labels": ["test", "build", "page-1"]}),
    "task group pages": Case(f"""{{ taskGroup(taskGroupId: "g3") {{ taskGroupId
        first: tasks(first: 2) {{ edges {{ cursor node {{ taskId }} }} {PAGE_INFO} }}
        next: tasks(first: 2, after: "{cursor(pagination.TASK_GROUP, G3[1])}") {{
            nodes {{ taskId }} {PAGE_INFO} }}
        done: tasks(state: COMPLETED) {{ nodes {{ taskId status {{ state }} }} {PAGE_INFO} }}
        none: tasks(state: RUNNING) {{ nodes {{ taskId }} {PAGE_INFO} }} }} }}"""),
    "task group state from a variable": Case("""query ($state: TaskState, $first: Int) {
        g1: taskGroup(taskGroupId: "g1") { tasks(state: $state, first: $first) {
            nodes { taskId } } }
        g2: taskGroup(taskGroupId: "g2") { tasks(state: $state) { edges { node { taskId } } } } }""",
                                             {"state": "FAILED", "first": 5}),
    "label history pages": Case(f"""{{ label(label: "build") {{ label
        history(first: 1) {{ edges {{ cursor node {{ taskId created }} }} {PAGE_INFO} }}
        rest: history(after: "{cursor(pagination.LABEL_HISTORY, (BASE + 2 * H).isoformat(), B3)}")
            {{ nodes {{ taskId }} {PAGE_INFO} }} }}
        none: label(label: "nothing") {{ history {{ nodes {{ taskId }} {PAGE_INFO} }} }} }}"""),
    "dependents pages": Case(f"""{{ task(taskId: "{B1}") {{
        dependents(first: 3) {{ edges {{ cursor node {{ taskId label }} }} {PAGE_INFO} }}
        more: dependents(after: "{cursor(pagination.DEPENDENTS, G3[2])}") {{ nodes {{ taskId }} }}
        }} }}"""),
    "namespaces": Case(f"""{{ root: namespace(path: "") {{ path name expires
        namespaces {{ edges {{ cursor node {{ path name expires
            namespaces(first: 1) {{ nodes {{ name }} pageInfo {{ hasNextPage endCursor }} }} }} }} }}
        tasks {{ nodes {{ indexPath taskId }} }} }}
        firefox: namespace(path: "gecko.v2.mc.latest.firefox") {{ name tasks {{
            edges {{ cursor node {{ indexPath namespace name rank data expires task {{ taskId }} }} }}
            pageInfo {{ hasNextPage startCursor }} }} }}
        try: namespace(path: "gecko.v2.try.latest.firefox") {{
            tasks(first: 2, after: "{cursor(pagination.NAMESPACE_TASKS, "p0")}") {{
                nodes {{ name }} pageInfo {{ hasNextPage }} }} }}
        v2: namespace(path: "gecko.v2") {{ namespaces(first: 1,
            after: "{cursor(pagination.NAMESPACES, "mc")}") {{ nodes {{ path }} }} }}
        gone: namespace(path: "gecko.v2.nothing") {{ path }} }}"""),
    "typename everywhere": Case(f"""{{ __typename task(taskId: "{T1}") {{ __typename
        status {{ __typename runs {{ __typename }} task {{ __typename }} }}
        metadata {{ __typename }} dependents {{ __typename edges {{ __typename node {{ __typename }} }}
        pageInfo {{ __typename }} }} }} labels(labels: ["build"]) {{ __typename }}
        namespace(path: "gecko") {{ __typename namespaces {{ __typename nodes {{ __typename }} }}
        tasks {{ __typename edges {{ __typename }} }} }}
        taskGroup(taskGroupId: "g1") {{ __typename tasks {{ __typename }} }}
        a: __typename }}"""),
    "deep nesting within the depth limit": Case(f"""{{ task(taskId: "{T2}") {{ dependencies {{
        dependencies {{ status {{ task {{ dependencies {{ status {{ state }} }} }} }} }} }} }} }}"""),
    "operation chosen by name": Case(f"""query A {{ task(taskId: "{B1}") {{ taskId }} }}
        query B {{ status(taskId: "{B2}") {{ state }} }}""", operation_name="B"),
    # Strawberry runs the first operation when none is named.
    "first of several operations without a name": Case(f"""query A {{ task(taskId: "{B1}") {{
        taskId }} }} query B {{ status(taskId: "{B2}") {{ state }} }}"""),
    "empty lists": Case("""{ tasks(taskIds: []) { taskId } labels(labels: []) { label }
        indexedTasks(indexPaths: []) { taskId } }"""),
    # Errors: the fast path steps aside and the standard executor reports them.
    "too many keys": Case("""{ tasks(taskIds: ["a", "b", "c", "d"]) { taskId } }""",
                          path="fallback", settings={"max_keys": 3}),
    "too many labels in a variable": Case("""query ($l: [String!]!) { labels(labels: $l) {
        latest { taskId } } }""", {"l": ["a", "b", "c", "d"]}, path="fallback",
                                          settings={"max_keys": 3}),
    "too many keys beside a good field": Case(f"""{{ ok: task(taskId: "{B1}") {{ taskId }}
        bad: statuses(taskIds: ["a", "b", "c", "d"]) {{ state }} }}""",
                                              path="fallback", settings={"max_keys": 3}),
    "bad cursor": Case(f"""{{ task(taskId: "{B1}") {{ taskId dependents(after: "nope") {{
        nodes {{ taskId }} }} }} }}""", path="fallback"),
    "cursor of another connection": Case(f"""{{ taskGroup(taskGroupId: "g3") {{ tasks(after:
        "{cursor(pagination.DEPENDENTS, G3[0])}") {{ nodes {{ taskId }} }} }} }}""",
                                         path="fallback"),
    "first too large": Case("""{ label(label: "build") { history(first: 5000) {
        nodes { taskId } } } }""", path="none"),
    "first negative": Case("""{ namespace(path: "") { namespaces(first: -1) { nodes { path } } } }""",
                           path="fallback"),
    "bad filter tags": Case("""{ label(label: "x", filter: {tags: [1]}) { latest { taskId } } }""",
                            path="fallback"),
    "variable of the wrong type": Case("""query ($ids: [ID!]!) { tasks(taskIds: $ids) { taskId } }""",
                                       {"ids": [True]}, path="fallback"),
    "missing variable": Case("""query ($ids: [ID!]!) { tasks(taskIds: $ids) { taskId } }""",
                             path="fallback"),
    "skip with a null variable": Case(f"""query ($s: Boolean = false) {{ task(taskId: "{B1}") {{
        taskId @skip(if: $s) }} }}""", {"s": None}, path="fallback"),
    # Not errors, but not for the fast path either.
    "introspection": Case("""{ __schema { queryType { name } } }""", path="fallback", error=False),
    "type introspection beside data": Case(f"""{{ __type(name: "Task") {{ name }}
        task(taskId: "{B1}") {{ taskId }} }}""", path="fallback", error=False),
    "depth limit": Case(f"""{{ task(taskId: "{B1}") {{ status {{ task {{ status {{
        task {{ taskId }} }} }} }} }} }}""", path="none", settings={"max_depth": 3}),
    "syntax error": Case("""{ task(taskId: "x") { taskId }""", path="none"),
    "unknown field": Case("""{ task(taskId: "x") { nope } }""", path="none"),
    "mutation": Case("""mutation { task(taskId: "x") { taskId } }""", path="none"),
    "unknown operation name": Case("""query A { task(taskId: "x") { taskId } }""",
                                   operation_name="B", path="none"),
}


@dataclass
class Outcome:
    data: Any
    errors: list[dict]
    extensions: dict | None
    statements: int
    path: str


async def run(pool: asyncpg.Pool, settings: Settings, case: Case, fast: bool,
              schema: Any = None, context: Context | None = None) -> Outcome:
    schema = schema or build_schema(settings)
    schema.fast_path.enabled = fast
    taken, fallbacks = schema.fast_path.taken, schema.fast_path.fallbacks
    context = context or Context.create(pool, settings)
    try:
        result = await schema.execute(case.query, variable_values=case.variables,
                                      context_value=context, operation_name=case.operation_name)
        data, errors, extensions = result.data, [e.formatted for e in result.errors or []], \
            result.extensions
    except Exception as error:  # Strawberry raises for some refusals; both paths must agree
        data, errors, extensions = None, [{"raised": type(error).__name__, "message": str(error)}], None
    path = ("fast" if schema.fast_path.taken > taken
            else "fallback" if schema.fast_path.fallbacks > fallbacks else "none")
    return Outcome(data, errors, extensions, context.db.stats.statements, path)


def same(standard: Outcome, fast: Outcome) -> None:
    # orjson bytes: equal values *and* equal key order.
    assert orjson.dumps(fast.data) == orjson.dumps(standard.data)
    assert fast.errors == standard.errors
    assert (fast.extensions or {}).keys() == (standard.extensions or {}).keys()
    assert fast.statements <= standard.statements


@pytest.mark.parametrize("name", list(CORPUS))
async def test_corpus(pool: asyncpg.Pool, settings: Settings, name: str) -> None:
    case = CORPUS[name]
    await seed(pool)
    chosen = settings.with_(**case.settings)
    standard = await run(pool, chosen, case, fast=False)
    assert standard.path == "none"
    fast = await run(pool, chosen, case, fast=True)
    same(standard, fast)
    assert fast.path == case.path
    error = case.path != "fast" if case.error is None else case.error
    assert bool(standard.errors) == error, standard.errors
    if case.path == "fallback" and "key" in name:
        assert fast.statements == standard.statements == 0  # limits are checked before any SQL


def test_the_corpus_is_large_and_covers_every_path() -> None:
    assert len(CORPUS) >= 30
    assert {case.path for case in CORPUS.values()} == {"fast", "fallback", "none"}


def test_every_field_of_the_schema_has_a_fast_path() -> None:
    # A field added to types.py without a counterpart here would silently make
    # every document using it fall back: keep the two in step.
    schema = build_schema()._schema
    missing = [
        f"{name}.{field}"
        for name, type_ in schema.type_map.items()
        if not name.startswith("__") and hasattr(type_, "fields")
        and not hasattr(type_, "out_type")  # input types
        for field in type_.fields
        if field not in executor.SPECS.get(name, {})
    ]
    assert missing == []


# --- plans, caches and reuse --------------------------------------------------------

async def test_plans_follow_skip_and_include_variables(pool: asyncpg.Pool,
                                                       settings: Settings) -> None:
    await seed(pool)
    schema = build_schema(settings)
    query = f"""query ($s: Boolean!) {{ task(taskId: "{B1}") {{ taskId @skip(if: $s) label }} }}"""
    for skip in (False, True, False, True):
        fast = await run(pool, settings, Case(query, {"s": skip}), fast=True, schema=schema)
        standard = await run(pool, settings, Case(query, {"s": skip}), fast=False)
        same(standard, fast)
        assert fast.path == "fast"
        assert list(fast.data["task"]) == (["label"] if skip else ["taskId", "label"])
    (entry,) = schema.fast_path._documents.values()
    (operation,) = entry.operations.values()
    assert len(operation.plans) == 2


async def test_documents_are_parsed_and_validated_once(pool: asyncpg.Pool, settings: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    await seed(pool)
    schema = build_schema(settings.with_(max_depth=3))
    calls = []
    import strawberry.schema.schema as strawberry_schema

    original = strawberry_schema.validate_document
    monkeypatch.setattr(strawberry_schema, "validate_document",
                        lambda *a: calls.append(1) or original(*a))
    good = Case(f'{{ task(taskId: "{B1}") {{ taskId }} }}')
    deep = Case(f'{{ task(taskId: "{B1}") {{ status {{ task {{ status {{ state }} }} }} }} }}')
    for _ in range(3):
        assert (await run(pool, settings, good, fast=True, schema=schema)).path == "fast"
        refused = await run(pool, settings, deep, fast=True, schema=schema)
        assert "exceeds maximum operation depth of 3" in refused.errors[0]["message"]
    # The good document was validated once; the refused one never reached graphql-core's
    # rules (limits.py measures depth first, every time).
    assert len(calls) == 1


async def test_a_context_can_serve_several_documents(pool: asyncpg.Pool,
                                                     settings: Settings) -> None:
    await seed(pool)
    schema = build_schema(settings)
    context = Context.create(pool, settings)
    first = await run(pool, settings, Case(f'{{ task(taskId: "{T1}") {{ taskId }} }}'), True,
                      schema, context)
    # The fast path releases the loaders' rows once its answer is built ...
    assert all(not loader._cache for loader in vars(context.loaders).values()
               if hasattr(loader, "_cache"))
    second = await run(pool, settings, Case(f'{{ status(taskId: "{T1}") {{ state }} }}'), True,
                       schema, context)
    assert (first.path, second.path) == ("fast", "fast")
    assert first.data == {"task": {"taskId": T1}} and second.data == {"status": {"state": "EXCEPTION"}}
    assert second.statements == 2  # ... so a second document on the same context loads again


def test_the_collector_is_paused_only_while_the_fast_path_runs() -> None:
    import gc

    assert gc.isenabled()
    with executor._gc_paused():
        assert not gc.isenabled()
        with executor._gc_paused():  # a second request, overlapping
            assert not gc.isenabled()
        assert gc.isenabled()  # back on when any request ends: it runs between requests
    assert gc.isenabled()
    gc.disable()  # an application that turned it off keeps it off
    try:
        with executor._gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- failures at run time ---------------------------------------------------------------

@pytest.mark.parametrize("error, runs", [
    (DatabaseUnavailable("the database is unavailable"), 1),  # an outage is not waited for twice
    (RuntimeError("the statement failed"), 2),  # as the DataLoader would, the fallback retries
])
async def test_a_failing_statement_is_reported_as_before(
        pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        error: Exception, runs: int) -> None:
    await seed(pool)
    calls = []

    async def failing(db: Any, task_ids: Any) -> Any:
        calls.append(list(task_ids))
        raise error

    monkeypatch.setattr(task_queries, "tasks_by_id", failing)
    case = Case(f"""{{ indexedTask(indexPath: "{LINUX}") {{ taskId task {{ taskId }} }}
        label(label: "build") {{ label }} }}""")
    standard = await run(pool, settings, case, fast=False)
    assert len(calls) == 1
    fast = await run(pool, settings, case, fast=True)
    same(standard, fast)
    assert fast.path == "fallback"
    assert standard.errors[0]["message"] == str(error)
    assert standard.data == {"indexedTask": {"taskId": B1, "task": None}, "label": {"label": "build"}}
    assert len(calls) == 1 + runs


# --- statement counts and reports ----------------------------------------------------------

async def test_2000_labels_latest_status_dependencies_in_at_most_5_statements(
        pool: asyncpg.Pool, settings: Settings) -> None:
    tasks: list[FakeTask] = []
    newest: dict[str, FakeTask] = {}
    for push in range(3):
        builds: dict[int, FakeTask] = {}
        for i in range(2000):
            label = f"test-{i}" if i % 2 else f"build-{i}"
            dep = builds.get(i - 1) if i % 2 else None
            task = FakeTask(label=label, task_group_id=f"push-{push}",
                            created=BASE + push * H, dependencies=[dep.task_id] if dep else [])
            builds[i] = task
            tasks.append(task)
            newest[label] = task
    await store(pool, tasks)
    case = Case("""query ($labels: [String!]!) { labels(labels: $labels) {
        label latest { taskId status { state expires }
                       dependencies { taskId status { state runs { runId state } } } } } }""",
                {"labels": list(newest)})
    fast = await run(pool, settings, case, fast=True)
    assert fast.path == "fast" and fast.errors == []
    assert fast.statements <= 5, fast.statements
    assert fast.extensions["sql"]["statements"] == fast.statements
    got = fast.data["labels"]
    assert [h["label"] for h in got] == list(newest)
    for history in got:
        expected = newest[history["label"]]
        assert history["latest"]["taskId"] == expected.task_id
        assert [d["taskId"] for d in history["latest"]["dependencies"]] == expected.dependencies
    same(await run(pool, settings, case, fast=False), fast)


async def test_2000_index_paths_task_status_in_at_most_3_statements(
        pool: asyncpg.Pool, settings: Settings) -> None:
    tasks = [FakeTask(label=f"l{i}", state=("completed", "failed", "pending")[i % 3])
             for i in range(2000)]
    paths = [f"gecko.v2.autoland.latest.firefox.platform-{i}" for i in range(2000)]
    await store(pool, tasks, [(p, t.task_id, 0, FAR) for p, t in zip(paths, tasks)])
    case = Case("""query ($paths: [String!]!) { indexedTasks(indexPaths: $paths) {
        indexPath taskId task { taskId status { state expires runs { state } } } } }""",
                {"paths": paths})
    fast = await run(pool, settings, case, fast=True)
    assert fast.path == "fast" and fast.errors == []
    assert fast.statements <= 3, fast.statements
    assert [e["task"]["taskId"] for e in fast.data["indexedTasks"]] == [t.task_id for t in tasks]
    same(await run(pool, settings, case, fast=False), fast)


async def test_batches_above_the_batch_size_are_chunked(pool: asyncpg.Pool,
                                                        settings: Settings) -> None:
    tasks = [FakeTask() for _ in range(250)]
    await store(pool, tasks)
    chunked = settings.with_(batch_size=100)
    case = Case("query ($ids: [ID!]!) { tasks(taskIds: $ids) { taskId } }",
                {"ids": [t.task_id for t in tasks]})
    fast = await run(pool, chunked, case, fast=True)
    assert fast.path == "fast"
    assert [t["taskId"] for t in fast.data["tasks"]] == [t.task_id for t in tasks]
    assert fast.statements == 3


async def test_sql_report_without_explain(pool: asyncpg.Pool, settings: Settings) -> None:
    await seed(pool)
    quiet = settings.with_(explain=False)
    case = Case(f'{{ task(taskId: "{B1}") {{ taskId }} }}')
    fast = await run(pool, quiet, case, fast=True)
    assert fast.path == "fast" and "sql" not in fast.extensions
    loud = await run(pool, settings, case, fast=True)
    assert loud.extensions["sql"] == {"statements": 1, "rows": 1,
                                      "ms": loud.extensions["sql"]["ms"]}


# --- JSON passed through as text over HTTP ----------------------------------------------

async def test_stored_json_passes_through_as_text_and_reads_the_same(
        pool: asyncpg.Pool, settings: Settings) -> None:
    await seed(pool)
    case = Case(f"""{{ task(taskId: "{T1}") {{ definition tags metadata {{ name }} }}
        indexedTask(indexPath: "{LINUX}") {{ data }} }}""")
    standard = await run(pool, settings, case, fast=False)
    context = Context.create(pool, settings)
    context.raw_json = True  # type: ignore[attr-defined]
    fast = await run(pool, settings, case, fast=True, context=context)
    assert fast.path == "fast"
    assert isinstance(fast.data["task"]["definition"], orjson.Fragment)
    assert orjson.loads(orjson.dumps(fast.data)) == orjson.loads(orjson.dumps(standard.data))
    assert list(orjson.loads(orjson.dumps(fast.data))["task"]["definition"]) == \
        list(standard.data["task"]["definition"])


async def test_http_answers_are_the_same_on_both_paths(pool: asyncpg.Pool, settings: Settings,
                                                       database_url: str) -> None:
    await seed(pool)
    app = create_app(settings, database_url)
    app.state.pool = pool  # the ASGI transport does not run the lifespan
    (graphql,) = [r.endpoint for r in app.routes if getattr(r, "path", None) == "/graphql"]
    bodies = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://tcgraph.test") as client:
        for fast in (False, True):
            graphql.schema.fast_path.enabled = fast
            response = await client.post("/graphql", json={"query": f"""{{
                task(taskId: "{T1}") {{ {TASK_FIELDS} status {{ {STATUS_FIELDS} }} }}
                indexedTasks(indexPaths: ["{LINUX}", "nope"]) {{ data rank }} }}"""})
            assert response.status_code == 200
            body = response.json()
            del body["extensions"]
            bodies[fast] = body
    assert graphql.schema.fast_path.taken == 1
    assert bodies[True] == bodies[False]
    assert "errors" not in bodies[True]


# --- timestamps --------------------------------------------------------------------------

def test_timestamps_are_formatted_as_timefmt_does() -> None:
    rng = random.Random(7)
    zones = [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)),
             None]
    values: list[Any] = ["2026-11-01T00:00:00.000Z", datetime(999, 1, 1, tzinfo=timezone.utc),
                         datetime(1000, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
                         datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)]
    for _ in range(2000):
        values.append(datetime(rng.randint(1, 9998), rng.randint(1, 12), rng.randint(1, 28),
                               rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                               rng.choice([0, 999, 1000, rng.randint(0, 999999)]),
                               tzinfo=rng.choice(zones)))
    for value in values:
        assert executor._fmt(value) == format_time(value), value
