"""api/persisted.py: Automatic Persisted Queries over HTTP, as Apollo clients send them."""

from __future__ import annotations

from typing import Any

import hashlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import orjson
import pytest

from factories import FakeTask, store
from servers import asgi_client
from tcgraph.config import Settings
from tcgraph.server import create_app

QUERY = "query ($id: ID!) { status(taskId: $id) { taskId state } }"
OTHER = "{ __typename }"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def persisted(text: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256(text)}}


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings,
                 database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, database_url), pool) as c:
        yield c


async def test_an_unknown_hash_asks_for_the_query_then_runs_by_hash(
        client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    task = FakeTask(state="running")
    await store(pool, [task])
    variables = {"id": task.task_id}
    unknown = await client.post("/graphql", json={"variables": variables,
                                                  "extensions": persisted(QUERY)})
    assert unknown.status_code == 200
    assert unknown.json() == {"errors": [{"message": "PersistedQueryNotFound",
                                          "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]}
    sent = await client.post("/graphql", json={"query": QUERY, "variables": variables,
                                               "extensions": persisted(QUERY)})
    expected = {"status": {"taskId": task.task_id, "state": "RUNNING"}}
    assert sent.status_code == 200 and sent.json()["data"] == expected
    by_hash = await client.post("/graphql", json={"variables": variables,
                                                  "extensions": persisted(QUERY)})
    assert by_hash.status_code == 200 and by_hash.json()["data"] == expected
    by_get = await client.get("/graphql", params={
        "variables": orjson.dumps(variables).decode(),
        "extensions": orjson.dumps(persisted(QUERY)).decode()})
    assert by_get.status_code == 200 and by_get.json()["data"] == expected


async def test_a_get_by_hash_is_answered_not_given_the_ide(client: httpx.AsyncClient) -> None:
    params = {"extensions": orjson.dumps(persisted(OTHER)).decode()}
    browser = {"accept": "text/html,*/*"}
    unknown = await client.get("/graphql", params=params, headers=browser)
    assert unknown.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_NOT_FOUND"}
    sent = await client.get("/graphql", params={**params, "query": OTHER}, headers=browser)
    assert sent.json()["data"] == {"__typename": "Query"}
    by_hash = await client.get("/graphql", params=params, headers=browser)
    assert by_hash.json()["data"] == {"__typename": "Query"}


async def test_graphql_response_json_clients_get_a_400(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/graphql", json={"extensions": persisted(OTHER)},
                                headers={"accept": "application/graphql-response+json"})
    assert unknown.status_code == 400
    assert unknown.headers["content-type"].startswith("application/graphql-response+json")
    assert unknown.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_NOT_FOUND"}


@pytest.mark.parametrize("extensions, code", [
    (persisted(OTHER), "PERSISTED_QUERY_HASH_MISMATCH"),
    ({"persistedQuery": {"version": 2, "sha256Hash": sha256(QUERY)}},
     "PERSISTED_QUERY_NOT_SUPPORTED"),
    ({"persistedQuery": {"version": 1, "sha256Hash": sha256(QUERY).upper()}},
     "PERSISTED_QUERY_NOT_SUPPORTED"),
    ({"persistedQuery": "yes"}, "PERSISTED_QUERY_NOT_SUPPORTED"),
])
async def test_a_hash_that_does_not_fit_is_refused(client: httpx.AsyncClient,
                                                   extensions: dict[str, Any], code: str) -> None:
    refused = await client.post("/graphql", json={"query": QUERY, "variables": {"id": "x"},
                                                  "extensions": extensions})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"] == {"code": code}
    # Nothing was kept under the hash that was sent.
    again = await client.post("/graphql", json={"variables": {"id": "x"},
                                                "extensions": persisted(OTHER)})
    assert again.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_NOT_FOUND"}


async def test_the_store_forgets_the_least_recently_used(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    app = create_app(settings.with_(document_cache_entries=1), database_url)
    async with asgi_client(app, pool) as client:
        for text in (OTHER, "{ a: __typename }"):
            sent = await client.post("/graphql", json={"query": text,
                                                       "extensions": persisted(text)})
            assert sent.status_code == 200, sent.text
        first = await client.post("/graphql", json={"extensions": persisted(OTHER)})
        last = await client.post("/graphql", json={"extensions": persisted("{ a: __typename }")})
    assert first.json()["errors"][0]["extensions"] == {"code": "PERSISTED_QUERY_NOT_FOUND"}
    assert last.json()["data"] == {"a": "Query"}
