"""Pulse messages of the queue's exchanges -> validated events.

Every task message (task-defined ... task-exception) carries the task's full
`status`, exactly as `queue.status` answers it; that status is all the
follower takes from a message. task-group-resolved carries no task. A message
that does not have the shape its exchange's schema gives it is an
`InvalidMessage`, which names the exchange, the routing key and what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

from tcgraph.ingest import shapes
from tcgraph.model import StatusRow

EXCHANGE_PREFIX = "exchange/taskcluster-queue/v1/"
TASK_EXCHANGES = ("task-defined", "task-pending", "task-running", "task-completed",
                  "task-failed", "task-exception")
GROUP_EXCHANGES = ("task-group-resolved",)
EXCHANGES = TASK_EXCHANGES + GROUP_EXCHANGES


class InvalidMessage(Exception):
    """A message that does not match its exchange's schema."""

    def __init__(self, exchange: str, routing_key: str, problem: str) -> None:
        super().__init__(f"{exchange} {routing_key}: {problem}")
        self.exchange = exchange
        self.routing_key = routing_key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A task's status as one message gave it."""

    exchange: str
    task_id: str
    task_group_id: str
    status: StatusRow
    # The newest timestamp in the status (a run scheduled, started or
    # resolved), None for a task without runs: how far the queue had got.
    status_time: datetime | None
    # When the task expires (the status's `expires`), None if it does not say.
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """A task group resolved (it carries no task, and changes nothing stored)."""

    task_group_id: str


Event = TaskEvent | GroupEvent


def parse(exchange: str, routing_key: str, body: bytes) -> Event:
    """The event a message carries; InvalidMessage when it has not the shape it should."""
    kind = exchange.removeprefix(EXCHANGE_PREFIX)
    if kind == exchange or kind not in EXCHANGES:
        raise InvalidMessage(exchange, routing_key, "not an exchange of the queue that "
                             f"tcgraph follows (one of {', '.join(EXCHANGES)})")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidMessage(exchange, routing_key, f"not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise InvalidMessage(exchange, routing_key, "expected a JSON object")
    try:
        if kind in GROUP_EXCHANGES:
            return GroupEvent(task_group_id=shapes.slugid(payload, "taskGroupId"))
        status = payload.get("status")
        if not isinstance(status, dict):
            raise shapes.Invalid("missing required field 'status' (an object)")
        try:
            task_id = shapes.slugid(status, "taskId")
            task_group_id = shapes.slugid(status, "taskGroupId")
            row = shapes.status_row(status, task_id)
            expires = shapes.time(status, "expires", None)
        except shapes.Invalid as e:
            raise e.inside("status") from None
        if "runId" in payload:
            run_id = shapes.count(payload, "runId")
            if run_id >= len(status["runs"]):
                raise shapes.Invalid(f"runId {run_id} is not a run of the status", ("runId",))
    except shapes.Invalid as e:
        raise InvalidMessage(exchange, routing_key, f"{shapes.where('', e.path)}: {e.problem}") \
            from None
    return TaskEvent(exchange=kind, task_id=task_id, task_group_id=task_group_id, status=row,
                     status_time=_newest_time(status),
                     expires=expires[0] if expires is not None else None)


def _newest_time(status: dict[str, object]) -> datetime | None:
    newest: str | None = None
    for run in status["runs"]:  # type: ignore[attr-defined]
        for key in ("scheduled", "started", "resolved"):
            value = run.get(key)
            # Taskcluster's format sorts as text (validated by status_row).
            if value is not None and (newest is None or value > newest):
                newest = value
    return datetime.fromisoformat(newest) if newest is not None else None
