"""Property-based fuzzing of /graphql over HTTP, with hypothesis and hypothesis-graphql.

Documents come from the published SDL (`schema.graphql`): valid ones (hypothesis-graphql's
positive mode, with argument values drawn mostly from the seeded data, else at random),
ones with exactly one schema violation (its negative mode), valid ones mangled by hand,
random text, and fixed documents sent with odd variables and odd request bodies. Whatever
is sent, the server must answer: never a 5xx, never an exception that it did not expect
(those are logged by Strawberry or uvicorn, and a handler below catches them), and every
error it reports says what was wrong.

The runs are derandomized (the same examples every run), 300 examples per property in CI.
A long run, with fresh examples each time (hypothesis prints how to replay a failure):

    TCGRAPH_FUZZ_EXAMPLES=20000 TCGRAPH_FUZZ_RANDOM=1 pytest -q tests/api/test_fuzz.py
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import graphql
import httpx
import pytest

from needs import need

need("hypothesis")  # before the imports it guards

from hypothesis import HealthCheck, event, given, settings, strategies as st
from hypothesis_graphql import Mode, nodes, queries

from conftest import FilledDatabase
from factories import BASE, FAR, FakeTask
from servers import serving
from tcgraph.config import Settings
from tcgraph.errors import ClientError, ServiceUnavailable
from tcgraph.server import create_app

SDL = (Path(__file__).resolve().parents[2] / "schema.graphql").read_text()

FUZZ = settings(
    max_examples=int(os.environ.get("TCGRAPH_FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=os.environ.get("TCGRAPH_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Codes an error in a valid document may carry (README, "Errors").
CLIENT_CODES = {"LIMIT_EXCEEDED", "BAD_CURSOR", "BAD_USER_INPUT"}
# Every other refusal's codes: the document's faults and the HTTP layer's.
REQUEST_CODES = CLIENT_CODES | {"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED",
                                "BAD_REQUEST", "NOT_FOUND", "METHOD_NOT_ALLOWED"}
SCHEMA = graphql.build_schema(SDL)

def text(**kwargs: Any) -> st.SearchStrategy[str]:
    """Any text (U+0000 included) that can be sent as UTF-8."""
    return st.text(st.characters(codec="utf-8"), **kwargs)


# --- the data, the server, and what it logs ---------------------------------------


def _seed() -> tuple[list[FakeTask], list[tuple[str, str, float, Any]]]:
    decision = FakeTask(task_id="FuzzDecisionTask000001", task_group_id="FuzzDecisionTask000001",
                        label="Gecko Decision Task", tags={"kind": "decision-task"})
    tasks = [decision]
    for n, state in enumerate(["completed", "failed", "exception", "running", "pending",
                               "unscheduled", "completed", "completed"]):
        tasks.append(FakeTask(
            task_id=f"FuzzTask{n:014d}", task_group_id=decision.task_id,
            label="build-linux64/opt" if n % 2 else f"test-linux64/opt-xpcshell-{n % 3}",
            created=BASE + timedelta(hours=n), state=state, runs=1 + n % 3,
            dependencies=[decision.task_id] + ([f"FuzzTask{n - 1:014d}"] if n else []),
            project_id="autoland" if n % 2 else "mozilla-central",
            tags={"kind": "build" if n % 2 else "test", "os": "linux"}))
    entries = [(f"gecko.v2.{project}.latest.firefox.{name}", task.task_id, float(rank), FAR)
               for rank, (project, name, task) in enumerate(
                   [("autoland", "linux64-opt", tasks[2]), ("autoland", "linux64-debug", tasks[4]),
                    ("mozilla-central", "linux64-opt", tasks[6]),
                    ("mozilla-central", "win64-opt", tasks[8])])]
    entries.append(("gecko.v2.autoland.latest.firefox.expired", tasks[1].task_id, 1.0,
                    BASE - timedelta(days=1)))
    return tasks, entries


TASKS, ENTRIES = _seed()
TASK_IDS = [t.task_id for t in TASKS]
LABELS = sorted({t.label for t in TASKS if t.label})
INDEX_PATHS = [path for path, *_ in ENTRIES]
NAMESPACES = ["", "gecko", "gecko.v2", "gecko.v2.autoland", "gecko.v2.autoland.latest",
              "gecko.v2.autoland.latest.firefox"]


@pytest.fixture(scope="module")
def fuzz_url(filled_database: FilledDatabase) -> Iterator[str]:
    """A database of its own for the module: the server outlives every example."""
    with filled_database(TASKS, ENTRIES) as url:
        yield url


class Unexpected(logging.Handler):
    """Log records of exceptions nobody meant to raise: resolvers' and the ASGI app's."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.server_logged = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if record.name == "strawberry.execution" and (
                error is None or isinstance(error, (ClientError, ServiceUnavailable,
                                                    graphql.GraphQLError))):
            return  # a GraphQL error reported to the client on purpose
        self.records.append(record)

    def settle(self) -> None:
        """Wait until uvicorn has logged the exception behind a 5xx or a dropped connection.

        uvicorn logs it in the server's thread after the response has gone out.
        """
        assert self.server_logged.wait(10), "the server never logged the exception"

    def take(self) -> list[str]:
        found, self.records = self.records, []
        self.server_logged.clear()
        return [f"{r.name}: {r.getMessage()}\n{self.format(r) if r.exc_info else ''}"
                for r in found]


class ServerExceptions(logging.Filter):
    """On "uvicorn.error": hand an exception record to `Unexpected`, without its traceback.

    uvicorn logs "Exception in ASGI application" after the response has gone out, so the
    test goes on meanwhile. Python 3.11 formats tracebacks with `ast.parse`, which is not
    safe in two threads at once (pytest then stops with "SystemError: AST constructor
    recursion depth mismatch"): the server's thread must format none.
    """

    def __init__(self, unexpected: Unexpected) -> None:
        super().__init__()
        self.unexpected = unexpected

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.msg} {type(error).__module__}.{type(error).__name__}: {error}"
            record.exc_info = None
            record.exc_text = None
        if record.levelno >= logging.ERROR:
            self.unexpected.records.append(record)
            self.unexpected.server_logged.set()
        return True


# The `server` fixture: a client of the fuzzed server, and what the server logged.
Server = tuple[httpx.Client, Unexpected]


@pytest.fixture(scope="module")
def server(fuzz_url: str) -> Iterator[Server]:
    handler = Unexpected()
    app = create_app(Settings(database_url=fuzz_url, explain=True, pool_max_size=4), fuzz_url)
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        # uvicorn configures its loggers when the server starts: hook in after that.
        server_errors = ServerExceptions(handler)
        uvicorn_error = logging.getLogger("uvicorn.error")
        uvicorn_error.addFilter(server_errors)
        loggers = [logging.getLogger(name) for name in ("strawberry.execution", "tcgraph")]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            yield client, handler
        finally:
            uvicorn_error.removeFilter(server_errors)
            for logger in loggers:
                logger.removeHandler(handler)


@pytest.fixture(scope="module")
def cursors(server: Server) -> list[str]:
    """Real cursors, handed out by the server's connections (valid in some places only)."""
    client, _ = server
    body = client.post("/graphql", json={"query": """{
        taskGroup(taskGroupId: "FuzzDecisionTask000001") {
          tasks(first: 2) { edges { cursor } } }
        label(label: "build-linux64/opt") { history(first: 2) { edges { cursor } } }
        namespace(path: "gecko.v2") { namespaces(first: 1) { edges { cursor } }
                                      tasks(first: 1) { edges { cursor } } }
        task(taskId: "FuzzDecisionTask000001") { dependents(first: 2) { edges { cursor } } }
    }"""}).json()
    found = [edge["cursor"] for edge in _walk(body["data"], "cursor")]
    assert len(found) >= 6, body
    return found


def _walk(value: object, key: str) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if key in value:
            yield value
        for child in value.values():
            yield from _walk(child, key)
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child, key)


# --- what every answer must look like ---------------------------------------------


def check(client: httpx.Client, handler: Unexpected, method: str, **request: Any) -> httpx.Response:
    """Send one request; assert the properties every answer has; return the response."""
    handler.take()
    try:
        response = client.request(method, "/graphql", **request)
    except httpx.TransportError:
        handler.settle()
        raise
    if response.status_code >= 500:
        handler.settle()
    unexpected = handler.take()
    sent = request.get("json", request.get("params", request.get("content")))
    assert response.status_code < 500, (sent, response.status_code, response.text)
    assert not unexpected, (sent, unexpected)
    # Every answer is JSON, whoever refused the request (Strawberry's HTTP layer too).
    assert "json" in response.headers.get("content-type", ""), (sent, response.text)
    body = response.json()
    assert isinstance(body, dict), (sent, body)
    errors = body.get("errors")
    if errors is not None:
        assert isinstance(errors, list) and errors, (sent, body)
        for error in errors:
            message = error.get("message")
            assert isinstance(message, str) and message.strip() not in ("", "None"), (sent, body)
            # ... and every error has a code saying what kind of fault it is.
            assert (error.get("extensions") or {}).get("code") in REQUEST_CODES, (sent, body)
    if response.status_code != 200 or "data" not in body:
        assert errors, (sent, response.status_code, body)
    return response


def graphql_body(response: httpx.Response) -> dict[str, Any]:
    """The GraphQL answer."""
    body: dict[str, Any] = response.json()
    assert "errors" in body or "data" in body, body
    return body


# --- strategies -----------------------------------------------------------------------


def json_nodes() -> st.SearchStrategy[graphql.ValueNode]:
    """Any JSON value, as a GraphQL literal (for the JSON scalar: TaskFilter.tags)."""
    scalars = st.one_of(
        st.just(nodes.Null), st.booleans().map(nodes.Boolean),
        st.integers(-2**40, 2**40).map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
        text(max_size=10).map(nodes.String))
    tags = st.dictionaries(st.sampled_from(["kind", "os", "label", "x"]),
                           st.sampled_from(["build", "test", "linux", "nope"]), max_size=3)
    return st.one_of(
        tags.map(lambda d: nodes.Object([graphql.ObjectFieldNode(
            name=graphql.NameNode(value=k), value=nodes.String(v)) for k, v in d.items()])),
        st.recursive(scalars, lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(nodes.List),
            st.dictionaries(st.text("abcxyz_", min_size=1, max_size=4), inner, max_size=3).map(
                lambda d: nodes.Object([graphql.ObjectFieldNode(
                    name=graphql.NameNode(value=k), value=v) for k, v in d.items()]))),
            max_leaves=6))


def scalar_strategies(cursors: list[str]) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    """Argument values: mostly from the seeded data (so resolvers find rows), else anything."""
    known_ids = st.sampled_from(TASK_IDS)
    known_strings = st.sampled_from(LABELS + INDEX_PATHS + NAMESPACES)
    ids = st.one_of(known_ids, known_ids, known_ids, text(max_size=30))
    strings = st.one_of(known_strings, known_strings, st.sampled_from(cursors), text(max_size=40))
    ints = st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(-3, 12),
                     st.sampled_from([0, 1000, 1001, 2**31 - 1, -2**31]))
    return {"ID": ids.map(nodes.String), "String": strings.map(nodes.String),
            "Int": ints.map(nodes.Int), "JSON": json_nodes()}


def valid_documents(cursors: list[str]) -> st.SearchStrategy[str]:
    return queries(SDL, custom_scalars=scalar_strategies(cursors))


def mangled(document: str, data: st.DataObject) -> str:
    """A valid document with one random edit: a cut, an insertion or a repeat."""
    start = data.draw(st.integers(0, len(document)))
    end = data.draw(st.integers(start, min(len(document), start + 20)))
    edit = data.draw(st.sampled_from(["cut", "insert", "repeat"]))
    if edit == "cut":
        return document[:start] + document[end:]
    if edit == "insert":
        noise = data.draw(st.text(st.sampled_from('{}()[]:$@!.,"\\ \n#abc0…\x00'), max_size=8))
        return document[:start] + noise + document[start:]
    return document[:end] + document[start:end] * data.draw(st.integers(2, 50)) + document[end:]


ODD_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=False, allow_infinity=False), text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(text(max_size=6), inner, max_size=4)),
    max_leaves=10)

VARIABLE_DOCUMENTS = {
    "byId": ("""query Q($ids: [ID!]!, $id: ID!) {
        tasks(taskIds: $ids) { taskId label created dependencies { taskId }
                               status { state retriesLeft runs { runId state started } } }
        statuses(taskIds: $ids) { taskId state expires task { taskId } }
        task(taskId: $id) { definition tags routes metadata { name } } }""",
             {"ids": "ids", "id": "id"}),
    "pages": ("""query Q($id: ID!, $first: Int, $after: String, $state: TaskState) {
        taskGroup(taskGroupId: $id) {
          tasks(first: $first, after: $after, state: $state) {
            edges { cursor node { taskId } } pageInfo { hasNextPage endCursor } } }
        task(taskId: $id) { dependents(first: $first, after: $after) { nodes { taskId } } } }""",
              {"id": "id", "first": "first", "after": "cursor", "state": "state"}),
    "labels": ("""query Q($labels: [String!]!, $filter: TaskFilter, $first: Int, $after: String) {
        labels(labels: $labels, filter: $filter) {
          label latest { taskId } lastSuccess { taskId } lastFailure { taskId }
          history(first: $first, after: $after) { nodes { taskId } pageInfo { endCursor } } } }""",
               {"labels": "labels", "filter": "filter", "first": "first", "after": "cursor"}),
    "index": ("""query Q($paths: [String!]!, $path: String!, $first: Int, $after: String) {
        indexedTasks(indexPaths: $paths) { indexPath taskId rank data expires task { taskId } }
        indexedTask(indexPath: $path) { taskId namespace name }
        namespace(path: $path) { path name expires
          namespaces(first: $first, after: $after) { nodes { path } }
          tasks(first: $first, after: $after) { nodes { indexPath } } } }""",
              {"paths": "paths", "path": "path", "first": "first", "after": "cursor"}),
}


def variable_values(kind: str, cursors: list[str]) -> st.SearchStrategy[object]:
    """A well-typed value for a variable of `kind`, or any JSON at all."""
    typed = {
        "ids": st.lists(st.one_of(st.sampled_from(TASK_IDS), text(max_size=25)), max_size=8),
        "id": st.one_of(st.sampled_from(TASK_IDS), text(max_size=25), st.integers()),
        "first": st.one_of(st.none(), st.integers(-5, 1005),
                           st.sampled_from([2**31, 2**63])),
        "cursor": st.one_of(st.none(), st.sampled_from(cursors), text(max_size=40)),
        "state": st.one_of(st.none(), st.sampled_from(
            ["COMPLETED", "FAILED", "RUNNING", "completed", "NOPE"])),
        "labels": st.lists(st.one_of(st.sampled_from(LABELS), text(max_size=20)), max_size=6),
        "filter": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
            "projectId": st.one_of(st.sampled_from(["autoland", "mozilla-central"]), ODD_JSON),
            "schedulerId": text(max_size=10),
            "taskQueueId": text(max_size=10),
            "tags": st.one_of(st.dictionaries(st.sampled_from(["kind", "os"]),
                                              st.sampled_from(["build", "linux"])), ODD_JSON)})),
        "paths": st.lists(st.one_of(st.sampled_from(INDEX_PATHS + NAMESPACES),
                                    text(max_size=30)), max_size=6),
        "path": st.one_of(st.sampled_from(INDEX_PATHS + NAMESPACES), text(max_size=30)),
    }[kind]
    return st.one_of(typed, typed, typed, ODD_JSON)


# --- documents rewritten into others with the same meaning ---------------------------


def _name(value: str) -> graphql.NameNode:
    return graphql.NameNode(value=value)


def rewritten(document: str, data: st.DataObject) -> tuple[str, dict[str, Any]]:
    """`document` said otherwise, meaning the same: (the new document, its variables).

    Some selection sets move into named fragments (some spread twice), some argument
    literals become variables whose default is the literal (sent as well, sometimes), and
    some fields get `@include(if: true)` or `@skip(if: false)`, literally or by a variable.
    """
    type_info = graphql.TypeInfo(SCHEMA)
    definitions: list[graphql.VariableDefinitionNode] = []
    variables: dict[str, Any] = {}
    fragments: list[graphql.FragmentDefinitionNode] = []

    def variable(kind: str, default: graphql.ValueNode, sent: object) -> graphql.VariableNode:
        name = f"v{len(definitions)}"
        definitions.append(graphql.VariableDefinitionNode(
            variable=graphql.VariableNode(name=_name(name)), type=graphql.parse_type(kind),
            # An argument's literal: the generated documents put no variables inside one.
            default_value=cast(graphql.ConstValueNode, default), directives=()))
        if data.draw(st.booleans()):
            variables[name] = sent
        return graphql.VariableNode(name=_name(name))

    class Rewrite(graphql.Visitor):
        def enter_argument(self, node: graphql.ArgumentNode, *_: object) -> object:
            expected = type_info.get_input_type()
            if (expected is None or isinstance(node.value, graphql.VariableNode)
                    or not data.draw(st.booleans())):
                return None
            return replace(node, value=variable(
                str(expected), node.value, graphql.value_from_ast_untyped(node.value)))

        def leave_field(self, node: graphql.FieldNode, *_: object) -> object:
            output = type_info.get_type()
            kind = data.draw(st.sampled_from(["none", "none", "include", "skip"]))
            if kind != "none":
                keep = graphql.BooleanValueNode(value=kind == "include")
                value = (variable("Boolean!", keep, kind == "include")
                         if data.draw(st.booleans()) else keep)
                node = replace(node, directives=(*(node.directives or ()), graphql.DirectiveNode(
                    name=_name(kind),
                    arguments=(graphql.ArgumentNode(name=_name("if"), value=value),))))
            if node.selection_set is not None and output is not None and data.draw(st.booleans()):
                name = f"F{len(fragments)}"
                fragments.append(graphql.FragmentDefinitionNode(
                    name=_name(name), directives=(), selection_set=node.selection_set,
                    type_condition=graphql.NamedTypeNode(
                        name=_name(graphql.get_named_type(output).name))))
                spread = graphql.FragmentSpreadNode(name=_name(name), directives=())
                node = replace(node, selection_set=graphql.SelectionSetNode(
                    selections=(spread,) * data.draw(st.integers(1, 2))))
            return node

        def leave_operation_definition(self, node: graphql.OperationDefinitionNode,
                                       *_: object) -> object:
            return replace(node, variable_definitions=(*(node.variable_definitions or ()),
                                                       *definitions))

    ast = graphql.visit(graphql.parse(document), graphql.TypeInfoVisitor(type_info, Rewrite()))
    ast = replace(ast, definitions=(*ast.definitions, *fragments))
    return graphql.print_ast(ast), variables


# --- the properties -------------------------------------------------------------------


def test_valid_documents_are_answered(server: Server, cursors: list[str]) -> None:
    client, handler = server
    accepts = st.sampled_from([{}, {"accept": "application/graphql-response+json"}])

    seen = {"examples": 0, "found rows": 0}

    @FUZZ
    @given(document=valid_documents(cursors), headers=accepts, use_get=st.booleans())
    def run(document: str, headers: dict[str, Any], use_get: bool) -> None:
        if use_get:
            response = check(client, handler, "GET", params={"query": document},
                             headers={"accept": "application/json", **headers})
        else:
            response = check(client, handler, "POST", json={"query": document}, headers=headers)
        body = graphql_body(response)
        errors = body.get("errors", ())
        codes = {(e.get("extensions") or {}).get("code") for e in errors}
        # A valid document runs, unless it is over a documented limit (400, LIMIT_EXCEEDED);
        # any error is a limit, a bad cursor or a bad value, with its code.
        assert codes <= CLIENT_CODES, (document, body)
        if response.status_code == 400:
            assert codes == {"LIMIT_EXCEEDED"}, (document, body)
            event("refused: over a limit")
            return
        assert response.status_code == 200 and "data" in body, (document, body)
        for code in codes:
            event(f"error {code}")
        found = any(isinstance(value, dict) or (isinstance(value, list) and any(value))
                    for value in (body.get("data") or {}).values())
        event("found rows" if found else "found nothing")
        seen["examples"] += 1
        seen["found rows"] += found

    run()
    # The seeded values are drawn often enough that resolvers find rows, not only nulls.
    assert seen["found rows"] >= seen["examples"] // 3, seen


def test_rewritten_documents_answer_the_same(server: Server, cursors: list[str]) -> None:
    """Fragments, variables with defaults and directives change nothing in the answer."""
    client, handler = server

    @FUZZ
    @given(document=valid_documents(cursors), data=st.data())
    def run(document: str, data: st.DataObject) -> None:
        changed, variables = rewritten(document, data)
        before = check(client, handler, "POST", json={"query": document})
        after = check(client, handler, "POST", json={"query": changed, "variables": variables})
        body = graphql_body(after)
        codes = {(e.get("extensions") or {}).get("code") for e in body.get("errors", ())}
        assert codes <= CLIENT_CODES, (changed, variables, body)
        if after.status_code == 400:
            # Each spread costs its fragment again: the rewritten document may cost more.
            assert codes == {"LIMIT_EXCEEDED"}, (changed, body)
            event("rewritten: over a limit")
            return
        assert after.status_code == 200, (changed, body)
        if before.status_code == 200:
            original = graphql_body(before)
            assert body.get("data") == original.get("data"), (document, changed, variables)
            assert codes == {(e.get("extensions") or {}).get("code")
                             for e in original.get("errors", ())}, (document, changed)
            event("rewritten: same answer")

    run()


def test_documents_with_one_violation_are_refused_with_a_reason(
        server: Server, cursors: list[str]) -> None:
    client, handler = server
    documents = queries(SDL, mode=Mode.NEGATIVE, custom_scalars=scalar_strategies(cursors))

    @FUZZ
    @given(document=documents)
    def run(document: str) -> None:
        body = graphql_body(check(client, handler, "POST", json={"query": document}))
        assert body.get("errors"), (document, body)

    run()


def test_mangled_documents_and_random_text(server: Server, cursors: list[str]) -> None:
    client, handler = server

    @FUZZ
    @given(data=st.data(), document=valid_documents(cursors), noise=text(max_size=60),
           kind=st.sampled_from(["mangled", "mangled", "noise"]))
    def run(data: st.DataObject, document: str, noise: str, kind: str) -> None:
        sent = mangled(document, data) if kind == "mangled" else noise
        graphql_body(check(client, handler, "POST", json={"query": sent}))

    run()


def test_odd_variables_and_bodies(server: Server, cursors: list[str]) -> None:
    client, handler = server
    names = sorted(VARIABLE_DOCUMENTS)

    @st.composite
    def requests(draw: st.DrawFn) -> object:
        document, kinds = VARIABLE_DOCUMENTS[draw(st.sampled_from(names))]
        variables: object = {name: draw(variable_values(kind, cursors))
                             for name, kind in kinds.items() if draw(st.integers(0, 9))}
        shape = draw(st.sampled_from(["ok"] * 6 + ["odd variables", "odd body", "odd name"]))
        if shape == "odd variables":
            variables = draw(ODD_JSON)
        request: dict[str, object] = {"query": document, "variables": variables}
        if shape == "odd name":
            request["operationName"] = draw(st.one_of(st.just("Q"), ODD_JSON))
        body: object = request
        if shape == "odd body":
            body = draw(st.one_of(ODD_JSON, st.fixed_dictionaries(
                {"query": ODD_JSON}, optional={"variables": ODD_JSON, "extensions": ODD_JSON})))
        return body

    @FUZZ
    @given(body=requests())
    def run(body: object) -> None:
        check(client, handler, "POST", json=body)

    run()


# --- what the fuzzers found ---------------------------------------------------------
#
# Each test below is the smallest request for one bug the fuzzers found, kept as a
# regression test now that it is fixed.

NUL_DOCUMENTS = [
    '{ task(taskId: "a\\u0000") { taskId } }',
    '{ tasks(taskIds: ["a\\u0000"]) { taskId } }',
    '{ statuses(taskIds: ["a\\u0000"]) { taskId } }',
    '{ label(label: "a\\u0000") { latest { taskId } history { nodes { taskId } } } }',
    '{ labels(labels: ["build-linux64/opt"], filter: {projectId: "a\\u0000"}) '
    '{ latest { taskId } } }',
    '{ label(label: "x", filter: {tags: {kind: "a\\u0000"}}) { latest { taskId } } }',
    '{ indexedTask(indexPath: "gecko.a\\u0000") { taskId } }',
    '{ indexedTasks(indexPaths: ["a\\u0000.b"]) { taskId } }',
    '{ taskGroup(taskGroupId: "a\\u0000") { taskGroupId } }',
    '{ namespace(path: "a\\u0000") { path } }',
]


def test_nul_in_a_graphql_argument_is_a_client_error(server: Server) -> None:
    """`{ task(taskId: "a\\u0000") { taskId } }`: a clean answer, not a driver's exception."""
    client, handler = server
    failures = []
    for document in NUL_DOCUMENTS:
        try:
            body = graphql_body(check(client, handler, "POST", json={"query": document}))
            for error in body.get("errors", ()):
                assert (error.get("extensions") or {}).get("code") in CLIENT_CODES, error
        except AssertionError as e:
            failures.append(f"{document}: {str(e)[:300]}")
    assert not failures, "\n".join(failures)


def test_nul_in_a_rest_key_is_a_client_error(server: Server) -> None:
    """Taskcluster's routes answer 400 or 404 for such a key, never 500."""
    client, handler = server
    requests = [
        ("GET", "/api/queue/v1/task/a%00b", None),
        ("GET", "/api/queue/v1/task/a%00b/status", None),
        ("GET", "/api/index/v1/task/gecko.a%00", None),
        ("POST", "/api/queue/v1/tasks", {"taskIds": ["a\x00"]}),
        ("POST", "/api/queue/v1/tasks/status", {"taskIds": ["a\x00"]}),
        ("POST", "/api/index/v1/tasks/indexes", {"indexes": ["a.\x00"]}),
        ("POST", "/api/tcgraph/v1/labels/status", {"labels": ["a\x00"]}),
        ("POST", "/api/tcgraph/v1/labels/status",
         {"labels": ["build-linux64/opt"], "filter": {"tags": {"kind": "\x00"}}}),
    ]
    failures = []
    for method, path, body in requests:
        handler.take()
        response = client.request(method, path, json=body)
        unexpected = handler.take()  # REST logs its incidents before it answers
        if response.status_code not in (400, 404) or unexpected:
            failures.append(f"{method} {path} {body}: {response.status_code} "
                            f"{[u.splitlines()[-1] for u in unexpected]}")
    assert not failures, "\n".join(failures)


def test_a_body_that_is_not_json_is_400_whatever_breaks_it(server: Server) -> None:
    """Bytes that are not UTF-8, JSON nested past 1,000, a lone surrogate: 400, never a 500.

    json.loads raised UnicodeDecodeError or RecursionError for the first two (a 500, or a
    reset connection) and let the surrogate through to asyncpg (an error saying "None").
    """
    client, handler = server
    typename = b'{"query": "{ __typename }", "variables": '
    lookup = b'{"query": "query Q($id: ID!) { task(taskId: $id) { taskId } }", "variables": '
    bodies = {
        "not UTF-8": b'{"query": "\xff\xfe"}',
        "nested 5,000 deep": typename + b"[" * 5000 + b"]" * 5000 + b"}",
        "a lone surrogate": lookup + b'{"id": "\\ud800"}}',
    }
    failures = []
    for what, body in bodies.items():
        handler.take()
        try:
            response = client.post("/graphql", content=body,
                                   headers={"content-type": "application/json"})
            status: int | str = response.status_code
        except httpx.TransportError as e:
            status = f"no answer ({e!r})"
        if not isinstance(status, int) or status >= 500:
            handler.settle()
        unexpected = handler.take()
        if status != 400 or unexpected:
            failures.append(f"{what}: {status} {[u.splitlines()[-1] for u in unexpected]}")
    handler.take()
    response = client.get("/graphql", params={"query": "{ __typename }",
                                               "variables": "[" * 5000})
    if response.status_code >= 500:
        handler.settle()
    if response.status_code != 400 or handler.take():
        failures.append(f"GET variables nested 5,000 deep: {response.status_code}")
    assert not failures, "\n".join(failures)


def test_a_long_chain_of_fragments_is_refused_with_a_reason(server: Server) -> None:
    """300 chained fragment spreads overflowed the stack in Strawberry's depth limiter."""
    client, handler = server
    chain = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(300))
    document = f"{{ ...F0 }} {chain} fragment F300 on Query {{ __typename }}"
    body = graphql_body(check(client, handler, "POST", json={"query": document}))
    assert body["errors"], body
    assert "recursion" not in body["errors"][0]["message"], body
    assert body["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED", body


def test_a_huge_first_is_refused_not_a_500(server: Server) -> None:
    client, handler = server
    nested = ('{ taskGroup(taskGroupId: "FuzzDecisionTask000001") { tasks(first: 2147483647) {'
              ' nodes { dependents(first: 2147483647) { nodes {'
              ' dependents(first: 2147483647) { nodes { taskId } } } } } } } }')
    variable = {"query": 'query Q($first: Int) { taskGroup(taskGroupId: "x") {'
                         ' tasks(first: $first) { nodes { taskId } } } }',
                "variables": {"first": 2**63}}
    failures = []
    for body in ({"query": nested}, variable):
        try:
            answer = graphql_body(check(client, handler, "POST", json=body))
            assert answer["errors"], answer
        except (AssertionError, httpx.TransportError) as e:
            failures.append(f"{body}: {type(e).__name__}: {str(e)[:300]}")
    assert not failures, "\n".join(failures)
