"""Taskcluster JSON -> validated rows: task definitions, statuses, index entries.

File import, the pulse follower and the REST upstream all read Taskcluster's
answers through these functions, so each field is checked in one place. A
problem raises `Invalid` with the path of the bad element inside the value
given; callers prefix where that value came from (`where`).

Everything accepted here can be stored as it is and comes back unchanged: integers of
any size (`ingest.jsontext.loads` parses them, `json_text` writes them), no NUL
characters (PostgreSQL's text and jsonb cannot hold them), timestamps PostgreSQL and
Python can both represent, and counts that fit the store's integer columns.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, UTC
from collections.abc import Mapping, Sequence

import orjson

from tcgraph.keys import SLUGID as SLUGID  # documents.py and upstream.py use shapes.SLUGID
from tcgraph.model import (RUN_STATES, TASK_STATES, IndexEntryRow, State, StatusRow, TaskRow,
                           split_index_path)
from tcgraph.precedence import status_rank
from tcgraph.timefmt import PATTERN, format_time, parse_time

_TASKCLUSTER_TIME = re.compile(PATTERN)
# The store's integer columns (retries, retriesLeft) are 32-bit.
MAX_COUNT = 2**31 - 1

# The fields of a definition's `metadata`, all strings (the API serves them as String!).
METADATA_FIELDS = ("name", "description", "owner", "source")
PRIORITIES = ("highest", "very-high", "high", "medium", "low", "very-low", "lowest", "normal")

Path = tuple[str | int, ...]


class Invalid(Exception):
    """A problem at `path` (keys and list indexes) inside the value being read."""

    def __init__(self, problem: str, path: Path = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path

    def inside(self, *parts: str | int) -> Invalid:
        """This error, as seen from the value that holds this one at `parts`."""
        self.path = (*parts, *self.path)
        return self


def where(location: str, path: Path) -> str:
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


def describe(value: object) -> str:
    """A short description of a JSON value for an error message."""
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


def json_text(value: object) -> str:
    """`value` as JSON text that PostgreSQL stores exactly (raises Invalid at a NUL)."""
    try:
        dumped = orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits: the standard library keeps it
        dumped = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        try:
            dumped.encode()
        except UnicodeEncodeError:  # orjson refuses these when parsing; json does not
            raise Invalid("a lone UTF-16 surrogate escape, which is not text") from None
    # The escape can also be the text of an escaped backslash: look for a real NUL.
    if "\\u0000" in dumped and (found := _nul_path(value)) is not None:
        raise Invalid("a NUL character (\\u0000), which cannot be stored", found)
    return dumped


def _nul_path(value: object) -> Path | None:
    """Where the first NUL character in `value` is, or None."""
    if isinstance(value, str):
        return () if "\x00" in value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            if "\x00" in key:
                return (key,)
            if (found := _nul_path(inner)) is not None:
                return (key, *found)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            if (found := _nul_path(inner)) is not None:
                return (i, *found)
    return None


_REQUIRED = object()


def field(obj: Mapping[str, object], key: str, kind: type | tuple[type, ...], what: str,
          default: object = _REQUIRED) -> object:
    """`obj[key]` when it is a `kind`; `default` when absent or null, if there is one."""
    value = obj.get(key)
    if value is None:
        if default is _REQUIRED:
            if key in obj:
                raise Invalid(f"expected {what}, got null", (key,))
            raise Invalid(f"missing required field {key!r}")
        return default
    # bool is an int to Python, never to JSON.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Invalid(f"expected {what}, got {describe(value)}", (key,))
    return value


def items(obj: Mapping[str, object], key: str, what: str,
          default: object = _REQUIRED) -> list[object]:
    """A list field."""
    return field(obj, key, list, what, default)  # type: ignore[return-value]


def members(obj: Mapping[str, object], key: str,
            default: object = _REQUIRED) -> dict[str, object]:
    """An object field."""
    return field(obj, key, dict, "an object", default)  # type: ignore[return-value]


def text(obj: Mapping[str, object], key: str, default: object = _REQUIRED) -> str:
    """A string field. What it may hold is checked when the document it is part of
    becomes JSON text (`json_text`: no NUL, no lone surrogate), or by `index_path`."""
    return field(obj, key, str, "a string", default)  # type: ignore[return-value]


def strings(obj: Mapping[str, object], key: str, default: object = _REQUIRED) -> list[str]:
    """A list of strings."""
    found = items(obj, key, "a list of strings", default)
    for i, value in enumerate(found):
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {describe(value)}", (key, i))
    return found  # type: ignore[return-value]


def slugid(obj: Mapping[str, object], key: str) -> str:
    """A taskId (or taskGroupId) field."""
    value = text(obj, key)
    if not SLUGID.fullmatch(value):
        raise Invalid(f"{value!r} is not a slugid (Taskcluster's slugid-pattern)", (key,))
    return value


def count(obj: Mapping[str, object], key: str, default: object = _REQUIRED) -> int:
    """A whole number from 0 to MAX_COUNT."""
    value = field(obj, key, int, "a whole number", default)
    if not 0 <= value <= MAX_COUNT:  # type: ignore[operator]
        raise Invalid(f"expected a whole number from 0 to {MAX_COUNT}, got {value}", (key,))
    return value  # type: ignore[return-value]


def time(obj: Mapping[str, object], key: str,
         default: object = _REQUIRED) -> tuple[datetime, str] | None:
    """A timestamp with a zone, as (datetime in UTC, text in Taskcluster's format).

    Both keep milliseconds, as Taskcluster does. `default` (None, say) when absent.
    """
    value = field(obj, key, str, "an ISO 8601 timestamp string", default)
    if not isinstance(value, str):
        return value  # type: ignore[return-value]
    try:
        parsed = parse_time(value)
    except ValueError as problem:
        raise Invalid(str(problem), (key,)) from None
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise Invalid(f"{value!r} is outside the years 1 to 9999 in UTC", (key,)) from None
    if parsed.microsecond % 1000:
        parsed = parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
    # Dumps are nearly always in the format already; formatting costs more than checking.
    return parsed, value if _TASKCLUSTER_TIME.fullmatch(value) else format_time(parsed)


def _year_after(value: datetime) -> tuple[datetime, str]:
    # As Taskcluster's fromNow('1 year') does: the same date a year on, and
    # 29 February becomes 1 March.
    if value.year == 9999:
        raise Invalid("a deadline in year 9999 leaves no room for the default expiry a year "
                      "later: give 'expires'", ("deadline",))
    try:
        later = value.replace(year=value.year + 1)
    except ValueError:
        later = value.replace(year=value.year + 1, month=3, day=1)
    return later, format_time(later)


def task_row(task_id: str, definition: object) -> TaskRow:
    """The row of a task definition (a `queue.task` answer) stored as `task_id`."""
    if not isinstance(definition, dict):
        raise Invalid(f"expected a task definition (an object), got {describe(definition)}")
    task_group_id = slugid(definition, "taskGroupId")
    queue_id = _task_queue_id(definition)
    priority = text(definition, "priority", "lowest")
    if priority not in PRIORITIES:
        raise Invalid(f"{priority!r} is not a priority (one of {', '.join(PRIORITIES)})",
                      ("priority",))
    created, created_text = time(definition, "created")  # type: ignore[misc]
    deadline, deadline_text = time(definition, "deadline")  # type: ignore[misc]
    expires, expires_text = time(definition, "expires", None) or _year_after(deadline)
    dependencies: list[str] = []
    for i, dependency in enumerate(items(definition, "dependencies", "a list of taskIds", [])):
        if not isinstance(dependency, str) or not SLUGID.fullmatch(dependency):
            raise Invalid(f"{describe(dependency)} is not a taskId", ("dependencies", i))
        dependencies.append(dependency)
    # What the API serves as strings is checked to be strings, as the queue's
    # schema says: a number or null in `routes` would break `[String!]!`.
    strings(definition, "routes", [])
    tags = members(definition, "tags", {})
    metadata = members(definition, "metadata", {})
    try:
        for key in tags:
            text(tags, key)
    except Invalid as e:
        raise e.inside("tags") from None
    try:
        for key in METADATA_FIELDS:
            if key in metadata:
                text(metadata, key)  # null too: the API serves them as String!
    except Invalid as e:
        raise e.inside("metadata") from None
    label = text(tags, "label", None)  # both checked above
    if label is None:
        label = text(metadata, "name", None)
    # Stored as the queue returns it, with the timestamps in its format
    # (expires too, which the queue fills in when a task is created without one).
    stored = {**definition, "created": created_text, "deadline": deadline_text,
              "expires": expires_text}
    return TaskRow(
        task_id=task_id, task_group_id=task_group_id,
        scheduler_id=text(definition, "schedulerId", "-"), task_queue_id=queue_id,
        project_id=text(definition, "projectId", "none"), label=label, priority=priority,
        retries=count(definition, "retries", 5), created=created, deadline=deadline,
        expires=expires, definition=json_text(stored),
        dependencies=tuple(dict.fromkeys(dependencies)),
    )


def _task_queue_id(definition: Mapping[str, object]) -> str:
    queue_id = text(definition, "taskQueueId", None)
    provisioner = text(definition, "provisionerId", None)
    worker_type = text(definition, "workerType", None)
    if provisioner is not None and worker_type is not None:
        legacy = f"{provisioner}/{worker_type}"
        if queue_id is not None and queue_id != legacy:
            raise Invalid(f"{queue_id!r} does not match provisionerId/workerType {legacy!r}",
                          ("taskQueueId",))
        queue_id = legacy
    if queue_id is None:
        raise Invalid("missing required field 'taskQueueId' (or 'provisionerId' and 'workerType')")
    provisioner, _, worker_type = queue_id.partition("/")
    if not provisioner or not worker_type:
        raise Invalid(f"{queue_id!r} is not a task queue id (provisionerId/workerType)",
                      ("taskQueueId",))
    return queue_id


def status_row(status: object, task_id: str) -> StatusRow:
    """The row of a task status (as `queue.status` and pulse messages give it) of `task_id`.

    The state is derived from the last run, as the queue does, whatever the
    status says.
    """
    if not isinstance(status, dict):
        raise Invalid(f"expected a task status (an object), got {describe(status)}")
    if status.get("taskId") is not None and status["taskId"] != task_id:
        raise Invalid(f"{describe(status['taskId'])} is not the taskId {task_id!r} "
                      "this status is listed under", ("taskId",))
    state = text(status, "state", None)
    if state is not None and state not in TASK_STATES:
        raise Invalid(f"{state!r} is not a task state (one of {', '.join(TASK_STATES)})",
                      ("state",))
    retries_left = count(status, "retriesLeft")
    runs: list[dict[str, object]] = []
    for i, run in enumerate(items(status, "runs", "a list of runs")):
        try:
            runs.append(_run(run, i))
        except Invalid as e:
            raise e.inside("runs", i) from None
    states: Sequence[str] = [run["state"] for run in runs]  # type: ignore[misc]
    return StatusRow(task_id=task_id, state=states[-1] if runs else State.UNSCHEDULED.value,
                     runs=json_text(runs), retries_left=retries_left, rank=status_rank(states))


def _run(run: object, position: int) -> dict[str, object]:
    """A run in the queue's shape, its timestamps in the queue's format."""
    if not isinstance(run, dict):
        raise Invalid(f"expected a run (an object), got {describe(run)}")
    run_id = field(run, "runId", int, "a whole number")
    if run_id != position:
        raise Invalid(f"runId {run_id} at position {position}: runs are numbered from 0 "
                      "in order", ("runId",))
    state = text(run, "state")
    if state not in RUN_STATES:
        raise Invalid(f"{state!r} is not a run state (one of {', '.join(RUN_STATES)})",
                      ("state",))
    shaped: dict[str, object] = {
        "runId": run_id, "state": state, "reasonCreated": text(run, "reasonCreated"),
    }
    for key in ("reasonResolved", "workerGroup", "workerId"):
        value = text(run, key, None)
        if value is not None:
            shaped[key] = value
    for key in ("takenUntil", "scheduled", "started", "resolved"):
        stamp = time(run, key, _REQUIRED if key == "scheduled" else None)
        if stamp is not None:
            shaped[key] = stamp[1]
    return shaped


def index_path(path: str, key: str = "namespace") -> tuple[str, str]:
    """(namespace, name) of a full index path; Invalid at `key` if it is not one."""
    if not path or "" in path.split("."):
        raise Invalid(f"{path!r} is not an index path (names joined by dots)", (key,))
    if "\x00" in path:
        raise Invalid("a NUL character (\\u0000), which cannot be stored", (key,))
    if not path.isascii():
        try:
            path.encode()
        except UnicodeEncodeError:  # json lets a lone surrogate escape through
            raise Invalid("a lone UTF-16 surrogate escape, which is not text", (key,)) from None
    return split_index_path(path)


def rank(value: object, key: str = "rank") -> float:
    """An index rank: any JSON number, as the index service's schema says, held as the
    double it is to the index service (integers up to 2^53 exactly)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise Invalid(f"expected a number, got {describe(value)}", (key,))
    try:
        held = float(value)
    except OverflowError:
        held = math.inf
    if not math.isfinite(held):
        raise Invalid(f"{value} is too large for a rank (a double)", (key,))
    return held


def entry_row(entry: object) -> IndexEntryRow:
    """The row of an index entry (`findTask`, `listTasks`): `namespace` is its full path."""
    if not isinstance(entry, dict):
        raise Invalid(f"expected an index entry (an object), got {describe(entry)}")
    namespace, name = index_path(text(entry, "namespace"))
    task_id = slugid(entry, "taskId")
    entry_rank = rank(field(entry, "rank", (int, float), "a number"))
    data = members(entry, "data")
    try:
        data_text = json_text(data)
    except Invalid as e:
        raise e.inside("data") from None
    expires, _ = time(entry, "expires")  # type: ignore[misc]
    return IndexEntryRow(namespace=namespace, name=name, task_id=task_id, rank=entry_rank,
                         data=data_text, expires=expires)
