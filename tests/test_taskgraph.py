"""tcgraph.taskgraph against a served tcgraph: taskgraph's optimizer, unmodified, gets the same
optimized graph from one GraphQL document as from the batch REST calls it makes today."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from conftest import FilledDatabase
from factories import BASE, FAR, FakeTask, slug
from ports import refusing_port
from servers import serving
from taskgraph.graph import Graph
from taskgraph.optimize.base import optimize_task_graph, registry
from taskgraph.optimize.strategies import IndexSearch
from taskgraph.task import Task
from taskgraph.taskgraph import TaskGraph
from taskgraph.util import taskcluster as tc
from taskgraph.util.verify import verifications

import tcgraph.taskgraph
from tcgraph.client import TcGraph, TcGraphError
from tcgraph.config import Settings
from tcgraph.server import create_app
from tcgraph.taskgraph import (
    LABEL_SEARCH,
    Lookups,
    LookupStrategy,
    label_key,
    label_keys,
)

STATES = ("completed", "failed", "exception", "running")
INDEXED = 40
LABELS = 30
PARAMS = {"project": "test", "level": "3"}
SOON = {"relative-datestamp": "1 day"}
# Beyond every stored task's expiry (a year after BASE): nothing may stand in for a task
# whose dependent needs it that long.
LATE = {"relative-datestamp": "3 years"}


class Counted:
    """An ASGI app that counts the HTTP requests it is given (health checks aside)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/health"):
            self.requests += 1
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def stored(filled_database: FilledDatabase
           ) -> Iterator[tuple[str, dict[int, FakeTask], dict[int, FakeTask]]]:
    """Index path `tcgraph.tg.<n>` -> a task in state STATES[n % 4]; label `build-<n>` -> an
    older completed task and a newer one in state STATES[n % 4]."""
    indexed = {n: FakeTask(task_id=slug(10**9 + n), label=f"indexed-{n}", state=STATES[n % 4])
               for n in range(INDEXED)}
    latest = {n: FakeTask(task_id=slug(2 * 10**9 + n), label=f"build-{n}", state=STATES[n % 4],
                          created=BASE + timedelta(hours=2)) for n in range(LABELS)}
    older = [FakeTask(task_id=slug(3 * 10**9 + n), label=f"build-{n}", state="completed",
                      created=BASE) for n in range(LABELS)]
    entries = [(f"tcgraph.tg.{n}", t.task_id, 1, FAR) for n, t in indexed.items()]
    with filled_database([*indexed.values(), *latest.values(), *older], entries) as url:
        yield url, indexed, latest


@pytest.fixture(scope="module")
def served(stored: tuple[str, Any, Any]) -> Iterator[tuple[str, Counted]]:
    url = stored[0]
    app = Counted(create_app(Settings(database_url=url, pool_max_size=4), url))
    with serving(app) as root:
        yield root, app


@pytest.fixture
def root_url(served: tuple[str, Counted], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """taskgraph pointed at the server; its caches and strategy registry as they were, after."""
    root = served[0]
    for variable in list(os.environ):
        if variable.startswith("TASKCLUSTER_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("TASKCLUSTER_ROOT_URL", root)
    saved = dict(registry)
    tc.get_root_url.cache_clear()
    tc.get_taskcluster_client.cache_clear()
    yield root
    registry.clear()
    registry.update(saved)
    tc.get_root_url.cache_clear()
    tc.get_taskcluster_client.cache_clear()


def target_graph() -> TaskGraph:
    """Index-search toolchains (a missing path, then a stored one; some only missing paths),
    label-search builds (some labels unknown), and tests depending on them, two of which need
    their dependencies for longer than any stored task lives."""
    tasks: dict[str, Task] = {}
    edges: set[tuple[str, str, str]] = set()

    def add(label: str, optimization: Any, dependencies: dict[str, str],
            deadline: dict[str, str] = SOON) -> None:
        tasks[label] = Task(kind=label.split("-")[0], label=label, attributes={},
                            task={"deadline": deadline}, optimization=optimization,
                            dependencies=dependencies)
        edges.update((label, on, name) for name, on in dependencies.items())

    for n in range(INDEXED + 4):
        add(f"toolchain-{n}", {"index-search": [f"tcgraph.tg.missing.{n}", f"tcgraph.tg.{n}"]},
            {})
    for n in range(LABELS + 3):
        add(f"build-{n}", {LABEL_SEARCH: None}, {})
    for n in range(INDEXED + 4):
        add(f"test-{n}", None, {"toolchain": f"toolchain-{n}",
                                "build": f"build-{n % (LABELS + 3)}"},
            deadline=LATE if n in (0, 3) else SOON)
    return TaskGraph(tasks, Graph(frozenset(tasks), frozenset(edges)))


def optimize(graph: TaskGraph, strategies: dict[str, Any] | None
             ) -> tuple[list[str], list[tuple[str, str]]]:
    optimized, label_to_taskid = optimize_task_graph(
        graph, set(graph.tasks), PARAMS, set(), "decisionTask", existing_tasks={},
        strategy_override=strategies)
    kept = sorted(t.label for t in optimized.tasks.values())
    replaced = sorted((label, task_id) for label, task_id in label_to_taskid.items()
                      if label in graph.tasks and label not in kept)
    return kept, replaced


class BatchedLabels:
    """Today's way for labels: tcgraph's RFC 188 route, one batch before optimizing."""

    def __init__(self, root: str, labels: list[str]) -> None:
        mapping = httpx.post(f"{root}/api/tcgraph/v1/labels/status",
                             json={"labels": labels}, trust_env=False).json()["mapping"]
        self.lookups = Lookups()
        for label, status in mapping.items():
            self.lookups.index_to_taskid[label_key(label)] = status["taskId"]
            self.lookups.taskid_to_status[status["taskId"]] = status
        self.lookups.asked.update(label_key(label) for label in labels)

    def lookups_for(self, keys: list[str]) -> Lookups:
        return self.lookups


def batched(root: str, graph: TaskGraph) -> tuple[list[str], list[tuple[str, str]]]:
    """(b): the optimizer's own find_task_id_batched / status_task_batched REST calls."""
    labels = BatchedLabels(root, [label for label in graph.tasks if label.startswith("build-")])
    return optimize(graph, {"index-search": IndexSearch(),
                            LABEL_SEARCH: LookupStrategy(labels, "batched", label_keys)})


def expected(indexed: dict[int, FakeTask], latest: dict[int, FakeTask]) -> list[tuple[str, str]]:
    """What IndexSearch's rules replace: tasks that did not fail, needed only for a day."""
    usable = ("completed", "running")
    out = [(f"toolchain-{n}", t.task_id) for n, t in indexed.items()
           if t.state in usable and n not in (0, 3)]
    late_builds = {f"build-{n % (LABELS + 3)}" for n in (0, 3)}
    out += [(f"build-{n}", t.task_id) for n, t in latest.items()
            if t.state in usable and f"build-{n}" not in late_builds]
    return sorted(out)


def test_one_document_gives_the_batched_calls_optimized_graph(
        root_url: str, served: tuple[str, Counted], stored: tuple[str, Any, Any]) -> None:
    _, app = served
    _, indexed, latest = stored

    before = app.requests
    want = batched(root_url, target_graph())
    # labels/status, then findTasksAtIndex and statuses (one page each here)
    assert app.requests - before == 3
    assert want[1] == expected(indexed, latest)

    integration = tcgraph.taskgraph.register(None)  # the one line a project adds
    assert registry["index-search"] is integration.strategies["index-search"]
    graph = target_graph()
    before = app.requests
    # taskgraph's generator: verify the target graph, then optimize it
    verifications("target_task_graph", graph, None, PARAMS)
    got = optimize(graph, None)
    assert app.requests - before == 1
    assert got == want


def test_lookups_the_prefetch_missed_are_resolved_on_their_own(
        root_url: str, served: tuple[str, Counted], stored: tuple[str, Any, Any]) -> None:
    _, app = served
    _, indexed, latest = stored
    integration = tcgraph.taskgraph.Integration(root_url)
    try:
        before = app.requests
        # No verification ran: every task asked about costs a document of its own.
        got = optimize(target_graph(), integration.strategies)
        assert got[1] == expected(indexed, latest)
        assert app.requests - before == (INDEXED + 4) + (LABELS + 3)
        assert len(integration.lookups.asked) == 2 * (INDEXED + 4) + LABELS + 3
    finally:
        integration.close()


def test_an_unreachable_tcgraph_fails_the_decision_task(root_url: str) -> None:
    # Nothing listens there: the verification raises, rather than letting the optimizer run
    # every task for want of answers.
    with refusing_port() as port:
        closed = f"http://127.0.0.1:{port}"
        integration = tcgraph.taskgraph.Integration(closed, client=TcGraph(closed, retries=0))
        try:
            with pytest.raises(TcGraphError, match="127.0.0.1"):
                integration.verification(None, target_graph(), {}, None, PARAMS)
            assert integration.lookups.asked == set()
        finally:
            integration.close()
