"""Imports Taskcluster API responses, dumped as JSON or JSON Lines, into the store.

A user dumps a real deployment with the `taskcluster` client and imports the
files as they are. Every shape below is a response of the queue or the index:

- `queue.listTaskGroup` pages: `{"taskGroupId", "tasks": [{"task", "status"}]}`
- `queue.task`: a bare definition, accepted when the file is named `<taskId>.json`
- `queue.tasks` pages `{"tasks": [{"taskId", "task"}]}` and their elements
- `queue.status` `{"status"}`, `queue.statuses` pages `{"statuses": [{"taskId", "status"}]}`
- index entries `{"namespace", "taskId", "rank", "data", "expires"}` and
  `index.listTasks` / `findTasksAtIndex` pages `{"tasks": [entries]}`
- a JSON list of any of these.

One file is one transaction: any bad input raises `ImportFailed` naming the
file, the place and the problem, and nothing from that file is written.
Importing the same file twice changes nothing, and an older status never
replaces a newer one (the write statements compare status ranks).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterable, Iterator

import asyncpg
import orjson

from tcgraph.model import State, split_index_path
from tcgraph.store import writes

# Rows per write statement: large enough that round trips do not dominate,
# small enough that one statement stays well inside the statement timeout.
BATCH_SIZE = 1000

# A progress bar is only worth drawing for files that take a while.
_PROGRESS_MIN_BYTES = 1 << 20

_SLUGID = re.compile(r"[A-Za-z0-9_-]{22}")
_TASKCLUSTER_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_UTF8_BOM = b"\xef\xbb\xbf"
_NOT_SPACE = re.compile(rb"\S")

_TASK_STATES = tuple(state.value for state in State)
# A run is created pending, so it is never unscheduled.
_RUN_STATES = tuple(state.value for state in State if state is not State.UNSCHEDULED)
# How far a run has got: with the number of runs, this orders two statuses of
# one task, so that an older dump never rolls a task back.
_RUN_PROGRESS = {"pending": 1, "running": 2, "completed": 3, "failed": 3, "exception": 3}
_PRIORITIES = ("highest", "very-high", "high", "medium", "low", "very-low", "lowest", "normal")
# Keys that only a task definition has at its top level: a document with any
# of them, and none of the response shapes' keys, is a bare `queue.task` answer.
_DEFINITION_KEYS = frozenset({
    "provisionerId", "workerType", "taskQueueId", "schedulerId", "taskGroupId",
    "created", "deadline", "payload", "metadata",
})


@dataclass(frozen=True)
class ImportSummary:
    """What one source held: its task definitions, statuses and index entries.

    Each occurrence counts, whether or not it changed a stored row.
    """

    source: str
    tasks: int
    statuses: int
    index_entries: int


class ImportFailed(Exception):
    """Bad input: nothing from `source` was written.

    `where` is a line (`line 3`) or an element path
    (`tasks[17].status.runs[0].state`), `problem` what was wrong there.
    """

    def __init__(self, source: str, where: str, problem: str) -> None:
        super().__init__(f"{source}: {where}: {problem}")
        self.source = source
        self.where = where
        self.problem = problem


async def import_source(
    pool: asyncpg.Pool, source: str, *, progress: bool = False
) -> ImportSummary:
    """Import one file (`-` for stdin) in one transaction.

    The file holds one JSON document (which may be a list of documents) or
    JSON Lines, one document a line: `.jsonl` and `.ndjson` files always, and
    any file whose whole text is not one JSON value but whose first line is.
    An empty (or blank) file is an ImportFailed, as it is more likely a failed
    dump than a deliberate one; an empty list or page imports nothing. With
    `progress`, a progress bar is drawn on stderr when it is a terminal and
    the file is large. OSError (a missing file, say) propagates as it is.

    JSON Lines are read a line at a time; a single JSON document is parsed
    whole, so dump large task groups as JSON Lines.
    """
    name = "<stdin>" if source == "-" else source
    async with pool.acquire() as conn:
        async with conn.transaction():
            if source != "-" and source.lower().endswith(_JSON_LINES_SUFFIXES):
                # Read as the import goes, so a large file is never all in memory.
                with open(source, "rb") as file:
                    bar = _Progress.open(name, _file_size(file)) if progress else None
                    try:
                        return await _import(conn, _json_lines(file, name, bar, hint=True), name)
                    finally:
                        if bar:
                            bar.close()
            data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
            bar = _Progress.open(name, len(data)) if progress else None
            try:
                documents, whole = _json_or_json_lines(data, name, bar)
                del data  # the parsed document is all that is needed now
                return await _import(conn, documents, name, bar if whole else None)
            finally:
                if bar:
                    bar.close()


async def import_documents(
    conn: asyncpg.Connection, documents: Iterable[tuple[str, object]], source: str
) -> ImportSummary:
    """Import parsed documents, given as (location, JSON value) pairs.

    The caller owns the transaction and must roll it back on ImportFailed.
    `location` says where a document came from (`line 3`; `""` for a whole
    file) and prefixes the element path in error messages; `source` names the
    file (its name is the taskId of a bare definition, as with `queue.task`
    dumped to `<taskId>.json`).
    """
    return await _import(conn, documents, source)


# --- reading -------------------------------------------------------------


def _file_size(file: IO[bytes]) -> int:
    try:
        return file.seek(0, io.SEEK_END)
    finally:
        file.seek(0)


def _json_or_json_lines(
    data: bytes, source: str, bar: _Progress | None
) -> tuple[Iterator[tuple[str, object]], bool]:
    """The documents of a file of unknown kind, and whether it was one JSON value."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    if not data or data.isspace():
        raise ImportFailed(source, "line 1", "empty file: there is nothing to import")
    try:
        return iter([("", orjson.loads(data))]), True
    except orjson.JSONDecodeError as whole:
        # Searches, not split() or slices: the file may be large.
        start = _NOT_SPACE.search(data).start()  # type: ignore[union-attr]
        end = data.find(b"\n", start)
        if end != -1 and _NOT_SPACE.search(data, end) and _is_json(data[start:end]):
            return _json_lines(io.BytesIO(data), source, bar, hint=False), False
        raise ImportFailed(
            source, f"line {whole.lineno}, column {whole.colno}", f"not valid JSON: {whole.msg}"
        ) from None


def _is_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _json_lines(
    lines: IO[bytes], source: str, bar: _Progress | None, hint: bool
) -> Iterator[tuple[str, object]]:
    """One document a non-blank line, read as the import goes rather than all at once."""
    done = 0
    found = False
    for number, line in enumerate(lines, 1):
        done += len(line)
        if bar:
            bar.update(done)
        if number == 1:
            line = line.removeprefix(_UTF8_BOM)
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            # A pretty-printed document in a .jsonl file fails on its first line.
            why = " (JSON Lines files hold one document a line)" if hint and number == 1 else ""
            raise ImportFailed(source, f"line {number}", f"not valid JSON: {e.msg}{why}") from None
        found = True
        yield f"line {number}", document
    if bar:
        bar.update(done, force=True)
    if not found:
        raise ImportFailed(source, "line 1", "empty file: there is nothing to import")


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    _WIDTH = 30

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.unit = "bytes"
        self.drawn = False
        self.last = 0.0

    @classmethod
    def open(cls, label: str, size: int) -> _Progress | None:
        """A bar counting `size` bytes, or None: not on a terminal, or a small file."""
        if size < _PROGRESS_MIN_BYTES or not sys.stderr.isatty():
            return None
        return cls(label, size)

    def count(self, total: int, unit: str) -> None:
        """Count `unit`s instead of bytes from now on."""
        self.total = total
        self.unit = unit

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and not force:
            return
        self.last = now
        fraction = min(done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self._WIDTH)
        if self.unit == "bytes":
            amount = f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        else:
            amount = f"{done:,}/{self.total:,} {self.unit}"
        bar = "#" * filled + "." * (self._WIDTH - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {int(fraction * 100):3d}% {amount}")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        """End the bar's line, so that what follows starts on its own."""
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --- documents -> rows ---------------------------------------------------


class _Invalid(Exception):
    """A problem at `path` (keys and list indexes) inside the document being read."""

    def __init__(self, problem: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path

    def inside(self, *parts: str | int) -> _Invalid:
        self.path = (*parts, *self.path)
        return self


def _where(location: str, path: tuple[str | int, ...]) -> str:
    """`line 3, tasks[0].status` from a document's location and a path inside it."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    if location and text:
        return f"{location}, {text}"
    return location or text or "top level"


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    return "a list" if isinstance(value, list) else "an object"


def _keys(document: dict) -> str:
    keys = sorted(document)
    shown = ", ".join(repr(k) for k in keys[:10])
    return f"[{shown}{', ...' if len(keys) > 10 else ''}]"


_REQUIRED = object()


def _field(obj: dict, key: str, kind: type | tuple[type, ...], what: str,
           default: object = _REQUIRED) -> object:
    """`obj[key]` when it is a `kind`; `default` when absent or null, if there is one."""
    value = obj.get(key)
    if value is None:
        if default is _REQUIRED:
            if key in obj:
                raise _Invalid(f"expected {what}, got null", (key,))
            raise _Invalid(f"missing required field {key!r}")
        return default
    # bool is an int to Python, never to JSON.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Invalid(f"expected {what}, got {_describe(value)}", (key,))
    return value


def _text(obj: dict, key: str, default: object = _REQUIRED) -> str:
    return _field(obj, key, str, "a string", default)  # type: ignore[return-value]


def _slugid(obj: dict, key: str) -> str:
    value = _text(obj, key)
    if not _SLUGID.fullmatch(value):
        raise _Invalid(f"{value!r} is not a taskId (22 characters of A-Z a-z 0-9 _ -)", (key,))
    return value


def _count(obj: dict, key: str, default: object = _REQUIRED) -> int:
    value = _field(obj, key, int, "a whole number", default)
    if value < 0:  # type: ignore[operator]
        raise _Invalid(f"expected a whole number of at least 0, got {value}", (key,))
    return value  # type: ignore[return-value]


def _time(obj: dict, key: str, default: object = _REQUIRED) -> tuple[datetime, str]:
    """A timestamp with a zone, as (datetime, text) in Taskcluster's format.

    The datetime is in UTC and, like the text, keeps milliseconds, as Taskcluster does.
    """
    value = _field(obj, key, str, "an ISO 8601 timestamp string", default)
    if not isinstance(value, str):
        return value  # type: ignore[return-value]
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise _Invalid(f"{value!r} has no time zone: end it in Z or an offset like +00:00",
                           (key,))
        if parsed.tzinfo is not timezone.utc:
            parsed = parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise _Invalid(f"{value!r} is not an ISO 8601 timestamp", (key,)) from None
    if parsed.microsecond % 1000:
        parsed = parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
    # Dumps are nearly always in the format already; formatting costs more than checking.
    return parsed, value if _TASKCLUSTER_TIME.fullmatch(value) else _time_text(parsed)


def _time_text(value: datetime) -> str:
    """Taskcluster's format: `2026-11-01T00:00:00.000Z` (`value` is in UTC)."""
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def _year_after(value: datetime) -> tuple[datetime, str]:
    # As Taskcluster's fromNow('1 year') does: the same date a year on, and
    # 29 February becomes 1 March.
    try:
        later = value.replace(year=value.year + 1)
    except ValueError:
        later = value.replace(year=value.year + 1, month=3, day=1)
    return later, _time_text(later)


def _definition_row(task_id: str, definition: object) -> tuple:
    """An `upsert_tasks` row from a `queue.task` definition."""
    if not isinstance(definition, dict):
        raise _Invalid(f"expected a task definition (an object), got {_describe(definition)}")
    task_group_id = _slugid(definition, "taskGroupId")
    queue_id = _task_queue_id(definition)
    priority = _text(definition, "priority", "lowest")
    if priority not in _PRIORITIES:
        raise _Invalid(f"{priority!r} is not a priority (one of {', '.join(_PRIORITIES)})",
                       ("priority",))
    created, created_text = _time(definition, "created")
    deadline, deadline_text = _time(definition, "deadline")
    expires, expires_text = _time(definition, "expires", None) or _year_after(deadline)
    dependencies = _field(definition, "dependencies", list, "a list of taskIds", [])
    for i, dependency in enumerate(dependencies):  # type: ignore[arg-type]
        if not isinstance(dependency, str) or not _SLUGID.fullmatch(dependency):
            raise _Invalid(f"{_describe(dependency)} is not a taskId", ("dependencies", i))
    tags = _field(definition, "tags", dict, "an object", {})
    metadata = _field(definition, "metadata", dict, "an object", {})
    try:
        label = _text(tags, "label", None)  # type: ignore[arg-type]
    except _Invalid as e:
        raise e.inside("tags")
    if label is None:
        try:
            label = _text(metadata, "name", None)  # type: ignore[arg-type]
        except _Invalid as e:
            raise e.inside("metadata")
    # Stored as the queue returns it, with the timestamps in its format
    # (expires too, which the queue fills in when a task is created without one).
    stored = {
        **definition,
        "created": created_text,
        "deadline": deadline_text,
        "expires": expires_text,
    }
    return (
        task_id, task_group_id, _text(definition, "schedulerId", "-"), queue_id,
        _text(definition, "projectId", "none"), label, priority,
        _count(definition, "retries", 5), created, deadline, expires,
        orjson.dumps(stored).decode(), list(dict.fromkeys(dependencies)),  # type: ignore[arg-type]
    )


def _task_queue_id(definition: dict) -> str:
    queue_id = _text(definition, "taskQueueId", None)
    provisioner = _text(definition, "provisionerId", None)
    worker_type = _text(definition, "workerType", None)
    if provisioner is not None and worker_type is not None:
        legacy = f"{provisioner}/{worker_type}"
        if queue_id is not None and queue_id != legacy:
            raise _Invalid(f"{queue_id!r} does not match provisionerId/workerType {legacy!r}",
                           ("taskQueueId",))
        queue_id = legacy
    if queue_id is None:
        raise _Invalid("missing required field 'taskQueueId' (or 'provisionerId' and 'workerType')")
    provisioner, _, worker_type = queue_id.partition("/")
    if not provisioner or not worker_type:
        raise _Invalid(f"{queue_id!r} is not a task queue id (provisionerId/workerType)",
                       ("taskQueueId",))
    return queue_id


def _status_row(status: object, task_id: str) -> tuple:
    """An `update_statuses` row from a `queue.status` status listed under `task_id`."""
    if not isinstance(status, dict):
        raise _Invalid(f"expected a task status (an object), got {_describe(status)}")
    if status.get("taskId") is not None and status["taskId"] != task_id:
        raise _Invalid(f"{_describe(status['taskId'])} is not the taskId {task_id!r} "
                       "this status is listed under", ("taskId",))
    state = _text(status, "state", None)
    if state is not None and state not in _TASK_STATES:
        raise _Invalid(f"{state!r} is not a task state (one of {', '.join(_TASK_STATES)})",
                       ("state",))
    retries_left = _count(status, "retriesLeft")
    raw_runs = _field(status, "runs", list, "a list of runs")
    runs = []
    for i, run in enumerate(raw_runs):  # type: ignore[arg-type]
        try:
            runs.append(_run(run, i))
        except _Invalid as e:
            raise e.inside("runs", i)
    # The queue derives a task's state from its last run; so do we, whatever
    # the document says.
    if runs:
        state = runs[-1]["state"]
        rank = len(runs) * 10 + _RUN_PROGRESS[state]
    else:
        state, rank = State.UNSCHEDULED.value, 0
    return (task_id, state, orjson.dumps(runs).decode(), retries_left, rank)


def _run(run: object, position: int) -> dict:
    """A run in the queue's shape, its timestamps in the queue's format."""
    if not isinstance(run, dict):
        raise _Invalid(f"expected a run (an object), got {_describe(run)}")
    run_id = _count(run, "runId")
    if run_id != position:
        raise _Invalid(f"runId {run_id} at position {position}: runs are numbered from 0 "
                       "in order", ("runId",))
    state = _text(run, "state")
    if state not in _RUN_STATES:
        raise _Invalid(f"{state!r} is not a run state (one of {', '.join(_RUN_STATES)})",
                       ("state",))
    shaped: dict[str, object] = {
        "runId": run_id, "state": state, "reasonCreated": _text(run, "reasonCreated"),
    }
    for key in ("reasonResolved", "workerGroup", "workerId"):
        value = _text(run, key, None)
        if value is not None:
            shaped[key] = value
    for key in ("takenUntil", "scheduled", "started", "resolved"):
        stamp = _time(run, key, _REQUIRED if key == "scheduled" else None)
        if stamp is not None:
            shaped[key] = stamp[1]
    return shaped


def _entry_row(entry: object) -> tuple:
    """An `upsert_index_entries` row from an index entry (`namespace` is its full path)."""
    if not isinstance(entry, dict):
        raise _Invalid(f"expected an index entry (an object), got {_describe(entry)}")
    path = _text(entry, "namespace")
    if not path or "" in path.split("."):
        raise _Invalid(f"{path!r} is not an index path (names joined by dots)", ("namespace",))
    namespace, name = split_index_path(path)
    task_id = _slugid(entry, "taskId")
    rank = float(_field(entry, "rank", (int, float), "a number"))  # type: ignore[arg-type]
    data = orjson.dumps(_field(entry, "data", dict, "an object")).decode()
    expires, _ = _time(entry, "expires")
    return (namespace, name, task_id, rank, data, expires)


_Item = tuple[str, tuple, tuple[str | int, ...]]  # (kind, row, path of what it came from)


class _Reader:
    """Turns one source's documents into rows, recognising each document's shape."""

    def __init__(self, source: str) -> None:
        # queue.task answers carry no taskId: only a file named after one may hold one.
        stem = Path(source).name.split(".", 1)[0]
        self.file_task_id = stem if _SLUGID.fullmatch(stem) else None
        self.file_task_id_used = False
        self.source_name = Path(source).name

    def items(self, document: object) -> Iterator[list[_Item]]:
        """The definitions, statuses and index entries of `document`, as (kind, row, path).

        They come in groups, one per element: a definition with its status.
        """
        if isinstance(document, list):
            for i, inner in enumerate(document):
                if isinstance(inner, list):
                    raise _Invalid("unrecognised document: a list inside a list", (i,))
                try:
                    for group in self.items(inner):
                        yield [(kind, row, (i, *path)) for kind, row, path in group]
                except _Invalid as e:
                    raise e.inside(i)
            return
        if not isinstance(document, dict):
            raise _Invalid("unrecognised document: expected a Taskcluster queue or index "
                           f"response (an object), got {_describe(document)}")
        if "tasks" in document:
            yield from self._page(document, "tasks")
        elif "statuses" in document:
            yield from self._page(document, "statuses")
        elif "task" in document or "status" in document:
            yield _task_items(document, ())
        elif "namespace" in document:
            yield [("entry", _entry_row(document), ())]
        elif document.keys() & _DEFINITION_KEYS:
            yield [("task", self._bare_definition(document), ())]
        else:
            raise _Invalid("unrecognised document: expected a Taskcluster queue or index "
                           f"response, got keys {_keys(document)}")

    def _page(self, page: dict, key: str) -> Iterator[list[_Item]]:
        """A paginated response: listTaskGroup, tasks, statuses, or index listTasks."""
        elements = _field(page, key, list, "a list")
        group = _slugid(page, "taskGroupId") if "taskGroupId" in page else None
        for i, element in enumerate(elements):  # type: ignore[arg-type]
            try:
                if not isinstance(element, dict):
                    raise _Invalid(f"expected an object, got {_describe(element)}")
                if key == "tasks" and "namespace" in element:
                    yield [("entry", _entry_row(element), (key, i))]
                elif "task" in element or "status" in element:
                    if key == "statuses" and "status" not in element:
                        raise _Invalid("missing required field 'status'")
                    items = _task_items(element, (key, i))
                    if group is not None:
                        _check_group(items, group)
                    yield items
                else:
                    raise _Invalid(
                        "unrecognised element: expected {'task', 'status'}, {'taskId', 'task'}, "
                        f"{{'taskId', 'status'}} or an index entry, got keys {_keys(element)}")
            except _Invalid as e:
                raise e.inside(key, i)

    def _bare_definition(self, definition: dict) -> tuple:
        if self.file_task_id is None:
            raise _Invalid(
                "a task definition (a queue.task response) carries no taskId, and the file "
                f"name {self.source_name!r} is not one: name the file <taskId>.json, or "
                'import {"taskId": ..., "task": <definition>} instead')
        if self.file_task_id_used:
            raise _Invalid(
                f"a second task definition without a taskId: only one can be task "
                f"{self.file_task_id!r}, named by the file; import "
                '{"taskId": ..., "task": <definition>} elements instead')
        self.file_task_id_used = True
        return _definition_row(self.file_task_id, definition)


def _task_items(element: dict, path: tuple[str | int, ...]) -> list[_Item]:
    """A definition and/or status: {task, status}, {taskId, task}, {taskId, status}, {status}."""
    if "taskId" in element:
        task_id = _slugid(element, "taskId")
    elif isinstance(element.get("status"), dict):
        try:
            task_id = _slugid(element["status"], "taskId")
        except _Invalid as e:
            raise e.inside("status")
    else:
        raise _Invalid("missing required field 'taskId'")
    items: list[_Item] = []
    if "task" in element:
        try:
            items.append(("task", _definition_row(task_id, element["task"]), (*path, "task")))
        except _Invalid as e:
            raise e.inside("task")
    if "status" in element:
        try:
            items.append(("status", _status_row(element["status"], task_id), (*path, "status")))
        except _Invalid as e:
            raise e.inside("status")
    return items


def _check_group(items: list[_Item], group: str) -> None:
    for kind, row, _ in items:
        if kind == "task" and row[1] != group:
            raise _Invalid(f"{row[1]!r} is not the taskGroupId {group!r} of the page",
                           ("task", "taskGroupId"))


# --- rows -> database ----------------------------------------------------


_Held = tuple[tuple, str, tuple]  # a status row, its document's location, its path


class _Writer:
    """Buffers rows and writes them a batch at a time, in an order that always works.

    A status needs its task stored. Definitions are written before the
    statuses that follow them (with them, when both are in the batch); a
    status whose definition comes later in the file is kept aside and applied
    once every definition is written. Within a batch a key appears once (ON
    CONFLICT cannot touch a row twice): the last definition wins, and of
    statuses and index entries the higher rank, the later on ties, just as the
    write statements decide between batches (where an expired entry gives
    way to any other).

    A batch is written while the next one is read: PostgreSQL works on one
    while Python parses the other. Batches are still written one at a time,
    in order.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.tasks: dict[str, tuple] = {}
        self.statuses: dict[str, _Held] = {}
        self.entries: dict[tuple[str, str], tuple] = {}
        # Statuses whose task was not stored when their batch was written.
        self.waiting: dict[str, _Held] = {}
        self.counts = {"task": 0, "status": 0, "entry": 0}
        self.writing: asyncio.Task[None] | None = None
        # An expired entry gives way to any other, as in upsert_index_entries.
        self.now = datetime.now(timezone.utc)

    @property
    def added(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, row: tuple, location: str, path: tuple) -> bool:
        """Buffer one row; True when a batch is full and `flush` is due."""
        self.counts[kind] += 1
        if kind == "task":
            self.tasks[row[0]] = row
            return len(self.tasks) >= BATCH_SIZE
        if kind == "status":
            task_id, rank = row[0], row[4]
            held = self.statuses.get(task_id)
            if held is None or rank >= held[0][4]:
                self.statuses[task_id] = (row, location, path)
            waiting = self.waiting.get(task_id)
            if waiting is not None and rank >= waiting[0][4]:
                del self.waiting[task_id]  # this later status replaces it
            return len(self.statuses) >= BATCH_SIZE
        key = (row[0], row[1])
        held_entry = self.entries.get(key)
        if held_entry is None or row[3] >= held_entry[3] or held_entry[5] <= self.now:
            self.entries[key] = row
        return len(self.entries) >= BATCH_SIZE

    async def flush(self, everything: bool = False) -> None:
        """Start writing the full batches (all of them with `everything`).

        Waits for the previous batch first, and raises its error if it failed.
        """
        await self.wait()
        limit = 1 if everything else BATCH_SIZE
        alone: list[tuple] = []
        with_status: list[tuple] = []
        if len(self.tasks) >= limit or len(self.statuses) >= limit:
            # A status buffered with its definition goes into the same row: a
            # new task is then written once rather than inserted and updated.
            for task_id, row in self.tasks.items():
                held = self.statuses.pop(task_id, None)
                if held is None:
                    alone.append(row)
                else:
                    with_status.append(row + held[0][1:])
            self.tasks = {}
        statuses: list[_Held] = []
        if len(self.statuses) >= limit:
            statuses = list(self.statuses.values())
            self.statuses = {}
        entries: list[tuple] = []
        if len(self.entries) >= limit:
            entries = list(self.entries.values())
            self.entries = {}
        if alone or with_status or statuses or entries:
            self.writing = asyncio.create_task(self._write(alone, with_status, statuses, entries))
            await asyncio.sleep(0)  # let it send its first statement before parsing goes on

    async def wait(self) -> None:
        """Wait for the batch being written, if any; raise its error."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    async def abandon(self) -> None:
        """After an error: let a batch being written end, so the transaction can roll back."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            with contextlib.suppress(Exception):
                await writing

    async def _write(self, alone: list[tuple], with_status: list[tuple], statuses: list[_Held],
                     entries: list[tuple]) -> None:
        if alone:
            await writes.upsert_tasks(self.conn, alone)
        if with_status:
            await writes.upsert_tasks_with_statuses(self.conn, with_status)
        if statuses:
            missing = await writes.update_statuses(self.conn, [row for row, _, _ in statuses])
            by_id = {held[0][0]: held for held in statuses}
            for task_id in missing:
                held = by_id[task_id]
                # Statuses read while this batch was written are still buffered:
                # one that ranks at least as high replaces this one. A status
                # already waiting ranks higher, or this one would have replaced it.
                later = self.statuses.get(task_id)
                if task_id not in self.waiting and (later is None or later[0][4] < held[0][4]):
                    self.waiting[task_id] = held
        if entries:
            await writes.upsert_index_entries(self.conn, entries)

    async def finish(self, source: str) -> None:
        """Write everything left, then the statuses that waited for their task."""
        await self.flush(everything=True)
        await self.wait()
        waiting = list(self.waiting.values())
        missing: list[str] = []
        for start in range(0, len(waiting), BATCH_SIZE):
            batch = [row for row, _, _ in waiting[start:start + BATCH_SIZE]]
            missing += await writes.update_statuses(self.conn, batch)
        if missing:
            _, location, path = self.waiting[missing[0]]
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ImportFailed(
                source, _where(location, path),
                f"no task definition for the status of {', '.join(missing[:5])}{more}: import "
                "the definitions first (queue.task or queue.tasks responses), or "
                "queue.listTaskGroup pages, which carry both")


# Rows read between two chances for a batch being written to send its next statement.
_YIELD_EVERY = 64


async def _import(
    conn: asyncpg.Connection,
    documents: Iterable[tuple[str, object]],
    source: str,
    bar: _Progress | None = None,
) -> ImportSummary:
    """Write every row of `documents`; `bar`, if any, counts rows of one parsed document."""
    if bar:
        # A single JSON document is parsed before its rows are counted, so the
        # bar switches from bytes read to rows written.
        documents = list(documents)
        bar.count(sum(_row_estimate(document) for _, document in documents), "rows")
    reader = _Reader(source)
    writer = _Writer(conn)
    try:
        for location, document in documents:
            try:
                for group in reader.items(document):
                    due = False
                    for kind, row, path in group:
                        due = writer.add(kind, row, location, path) or due
                    # Only between groups, so that a definition and its status
                    # are written together.
                    if due:
                        await writer.flush()
                        if bar:
                            bar.update(writer.added)
                    elif writer.added % _YIELD_EVERY < len(group):
                        await asyncio.sleep(0)
            except _Invalid as e:
                raise ImportFailed(source, _where(location, e.path), e.problem) from None
        await writer.finish(source)
    except BaseException:
        await writer.abandon()
        raise
    if bar:
        bar.update(writer.added, force=True)
    return ImportSummary(
        source=source, tasks=writer.counts["task"], statuses=writer.counts["status"],
        index_entries=writer.counts["entry"],
    )


def _row_estimate(document: object) -> int:
    """About how many rows a parsed document holds, for the progress bar."""
    if isinstance(document, list):
        return sum(_row_estimate(d) for d in document)
    if not isinstance(document, dict):
        return 0
    elements = document.get("tasks") or document.get("statuses")
    if isinstance(elements, list):
        return sum(("task" in e) + ("status" in e) + ("namespace" in e)
                   for e in elements if isinstance(e, dict))
    return 1
