"""`tcgraph.client` against a real tcgraph server (uvicorn on loopback, real PostgreSQL)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from factories import BASE, FAR, FakeTask, slug, store
from ports import refusing_port
from servers import serving
from tcgraph.client import (
    AsyncTcGraph, IndexedResult, Resolution, StatusResult, TcGraph, TcGraphError,
    TcGraphHTTPError, TcGraphQueryError,
)
from tcgraph.config import Settings
from tcgraph.server import create_app


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that keeps every request it was asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


def status_of(task: FakeTask) -> StatusResult:
    return StatusResult(task.task_id, task.state, task.created + timedelta(days=365))


OLD = FakeTask(label="build-linux64/opt", created=BASE, state="completed")
NEW = FakeTask(label="build-linux64/opt", created=BASE + timedelta(hours=1), state="running")
OTHER_PROJECT = FakeTask(label="build-linux64/opt", created=BASE + timedelta(hours=2),
                         state="exception", project_id="comm")
FAILED = FakeTask(label="test-linux64/opt", state="failed")
NOT_STORED = slug(10**9)


async def store_examples(pool: asyncpg.Pool) -> None:
    await store(pool, [OLD, NEW, OTHER_PROJECT, FAILED], [
        ("gecko.v2.trunk.latest.build", NEW.task_id, 1.0, FAR),
        ("gecko.v2.trunk.expired.build", OLD.task_id, 1.0, BASE),
        ("gecko.v2.trunk.latest.gone", NOT_STORED, 1.0, FAR),
    ])


async def test_one_request_resolves_every_kind(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    await store_examples(pool)
    transport = CountingTransport()
    with serving(create_app(settings, database_url)) as url, \
            TcGraph(url, transport=transport) as tc:
        found = tc.resolve(
            index_paths=["gecko.v2.trunk.latest.build", "gecko.v2.trunk.expired.build",
                         "gecko.v2.trunk.latest.gone", "gecko.v2.nowhere",
                         "gecko.v2.trunk.latest.build"],
            labels=["build-linux64/opt", "test-linux64/opt", "no-such-label",
                    "test-linux64/opt"],
            task_ids=[OLD.task_id, FAILED.task_id, NOT_STORED, OLD.task_id],
        )
    assert found == Resolution(
        index_paths={
            "gecko.v2.trunk.latest.build": IndexedResult(NEW.task_id, status_of(NEW)),
            "gecko.v2.trunk.expired.build": None,
            "gecko.v2.trunk.latest.gone": IndexedResult(NOT_STORED, None),
            "gecko.v2.nowhere": None,
        },
        labels={
            "build-linux64/opt": status_of(OTHER_PROJECT),
            "test-linux64/opt": status_of(FAILED),
            "no-such-label": None,
        },
        statuses={OLD.task_id: status_of(OLD), FAILED.task_id: status_of(FAILED),
                  NOT_STORED: None},
    )
    old = found.statuses[OLD.task_id]
    assert old is not None and old.expires.utcoffset() == timedelta(0)
    assert len(transport.requests) == 1
    sent = json.loads(transport.requests[0].content)
    # Keys travel as variables, each once, never inside the document.
    assert sent["variables"]["taskIds"] == [OLD.task_id, FAILED.task_id, NOT_STORED]
    assert len(sent["variables"]["indexPaths"]) == 4
    assert "gecko.v2" not in sent["query"] and OLD.task_id not in sent["query"]


async def test_label_filter_and_async_client(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    await store_examples(pool)
    transport = AsyncCountingTransport()
    with serving(create_app(settings, database_url)) as url:
        async with AsyncTcGraph(url, transport=transport) as tc:
            found = await tc.resolve(labels=["build-linux64/opt"],
                                     filter={"projectId": "gecko"})
            nothing = await tc.resolve()
    assert found == Resolution({}, {"build-linux64/opt": status_of(NEW)}, {})
    assert nothing == Resolution({}, {}, {})
    # Nothing asked, nothing sent.
    assert len(transport.requests) == 1
    sent = json.loads(transport.requests[0].content)
    assert set(sent["variables"]) == {"labels", "filter"}


async def test_5000_keys_one_request_and_chunks_over_max_keys(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    tasks = [FakeTask(label=f"bulk-{i}", created=BASE + timedelta(seconds=i),
                      state="completed" if i % 2 else "pending") for i in range(300)]
    await store(pool, tasks, [(f"bulk.path.{i}", t.task_id, 1.0, FAR)
                              for i, t in enumerate(tasks)])
    index_paths = [f"bulk.path.{i}" for i in range(1000)]
    labels = [f"bulk-{i}" for i in range(1000)]
    task_ids = [t.task_id for t in tasks] + [slug(2 * 10**9 + i) for i in range(2700)]
    assert len(index_paths) + len(labels) + len(task_ids) == 5000
    expected = Resolution(
        index_paths={p: (IndexedResult(tasks[i].task_id, status_of(tasks[i]))
                         if i < 300 else None) for i, p in enumerate(index_paths)},
        labels={label: status_of(tasks[i]) if i < 300 else None
                for i, label in enumerate(labels)},
        statuses={t: status_of(tasks[i]) if i < 300 else None for i, t in enumerate(task_ids)},
    )

    transport = CountingTransport()
    with serving(create_app(settings, database_url)) as url, \
            TcGraph(url, transport=transport) as tc:
        assert tc.resolve(index_paths, labels, task_ids) == expected
    assert len(transport.requests) == 1

    limited = settings.with_(max_keys=2_500)
    transport = CountingTransport()
    with serving(create_app(limited, database_url)) as url, \
            TcGraph(url, max_keys=2_500, transport=transport) as tc:
        assert tc.resolve(index_paths, labels, task_ids) == expected
        # A client allowed more keys than the server is told so by the server.
        with pytest.raises(TcGraphQueryError) as raised, TcGraph(url) as greedy:
            greedy.resolve(task_ids=task_ids)
    assert len(transport.requests) == 2
    sizes = [{k: len(v) for k, v in json.loads(r.content)["variables"].items()
              if isinstance(v, list)} for r in transport.requests]
    assert sizes == [{"indexPaths": 1000, "labels": 1000, "taskIds": 2500}, {"taskIds": 500}]
    assert raised.value.errors[0]["extensions"]["code"] == "LIMIT_EXCEEDED"


class Flaky:
    """A stub in front of a real server: `failures` answers of `status`, then it forwards."""

    def __init__(self, upstream: str, status: int, failures: int) -> None:
        self.upstream = upstream
        self.status = status
        self.failures = failures
        self.seen = 0
        self.app = Starlette(routes=[Route("/graphql", self.graphql, methods=["POST"])])

    async def graphql(self, request: Request) -> Response:
        self.seen += 1
        if self.seen <= self.failures:
            return Response(f"stub says {self.status}", status_code=self.status)
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{self.upstream}/graphql", content=await request.body(),
                                       headers={"content-type": "application/json"})
        return Response(answer.content, status_code=answer.status_code,
                        media_type=answer.headers["content-type"])


async def test_503_is_retried_until_the_server_answers(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    await store_examples(pool)
    with serving(create_app(settings, database_url)) as upstream:
        flaky = Flaky(upstream, 503, failures=2)
        with serving(flaky.app) as url, TcGraph(url, backoff=0.01) as tc:
            found = tc.resolve(task_ids=[FAILED.task_id])
    assert found.statuses == {FAILED.task_id: status_of(FAILED)}
    assert flaky.seen == 3


async def test_503_past_the_retries_raises_with_status_and_body(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    with serving(create_app(settings, database_url)) as upstream:
        flaky = Flaky(upstream, 503, failures=100)
        with (serving(flaky.app) as url, TcGraph(url, retries=2, backoff=0.01) as tc,
              pytest.raises(TcGraphHTTPError) as raised):
            tc.resolve(task_ids=["x"])
    assert (raised.value.status_code, raised.value.body) == (503, "stub says 503")
    assert flaky.seen == 3


async def test_400_is_not_retried(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    with serving(create_app(settings, database_url)) as upstream:
        flaky = Flaky(upstream, 400, failures=100)
        with (serving(flaky.app) as url, TcGraph(url, backoff=0.01) as tc,
              pytest.raises(TcGraphHTTPError) as raised):
            tc.resolve(task_ids=["x"])
    assert raised.value.status_code == 400
    assert flaky.seen == 1


def test_connection_refused_is_retried_then_raises() -> None:
    transport = CountingTransport()
    # A port bound here and never listened on: every connection to it is refused.
    with (refusing_port() as port,
          TcGraph(f"http://127.0.0.1:{port}", retries=2, backoff=0.01, transport=transport) as tc,
          pytest.raises(TcGraphError, match="after 3 attempts") as raised):
        tc.resolve(task_ids=["x"])
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert len(transport.requests) == 3


def test_a_string_is_not_taken_for_a_list_of_keys() -> None:
    with TcGraph("http://127.0.0.1:9") as tc, pytest.raises(TypeError, match="task_ids"):
        tc.resolve(task_ids="abc")


async def test_the_async_client_retries_as_the_sync_one_does(
        pool: asyncpg.Pool, settings: Settings, database_url: str) -> None:
    await store_examples(pool)
    with serving(create_app(settings, database_url)) as upstream:
        flaky = Flaky(upstream, 502, failures=2)
        with serving(flaky.app) as url:
            async with AsyncTcGraph(url, backoff=0.01) as tc:
                found = await tc.resolve(task_ids=[FAILED.task_id])
        assert found.statuses == {FAILED.task_id: status_of(FAILED)}
        assert flaky.seen == 3
        gone = Flaky(upstream, 504, failures=100)
        with serving(gone.app) as url:
            async with AsyncTcGraph(url, retries=1, backoff=0.01) as tc:
                with pytest.raises(TcGraphHTTPError) as raised:
                    await tc.resolve(task_ids=["x"])
        assert raised.value.status_code == 504 and gone.seen == 2
    transport = AsyncCountingTransport()
    with refusing_port() as port:
        async with AsyncTcGraph(f"http://127.0.0.1:{port}", retries=2, backoff=0.01,
                                transport=transport) as tc:
            with pytest.raises(TcGraphError, match="after 3 attempts") as unreachable:
                await tc.resolve(task_ids=["x"])
    assert isinstance(unreachable.value.__cause__, httpx.ConnectError)
    assert len(transport.requests) == 3


def answering(body: dict[str, Any]) -> Starlette:
    """A stub GraphQL server that answers every document with `body`."""
    async def graphql(request: Request) -> Response:
        return Response(json.dumps(body), media_type="application/json")

    return Starlette(routes=[Route("/graphql", graphql, methods=["POST"])])


def test_a_timestamp_without_a_zone_is_an_error_naming_it() -> None:
    # Read as local time, it would be hours off without a word.
    status = {"taskId": FAILED.task_id, "state": "FAILED", "expires": "2026-11-23T12:00:00"}
    with (serving(answering({"data": {"statuses": [status]}})) as url, TcGraph(url) as tc,
          pytest.raises(TcGraphError, match="'2026-11-23T12:00:00' has no time zone")):
        tc.resolve(task_ids=[FAILED.task_id])
