"""The Taskcluster deployment tcgraph mirrors, over its REST API (`taskcluster.aio`).

Definitions come in batches with `queue.tasks` (RFC 189: up to 1,000 ids a
call, unknown ids left out); an upstream older than that route (it answers
404 for it) is asked `queue.task` per task instead, a bounded number at once.
Backfill reads `queue.listTaskGroup` pages and walks the index with
`index.listNamespaces` / `index.listTasks`. Every answer goes through
ingest.shapes, so a bad one is logged and skipped, never stored half-read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Collection

import aiohttp
import taskcluster.aio
from taskcluster.exceptions import TaskclusterRestFailure

from tcgraph.ingest import shapes
from tcgraph.model import IndexEntryRow, StatusRow, TaskRow

log = logging.getLogger(__name__)

# queue.tasks takes at most this many ids in one call (RFC 189).
BATCH_IDS = 1000
# queue.task calls at once when the batch route is missing.
SINGLE_CONCURRENCY = 16
PAGE_LIMIT = 1000


class Upstream:
    """One deployment's queue and index; `close()` when done."""

    def __init__(self, root_url: str, *, max_retries: int = 5) -> None:
        self.root_url = root_url.rstrip("/")
        self._session = aiohttp.ClientSession()
        options = {"rootUrl": self.root_url, "maxRetries": max_retries}
        self.queue = taskcluster.aio.Queue(options, session=self._session)
        self.index = taskcluster.aio.Index(options, session=self._session)
        # None until the first batch call says whether the route exists.
        self.has_batch_route: bool | None = None
        self._single = asyncio.Semaphore(SINGLE_CONCURRENCY)

    async def close(self) -> None:
        await self._session.close()

    async def definitions(self, task_ids: Collection[str]) -> dict[str, TaskRow]:
        """The definitions of the tasks among `task_ids` that the upstream holds."""
        ids = sorted(set(task_ids))
        found: dict[str, TaskRow] = {}
        for start in range(0, len(ids), BATCH_IDS):
            chunk = ids[start:start + BATCH_IDS]
            if self.has_batch_route is not False:
                try:
                    found.update(await self._batch(chunk))
                    self.has_batch_route = True
                    continue
                except TaskclusterRestFailure as e:
                    if e.status_code != 404 or self.has_batch_route:
                        raise
                    log.info("the upstream has no queue.tasks route: asking queue.task per task")
                    self.has_batch_route = False
            for row in await asyncio.gather(*(self._single_task(t) for t in chunk)):
                if row is not None:
                    found[row.task_id] = row
        return found

    async def _batch(self, task_ids: list[str]) -> dict[str, TaskRow]:
        found: dict[str, TaskRow] = {}
        query: dict[str, object] = {"limit": PAGE_LIMIT}
        while True:
            answer = await self.queue.tasks(payload={"taskIds": task_ids}, query=query)
            for i, item in enumerate(answer.get("tasks") or []):
                row = _task_row(item.get("taskId"), item.get("task"), f"queue.tasks tasks[{i}]")
                if row is not None:
                    found[row.task_id] = row
            token = answer.get("continuationToken")
            if not token:
                return found
            query = {"limit": PAGE_LIMIT, "continuationToken": token}

    async def _single_task(self, task_id: str) -> TaskRow | None:
        async with self._single:
            try:
                definition = await self.queue.task(task_id)
            except TaskclusterRestFailure as e:
                if e.status_code == 404:
                    return None
                raise
        return _task_row(task_id, definition, f"queue.task {task_id}")

    async def task_group(self, task_group_id: str
                         ) -> AsyncIterator[list[tuple[TaskRow, StatusRow]]]:
        """The pages of `listTaskGroup`, each as (definition, status) rows."""
        query: dict[str, object] = {"limit": PAGE_LIMIT}
        while True:
            try:
                answer = await self.queue.listTaskGroup(
                    params={"taskGroupId": task_group_id}, query=query)
            except TaskclusterRestFailure as e:
                if e.status_code == 404:  # not created yet, or expired
                    return
                raise
            rows = []
            for i, item in enumerate(answer.get("tasks") or []):
                where = f"listTaskGroup {task_group_id} tasks[{i}]"
                status = item.get("status") if isinstance(item, dict) else None
                task_id = status.get("taskId") if isinstance(status, dict) else None
                task = _task_row(task_id, item.get("task"), where)
                try:
                    status_row = shapes.status_row(status, str(task_id))
                except shapes.Invalid as e:
                    log.warning("%s: status: %s: %s", where, shapes.where("", e.path), e.problem)
                    continue
                if task is not None:
                    rows.append((task, status_row))
            yield rows
            token = answer.get("continuationToken")
            if not token:
                return
            query = {"limit": PAGE_LIMIT, "continuationToken": token}

    async def index_entries(self, namespace: str) -> AsyncIterator[list[IndexEntryRow]]:
        """Every entry at or below `namespace`, a page at a time (listTasks, listNamespaces)."""
        pending = [namespace]
        while pending:
            current = pending.pop()
            async for page in self._pages(self.index.listTasks, current, "tasks"):
                rows = []
                for i, entry in enumerate(page):
                    try:
                        rows.append(shapes.entry_row(entry))
                    except shapes.Invalid as e:
                        log.warning("listTasks %s tasks[%d]: %s: %s", current, i,
                                    shapes.where("", e.path), e.problem)
                yield rows
            async for page in self._pages(self.index.listNamespaces, current, "namespaces"):
                pending.extend(n["namespace"] for n in page
                               if isinstance(n, dict) and isinstance(n.get("namespace"), str))

    async def _pages(self, method: object, namespace: str, key: str
                     ) -> AsyncIterator[list[object]]:
        query: dict[str, object] = {"limit": PAGE_LIMIT}
        while True:
            answer = await method(params={"namespace": namespace}, query=query)  # type: ignore[operator]
            yield list(answer.get(key) or [])
            token = answer.get("continuationToken")
            if not token:
                return
            query = {"limit": PAGE_LIMIT, "continuationToken": token}


def _task_row(task_id: object, definition: object, where: str) -> TaskRow | None:
    try:
        if not isinstance(task_id, str) or not shapes.SLUGID.fullmatch(task_id):
            raise shapes.Invalid(f"{shapes.describe(task_id)} is not a taskId", ("taskId",))
        return shapes.task_row(task_id, definition)
    except shapes.Invalid as e:
        log.warning("%s: %s: %s (skipped)", where, shapes.where("", e.path), e.problem)
        return None
