"""One DataLoader per kind of key, created per request.

Within a request every lookup of the same kind that is requested in the same
tick of the event loop is answered by one SQL statement (see store/queries/);
batches larger than `Settings.batch_size` keys are split into several
statements. The loaders also cache: a task reached twice costs nothing more,
and tasks found by label or page are primed into the task loader.

Loaders hold per-request state and must be built inside the running event
loop (aiodataloader binds to it), which is why `Loaders` is built per request.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime
from typing import Any, Awaitable, Callable, Hashable, Sequence, TypeVar

from aiodataloader import DataLoader

from tcgraph.errors import ServiceUnavailable
from tcgraph.model import IndexEntry, Namespace, Page, State, Task, TaskFilter, TaskGroup
from tcgraph.store.queries import index_entries, index_namespaces, task_dependencies, tasks
from tcgraph.store.pool import Database

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LabelKey = tuple[str, TaskFilter]
LabelPageKey = tuple[str, TaskFilter, tuple[datetime, str] | None, int]
GroupPageKey = tuple[str, State | None, str | None, int]
PageKey = tuple[str, str | None, int]


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
        for i, value in zip(positions, found):
            answers[i] = value
    return answers


class Loaders:
    """The DataLoaders of one request, all sharing its `Database` (and counters)."""

    def __init__(self, db: Database, batch_size: int) -> None:
        self.db = db

        def loader(fn: Callable[[list], Awaitable[list]]) -> DataLoader:
            return DataLoader(batch_load_fn=fn, max_batch_size=batch_size)

        self.task = loader(self._tasks)
        self.definition = loader(self._definitions)
        self.index_entry = loader(self._index_entries)
        self.latest = loader(self._latest("latest"))
        self.last_success = loader(self._latest("success"))
        self.last_failure = loader(self._latest("failure"))
        self.label_history = loader(self._label_history)
        self.task_group_exists = loader(self._task_groups_exist)
        self.task_group_page = loader(self._task_group_pages)
        self.dependents_page = loader(self._dependent_pages)
        self.namespace = loader(self._namespaces)
        self.child_namespaces_page = loader(self._child_namespace_pages)
        self.namespace_tasks_page = loader(self._namespace_entry_pages)
        # Taskcluster's REST lists, in its (en-US) order.
        self.task_group = loader(self._task_groups)
        self.task_group_page_en_us = loader(self._task_group_pages_en_us)
        self.dependents_page_en_us = loader(self._dependent_pages_en_us)
        self.child_namespaces_page_en_us = loader(self._child_namespace_pages_en_us)
        self.namespace_tasks_page_en_us = loader(self._namespace_entry_pages_en_us)

    async def load_all(self, loader: DataLoader, keys: Sequence[Hashable]) -> list[Any]:
        """`loader.load_many(keys)` for large key lists, without the per-key queue and gather.

        Answers from the loader's cache where it can (keys loaded or primed
        earlier in the request, including loads still in flight) and calls the
        loader's batch function directly for the rest: distinct keys only, in
        chunks of its `max_batch_size`, run concurrently as the loader itself
        would. The answers are cached in the loader, so later `load` calls
        (and the standard executor, after a fallback) reuse them.

        A failed batch clears its keys from the cache, as the loader does, so a
        later `load` tries again; except when the database is unavailable or
        timed out (`ServiceUnavailable`): then the keys stay failed, and a later
        `load` in this request fails the same way at once instead of waiting
        for the same outage twice.
        """
        if not loader.cache:
            return list(await loader.load_many(keys))
        cache = loader._cache
        cache_key = loader.get_cache_key
        create_future = loader.loop.create_future
        found: list[asyncio.Future] = []
        missing: list[Hashable] = []
        pending: list[asyncio.Future] = []
        for key in keys:
            if key is None:
                raise TypeError("The loader.load() function must be called with a value, "
                                "but got: None.")
            ck = cache_key(key)
            future = cache.get(ck)
            if future is None:
                future = cache[ck] = create_future()
                missing.append(key)
                pending.append(future)
            found.append(future)
        if missing:
            size = loader.max_batch_size or len(missing)
            if len(missing) <= size:
                await _dispatch(loader, missing, pending)
            else:
                await asyncio.gather(*(
                    _dispatch(loader, missing[i:i + size], pending[i:i + size])
                    for i in range(0, len(missing), size)))
        return [future.result() if future.done() else await future for future in found]

    def release(self) -> None:
        """Forget every row cached for this request, once its answer is built.

        The loaders refer to each other (and to this object) in a cycle, so
        without this the rows live on until the next full garbage collection.
        A later load in the request queries again.
        """
        for value in vars(self).values():
            if isinstance(value, DataLoader):
                value.clear_all()

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


async def _dispatch(loader: DataLoader, keys: list[Hashable],
                    futures: list[asyncio.Future]) -> None:
    """Run `loader`'s batch function for one chunk of keys and settle their futures."""
    try:
        values = list(await loader.batch_load_fn(keys))
        if len(values) != len(keys):
            raise TypeError(f"the batch function returned {len(values)} values for "
                            f"{len(keys)} keys")
    except Exception as error:
        if not isinstance(error, ServiceUnavailable):
            for key in keys:
                loader.clear(key)
        for future in futures:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: whoever loads the key gets it raised
        return
    except BaseException:  # cancelled: nobody may wait on these futures for ever
        for future in futures:
            future.cancel()
        raise
    for future, value in zip(futures, values):
        if not future.done():
            if isinstance(value, Exception):
                future.set_exception(value)
                future.exception()
            else:
                future.set_result(value)
