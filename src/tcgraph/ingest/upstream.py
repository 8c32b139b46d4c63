"""The Taskcluster deployment tcgraph mirrors, over its REST API (`taskcluster.aio`).

Definitions come in batches with `queue.tasks` (RFC 189: up to 1,000 ids a
call, unknown ids left out); an upstream older than that route (it answers
404 for it) is asked `queue.task` per task instead, a bounded number at once.
Backfill reads `queue.listTaskGroup` pages and walks the index with
`index.listNamespaces` / `index.listTasks`. Every answer goes through
ingest.shapes, so a bad one is logged and skipped, never stored half-read; a
definition is kept only under an id it was asked for. A walk whose pages would
never end (a continuation token that comes back, empty pages that keep one,
more than MAX_PAGES, a namespace listed under one that is not above it) ends
with `UpstreamMisbehaved`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Mapping

import aiohttp
import taskcluster.aio
from taskcluster.exceptions import TaskclusterRestFailure

from tcgraph.ingest import index_rules, shapes
from tcgraph.model import IndexEntryRow, StatusRow, TaskRow

log = logging.getLogger(__name__)

# queue.tasks takes at most this many ids in one call (RFC 189).
BATCH_IDS = 1000
# queue.task calls at once when the batch route is missing.
SINGLE_CONCURRENCY = 16
PAGE_LIMIT = 1000
# Pages one walk may take: ten million entries at 1,000 a page, far beyond any
# task group or namespace.
MAX_PAGES = 10_000
# Empty pages in a row, each with a continuation token, before a walk is given
# up (the upstream may filter a page down to nothing, but not page after page).
MAX_EMPTY_PAGES = 10


class UpstreamMisbehaved(Exception):
    """An answer of the upstream that would never end a walk (named with the call)."""


class Pages:
    """The continuation of one paged walk, refused when it would never end."""

    def __init__(self, what: str, max_pages: int = MAX_PAGES) -> None:
        self.what = what
        self.max_pages = max_pages
        self.pages = 0
        self.empty = 0
        self.tokens: set[str] = set()

    def next_query(self, answer: Mapping[str, object], items: int) -> dict[str, object] | None:
        """The query of the page after `answer` (which held `items`), or None at the end."""
        self.pages += 1
        token = answer.get("continuationToken")
        if not token:
            return None
        problem = None
        self.empty = 0 if items else self.empty + 1
        if not isinstance(token, str):
            problem = f"a continuation token that is {shapes.describe(token)}"
        elif token in self.tokens:
            problem = f"continuation token {token[:40]!r} came back after {self.pages} pages"
        elif self.empty >= MAX_EMPTY_PAGES:
            problem = f"{self.empty} empty pages in a row, each with a continuation token"
        elif self.pages >= self.max_pages:
            problem = f"more than {self.max_pages} pages"
        if problem is not None:
            raise UpstreamMisbehaved(f"{self.what}: {problem}; the walk was given up")
        self.tokens.add(token)  # type: ignore[arg-type]
        return {"limit": PAGE_LIMIT, "continuationToken": token}


class Upstream:
    """One deployment's queue and index; `close()` when done."""

    def __init__(self, root_url: str, *, max_retries: int = 5,
                 max_pages: int = MAX_PAGES) -> None:
        self.root_url = root_url.rstrip("/")
        self.max_pages = max_pages
        self._session = aiohttp.ClientSession()
        options = {"rootUrl": self.root_url, "maxRetries": max_retries}
        self.queue = taskcluster.aio.Queue(options, session=self._session)
        self.index = taskcluster.aio.Index(options, session=self._session)
        # None until the first batch call says whether the route exists.
        self.has_batch_route: bool | None = None
        self._single = asyncio.Semaphore(SINGLE_CONCURRENCY)

    async def close(self) -> None:
        await self._session.close()

    async def definitions(self, task_ids: Collection[str],
                          invalid: dict[str, str] | None = None) -> dict[str, TaskRow]:
        """The definitions of the tasks among `task_ids` that the upstream holds; those
        that are not valid are left out, and said why in `invalid` (by task id)."""
        ids = sorted(set(task_ids))
        found: dict[str, TaskRow] = {}
        for start in range(0, len(ids), BATCH_IDS):
            chunk = ids[start:start + BATCH_IDS]
            if self.has_batch_route is not False:
                try:
                    found.update(await self._batch(chunk, invalid))
                    self.has_batch_route = True
                    continue
                except TaskclusterRestFailure as e:
                    if e.status_code != 404 or self.has_batch_route:
                        raise
                    log.info("the upstream has no queue.tasks route: asking queue.task per task")
                    self.has_batch_route = False
            for row in await asyncio.gather(*(self._single_task(t, invalid) for t in chunk)):
                if row is not None:
                    found[row.task_id] = row
        return found

    async def _batch(self, task_ids: list[str],
                     invalid: dict[str, str] | None) -> dict[str, TaskRow]:
        found: dict[str, TaskRow] = {}
        asked = set(task_ids)
        # Each page answers at least one id, but for a few the upstream filtered out.
        pages = Pages("queue.tasks", max_pages=len(task_ids) + MAX_EMPTY_PAGES)
        query: dict[str, object] | None = {"limit": PAGE_LIMIT}
        while query is not None:
            answer = await self.queue.tasks(payload={"taskIds": task_ids}, query=query)
            listed = _listed(answer, "tasks")
            for i, item in enumerate(listed):
                where = f"queue.tasks tasks[{i}]"
                task_id = item.get("taskId") if isinstance(item, dict) else None
                if not isinstance(item, dict) or not isinstance(task_id, str) \
                        or task_id not in asked:
                    # Stored under its id, it would overwrite a task nobody asked about.
                    log.warning("%s: %s was not asked for (skipped)", where,
                                shapes.describe(task_id))
                    continue
                row = _task_row(task_id, item.get("task"), where, invalid)
                if row is not None:
                    found[row.task_id] = row
            query = pages.next_query(answer, len(listed))
        return found

    async def _single_task(self, task_id: str,
                           invalid: dict[str, str] | None) -> TaskRow | None:
        async with self._single:
            try:
                definition = await self.queue.task(task_id)
            except TaskclusterRestFailure as e:
                if e.status_code == 404:
                    return None
                raise
        return _task_row(task_id, definition, f"queue.task {task_id}", invalid)

    async def task_group(self, task_group_id: str
                         ) -> AsyncIterator[list[tuple[TaskRow, StatusRow]]]:
        """The pages of `listTaskGroup`, each as (definition, status) rows."""
        pages = Pages(f"listTaskGroup {task_group_id}", self.max_pages)
        query: dict[str, object] | None = {"limit": PAGE_LIMIT}
        while query is not None:
            try:
                answer = await self.queue.listTaskGroup(
                    params={"taskGroupId": task_group_id}, query=query)
            except TaskclusterRestFailure as e:
                if e.status_code == 404:  # not created yet, or expired
                    return
                raise
            rows = []
            listed = _listed(answer, "tasks")
            for i, item in enumerate(listed):
                where = f"listTaskGroup {task_group_id} tasks[{i}]"
                if not isinstance(item, dict):
                    log.warning("%s: %s, not a task (skipped)", where, shapes.describe(item))
                    continue
                status = item.get("status")
                task_id = status.get("taskId") if isinstance(status, dict) else None
                task = _task_row(task_id, item.get("task"), where)
                try:
                    status_row = shapes.status_row(status, str(task_id))
                except shapes.Invalid as e:
                    log.warning("%s: status: %s: %s", where, shapes.where("", e.path), e.problem)
                    continue
                if task is not None and task.task_group_id != task_group_id:
                    log.warning("%s: task %s is in group %s (skipped)", where, task.task_id,
                                task.task_group_id)
                elif task is not None:
                    rows.append((task, status_row))
            yield rows
            query = pages.next_query(answer, len(listed))

    async def index_entries(self, namespace: str) -> AsyncIterator[list[IndexEntryRow]]:
        """Every entry at or below `namespace`, a page at a time (listTasks, listNamespaces).

        Each namespace is walked once, and only index paths listed below the one
        listing them (so the walk ends: each level is longer, and a path has at most
        255 characters): a namespace listed under itself, or elsewhere, ends the walk.
        """
        pending = [namespace]
        seen = {namespace}
        while pending:
            current = pending.pop()
            async for page in self._pages(self.index.listTasks, "listTasks", current, "tasks"):
                rows = []
                for i, entry in enumerate(page):
                    try:
                        rows.append(shapes.entry_row(entry))
                    except shapes.Invalid as e:
                        log.warning("listTasks %s tasks[%d]: %s: %s", current, i,
                                    shapes.where("", e.path), e.problem)
                yield rows
            async for page in self._pages(self.index.listNamespaces, "listNamespaces", current,
                                          "namespaces"):
                for child in page:
                    path = child.get("namespace") if isinstance(child, dict) else None
                    if not isinstance(path, str):
                        continue
                    below = path.startswith(f"{current}.") if current else True
                    if not below or path in seen or not index_rules.is_index_path(path):
                        raise UpstreamMisbehaved(
                            f"listNamespaces {current!r}: {path[:300]!r} is not an index path "
                            "below it, or was listed already; the walk was given up")
                    seen.add(path)
                    pending.append(path)

    async def _pages(self, method: object, name: str, namespace: str, key: str
                     ) -> AsyncIterator[list[object]]:
        pages = Pages(f"{name} {namespace!r}", self.max_pages)
        query: dict[str, object] | None = {"limit": PAGE_LIMIT}
        while query is not None:
            answer = await method(params={"namespace": namespace}, query=query)  # type: ignore[operator]
            listed = _listed(answer, key)
            yield listed
            query = pages.next_query(answer, len(listed))


def status_rows(answer: object, asked: Collection[str]) -> dict[str, StatusRow]:
    """The statuses of one `queue.statuses` page, by task id: only those of tasks asked
    for (another would overwrite a task nobody asked about), invalid ones logged and left
    out."""
    found: dict[str, StatusRow] = {}
    for i, item in enumerate(_listed(answer, "statuses")):
        try:
            if not isinstance(item, dict):
                raise shapes.Invalid(f"expected an object, got {shapes.describe(item)}")
            task_id = shapes.slugid(item, "taskId")
            if task_id not in asked:
                raise shapes.Invalid(f"{task_id} was not asked for", ("taskId",))
            found[task_id] = shapes.status_row(item.get("status"), task_id)
        except shapes.Invalid as e:
            log.warning("queue.statuses statuses[%d]: %s: %s (skipped)", i,
                        shapes.where("", e.path), e.problem)
    return found


def entry_rows(answer: object) -> dict[str, IndexEntryRow]:
    """The entries of one `findTasksAtIndex` page, by index path; invalid ones logged and
    left out."""
    found: dict[str, IndexEntryRow] = {}
    for i, entry in enumerate(_listed(answer, "tasks")):
        try:
            row = shapes.entry_row(entry)
        except shapes.Invalid as e:
            log.warning("findTasksAtIndex tasks[%d]: %s: %s (skipped)", i,
                        shapes.where("", e.path), e.problem)
            continue
        found[f"{row.namespace}.{row.name}"] = row
    return found


def _listed(answer: object, key: str) -> list[object]:
    """The list under `key` of a page (nothing when the page has none)."""
    listed = answer.get(key) if isinstance(answer, dict) else None
    return listed if isinstance(listed, list) else []


def _task_row(task_id: object, definition: object, where: str,
              invalid: dict[str, str] | None = None) -> TaskRow | None:
    try:
        if not isinstance(task_id, str) or not shapes.SLUGID.fullmatch(task_id):
            raise shapes.Invalid(f"{shapes.describe(task_id)} is not a taskId", ("taskId",))
        return shapes.task_row(task_id, definition)
    except shapes.Invalid as e:
        problem = f"{where}: {shapes.where('', e.path)}: {e.problem}"
        log.warning("%s (skipped)", problem)
        if invalid is not None and isinstance(task_id, str):
            invalid[task_id] = f"invalid definition ({problem})"
        return None
