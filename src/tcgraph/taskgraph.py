"""taskgraph's optimization phase answered by tcgraph in ONE GraphQL document.

A taskgraph project enables it with one line in the `register` function its
`taskcluster/config.yml` names (`taskgraph: register: ...`)::

    def register(graph_config):
        tcgraph.taskgraph.register(graph_config)

(or, for a project without a register function of its own, the one line
`register: tcgraph.taskgraph:register` under `taskgraph:` in config.yml).

From then on, when taskgraph has built the target task graph (its
`target_task_graph` verification, which runs just before optimization), every
index path of every `index-search` task and every label of every
`label-search` task is resolved with one document (`tcgraph.client`):
index path -> task -> status, and label -> its newest task -> status. The
optimizer's look-ups are then answered from that answer, by taskgraph's own
`IndexSearch` rules (failed and exception tasks are not reused, nor tasks
expiring before the deadline of the tasks that depend on them): the stock
optimizer would instead make `find_task_id_batched` and `status_task_batched`
REST calls, each paging by 1,000.

`label-search` is the look-up of RFC 188 (a label -> the status of its newest
task) as an optimization strategy: a task marked `optimization:
{label-search: null}` is replaced by the newest task with the same label,
under the same rules as an index path.

tcgraph is found at taskgraph's root URL (`TASKCLUSTER_PROXY_URL`, else
`TASKCLUSTER_ROOT_URL`: a tcgraph serves Taskcluster's REST routes and
`/graphql` at its root), unless `register(graph_config, url=...)` names it.
If the optimizer asks for something the prefetch did not cover (verifications
switched off, or a graph optimized without being verified), that look-up is
resolved on its own, with a document of its own: slower, never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from taskgraph.optimize.base import OptimizationStrategy, registry
from taskgraph.optimize.strategies import IndexSearch
from taskgraph.util.taskcluster import get_root_url
from taskgraph.util.verify import verifications

from tcgraph.client import StatusResult, TcGraph
from tcgraph.timefmt import format_time

__all__ = ["INDEX_SEARCH", "LABEL_SEARCH", "Integration", "LookupStrategy", "Lookups",
           "index_keys", "label_key", "label_keys", "label_of", "register", "wanted"]

logger = logging.getLogger(__name__)

INDEX_SEARCH = "index-search"
LABEL_SEARCH = "label-search"
# Label keys of the look-up tables are kept apart from index paths, which
# could otherwise spell the same string.
_LABEL_KEY = "label:"


def _status(found: StatusResult) -> dict[str, str]:
    """A status as `queue.status` writes the fields IndexSearch reads."""
    return {"taskId": found.task_id, "state": found.state, "expires": format_time(found.expires)}


@dataclass
class Lookups:
    """What the optimizer may ask, in the shape taskgraph's batch calls return it.

    `index_to_taskid` is `find_task_id_batched`'s answer (labels under
    `label:<label>`), `taskid_to_status` `status_task_batched`'s; `asked` holds
    every key resolved, found or not.
    """

    index_to_taskid: dict[str, str] = field(default_factory=dict)
    taskid_to_status: dict[str, dict[str, str]] = field(default_factory=dict)
    asked: set[str] = field(default_factory=set)

    def add(self, client: TcGraph, index_paths: Iterable[str], labels: Iterable[str]) -> None:
        """Resolve `index_paths` and `labels` with one document (tcgraph.client) and keep them."""
        paths = [p for p in dict.fromkeys(index_paths) if p not in self.asked]
        names = [n for n in dict.fromkeys(labels) if label_key(n) not in self.asked]
        if not paths and not names:
            return
        found = client.resolve(index_paths=paths, labels=names)
        for path, indexed in found.index_paths.items():
            if indexed is not None:
                self.index_to_taskid[path] = indexed.task_id
                if indexed.status is not None:
                    self.taskid_to_status[indexed.task_id] = _status(indexed.status)
        for label, latest in found.labels.items():
            if latest is not None:
                self.index_to_taskid[label_key(label)] = latest.task_id
                self.taskid_to_status[latest.task_id] = _status(latest)
        self.asked.update(paths)
        self.asked.update(label_key(n) for n in names)


def wanted(graph: Any) -> tuple[list[str], list[str]]:
    """(index paths, labels) the optimizer may look up for `graph`, a TaskGraph."""
    paths: dict[str, None] = {}
    labels: dict[str, None] = {}
    for label, task in graph.tasks.items():
        for strategy, arg in (task.optimization or {}).items():
            if strategy == INDEX_SEARCH and arg:
                paths.update(dict.fromkeys(arg))
            elif strategy == LABEL_SEARCH:
                labels[label] = None
    return list(paths), list(labels)


def label_key(label: str) -> str:
    """The key of `label` in the look-up tables."""
    return _LABEL_KEY + label


def label_of(key: str) -> str:
    """The label a look-up key (`label_key`) stands for."""
    return key[len(_LABEL_KEY):]


def index_keys(task: Any, arg: Any) -> list[str]:
    """The keys an `index-search` task looks up: its index paths, in order."""
    return list(arg or ())


def label_keys(task: Any, arg: Any) -> list[str]:
    """The key a `label-search` task looks up: its own label."""
    return [label_key(task.label)]


class Source(Protocol):
    def lookups_for(self, keys: list[str]) -> Lookups:
        """Look-up tables holding at least `keys` (whether found or not)."""


class LookupStrategy(OptimizationStrategy):  # type: ignore[misc]
    """Replaces a task by taskgraph's IndexSearch rules, from look-up tables.

    Not an IndexSearch itself: the optimizer makes its batch REST calls only
    for IndexSearch strategies. `keys` says what a task looks up (its index
    paths, or its label), `source` where the tables come from.
    """

    def __init__(self, source: Source, description: str,
                 keys: Callable[[Any, Any], list[str]]) -> None:
        self.source = source
        self.description = description
        self.keys = keys
        self._rules = IndexSearch()

    def should_replace_task(self, task: Any, params: Any, deadline: Any, arg: Any) -> Any:
        keys = self.keys(task, arg)
        lookups = self.source.lookups_for(keys)
        return self._rules.should_replace_task(
            task, params, deadline, (keys, lookups.index_to_taskid, lookups.taskid_to_status))


class Integration:
    """The prefetch and the strategies that read it, for one tcgraph server."""

    def __init__(self, url: str | None = None, client: TcGraph | None = None) -> None:
        self.url = url
        self.lookups = Lookups()
        self.strategies: dict[str, OptimizationStrategy] = {
            INDEX_SEARCH: LookupStrategy(self, "index-search (tcgraph)", index_keys),
            LABEL_SEARCH: LookupStrategy(self, "label-search (tcgraph)", label_keys),
        }
        self._client = client

    def client(self) -> TcGraph:
        if self._client is None:
            self._client = TcGraph(self.url or get_root_url())
        return self._client

    def prefetch(self, graph: Any) -> None:
        """Everything the optimizer may ask about `graph`, in one document; forgets the last."""
        paths, labels = wanted(graph)
        self.lookups = Lookups()
        self.lookups.add(self.client(), paths, labels)
        logger.info(f"tcgraph: {len(paths)} index paths and {len(labels)} labels resolved "
                    "in one request")

    def verification(self, task: Any, graph: Any, scratch_pad: Any, graph_config: Any,
                     parameters: Any) -> None:
        """taskgraph's `target_task_graph` verification: called per task, then once with None."""
        if task is None:
            self.prefetch(graph)

    def lookups_for(self, keys: list[str]) -> Lookups:
        """The look-ups, with `keys` resolved (a document of their own if the prefetch missed
        them)."""
        missing = [k for k in keys if k not in self.lookups.asked]
        if missing:
            logger.warning(f"tcgraph: {len(missing)} look-ups were not prefetched; "
                           "resolving them on their own")
            self.lookups.add(self.client(),
                             [k for k in missing if not k.startswith(_LABEL_KEY)],
                             [label_of(k) for k in missing if k.startswith(_LABEL_KEY)])
        return self.lookups

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


_installed: Integration | None = None


def register(graph_config: Any = None, url: str | None = None) -> Integration:
    """Answer this process's optimizations from tcgraph (at `url`, else taskgraph's root URL).

    Installs the prefetch as a `target_task_graph` verification and this
    module's `index-search` and `label-search` in taskgraph's strategy
    registry. Calling it again only changes the URL (the root URL is read
    again). Composite strategies built before it ran keep the stock
    IndexSearch they were given.
    """
    global _installed
    if _installed is None:
        _installed = Integration(url)
        verifications.add("target_task_graph")(_installed.verification)
    else:
        _installed.close()
        _installed.url = url
    registry.update(_installed.strategies)
    return _installed
