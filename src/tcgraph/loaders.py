"""One DataLoader per kind of key, created per request.

Within a request every lookup of the same kind that is requested in the same
tick of the event loop is answered by one SQL statement (see store/queries/);
batches larger than `Settings.batch_size` keys are split into several
statements. The loaders also cache: a task reached twice costs nothing more,
and tasks found by label or page are primed into the task loader.

Loaders hold per-request state and must be built inside the running event
loop (aiodataloader binds to it), which is why `Loaders` is built per request.

Several fields may wait on one cached future (two aliases of one task). Each
waiter gets its own shield of it, so when GraphQL cancels one field (a sibling
failed in a non-null position) the others still get their answer.

The `*_json` loaders answer selections compiled by api/sqljson.py: their keys
carry the compiled JSON expression (`shape`), and their answers are JSON text.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime
from dataclasses import dataclass
from typing import Any, TypeVar
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence

from aiodataloader import DataLoader

from tcgraph.errors import ServiceUnavailable
from tcgraph.model import IndexEntry, Namespace, Page, State, Task, TaskFilter, TaskGroup
from tcgraph.store.queries import index_entries, index_namespaces, task_dependencies, tasks
from tcgraph.store.pool import Database
from tcgraph.store.sqlfrag import SqlFragment

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LabelKey = tuple[str, TaskFilter]
LabelPageKey = tuple[str, TaskFilter, tuple[datetime, str] | None, int]
GroupPageKey = tuple[str, State | None, str | None, int]
PageKey = tuple[str, str | None, int]


@dataclass(frozen=True, slots=True)
class JsonListKey:
    """Keys answered as one JSON array (or, `single`, one JSON value) of `shape` each."""

    shape: SqlFragment
    keys: tuple[str, ...]
    single: bool = False
    task_filter: TaskFilter | None = None  # labels only


@dataclass(frozen=True, slots=True)
class JsonPageKey:
    """One page of a connection, each row answered as JSON of `shape`."""

    shape: SqlFragment
    parent: str
    after: str | None
    limit: int
    state: State | None = None  # task group pages only


# (shapes, [(keys, shape number)], filter) -> one JSON array per list.
JsonFetch = Callable[[list[SqlFragment], list[tuple[tuple[str, ...], int]], TaskFilter | None],
                     Awaitable[list[str]]]


class Loader(DataLoader[Any, Any]):
    """A DataLoader whose waiters can be cancelled one by one (see the module docstring)."""

    def load(self, key: Any) -> asyncio.Future[Any]:
        return asyncio.shield(super().load(key))


def _keeping_outages(
    fn: Callable[[list[Any]], Awaitable[list[Any]]]
) -> Callable[[list[Any]], Coroutine[Any, Any, list[Any]]]:
    """A batch function whose outage stays cached for its keys.

    A failed batch clears its keys, so a later load tries again; but when the
    database is unavailable or timed out, a later load in the same request
    would only wait for the same outage twice. Answering each key with the
    error (instead of raising it) keeps it in the loader's cache.
    """
    async def load(keys: list[Any]) -> list[Any]:
        try:
            return await fn(keys)
        except ServiceUnavailable as error:
            return [error] * len(keys)

    return load


def _only(array: str) -> str | None:
    """The one element of a JSON array of one element, as text (None for null).

    json_agg writes one element as `[` + element + `]`.
    """
    element = array[1:-1]
    return None if element == "null" else element


async def _by_group(
    keys: Sequence[K],
    group_of: Callable[[K], Hashable],
    load: Callable[[Hashable, list[K]], Awaitable[list[V]]],
) -> list[V]:
    """Answer `keys` with one `load` per group of keys that share one statement."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[group_of(key)].append(i)
    answers: list[V] = [None] * len(keys)  # type: ignore[list-item]
    for group, positions in groups.items():
        found = await load(group, [keys[i] for i in positions])
        for i, value in zip(positions, found, strict=False):
            answers[i] = value
    return answers


_Batch = Callable[[list[Any]], Awaitable[list[Any]]]


class _OnFirstUse:
    """A Loaders attribute whose DataLoader is made when first read: a request (or a
    WebSocket connection, which may never use its own) builds only the loaders it uses."""

    def __init__(self, batch: Callable[[Loaders], _Batch]) -> None:
        self.batch = batch
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, loaders: Loaders, owner: type | None = None) -> Loader:
        made = Loader(batch_load_fn=_keeping_outages(self.batch(loaders)),
                      max_batch_size=loaders.batch_size)
        # A non-data descriptor: the instance's own attribute answers from now on.
        loaders.__dict__[self.name] = made
        return made


class Loaders:
    """The DataLoaders of one request, all sharing its `Database` (and counters)."""

    def __init__(self, db: Database, batch_size: int) -> None:
        self.db = db
        self.batch_size = batch_size

    task = _OnFirstUse(lambda ls: ls._tasks)
    definition = _OnFirstUse(lambda ls: ls._definitions)
    index_entry = _OnFirstUse(lambda ls: ls._index_entries)
    latest = _OnFirstUse(lambda ls: ls._latest("latest"))
    last_success = _OnFirstUse(lambda ls: ls._latest("success"))
    last_failure = _OnFirstUse(lambda ls: ls._latest("failure"))
    label_history = _OnFirstUse(lambda ls: ls._label_history)
    task_group_exists = _OnFirstUse(lambda ls: ls._task_groups_exist)
    task_group_page = _OnFirstUse(lambda ls: ls._task_group_pages)
    dependents_page = _OnFirstUse(lambda ls: ls._dependent_pages)
    namespace = _OnFirstUse(lambda ls: ls._namespaces)
    child_namespaces_page = _OnFirstUse(lambda ls: ls._child_namespace_pages)
    namespace_tasks_page = _OnFirstUse(lambda ls: ls._namespace_entry_pages)
    # Taskcluster's REST lists, in its (en-US) order.
    task_group = _OnFirstUse(lambda ls: ls._task_groups)
    task_group_page_en_us = _OnFirstUse(lambda ls: ls._task_group_pages_en_us)
    dependents_page_en_us = _OnFirstUse(lambda ls: ls._dependent_pages_en_us)
    child_namespaces_page_en_us = _OnFirstUse(lambda ls: ls._child_namespace_pages_en_us)
    namespace_tasks_page_en_us = _OnFirstUse(lambda ls: ls._namespace_entry_pages_en_us)
    tasks_json = _OnFirstUse(lambda ls: ls._tasks_json)
    entries_json = _OnFirstUse(lambda ls: ls._entries_json)
    labels_json = _OnFirstUse(lambda ls: ls._labels_json)
    task_group_json_page = _OnFirstUse(lambda ls: ls._task_group_json_pages)
    dependents_json_page = _OnFirstUse(lambda ls: ls._dependent_json_pages)

    def _prime(self, found: Sequence[Task | None]) -> None:
        for task in found:
            if task is not None:
                self.task.prime(task.task_id, task)

    def _prime_pages(self, pages: Sequence[Page]) -> None:
        for page in pages:
            self._prime(page.rows)

    async def _tasks(self, task_ids: list[str]) -> list[Task | None]:
        found = await tasks.tasks_by_id(self.db, task_ids)
        return [found.get(task_id) for task_id in task_ids]

    async def _definitions(self, task_ids: list[str]) -> list[str | None]:
        found = await tasks.definitions_by_id(self.db, task_ids)
        return [found.get(task_id) for task_id in task_ids]

    async def _index_entries(self, keys: list[tuple[str, str]]) -> list[IndexEntry | None]:
        return await index_entries.index_entries(self.db, keys)

    def _latest(self, outcome: str) -> Callable[[list[LabelKey]], Awaitable[list[Task | None]]]:
        async def load(keys: list[LabelKey]) -> list[Task | None]:
            async def one_filter(task_filter: Hashable, group: list[LabelKey]) -> list[Task | None]:
                assert isinstance(task_filter, TaskFilter)
                found = await tasks.latest_by_label(
                    self.db, [label for label, _ in group], task_filter, outcome)
                self._prime(found)
                return found

            return await _by_group(keys, lambda key: key[1], one_filter)

        return load

    async def _label_history(self, keys: list[LabelPageKey]) -> list[Page]:
        async def one_filter(task_filter: Hashable, group: list[LabelPageKey]) -> list[Page]:
            assert isinstance(task_filter, TaskFilter)
            pages = await tasks.label_history(
                self.db, [(label, after, limit) for label, _, after, limit in group], task_filter)
            self._prime_pages(pages)
            return pages

        return await _by_group(keys, lambda key: key[1], one_filter)

    async def _task_groups_exist(self, group_ids: list[str]) -> list[bool]:
        found = await tasks.task_groups_exist(self.db, group_ids)
        return [group_id in found for group_id in group_ids]

    async def _task_group_pages(self, keys: list[GroupPageKey]) -> list[Page]:
        async def load(_: Hashable, group: list[GroupPageKey]) -> list[Page]:
            pages = await tasks.task_group_pages(self.db, group)
            self._prime_pages(pages)
            return pages

        # With and without a state filter rely on different indexes.
        return await _by_group(keys, lambda key: key[1] is None, load)

    async def _dependent_pages(self, keys: list[PageKey]) -> list[Page]:
        pages = await task_dependencies.dependent_pages(self.db, keys)
        self._prime_pages(pages)
        return pages

    async def _namespaces(self, paths: list[str]) -> list[Namespace | None]:
        return await index_namespaces.namespaces(self.db, paths)

    async def _child_namespace_pages(self, keys: list[PageKey]) -> list[Page]:
        return await index_namespaces.child_namespace_pages(self.db, keys)

    async def _namespace_entry_pages(self, keys: list[PageKey]) -> list[Page]:
        return await index_entries.namespace_entry_pages(self.db, keys)

    async def _task_groups(self, group_ids: list[str]) -> list[TaskGroup | None]:
        found = await tasks.task_groups(self.db, group_ids)
        return [found.get(group_id) for group_id in group_ids]

    async def _task_group_pages_en_us(self, keys: list[PageKey]) -> list[Page]:
        pages = await tasks.task_group_pages_en_us(self.db, keys)
        self._prime_pages(pages)
        return pages

    async def _dependent_pages_en_us(self, keys: list[PageKey]) -> list[Page]:
        pages = await task_dependencies.dependent_pages_en_us(self.db, keys)
        self._prime_pages(pages)
        return pages

    async def _child_namespace_pages_en_us(self, keys: list[PageKey]) -> list[Page]:
        return await index_namespaces.child_namespace_pages_en_us(self.db, keys)

    async def _namespace_entry_pages_en_us(self, keys: list[PageKey]) -> list[Page]:
        return await index_entries.namespace_entry_pages_en_us(self.db, keys)

    async def _json_lists(self, keys: list[JsonListKey], fetch: JsonFetch) -> list[str | None]:
        """Answer JSON list keys with one statement per filter, whatever their shapes.

        A list longer than the batch size is answered in chunks of it, on
        concurrent statements, and its JSON arrays joined (never decoded).
        """
        async def one_filter(task_filter: Hashable, found: list[JsonListKey]) -> list[str]:
            short = [k for k in found if len(k.keys) <= self.batch_size]
            answers: dict[JsonListKey, str] = {}
            if short:
                shapes = list(dict.fromkeys(k.shape for k in short))
                number = {shape: i for i, shape in enumerate(shapes)}
                texts = await fetch(shapes, [(k.keys, number[k.shape]) for k in short],
                                    found[0].task_filter)
                answers.update(zip(short, texts, strict=True))
            for key in found:
                if len(key.keys) > self.batch_size:
                    answers[key] = await self._chunked(key, fetch)
            return [answers[key] for key in found]

        arrays = await _by_group(keys, lambda k: k.task_filter, one_filter)
        return [_only(array) if key.single else array
                for key, array in zip(keys, arrays, strict=True)]

    async def _chunked(self, key: JsonListKey, fetch: JsonFetch) -> str:
        size = self.batch_size
        chunks = [key.keys[i:i + size] for i in range(0, len(key.keys), size)]
        parts = await asyncio.gather(*(
            fetch([key.shape], [(chunk, 0)], key.task_filter) for chunk in chunks))
        return "[" + ",".join(part[0][1:-1] for part in parts) + "]"

    async def _tasks_json(self, keys: list[JsonListKey]) -> list[str | None]:
        async def fetch(shapes: list[SqlFragment], lists: list[tuple[tuple[str, ...], int]],
                        _: TaskFilter | None) -> list[str]:
            return await tasks.tasks_json(self.db, shapes, lists)

        return await self._json_lists(keys, fetch)

    async def _entries_json(self, keys: list[JsonListKey]) -> list[str | None]:
        async def fetch(shapes: list[SqlFragment], lists: list[tuple[tuple[str, ...], int]],
                        _: TaskFilter | None) -> list[str]:
            return await index_entries.entries_json(self.db, shapes, lists)

        return await self._json_lists(keys, fetch)

    async def _labels_json(self, keys: list[JsonListKey]) -> list[str | None]:
        async def fetch(shapes: list[SqlFragment], lists: list[tuple[tuple[str, ...], int]],
                        task_filter: TaskFilter | None) -> list[str]:
            return await tasks.labels_json(self.db, shapes, lists, task_filter or TaskFilter())

        return await self._json_lists(keys, fetch)

    async def _task_group_json_pages(self, keys: list[JsonPageKey]) -> list[Page]:
        async def load(group: Hashable, found: list[JsonPageKey]) -> list[Page]:
            return await tasks.task_group_json_pages(
                self.db, found[0].shape, [(k.parent, k.state, k.after, k.limit) for k in found])

        return await _by_group(keys, lambda k: (k.shape, k.state is None), load)

    async def _dependent_json_pages(self, keys: list[JsonPageKey]) -> list[Page]:
        async def load(group: Hashable, found: list[JsonPageKey]) -> list[Page]:
            return await task_dependencies.dependent_json_pages(
                self.db, found[0].shape, [(k.parent, k.after, k.limit) for k in found])

        return await _by_group(keys, lambda k: k.shape, load)
