"""The Taskcluster 106 recording replayed: its pulse messages and a REST upstream.

`Recording` reads fixtures/taskcluster-106 (messages.jsonl, rest.jsonl).
`publish` sends messages to a real broker under the recorded exchange names,
routing keys and CC headers, as the queue service does. `upstream_app` is a
small HTTP server answering, from the recorded answers, what tcgraph asks an
upstream for: queue.task, queue.tasks (optionally missing, like an upstream
older than the batch route), queue.statuses, queue.listTaskGroup,
index.findTasksAtIndex and the index walks. `intercept` may answer any call
instead (a 500, a slow or an older answer).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "taskcluster-106"


@dataclass(frozen=True)
class Message:
    exchange: str
    routing_key: str
    cc: tuple[str, ...]
    body: bytes


@dataclass
class Recording:
    messages: list[Message]
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # queue.task 200 answers
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)  # queue.status 200 answers
    found: dict[str, dict[str, Any]] = field(default_factory=dict)  # index.findTask 200 answers
    absent_paths: list[str] = field(default_factory=list)  # index.findTask 404
    groups: dict[str, list[str]] = field(default_factory=dict)  # listTaskGroup ids, all pages
    records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, root: Path = FIXTURES) -> Recording:
        messages = []
        for line in (root / "messages.jsonl").read_text().splitlines():
            m = json.loads(line)
            messages.append(Message(m["exchange"], m["routingKey"], tuple(m["cc"]),
                                    orjson.dumps(m["payload"])))
        rec = cls(messages=messages)
        for line in (root / "rest.jsonl").read_text().splitlines():
            r = json.loads(line)
            rec.records.append(r)
            key = (r["service"], r["method"], r["status"])
            if key == ("queue", "task", 200):
                rec.definitions[r["args"][0]] = r["response"]
            elif key == ("queue", "status", 200):
                rec.statuses[r["args"][0]] = r["response"]
            elif key == ("index", "findTask", 200):
                rec.found[r["args"][0]] = r["response"]
            elif key == ("index", "findTask", 404):
                rec.absent_paths.append(r["args"][0])
            elif key == ("queue", "listTaskGroup", 200) and r["query"].get("limit") == 37:
                ids = rec.groups.setdefault(r["args"][0], [])
                ids += [t["status"]["taskId"] for t in r["response"]["tasks"]]
        return rec


async def declare_exchanges(url: str, names: Iterable[str]) -> None:
    """Declare the queue service's topic exchanges, as it does when it starts."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_queue(url: str, name: str, bindings: Iterable[tuple[str, str]]) -> None:
    """Declare a durable queue with its (exchange, routing key) bindings, as a follower
    that ran before would have: messages published from then on wait in it."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True)
        for exchange, routing_key in bindings:
            await queue.bind(exchange, routing_key)


async def publish(url: str, messages: Iterable[Message]) -> int:
    """Publish `messages` (persistent, with their CC header) with publisher confirms."""
    connection = await aio_pika.connect(url)
    sent = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        for m in messages:
            if m.exchange not in exchanges:
                exchanges[m.exchange] = await channel.get_exchange(m.exchange, ensure=False)
            await exchanges[m.exchange].publish(
                aio_pika.Message(m.body, content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 headers={"CC": list(m.cc)} if m.cc else {}),
                routing_key=m.routing_key)
            sent += 1
    return sent


def sentinel(n: int) -> Message:
    """A task-group-resolved message for a group no task is in: published after the
    others, it tells (once its batch is committed) that everything before it was."""
    group = f"sentinel{n:014d}"[:8] + f"QAC{n:010d}A"  # Taskcluster's slugid pattern
    return Message("exchange/taskcluster-queue/v1/task-group-resolved",
                   f"primary.{group}.tcgraph-test._", (),
                   orjson.dumps({"taskGroupId": group, "schedulerId": "tcgraph-test",
                                 "expires": "2099-01-01T00:00:00.000Z", "version": 1}))


def _not_found(message: str) -> JSONResponse:
    return JSONResponse({"code": "ResourceNotFound", "message": message}, status_code=404)


Intercept = Callable[[str, Request], Awaitable[Response | None]]


def upstream_app(rec: Recording, *, batch_route: bool = True, calls: list[str] | None = None,
                 intercept: Intercept | None = None) -> Starlette:
    """A REST upstream answering from the recording; `calls` collects the methods asked.

    `intercept(method, request)` is asked first: a response it returns is the answer.
    """
    calls = calls if calls is not None else []
    by_group: dict[str, list[str]] = {}
    for task_id, definition in rec.definitions.items():
        by_group.setdefault(definition["taskGroupId"], []).append(task_id)
    for ids in by_group.values():
        ids.sort()
    entries = sorted(rec.found.values(), key=lambda e: e["namespace"])

    def page(items: list[Any], request: Request) -> tuple[list[Any], str | None]:
        limit = min(int(request.query_params.get("limit", 1000)), 1000)
        offset = int(request.query_params.get("continuationToken", 0))
        more = offset + limit < len(items)
        return items[offset:offset + limit], str(offset + limit) if more else None

    async def task(request: Request) -> Response:
        calls.append("task")
        definition = rec.definitions.get(request.path_params["taskId"])
        return JSONResponse(definition) if definition else _not_found("no such task")

    async def tasks(request: Request) -> Response:
        calls.append("tasks")
        if not batch_route:
            return _not_found("no such route")
        ids = (await request.json())["taskIds"]
        known = [t for t in dict.fromkeys(ids) if t in rec.definitions]
        shown, token = page(known, request)
        body: dict[str, Any] = {"tasks": [{"taskId": t, "task": rec.definitions[t]} for t in shown]}
        if token:
            body["continuationToken"] = token
        return JSONResponse(body)

    async def list_task_group(request: Request) -> Response:
        calls.append("listTaskGroup")
        group = request.path_params["taskGroupId"]
        if group not in by_group:
            return _not_found("no such task group")
        shown, token = page(by_group[group], request)
        body: dict[str, Any] = {"taskGroupId": group, "tasks": [
            {"task": rec.definitions[t], "status": rec.statuses[t]["status"]} for t in shown]}
        if token:
            body["continuationToken"] = token
        return JSONResponse(body)

    def children(namespace: str) -> list[str]:
        prefix = namespace + "." if namespace else ""
        names = {e["namespace"][len(prefix):].split(".")[0] for e in entries
                 if e["namespace"].startswith(prefix)
                 and "." in e["namespace"][len(prefix):]}
        return sorted(prefix + n for n in names)

    async def list_namespaces(request: Request) -> Response:
        calls.append("listNamespaces")
        found, token = page(children(request.path_params["namespace"]), request)
        body: dict[str, Any] = {"namespaces": [{"namespace": n, "name": n.rsplit(".", 1)[-1],
                                      "expires": "2099-01-01T00:00:00.000Z"} for n in found]}
        if token:
            body["continuationToken"] = token
        return JSONResponse(body)

    async def list_tasks(request: Request) -> Response:
        calls.append("listTasks")
        namespace = request.path_params["namespace"]
        direct = [e for e in entries if e["namespace"].rpartition(".")[0] == namespace]
        found, token = page(direct, request)
        body: dict[str, Any] = {"tasks": found}
        if token:
            body["continuationToken"] = token
        return JSONResponse(body)

    async def statuses(request: Request) -> Response:
        calls.append("statuses")
        ids = (await request.json())["taskIds"]
        known = [t for t in dict.fromkeys(ids) if t in rec.statuses]
        shown, token = page(known, request)
        body: dict[str, Any] = {"statuses": [{"taskId": t, "status": rec.statuses[t]["status"]}
                                   for t in shown]}
        if token:
            body["continuationToken"] = token
        return JSONResponse(body)

    async def find_tasks_at_index(request: Request) -> Response:
        calls.append("findTasksAtIndex")
        paths = (await request.json())["indexes"]
        if len(set(paths)) != len(paths):  # as the index service does (its output schema)
            return JSONResponse({"code": "InternalServerError"}, status_code=500)
        shown, token = page([rec.found[p] for p in paths if p in rec.found], request)
        body: dict[str, Any] = {"tasks": shown}
        if token:
            body["continuationToken"] = token
        return JSONResponse(body)

    def intercepted(method: str, handler: Callable[[Request], Awaitable[Response]]
                    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            if intercept is not None:
                instead = await intercept(method, request)
                if instead is not None:
                    calls.append(method)
                    return instead
            return await handler(request)
        return answer

    return Starlette(routes=[
        Route("/api/queue/v1/task/{taskId}", intercepted("task", task)),
        Route("/api/queue/v1/tasks", intercepted("tasks", tasks), methods=["POST"]),
        Route("/api/queue/v1/tasks/status", intercepted("statuses", statuses), methods=["POST"]),
        Route("/api/queue/v1/task-group/{taskGroupId}/list",
              intercepted("listTaskGroup", list_task_group)),
        Route("/api/index/v1/tasks/indexes", intercepted("findTasksAtIndex", find_tasks_at_index),
              methods=["POST"]),
        Route("/api/index/v1/namespaces/{namespace:path}", list_namespaces),
        Route("/api/index/v1/tasks/{namespace:path}", list_tasks),
    ])
