"""The Taskcluster 106 REST recording: what to import from it, and how to replay and compare it.

A recorded request is replayed as the `taskcluster` client sends it (its method's verb and
route, the query string, the JSON body). Tokens: a recorded request that carries a token
Taskcluster returned is replayed with the token tcgraph returned for the same position
(the reply to the previous request of the same walk); any other token (`bogus`, ...) is
sent as recorded.

Replies are compared after `normalise`, which drops only what cannot be the same: the
time of an error (and the `* time:` line of its message), the root URL and incident id
in messages, the stack trace of a development-mode 500, `ping`'s uptime, token values
(their presence is compared), and the order of `queue.tasks`/`queue.statuses` results,
which Taskcluster leaves undefined (its SQL has no ORDER BY): those are compared as a
client sees them, each page by its size and correct items, each walk by its union.

One kind of value is not defined either: the index service handles a task's routes
concurrently, so a few namespaces' `expires` depend on which route won a race (a parent
may expire before its child). tcgraph applies the rule (the midnight after the child's
expiry); `expiry_race_only` accepts a reply that differs from the recording only there,
with tcgraph's expiry never the earlier one, and the test counts those apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import taskcluster

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures/taskcluster-106"
RECORDED_ROOT = "http://127.0.0.1:31480"
_CLIENTS = {"queue": taskcluster.Queue, "index": taskcluster.Index}
# Methods whose result order Taskcluster does not define, and the list that holds the results.
UNORDERED = {"tasks": "tasks", "statuses": "statuses"}
_TIME_LINE = re.compile(r"\* time:       \S+")
_INCIDENT = re.compile(r"incidentId:? [0-9a-f-]{36}")
_STACK = re.compile(r"\n    at [^\n]*")


@dataclass(frozen=True)
class Record:
    """One recorded request and Taskcluster's answer."""

    position: int
    service: str
    method: str
    args: tuple[str, ...]
    query: dict[str, Any]
    payload: Any
    status: int
    response: Any

    @property
    def walk(self) -> tuple[str, str, tuple[str, ...], str, Any]:
        """What the pages of one walk share: the method, its arguments, body and limit."""
        return (self.service, self.method, self.args, orjson.dumps(self.payload).decode(),
                self.query.get("limit"))

    @property
    def token(self) -> str | None:
        return self.query.get("continuationToken")

    def request(self) -> tuple[str, str]:
        """(HTTP verb, path under the root URL) as the client builds them."""
        info = _CLIENTS[self.service].funcinfo[self.method]
        route = info["route"]
        for name, value in zip(info["args"], self.args, strict=True):
            route = route.replace(f"<{name}>", value)
        return info["method"].upper(), f"/api/{self.service}/v1{route}"


def records() -> list[Record]:
    """Every recorded request, in recording order."""
    lines = (FIXTURE / "rest.jsonl").read_bytes().splitlines()
    return [Record(i, r["service"], r["method"], tuple(r["args"]), r["query"], r["payload"],
                   r["status"], r["response"]) for i, r in enumerate(map(orjson.loads, lines))]


def documents(recorded: list[Record]) -> Iterator[object]:
    """The deployment's data, as the recorded answers hold it, in shapes tcgraph imports."""
    for r in recorded:
        if r.status != 200:
            continue
        if r.method == "task":
            yield {"taskId": r.args[0], "task": r.response}
        elif r.method in ("status", "listTaskGroup", "findTask", "listTasks"):
            yield r.response


@dataclass
class Tokens:
    """Tokens Taskcluster returned, and the ones tcgraph returned for the same positions."""

    ours: dict[tuple[Any, ...], str | None] = field(default_factory=dict)
    theirs: set[str] = field(default_factory=set)

    def query(self, record: Record) -> dict[str, Any]:
        """The query string to send for `record`."""
        query = dict(record.query)
        token = record.token
        if token is not None and token in self.theirs:
            mine = self.ours.get((*record.walk, token))
            if mine is None:
                raise AssertionError(f"record {record.position}: tcgraph gave no token where "
                                     "Taskcluster gave one")
            query["continuationToken"] = mine
        return {name: str(value) for name, value in query.items()}

    def returned(self, record: Record, body: Any) -> None:
        """Remember which of our tokens stands for the token Taskcluster returned here."""
        if isinstance(record.response, dict) and "continuationToken" in record.response:
            theirs = record.response["continuationToken"]
            self.theirs.add(theirs)
            mine = body.get("continuationToken") if isinstance(body, dict) else None
            self.ours[(*record.walk, theirs)] = mine


def _normalise_message(message: str, root: str) -> str:
    message = _TIME_LINE.sub("* time: -", message).replace(RECORDED_ROOT, root)
    return _STACK.sub("", _INCIDENT.sub("incidentId -", message))


def normalise(method: str, body: Any, root: str) -> Any:
    """`body` without what cannot be the same between Taskcluster and tcgraph (see above)."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if "requestInfo" in body:
        body["requestInfo"] = {**body["requestInfo"], "time": "-"}
        body["message"] = _normalise_message(body["message"], root)
    if method == "ping" and isinstance(body.get("uptime"), (int, float)):
        body["uptime"] = "-"
    if "continuationToken" in body:
        body["continuationToken"] = "-"
    if method in UNORDERED and UNORDERED[method] in body:
        items = body[UNORDERED[method]]
        body[UNORDERED[method]] = sorted(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
                                         for item in items)
    return body


def unordered_ids(method: str, body: Any) -> list[str]:
    """The task ids of an unordered batch reply, in its order."""
    return [item["taskId"] for item in body.get(UNORDERED[method], [])]


def expiry_race_only(method: str, ours: Any, theirs: Any) -> bool:
    """A listNamespaces reply that differs from Taskcluster's only in later `expires` values."""
    if method != "listNamespaces" or not (isinstance(ours, dict) and isinstance(theirs, dict)):
        return False
    mine, recorded = ours.get("namespaces", []), theirs.get("namespaces", [])
    return (set(ours) == set(theirs) and len(mine) == len(recorded)
            and all({**a, "expires": "-"} == {**b, "expires": "-"} and a["expires"] >= b["expires"]
                    for a, b in zip(mine, recorded, strict=True)))
