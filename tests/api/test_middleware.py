"""Request ids and the body-size limit, on a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from servers import serving
from tcgraph.config import Settings
from tcgraph.server import create_app

QUERY = {"query": "{ __typename }"}


@pytest.fixture
async def url(settings: Settings, database_url: str) -> AsyncIterator[str]:
    with serving(create_app(settings.with_(max_body_bytes=1000), database_url)) as base:
        yield base


async def test_every_response_carries_a_request_id(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        fresh = [await client.post("/graphql", json=QUERY) for _ in range(2)]
        given = await client.get("/health/live", headers={"x-request-id": "abc-123"})
        bogus = await client.get("/health/live", headers={"x-request-id": "x" * 500})
    ids = [r.headers["x-request-id"] for r in fresh]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
    assert given.headers["x-request-id"] == "abc-123"
    assert bogus.headers["x-request-id"] != "x" * 500


async def test_a_body_over_the_limit_is_413_naming_the_limit(url: str) -> None:
    big = {"query": "query ($ids: [ID!]!) { tasks(taskIds: $ids) { taskId } }",
           "variables": {"ids": ["a" * 22] * 100}}
    async with httpx.AsyncClient(base_url=url) as client:
        declared = await client.post("/graphql", json=big)

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"query": "{ __typename }", "pad": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}'

        streamed = await client.post("/graphql", content=chunks(),
                                     headers={"content-type": "application/json"})
        rest = await client.post("/api/queue/v1/tasks", json={"taskIds": ["a" * 22] * 100})
        small = await client.post("/graphql", json=QUERY)
    for response in (declared, streamed):
        assert response.status_code == 413
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "LIMIT_EXCEEDED"
        assert error["extensions"]["limit"] == "max_body_bytes"
        assert error["extensions"]["maximum"] == 1000
    # Taskcluster's routes refuse in Taskcluster's error shape.
    assert rest.status_code == 413
    assert rest.json()["code"] == "InputTooLarge"
    assert rest.json()["requestInfo"]["method"] == "tasks"
    assert "limit of 1000 bytes (max_body_bytes)" in rest.json()["message"]
    assert small.status_code == 200
