"""Documents built to make the gateway work hard, and documents that are simply wrong.

Each is sent over HTTP to a real server on a real PostgreSQL. The fan-out documents are
sized so that any walk expanding fragment spreads in place would run for hours (2^60
copies): answering at all proves every measure is linear in the document.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from conftest import FilledDatabase
from factories import FakeTask
from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app

LABEL = "build-linux64/opt"


@pytest.fixture(scope="module")
def url(filled_database: FilledDatabase) -> Iterator[str]:
    tasks = [FakeTask(task_id=f"limits-task-{n}", label=LABEL) for n in range(3)]
    with filled_database(tasks) as database_url:
        settings = Settings(database_url=database_url, explain=True, pool_max_size=4)
        with serving(create_app(settings, database_url)) as base:
            yield base


def post(url: str, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)


def refused(response: httpx.Response, limit: str) -> dict[str, Any]:
    """The single LIMIT_EXCEEDED error naming `limit`, asserted to have cost no SQL."""
    assert response.status_code == 400, response.text
    body = response.json()
    error: dict[str, Any]
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED", error
    assert error["extensions"]["limit"] == limit, error
    assert limit in error["message"]
    assert body.get("extensions", {}).get("sql", {"statements": 0})["statements"] == 0
    return error


def doubling(fragments: int, leaf: str, on: str = "Query", root: str = "{ ...F0 }") -> str:
    """`root`, then fragments F0..Fn-1 each spreading the next one twice; Fn holds `leaf`."""
    parts = [f"query {root}"]
    parts += [f"fragment F{i} on {on} {{ ...F{i + 1} ...F{i + 1} }}" for i in range(fragments)]
    parts.append(f"fragment F{fragments} on {on} {{ {leaf} }}")
    return "\n".join(parts)


# --- fragment fan-out ----------------------------------------------------------


@pytest.mark.parametrize("leaf", ["__typename", 'task(taskId: "limits-task-0") { taskId }'])
def test_fragments_spreading_the_next_twice_are_refused_at_once(url: str, leaf: str) -> None:
    error = refused(post(url, doubling(60, leaf)), "max_field_repeats")
    assert error["extensions"]["maximum"] == Settings().max_field_repeats


def test_fan_out_through_nested_fields_is_costed_not_expanded(url: str) -> None:
    """Ten levels of ten `dependencies` each: 10^10 paths, each fragment measured once."""
    levels, width = 10, 10
    parts = ['query { task(taskId: "limits-task-0") { ...F0 } }']
    parts += [f"fragment F{i} on Task {{ " + " ".join([f"dependencies {{ ...F{i + 1} }}"] * width)
              + " }" for i in range(levels)]
    parts.append(f"fragment F{levels} on Task {{ taskId }}")
    error = refused(post(url, "\n".join(parts)), "max_cost")
    assert error["extensions"]["value"] > 10**10


def test_aliases_are_counted_once_per_spread_without_expanding(url: str) -> None:
    """The alias limit counts spreads as Strawberry did (10^10 here), in linear time."""
    levels, width = 10, 10
    parts = ['query { task(taskId: "limits-task-0") { ...F0 } }']
    parts += [f"fragment F{i} on Task {{ " + " ".join(
        f"a{n}: dependencies {{ ...F{i + 1} }}" for n in range(width)) + " }"
        for i in range(levels)]
    parts.append(f"fragment F{levels} on Task {{ taskId }}")
    error = refused(post(url, "\n".join(parts)), "max_aliases")
    assert error["extensions"]["maximum"] == Settings().max_aliases


def test_a_field_repeated_too_often_is_refused_before_validation(url: str) -> None:
    error = refused(post(url, "{" + " __typename" * 999 + "}"), "max_field_repeats")
    assert error["extensions"]["field"] == "__typename"


def test_a_fan_out_of_leaves_within_limits_is_answered(url: str) -> None:
    response = post(url, doubling(5, "__typename"))  # 32 copies, merged by the executor
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"__typename": "Query"}


def test_an_unused_fragment_nested_too_deep_is_refused_by_depth(url: str) -> None:
    deep = "status { task { " * 8 + "taskId" + " } }" * 8
    error = refused(post(url, f'{{ __typename }} fragment F on Task {{ {deep} }}'), "max_depth")
    assert error["extensions"]["value"] == 16


# --- cost from the values the executor uses --------------------------------------------


IDS = [f"limits-task-{n % 3}-{n}" for n in range(10_000)]


def test_list_variables_filled_from_document_defaults_are_counted(url: str) -> None:
    ids = ", ".join(f'"{i}"' for i in IDS)
    query = (f"query ($ids: [ID!]! = [{ids}]) {{ "
             "a: tasks(taskIds: $ids) { taskId dependencies(first: 1) { taskId } } }")
    sent = post(url, query.replace(f" = [{ids}]", ""), {"ids": IDS})
    defaulted = post(url, query)
    assert sent.json()["extensions"]["cost"]["requestedQueryCost"] == 20_000
    assert defaulted.json()["extensions"]["cost"]["requestedQueryCost"] == 20_000


@pytest.mark.parametrize("first", [1000.0, 1000])
def test_first_is_counted_as_coerced(url: str, first: float) -> None:
    query = ("query ($first: Int) { label(label: \"%s\") { history(first: $first) "
             "{ nodes { taskId } } } }" % LABEL)
    response = post(url, query, {"first": first})
    assert response.status_code == 200, response.text
    assert response.json()["extensions"]["cost"]["requestedQueryCost"] == 1 + 1000 * 2


def test_a_default_first_in_the_document_is_checked_against_the_page_limit(url: str) -> None:
    query = ("query ($first: Int = 5000) { label(label: \"%s\") { history(first: $first) "
             "{ nodes { taskId } } } }" % LABEL)
    assert refused(post(url, query), "max_page_size")["extensions"]["value"] == 5000


@pytest.mark.parametrize("directive, variables, counted", [
    ("@skip(if: $x)", {"x": True}, False), ("@skip(if: $x)", {"x": False}, True),
    ("@include(if: $x)", {"x": False}, False), ("@include(if: $x)", {}, True),
])
def test_skipped_fields_cost_nothing(url: str, directive: str, variables: dict[str, Any],
                                     counted: bool) -> None:
    query = ("query ($x: Boolean! = true) { task(taskId: \"limits-task-0\") { taskId } "
             "label(label: \"%s\") { history(first: 100) %s { nodes { taskId } } } }"
             % (LABEL, directive))
    response = post(url, query, variables)
    assert response.status_code == 200, response.text
    assert response.json()["extensions"]["cost"]["requestedQueryCost"] == (
        1 + 1 + (100 * 2 if counted else 0))


# --- every error about the document has a code ---------------------------------


@pytest.mark.parametrize("query, variables, code", [
    ("{ task(taskId: \"x\") { nope } }", None, "GRAPHQL_VALIDATION_FAILED"),
    ("{ task(taskId: \"x\") ", None, "GRAPHQL_PARSE_FAILED"),
    ("query ($f: Int) { label(label: \"x\") { history(first: $f) { nodes { taskId } } } }",
     {"f": "many"}, "BAD_USER_INPUT"),
    ("query ($id: ID!) { task(taskId: $id) { taskId } }", {}, "BAD_USER_INPUT"),
])
def test_document_errors_are_coded(url: str, query: str, variables: dict[str, Any] | None,
                                   code: str) -> None:
    response = post(url, query, variables)
    errors = response.json()["errors"]
    assert errors and all(e["extensions"]["code"] == code for e in errors), errors


def test_too_many_validation_errors_name_the_limit(url: str) -> None:
    query = "{ " + " ".join(f"nope{n}" for n in range(150)) + " }"
    errors = post(url, query).json()["errors"]
    assert len(errors) == 101
    assert {e["extensions"]["code"] for e in errors[:100]} == {"GRAPHQL_VALIDATION_FAILED"}
    assert errors[100]["extensions"] == {"code": "LIMIT_EXCEEDED",
                                         "limit": "max_validation_errors", "maximum": 100}
    assert "max_validation_errors" in errors[100]["message"]


def history_cursor(*key: str) -> str:
    """A label-history cursor as a client could forge it."""
    return base64.urlsafe_b64encode(orjson.dumps(["l", *key])).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    history_cursor("0001-01-01T00:00:00+14:00", "limits-task-0"),
    history_cursor("9999-12-31T23:59:59-10:00", "limits-task-0"),
    history_cursor("2026-01-01T00:00:00", "limits-task-0"),  # no offset: which instant?
    history_cursor("2026-01-01T00:00:00+00:00", "limits-task\x00"),
    history_cursor("2026-01-01T00:00:00\x00+00:00", "limits-task-0"),
])
def test_forged_history_cursors_are_bad_cursors(url: str, cursor: str) -> None:
    query = ("query ($after: String) { label(label: \"%s\") { history(after: $after) "
             "{ nodes { taskId } } } }" % LABEL)
    response = post(url, query, {"after": cursor})
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_CURSOR", error
    assert "malformed" in error["message"]
