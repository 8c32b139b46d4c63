"""A client for tcgraph: index paths, labels and task ids resolved in one request.

This module stands apart from the server: it needs httpx and tenacity, and
from tcgraph only `timefmt` (standard library only), so another project can
copy the two files as they are.

    with TcGraph("https://tcgraph.example.com") as tc:
        found = tc.resolve(
            index_paths=["gecko.v2.mozilla-central.latest.firefox.linux64-opt"],
            labels=["build-linux64/opt"],
            task_ids=["fhjjVg0bRA2Em7mGlhWbNw"],
        )
    found.index_paths["gecko.v2.mozilla-central.latest.firefox.linux64-opt"].task_id

Every key of every kind goes into ONE GraphQL document. Only when a kind has
more keys than the server accepts in one list (`max_keys`) is the work split
into several documents, each carrying at most `max_keys` keys of each kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any

import httpx
from tenacity import (AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type,
                      retry_if_result, stop_after_attempt, wait_exponential,
                      wait_random_exponential)

from tcgraph.keys import DEFAULT_MAX_KEYS
from tcgraph.timefmt import parse_time

__all__ = [
    "AsyncTcGraph", "IndexedResult", "Resolution", "StatusResult", "TcGraph", "TcGraphError",
    "TcGraphHTTPError", "TcGraphQueryError",
]

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF = 0.25
MAX_BACKOFF = 10.0
# Gateways answer these while the server restarts or is overloaded; the
# documents are read-only queries, so sending one again is always safe.
RETRY_STATUSES = frozenset({502, 503, 504})
_EXCERPT = 500


class TcGraphError(Exception):
    """Any failure to resolve: the base of this module's exceptions."""


class TcGraphHTTPError(TcGraphError):
    """The server answered with an HTTP error status."""

    def __init__(self, status_code: int, body: str, url: str) -> None:
        excerpt = body if len(body) <= _EXCERPT else body[:_EXCERPT] + "..."
        super().__init__(f"HTTP {status_code} from {url}: {excerpt}")
        self.status_code = status_code
        self.body = excerpt
        self.url = url


class TcGraphQueryError(TcGraphError):
    """The server ran the document and reported GraphQL errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        messages = "; ".join(str(e.get("message", e)) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"GraphQL errors: {messages}{more}")
        self.errors = errors


@dataclass(frozen=True)
class StatusResult:
    """A task's state and expiry, as `queue.status` gives them."""

    task_id: str
    state: str  # lower case, as Taskcluster writes it: "completed", "failed", ...
    expires: datetime  # timezone-aware, UTC


@dataclass(frozen=True)
class IndexedResult:
    """The task an index path points at; `status` is None if that task is not stored."""

    task_id: str
    status: StatusResult | None


@dataclass(frozen=True)
class Resolution:
    """What `resolve()` found, one entry per distinct key asked for; None where nothing matched.

    `labels` maps each label to the status of its newest task.
    """

    index_paths: dict[str, IndexedResult | None]
    labels: dict[str, StatusResult | None]
    statuses: dict[str, StatusResult | None]


# One part per kind of key: the variables it declares and the root field it
# selects. Keys travel only as variables, never inside the document text.
_FRAGMENT = "fragment Status on TaskStatus { taskId state expires }"
_PARTS = {
    "indexPaths": ("$indexPaths: [String!]!",
                   "indexedTasks(indexPaths: $indexPaths) "
                   "{ taskId task { status { ...Status } } }"),
    "labels": ("$labels: [String!]!, $filter: TaskFilter",
               "labels(labels: $labels, filter: $filter) { latest { status { ...Status } } }"),
    "taskIds": ("$taskIds: [ID!]!", "statuses(taskIds: $taskIds) { ...Status }"),
}
_FIELDS = {"indexPaths": "indexedTasks", "labels": "labels", "taskIds": "statuses"}


@dataclass(frozen=True)
class _Request:
    keys: dict[str, list[str]]  # kind -> the keys this document asks for, in order
    payload: dict[str, Any]


def _distinct(kind: str, keys: Iterable[str]) -> list[str]:
    # A lone string is iterable too; taking it for a list of characters would
    # send nonsense and answer with a dict of single letters.
    if isinstance(keys, str):
        raise TypeError(f"{kind} must be a collection of strings, not a string")
    return list(dict.fromkeys(keys))


def _plan(keys: dict[str, list[str]], filter: Mapping[str, Any] | None,
          max_keys: int) -> list[_Request]:
    """The documents to send: one, unless some kind has more than `max_keys` keys."""
    count = max(((len(v) + max_keys - 1) // max_keys for v in keys.values()), default=0)
    requests = []
    for i in range(count):
        chunk = {kind: values[i * max_keys:(i + 1) * max_keys] for kind, values in keys.items()}
        chunk = {kind: values for kind, values in chunk.items() if values}
        declarations = ", ".join(_PARTS[kind][0] for kind in chunk)
        selections = " ".join(_PARTS[kind][1] for kind in chunk)
        variables: dict[str, Any] = dict(chunk)
        if "labels" in chunk:
            variables["filter"] = dict(filter) if filter is not None else None
        document = f"query Resolve({declarations}) {{ {selections} }} {_FRAGMENT}"
        requests.append(_Request(chunk, {"query": document, "variables": variables}))
    return requests


def _status(value: dict[str, Any] | None) -> StatusResult | None:
    if value is None:
        return None
    try:
        expires = parse_time(value["expires"])
    except ValueError as e:
        raise TcGraphError(f"task {value['taskId']}: its status' `expires` is not a "
                           f"timestamp: {e}") from None
    return StatusResult(value["taskId"], value["state"].lower(), expires.astimezone(UTC))


def _collect(resolution: Resolution, request: _Request, data: dict[str, Any]) -> None:
    for kind, keys in request.keys.items():
        found = data.get(_FIELDS[kind])
        if not isinstance(found, list) or len(found) != len(keys):
            raise TcGraphError(
                f"the answer's `{_FIELDS[kind]}` does not match the keys asked for")
        for key, value in zip(keys, found, strict=False):
            if kind == "indexPaths":
                resolution.index_paths[key] = None if value is None else IndexedResult(
                    value["taskId"], _status((value["task"] or {}).get("status")))
            elif kind == "labels":
                latest = value["latest"] if value is not None else None
                resolution.labels[key] = _status(latest["status"]) if latest else None
            else:
                resolution.statuses[key] = _status(value)


def _data(response: httpx.Response) -> dict[str, Any]:
    """The `data` of a GraphQL answer, or the exception that describes what went wrong."""
    try:
        body = response.json()
    except ValueError:
        if not response.is_success:
            raise TcGraphHTTPError(
                response.status_code, response.text, str(response.request.url)) from None
        raise TcGraphError(
            f"the answer from {response.request.url} is not JSON: {response.text[:_EXCERPT]}"
        ) from None
    if not isinstance(body, dict):
        raise TcGraphError(f"the answer from {response.request.url} is not a GraphQL response")
    # A refused document (a limit, a bad document) is a 4xx with GraphQL
    # errors in the body: those say more than the status does.
    if not response.is_success and not (400 <= response.status_code < 500 and body.get("errors")):
        raise TcGraphHTTPError(response.status_code, response.text, str(response.request.url))
    if body.get("errors"):
        raise TcGraphQueryError(list(body["errors"]))
    data = body.get("data")
    if not isinstance(data, dict):
        raise TcGraphError(f"the answer from {response.request.url} has no data")
    return data


def _give_up(state: RetryCallState) -> httpx.Response:
    """After the last attempt: its answer, or the error that names what failed."""
    assert state.outcome is not None
    error = state.outcome.exception()
    if error is None:
        response: httpx.Response = state.outcome.result()
        return response
    url = state.kwargs["url"]
    raise TcGraphError(f"could not reach {url} after {state.attempt_number} attempts: "
                       f"{type(error).__name__}: {error}") from error


def _retry_policy(retries: int, backoff: float) -> dict[str, Any]:
    """tenacity's options for both clients: 502/503/504 and connection errors retried,
    `retries` times, waiting `backoff` seconds doubled at each attempt (at most
    MAX_BACKOFF), half of it fixed and half random, so that many clients do not
    retry in step."""
    return {
        "stop": stop_after_attempt(retries + 1),
        "wait": (wait_exponential(multiplier=backoff / 2, max=MAX_BACKOFF / 2)
                 + wait_random_exponential(multiplier=backoff / 2, max=MAX_BACKOFF / 2)),
        "retry": (retry_if_exception_type(httpx.TransportError)
                  | retry_if_result(lambda r: r.status_code in RETRY_STATUSES)),
        "retry_error_callback": _give_up,
    }


class _Base:
    def __init__(self, url: str, *, timeout: float, retries: int, backoff: float,
                 max_keys: int) -> None:
        if retries < 0:
            raise ValueError("retries must not be negative")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.url = url.rstrip("/")
        self.max_keys = max_keys
        self._retry = _retry_policy(retries, backoff)
        self._timeout = httpx.Timeout(timeout)
        self._headers = {"accept": "application/json"}

    def _prepare(self, index_paths: Iterable[str], labels: Iterable[str], task_ids: Iterable[str],
                 filter: Mapping[str, Any] | None) -> tuple[Resolution, list[_Request]]:
        keys = {"indexPaths": _distinct("index_paths", index_paths),
                "labels": _distinct("labels", labels),
                "taskIds": _distinct("task_ids", task_ids)}
        resolution = Resolution({k: None for k in keys["indexPaths"]},
                                {k: None for k in keys["labels"]},
                                {k: None for k in keys["taskIds"]})
        return resolution, _plan(keys, filter, self.max_keys)


class TcGraph(_Base):
    """A tcgraph server at `url` (its root; documents go to `url`/graphql).

    One connection is kept open across calls; close it with `close()` or use
    the client as a context manager. Answers 502, 503, 504 and connection
    errors are retried `retries` times, waiting `backoff` seconds, doubled at
    each attempt, with jitter. `max_keys` must not exceed the server's own.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF,
                 max_keys: int = DEFAULT_MAX_KEYS,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(url, timeout=timeout, retries=retries, backoff=backoff,
                         max_keys=max_keys)
        self._client = httpx.Client(base_url=self.url, timeout=self._timeout,
                                    headers=self._headers, transport=transport)

    def resolve(self, index_paths: Iterable[str] = (), labels: Iterable[str] = (),
                task_ids: Iterable[str] = (),
                filter: Mapping[str, Any] | None = None) -> Resolution:
        """Resolve index paths to tasks, labels to their newest task, and task ids to statuses.

        `filter` (a `TaskFilter`: projectId, schedulerId, taskQueueId, tags)
        restricts the label lookups. Duplicate keys are asked for once.
        """
        resolution, requests = self._prepare(index_paths, labels, task_ids, filter)
        for request in requests:
            _collect(resolution, request, self._send(request.payload))
        return resolution

    def _send(self, payload: dict[str, Any]) -> dict[str, Any]:
        post = Retrying(**self._retry).wraps(self._client.post)
        return _data(post(url=f"{self.url}/graphql", json=payload))

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def __enter__(self) -> TcGraph:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTcGraph(_Base):
    """The asyncio twin of `TcGraph`, with the same options."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF,
                 max_keys: int = DEFAULT_MAX_KEYS,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(url, timeout=timeout, retries=retries, backoff=backoff,
                         max_keys=max_keys)
        self._client = httpx.AsyncClient(base_url=self.url, timeout=self._timeout,
                                         headers=self._headers, transport=transport)

    async def resolve(self, index_paths: Iterable[str] = (), labels: Iterable[str] = (),
                      task_ids: Iterable[str] = (),
                      filter: Mapping[str, Any] | None = None) -> Resolution:
        """Resolve index paths to tasks, labels to their newest task, and task ids to statuses.

        `filter` (a `TaskFilter`: projectId, schedulerId, taskQueueId, tags)
        restricts the label lookups. Duplicate keys are asked for once.
        """
        resolution, requests = self._prepare(index_paths, labels, task_ids, filter)
        for request in requests:
            _collect(resolution, request, await self._send(request.payload))
        return resolution

    async def _send(self, payload: dict[str, Any]) -> dict[str, Any]:
        post = AsyncRetrying(**self._retry).wraps(self._client.post)
        return _data(await post(url=f"{self.url}/graphql", json=payload))

    async def aclose(self) -> None:
        """Close the connection."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncTcGraph:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
