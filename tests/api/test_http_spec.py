"""GraphQL over HTTP, audited by the `graphql-http` package's own suite."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from factories import FakeTask, store
from needs import HTTP_AUDIT
from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app

@pytest.mark.needs("http-audit")
async def test_every_must_and_should_audit_passes(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    with serving(create_app(settings, database_url)) as url:
        run = subprocess.run(["node", str(HTTP_AUDIT / "audit.mjs"), f"{url}/graphql"],
                             capture_output=True, text=True, timeout=120, check=True)
    results = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(results) >= 36  # 13 MUST and 23 SHOULD audits, at least
    failed = [r for r in results if r["status"] != "ok"]
    assert failed == []


@pytest.fixture
async def url(pool: asyncpg.Pool, settings: Settings, database_url: str) -> AsyncIterator[str]:
    await store(pool, [FakeTask(task_id="t1")])
    with serving(create_app(settings, database_url)) as base:
        yield base


GRAPHQL_RESPONSE = {"accept": "application/graphql-response+json"}


async def test_request_errors_are_400_without_data_for_the_new_media_type(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        parse = await client.post("/graphql", json={"query": "{"}, headers=GRAPHQL_RESPONSE)
        invalid = await client.post("/graphql", json={"query": "{ nope }"},
                                    headers=GRAPHQL_RESPONSE)
        variables = await client.post(
            "/graphql", headers=GRAPHQL_RESPONSE,
            json={"query": "query ($id: ID!) { task(taskId: $id) { taskId } }", "variables": {}})
    for response in (parse, invalid, variables):
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/graphql-response+json")
        assert "data" not in response.json() and response.json()["errors"]


async def test_field_errors_are_200_with_data(url: str, settings: Settings) -> None:
    cursor_query = ('{ taskGroup(taskGroupId: "group-a") '
                    '{ tasks(after: "bad") { nodes { taskId } } } }')
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/graphql", json={"query": cursor_query},
                                     headers=GRAPHQL_RESPONSE)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"taskGroup": None}
    assert body["errors"][0]["extensions"]["code"] == "BAD_CURSOR"


async def test_plain_json_clients_keep_the_traditional_answer(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/graphql", json={"query": "{ nope }"},
                                     headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["data"] is None
