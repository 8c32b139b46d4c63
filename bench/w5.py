"""W5: taskgraph's own optimization phase, against tcgraph three ways.

`taskgraph.optimize.base.optimize_task_graph` (taskcluster-taskgraph,
unmodified) optimizes a generated target graph of 5,000 tasks:

* 1,000 `index-search` tasks (toolchains), two index paths each: 2,000
  look-ups, three in four of them paths the dataset holds, the rest paths no
  task was ever indexed under;
* 900 `label-search` tasks whose labels are labels of the dataset: replaced
  by the newest task with that label (RFC 188's look-up, the strategy
  `tcgraph.taskgraph` provides);
* 3,100 tests with no optimization, each depending on one of each, so that
  every look-up has a deadline to meet.

Three ways of answering the optimizer, all against the same tcgraph server:

* (a) `rest-per-item/http`, taskgraph before 8.1: `IndexSearch` asks per task
  and per path, `find_task_id` then `status_task` (the `taskcluster` client's
  `index.findTask` and `queue.status`), and each label is one
  `POST /api/tcgraph/v1/labels/status`. Reproduced with taskgraph's own
  per-item branch: the strategy given to the optimizer is not an IndexSearch
  instance, so the optimizer makes no batch calls, and it hands the paths to
  `IndexSearch.should_replace_task` as a plain list.
* (b) `rest-batch/http`, taskgraph today: the optimizer's own
  `find_task_id_batched` and `status_task_batched`, and the labels in one
  `labels/status` call before optimizing, following continuationTokens.
* (c) `tcgraph/http`: `tcgraph.taskgraph.register(...)` (the one line a
  project adds), then taskgraph's `target_task_graph` verification, which
  prefetches everything in one GraphQL document, then the optimizer.

Requests and statements are counted by the server (`/metrics`) and by
PostgreSQL (pg_stat_statements); each run optimizes a freshly generated graph
(the optimizer rewrites the tasks it keeps).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from bench.measure import PgCounter
from bench.report import Result

TASKS = 5_000
INDEXED_TASKS = 1_000  # two paths each
LABELS = 900
FOUND_SHARE = 0.75  # of the index paths, those that exist
PARAMS = {"project": "bench", "level": "3"}
DEADLINE = {"relative-datestamp": "1 day"}
SERIES = ("floor", "tcgraph/http", "rest-batch/http", "rest-per-item/http")


def paths_needed() -> int:
    return int(2 * INDEXED_TASKS * FOUND_SHARE)


def make_graph(paths: list[str], labels: list[str], seed: int = 5) -> Any:
    """The target task graph: the same graph for the same keys and seed."""
    from taskgraph.graph import Graph
    from taskgraph.task import Task
    from taskgraph.taskgraph import TaskGraph

    rng = random.Random(seed)
    found = list(paths)
    tasks: dict[str, Task] = {}
    edges: set[tuple[str, str, str]] = set()

    def add(kind: str, label: str, optimization: dict[str, Any] | None,
            dependencies: dict[str, str]) -> None:
        tasks[label] = Task(kind=kind, label=label, attributes={},
                            task={"deadline": DEADLINE, "metadata": {"name": label}},
                            optimization=optimization, dependencies=dependencies)
        edges.update((label, on, name) for name, on in dependencies.items())

    toolchains = []
    for n in range(INDEXED_TASKS):
        # Newest first, as a project lists them: a path for this very
        # revision (often never indexed), then older fallbacks.
        pair = [found.pop() if found and rng.random() < FOUND_SHARE else
                f"bench.w5.missing.{n}.{i}" for i in range(2)]
        label = f"toolchain-{n}"
        add("toolchain", label, {"index-search": pair}, {})
        toolchains.append(label)
    for label in labels[:LABELS]:
        add("build", label, {"label-search": None}, {})
    builds = labels[:LABELS]
    for n in range(TASKS - INDEXED_TASKS - len(builds)):
        add("test", f"test-{n}", None,
            {"toolchain": toolchains[n % len(toolchains)], "build": builds[n % len(builds)]})
    return TaskGraph(tasks, Graph(frozenset(tasks), frozenset(edges)))


def outcome(graph: Any, optimized: Any, label_to_taskid: dict[str, str]) -> Any:
    """What an optimization of `graph` decided: the labels kept, and each replaced label's
    task."""
    kept = {t.label for t in optimized.tasks.values()}
    replaced = sorted((label, task_id) for label, task_id in label_to_taskid.items()
                      if label in graph.tasks and label not in kept)
    return sorted(kept), replaced


# --- the three ways ------------------------------------------------------------


@contextmanager
def taskgraph_pointed_at(root_url: str) -> Iterator[None]:
    """taskgraph's client calls sent to `root_url`, its per-process caches emptied around."""
    from taskgraph.util import taskcluster as tc

    saved = {k: v for k, v in os.environ.items() if k.startswith("TASKCLUSTER_")}
    for k in saved:
        del os.environ[k]
    os.environ["TASKCLUSTER_ROOT_URL"] = root_url
    tc.get_root_url.cache_clear()
    tc.get_taskcluster_client.cache_clear()
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("TASKCLUSTER_")]:
            del os.environ[k]
        os.environ.update(saved)
        tc.get_root_url.cache_clear()
        tc.get_taskcluster_client.cache_clear()


class _Labels:
    """tcgraph's labels/status route (RFC 188), through one keep-alive connection."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=300, trust_env=False)

    def statuses(self, labels: list[str]) -> dict[str, dict[str, Any]]:
        mapping: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            url = "/api/tcgraph/v1/labels/status"
            if token:
                url += "?continuationToken=" + token
            r = self.http.post(url, content=orjson.dumps({"labels": labels}),
                               headers={"content-type": "application/json"})
            r.raise_for_status()
            page = orjson.loads(r.content)
            mapping.update(page["mapping"])
            token = page.get("continuationToken")
            if not token:
                return mapping

    def close(self) -> None:
        self.http.close()


def _label_lookups(statuses: dict[str, dict[str, Any]], asked: list[str]) -> Any:
    from tcgraph.taskgraph import Lookups, label_key

    lookups = Lookups()
    for label, status in statuses.items():
        lookups.index_to_taskid[label_key(label)] = status["taskId"]
        lookups.taskid_to_status[status["taskId"]] = status
    lookups.asked.update(label_key(label) for label in asked)
    return lookups


class _PerItemLabels:
    """(a): one labels/status call per label, when the optimizer asks."""

    def __init__(self, labels: _Labels) -> None:
        self.labels = labels

    def lookups_for(self, keys: list[str]) -> Any:
        from tcgraph.taskgraph import label_of

        names = [label_of(k) for k in keys]
        return _label_lookups(self.labels.statuses(names), names)


class _Fixed:
    """(b): the labels' statuses fetched in one batch before optimizing."""

    def __init__(self, lookups: Any) -> None:
        self.lookups = lookups

    def lookups_for(self, keys: list[str]) -> Any:
        return self.lookups


class _PerItemIndexSearch:
    """taskgraph before 8.1: the paths as a plain list, so IndexSearch asks per item."""

    description = "index-search (per item)"

    def __init__(self) -> None:
        from taskgraph.optimize.strategies import IndexSearch

        self.rules = IndexSearch()

    def should_remove_task(self, task: Any, params: Any, arg: Any) -> bool:
        return False

    def should_replace_task(self, task: Any, params: Any, deadline: Any, arg: Any) -> Any:
        return self.rules.should_replace_task(task, params, deadline, list(arg))


def optimize(graph: Any, strategies: dict[str, Any] | None) -> tuple[Any, dict[str, str]]:
    """taskgraph's optimizer on `graph`: (the optimized graph, label -> task id)."""
    from taskgraph.optimize.base import optimize_task_graph

    optimized, label_to_taskid = optimize_task_graph(
        graph, set(graph.tasks), PARAMS, set(), "decisionTaskId00000000",
        existing_tasks={}, strategy_override=strategies)
    return optimized, label_to_taskid


def per_item(base: str, labels: _Labels) -> Callable[[Any], Any]:
    from tcgraph.taskgraph import LABEL_SEARCH, LookupStrategy, label_keys

    def run(graph: Any) -> Any:
        return optimize(graph, {
            "index-search": _PerItemIndexSearch(),
            LABEL_SEARCH: LookupStrategy(_PerItemLabels(labels), "label-search (per item)",
                                         label_keys)})
    return run


def batched(base: str, labels: _Labels) -> Callable[[Any], Any]:
    from taskgraph.optimize.strategies import IndexSearch

    from tcgraph.taskgraph import LABEL_SEARCH, LookupStrategy, label_keys, wanted

    def run(graph: Any) -> Any:
        _, names = wanted(graph)
        fetched = _Fixed(_label_lookups(labels.statuses(names), names))
        # The stock IndexSearch, whatever (c) put in taskgraph's registry.
        return optimize(graph, {
            "index-search": IndexSearch(),
            LABEL_SEARCH: LookupStrategy(fetched, "label-search (batch)", label_keys)})
    return run


def in_memory(lookups: Any) -> Callable[[Any], Any]:
    """W5's floor: every answer already in memory, no request at all; what is left is the
    optimizer's own work."""
    from tcgraph.taskgraph import (
        INDEX_SEARCH,
        LABEL_SEARCH,
        LookupStrategy,
        index_keys,
        label_keys,
    )

    source = _Fixed(lookups)

    def run(graph: Any) -> Any:
        return optimize(graph, {
            INDEX_SEARCH: LookupStrategy(source, "index-search (in memory)", index_keys),
            LABEL_SEARCH: LookupStrategy(source, "label-search (in memory)", label_keys)})
    return run


def one_document(base: str, prefetch_ms: list[float]) -> Callable[[Any], Any]:
    """(c); each run's prefetch (the verification, its one request) timed into `prefetch_ms`."""
    from taskgraph.util.verify import verifications

    import tcgraph.taskgraph

    integration = tcgraph.taskgraph.register(None, url=base)

    def run(graph: Any) -> Any:
        # What taskgraph's generator does between building the target graph
        # and optimizing it.
        started = time.perf_counter()
        verifications("target_task_graph", graph, None, PARAMS)
        prefetch_ms.append((time.perf_counter() - started) * 1000)
        return optimize(graph, dict(integration.strategies))
    return run


# --- measuring ----------------------------------------------------------------


def _server_counts(base: str) -> tuple[float, float]:
    """(requests answered, SQL statements run) so far, from the server's /metrics."""
    text = httpx.get(base + "/metrics", timeout=30, trust_env=False).text
    requests = statements = 0.0
    for line in text.splitlines():
        if line.startswith("tcgraph_requests_total{") and 'route="/metrics"' not in line:
            requests += float(line.rsplit(" ", 1)[1])
        elif line.startswith("tcgraph_request_sql_statements_sum{"):
            statements += float(line.rsplit(" ", 1)[1])
    return requests, statements


async def measure(base: str, paths: list[str], labels: list[str], runs: int, warmup: int,
                  counter: PgCounter, log: Callable[[str], None],
                  per_item_runs: int = 3) -> list[Result]:
    """W5's series: `warmup` + `runs` optimizations each (the per-item way, thousands of
    requests a run, at most `per_item_runs`), rotating their order."""
    from tcgraph.taskgraph import Integration

    labels_client = _Labels(base)
    results = {s: Result("W5", TASKS, s) for s in SERIES}
    answers: dict[str, Any] = {}
    prefetched = Integration(base)
    prefetch_ms: list[float] = []
    try:
        prefetched.prefetch(make_graph(paths, labels))
        with taskgraph_pointed_at(base):
            ways = {"floor": in_memory(prefetched.lookups),
                    "tcgraph/http": one_document(base, prefetch_ms),
                    "rest-batch/http": batched(base, labels_client),
                    "rest-per-item/http": per_item(base, labels_client)}
            for n in range(warmup + runs):
                order = list(SERIES[n % len(SERIES):] + SERIES[:n % len(SERIES)])
                for series in order:
                    if series == "rest-per-item/http" and n >= warmup + per_item_runs:
                        continue
                    graph = make_graph(paths, labels)
                    r = results[series]
                    before = _server_counts(base)
                    before_pg = await counter.total()
                    started = time.perf_counter()
                    try:
                        optimized, label_to_taskid = ways[series](graph)
                    except Exception as e:  # reported in the table, not fatal
                        r.error = f"{type(e).__name__}: {e}"[:300]
                        log(f"  W5 {series}: FAILED: {r.error}")
                        continue
                    elapsed = (time.perf_counter() - started) * 1000
                    answer = outcome(graph, optimized, label_to_taskid)
                    after_pg = await counter.total()
                    after = _server_counts(base)
                    if n < warmup:
                        answers[series] = answer
                        r.requests = round(after[0] - before[0])
                        r.calls = r.requests
                        r.statements = round(after[1] - before[1])
                        if before_pg is not None and after_pg is not None:
                            r.pg_statements = after_pg - before_pg
                    else:
                        r.times_ms.append(elapsed)
    finally:
        labels_client.close()
        prefetched.close()
    load = os.getloadavg()[0]
    for r in results.values():
        r.load = load
    reference = answers.get("rest-batch/http")
    for series, r in results.items():
        if series == "rest-batch/http":
            r.check = "reference" if reference is not None else ""
        elif series in answers and reference is not None:
            kept, replaced = answers[series]
            r.check = ("ok (same optimized graph)" if answers[series] == reference else
                       f"DIFFERS from (b): {len(kept)} kept vs {len(reference[0])}, "
                       f"{len(replaced)} replaced vs {len(reference[1])}")
    if reference is not None:
        log(f"  W5: {len(reference[1])} of {TASKS:,} tasks replaced, {len(reference[0]):,} kept")
    if prefetch_ms:
        log(f"  W5 (c): the prefetch (verification + its one request) took "
            f"{statistics.median(prefetch_ms):.0f} ms (median of {len(prefetch_ms)})")
    for r in results.values():
        if r.median is not None:
            log(f"  W5 {r.series:<20} median {r.median:9.1f} ms  HTTP {r.requests}  "
                f"SQL {r.statements} (PostgreSQL saw {r.pg_statements})")
    return list(results.values())
