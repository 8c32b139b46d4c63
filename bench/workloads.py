"""The workloads, the ways of asking them (series), and what each answer means.

A *series* is one way of answering a workload: the floor or tcgraph, in
process or over HTTP, PostGraphile, or (W4) tcgraph's REST API one call per
item or in batches. A *flow* is what a client does to get the whole answer
(one document; five pages; 2,700 REST calls), and one timed run is one flow.
Every flow returns what it read, reduced by `canonical` to plain tuples so the
series can be checked against each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import strawberry

from bench import floor
from tcgraph.config import Settings

# --- the documents ----------------------------------------------------------

RUN_FIELDS = ("runId state reasonCreated reasonResolved workerGroup workerId takenUntil "
              "scheduled started resolved")

DOCS = {
    "W1": "query W1($labels: [String!]!) { labels(labels: $labels) "
          "{ label latest { status { state expires } } } }",
    "W2": "query W2($paths: [String!]!) { indexedTasks(indexPaths: $paths) "
          "{ indexPath taskId task { status { state expires runs { " + RUN_FIELDS + " } } } } }",
    "W3": "query W3($group: ID!, $after: String) { taskGroup(taskGroupId: $group) { "
          "tasks(first: 1000, after: $after) { "
          "nodes { taskId label status { state } dependencies { taskId status { state } } } "
          "pageInfo { hasNextPage endCursor } } } }",
    "W4": "query W4($labels: [String!]!, $paths: [String!]!) { "
          "labels(labels: $labels) { label latest { taskId status { state expires } } } "
          "indexedTasks(indexPaths: $paths) "
          "{ indexPath taskId task { status { state expires } } } }",
}

# PostGraphile v4 over the functions in bench.dataset.PEER_SQL (simple collections).
PEER_DOCS = {
    "W1": "query W1($labels: [String!]!) { latestByLabelsList(labels: $labels) "
          "{ label state expires } }",
    "W2": "query W2($paths: [String!]!) { indexedStatusesList(paths: $paths) "
          "{ indexPath taskId state expires runs } }",
    "W3": "query W3($group: String!, $after: String) { taskGroupPageList(groupId: $group, "
          "afterId: $after, pageSize: 1000) "
          "{ taskId label state dependenciesList { taskId state } } }",
    "W4": "query W4($labels: [String!]!, $paths: [String!]!) { "
          "latestByLabelsList(labels: $labels) { label taskId state expires } "
          "indexedStatusesList(paths: $paths) { indexPath taskId state expires } }",
}


# --- one run's bookkeeping --------------------------------------------------


class RequestFailed(Exception):
    pass


@dataclass
class Session:
    """Counters of one run; with `collect`, replies are parsed for counts and checks."""

    collect: bool
    calls: int = 0  # documents / REST calls
    requests: int = 0  # HTTP requests (0 in process)
    statements: int | None = 0  # SQL statements, when every reply reported them
    sql_ms: float | None = 0.0  # time spent waiting on them, as the server reported it

    def add_statements(self, n: int | None, ms: float | None = None) -> None:
        if self.statements is not None:
            self.statements = None if n is None else self.statements + n
        if self.sql_ms is not None:
            self.sql_ms = None if ms is None else self.sql_ms + ms

    def add_sql(self, sql: dict[str, Any] | None) -> None:
        if sql is None:
            self.add_statements(None)
        else:
            self.add_statements(sql.get("statements"), sql.get("ms"))


class Reply:
    def __init__(self, body: bytes, data: Any = None, statements: int | None = None) -> None:
        self.body = body
        self._data = data
        self.statements = statements

    def json(self) -> Any:
        if self._data is None:
            self._data = orjson.loads(self.body)
        return self._data


# --- transports ---------------------------------------------------------------


class FloorInProcess:
    series = "floor"
    http = False

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def graphql(self, workload: str, query: str, variables: dict[str, Any],
                      s: Session) -> Reply:
        body, statements, ms = await floor.FLOORS[workload](self.pool, variables)
        s.calls += 1
        s.add_statements(statements, ms)
        return Reply(body)


class TcgraphInProcess:
    """`schema.execute` with a fresh Context, the result serialised as the view would."""

    series = "tcgraph"
    http = False

    def __init__(self, schema: strawberry.Schema, pool: asyncpg.Pool, settings: Settings) -> None:
        self.schema, self.pool, self.settings = schema, pool, settings

    async def graphql(self, workload: str, query: str, variables: dict[str, Any],
                      s: Session) -> Reply:
        from tcgraph.api.context import Context

        context = Context.create(self.pool, self.settings)
        result = await self.schema.execute(query, variable_values=variables,
                                           context_value=context)
        if result.errors:
            raise RequestFailed(f"tcgraph: {result.errors[0].message}")
        # The data holds JSON built in PostgreSQL as orjson fragments: the
        # body is what the view sends, and replies are read from it.
        body = orjson.dumps({"data": result.data})
        s.calls += 1
        s.add_statements(context.db.stats.statements, context.db.stats.ms)
        return Reply(body)


class Http:
    """One keep-alive connection (like a `requests` session), requests in sequence."""

    http = True

    def __init__(self, base: str, series: str, graphql_path: str) -> None:
        self.base = base
        self.series = series
        self.graphql_path = graphql_path
        self.client = httpx.Client(
            base_url=base, timeout=300, trust_env=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))

    def close(self) -> None:
        self.client.close()

    def _check(self, r: httpx.Response, what: str, allow: tuple[int, ...] = (200,)) -> None:
        if r.status_code not in allow:
            raise RequestFailed(f"{self.series}: {what}: HTTP {r.status_code}: {r.text[:300]}")

    async def graphql(self, workload: str, query: str, variables: dict[str, Any],
                      s: Session) -> Reply:
        path = self.graphql_path.format(workload=workload)
        r = self.client.post(path, content=orjson.dumps({"query": query, "variables": variables}),
                             headers={"content-type": "application/json"})
        s.calls += 1
        s.requests += 1
        self._check(r, f"POST {path}")
        reply = Reply(r.content)
        if s.collect:
            parsed = reply.json()
            if parsed.get("errors"):
                raise RequestFailed(f"{self.series}: {parsed['errors'][0].get('message')}")
            sql = (parsed.get("extensions") or {}).get("sql")
            if sql is None and "Tcgraph-Sql" in r.headers:
                sql = orjson.loads(r.headers["Tcgraph-Sql"])
            s.add_sql(sql)
        return reply

    def rest(self, method: str, path: str, s: Session, body: Any = None,
             allow: tuple[int, ...] = (200,)) -> httpx.Response:
        if body is None:
            r = self.client.request(method, path)
        else:
            r = self.client.request(method, path, content=orjson.dumps(body),
                                    headers={"content-type": "application/json"})
        s.calls += 1
        s.requests += 1
        self._check(r, f"{method} {path}", allow)
        if s.collect:
            sql = r.headers.get("Tcgraph-Sql")
            s.add_sql(orjson.loads(sql) if sql else None)
        return r


# --- flows --------------------------------------------------------------------

Flow = Callable[[Any, Session], Awaitable[Any]]


def single(workload: str, variables: dict[str, Any], docs: dict[str, str] = DOCS) -> Flow:
    """One document: W1, W2, W4 (c)."""

    async def flow(tx: Any, s: Session) -> Any:
        reply = await tx.graphql(workload, docs[workload], variables, s)
        return reply.json() if s.collect else None

    return flow


def w3_pages(group: str) -> Flow:
    """The whole group, a page of 1,000 at a time, each page's cursor from the one before."""

    async def flow(tx: Any, s: Session) -> Any:
        after, pages = None, []
        while True:
            reply = await tx.graphql("W3", DOCS["W3"], {"group": group, "after": after}, s)
            page = reply.json()["data"]["taskGroup"]["tasks"]
            pages.append(reply.json())
            if not page["pageInfo"]["hasNextPage"]:
                return pages if s.collect else None
            after = page["pageInfo"]["endCursor"]

    return flow


def peer_w3_pages(group: str) -> Flow:
    """PostGraphile: keyset pages through `task_group_page(group, after_id, 1000)`."""

    async def flow(tx: Any, s: Session) -> Any:
        after, nodes = None, []
        while True:
            reply = await tx.graphql("W3", PEER_DOCS["W3"], {"group": group, "after": after}, s)
            rows = reply.json()["data"]["taskGroupPageList"]
            nodes += rows[:floor.W3_PAGE]
            if len(rows) <= floor.W3_PAGE:
                return nodes if s.collect else None
            after = rows[floor.W3_PAGE - 1]["taskId"]

    return flow


def w4_per_item(labels: list[str], paths: list[str]) -> Flow:
    """W4 (a): taskgraph before batching, one REST call per question, in sequence."""

    async def flow(tx: Http, s: Session) -> Any:
        by_label, by_path = {}, {}
        for label in labels:
            r = tx.rest("POST", "/api/tcgraph/v1/labels/status", s, {"labels": [label]})
            status = orjson.loads(r.content)["mapping"].get(label)
            if status is not None:
                by_label[label] = (status["taskId"], status["state"].upper())
        for path in paths:
            r = tx.rest("GET", f"/api/index/v1/task/{quote(path, safe='')}", s, allow=(200, 404))
            if r.status_code == 404:
                continue
            task_id = orjson.loads(r.content)["taskId"]
            r = tx.rest("GET", f"/api/queue/v1/task/{task_id}/status", s, allow=(200, 404))
            state = orjson.loads(r.content)["status"]["state"].upper() \
                if r.status_code == 200 else None
            by_path[path] = (task_id, state)
        return (by_label, by_path) if s.collect else None

    return flow


def _pages(tx: Http, s: Session, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A batch method's pages: the same body again with ?continuationToken= until none."""
    replies, token = [], None
    while True:
        url = path if token is None else f"{path}?continuationToken={quote(token)}"
        reply = orjson.loads(tx.rest("POST", url, s, body).content)
        replies.append(reply)
        token = reply.get("continuationToken")
        if not token:
            return replies


def w4_batch(labels: list[str], paths: list[str]) -> Flow:
    """W4 (b): Taskcluster's batch methods (and tcgraph's labels/status), following tokens."""

    async def flow(tx: Http, s: Session) -> Any:
        # Each path once: as on Taskcluster, a path asked twice and found fails the request.
        indexes = {"indexes": list(dict.fromkeys(paths))}
        found = [t for page in _pages(tx, s, "/api/index/v1/tasks/indexes", indexes)
                 for t in page["tasks"]]
        task_ids = list(dict.fromkeys(t["taskId"] for t in found))
        states = {st["taskId"]: st["status"]["state"].upper()
                  for page in _pages(tx, s, "/api/queue/v1/tasks/status", {"taskIds": task_ids})
                  for st in page["statuses"]}
        mapping = {}
        for page in _pages(tx, s, "/api/tcgraph/v1/labels/status", {"labels": labels}):
            mapping.update(page["mapping"])
        if not s.collect:
            return None
        by_label = {label: (st["taskId"], st["state"].upper()) for label, st in mapping.items()}
        by_path = {t["namespace"]: (t["taskId"], states.get(t["taskId"])) for t in found}
        return by_label, by_path

    return flow


# --- what an answer says, for comparing series ------------------------------


def canonical(workload: str, series: str, answer: Any) -> Any:
    """The facts an answer holds, the same for every series that answered correctly."""
    if series.startswith("postgraphile"):
        return _canonical_peer(workload, answer)
    if series.startswith("rest"):
        by_label, by_path = answer
        return (sorted((k, *v) for k, v in by_label.items()),
                sorted((k, *v) for k, v in by_path.items()))
    if workload == "W1":
        return sorted((x["label"], x["latest"]["status"]["state"])
                      for x in answer["data"]["labels"] if x["latest"])
    if workload == "W2":
        return sorted((x["indexPath"], x["taskId"], x["task"]["status"]["state"])
                      for x in answer["data"]["indexedTasks"] if x and x["task"])
    if workload == "W3":
        return [(n["taskId"], n["label"], n["status"]["state"],
                 tuple(d["status"]["state"] for d in n["dependencies"]))
                for page in answer for n in page["data"]["taskGroup"]["tasks"]["nodes"]]
    if workload == "W4":
        # as sets: REST answers each key once, whatever the repeats in the request
        data = answer["data"]
        return (sorted({(x["label"], x["latest"]["taskId"], x["latest"]["status"]["state"])
                        for x in data["labels"] if x["latest"]}),
                sorted({(x["indexPath"], x["taskId"],
                         x["task"]["status"]["state"] if x["task"] else None)
                        for x in data["indexedTasks"] if x}))
    raise ValueError(workload)


def _canonical_peer(workload: str, answer: Any) -> Any:
    if workload == "W3":
        return [(n["taskId"], n["label"], n["state"].upper(),
                 tuple(d["state"].upper() for d in n["dependenciesList"])) for n in answer]
    data = answer["data"]
    if workload == "W1":
        return sorted((x["label"], x["state"].upper()) for x in data["latestByLabelsList"])
    if workload == "W2":
        return sorted((x["indexPath"], x["taskId"], x["state"].upper())
                      for x in data["indexedStatusesList"] if x["state"])
    if workload == "W4":
        return (sorted({(x["label"], x["taskId"], x["state"].upper())
                        for x in data["latestByLabelsList"]}),
                sorted({(x["indexPath"], x["taskId"], x["state"].upper() if x["state"] else None)
                        for x in data["indexedStatusesList"]}))
    raise ValueError(workload)
