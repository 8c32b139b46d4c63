"""Which Taskcluster answer a parsed document is, and the rows it holds.

Every shape accepted is a response of the queue or the index, as the
`taskcluster` client returns it:

- `queue.listTaskGroup` pages: `{"taskGroupId", "tasks": [{"task", "status"}]}`
- `queue.task`: a bare definition, accepted when the file is named `<taskId>.json`
- `queue.tasks` pages `{"tasks": [{"taskId", "task"}]}` and their elements
- `queue.status` `{"status"}`, `queue.statuses` pages `{"statuses": [{"taskId", "status"}]}`
- index entries `{"namespace", "taskId", "rank", "data", "expires"}` and
  `index.listTasks` / `findTasksAtIndex` pages `{"tasks": [entries]}`
- a JSON list of any of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FilePath
from collections.abc import Iterator

from tcgraph.ingest import shapes
from tcgraph.ingest.shapes import Invalid, Path, describe
from tcgraph.model import IndexEntryRow, StatusRow, TaskRow

# Keys that only a task definition has at its top level: a document with any
# of them, and none of the response shapes' keys, is a bare `queue.task` answer.
_DEFINITION_KEYS = frozenset({
    "provisionerId", "workerType", "taskQueueId", "schedulerId", "taskGroupId",
    "created", "deadline", "payload", "metadata",
})

Row = TaskRow | StatusRow | IndexEntryRow


@dataclass(frozen=True, slots=True)
class Item:
    """One row read from a document, and the path in the document it came from."""

    row: Row
    path: Path


def _keys(document: dict[str, object]) -> str:
    keys = sorted(document)
    shown = ", ".join(repr(k) for k in keys[:10])
    return f"[{shown}{', ...' if len(keys) > 10 else ''}]"


class Reader:
    """Turns one source's documents into rows, recognising each document's shape."""

    def __init__(self, source: str) -> None:
        # queue.task answers carry no taskId: only a file named after one may hold one.
        stem = FilePath(source).name.split(".", 1)[0]
        self.file_task_id = stem if shapes.SLUGID.fullmatch(stem) else None
        self.file_task_id_used = False
        self.source_name = FilePath(source).name

    def items(self, document: object) -> Iterator[list[Item]]:
        """The definitions, statuses and index entries of `document`.

        They come in groups, one per element: a definition with its status.
        Raises Invalid for anything else.
        """
        if isinstance(document, list):
            for i, inner in enumerate(document):
                if isinstance(inner, list):
                    raise Invalid("unrecognised document: a list inside a list", (i,))
                try:
                    for group in self.items(inner):
                        yield [Item(item.row, (i, *item.path)) for item in group]
                except Invalid as e:
                    raise e.inside(i) from None
            return
        if not isinstance(document, dict):
            raise Invalid("unrecognised document: expected a Taskcluster queue or index "
                          f"response (an object), got {describe(document)}")
        if "tasks" in document:
            yield from self._page(document, "tasks")
        elif "statuses" in document:
            yield from self._page(document, "statuses")
        elif "task" in document or "status" in document:
            yield _task_items(document, ())
        elif "namespace" in document:
            yield [Item(shapes.entry_row(document), ())]
        elif document.keys() & _DEFINITION_KEYS:
            yield [Item(self._bare_definition(document), ())]
        else:
            raise Invalid("unrecognised document: expected a Taskcluster queue or index "
                          f"response, got keys {_keys(document)}")

    def _page(self, page: dict[str, object], key: str) -> Iterator[list[Item]]:
        """A paginated response: listTaskGroup, tasks, statuses, or index listTasks."""
        elements = shapes.items(page, key, "a list")
        group = shapes.slugid(page, "taskGroupId") if "taskGroupId" in page else None
        for i, element in enumerate(elements):
            try:
                if not isinstance(element, dict):
                    raise Invalid(f"expected an object, got {describe(element)}")
                if key == "tasks" and "namespace" in element:
                    yield [Item(shapes.entry_row(element), (key, i))]
                elif "task" in element or "status" in element:
                    if key == "statuses" and "status" not in element:
                        raise Invalid("missing required field 'status'")
                    items = _task_items(element, (key, i))
                    if group is not None:
                        _check_group(items, group)
                    yield items
                else:
                    raise Invalid(
                        "unrecognised element: expected {'task', 'status'}, {'taskId', 'task'}, "
                        f"{{'taskId', 'status'}} or an index entry, got keys {_keys(element)}")
            except Invalid as e:
                raise e.inside(key, i) from None

    def _bare_definition(self, definition: dict[str, object]) -> TaskRow:
        if self.file_task_id is None:
            raise Invalid(
                "a task definition (a queue.task response) carries no taskId, and the file "
                f"name {self.source_name!r} is not one: name the file <taskId>.json, or "
                'import {"taskId": ..., "task": <definition>} instead')
        if self.file_task_id_used:
            raise Invalid(
                f"a second task definition without a taskId: only one can be task "
                f"{self.file_task_id!r}, named by the file; import "
                '{"taskId": ..., "task": <definition>} elements instead')
        self.file_task_id_used = True
        return shapes.task_row(self.file_task_id, definition)


def _task_items(element: dict[str, object], path: Path) -> list[Item]:
    """A definition and/or status: {task, status}, {taskId, task}, {taskId, status}, {status}."""
    status = element.get("status")
    if "taskId" in element:
        task_id = shapes.slugid(element, "taskId")
    elif isinstance(status, dict):
        try:
            task_id = shapes.slugid(status, "taskId")
        except Invalid as e:
            raise e.inside("status") from None
    else:
        raise Invalid("missing required field 'taskId'")
    items: list[Item] = []
    if "task" in element:
        try:
            items.append(Item(shapes.task_row(task_id, element["task"]), (*path, "task")))
        except Invalid as e:
            raise e.inside("task") from None
    if "status" in element:
        try:
            items.append(Item(shapes.status_row(status, task_id), (*path, "status")))
        except Invalid as e:
            raise e.inside("status") from None
    return items


def _check_group(items: list[Item], group: str) -> None:
    for item in items:
        if isinstance(item.row, TaskRow) and item.row.task_group_id != group:
            raise Invalid(f"{item.row.task_group_id!r} is not the taskGroupId {group!r} of the "
                          "page", ("task", "taskGroupId"))


def row_estimate(document: object) -> int:
    """About how many rows a parsed document holds, for a progress bar."""
    if isinstance(document, list):
        return sum(row_estimate(d) for d in document)
    if not isinstance(document, dict):
        return 0
    elements = document.get("tasks") or document.get("statuses")
    if isinstance(elements, list):
        return sum(("task" in e) + ("status" in e) + ("namespace" in e)
                   for e in elements if isinstance(e, dict))
    return 1
