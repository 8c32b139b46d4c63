"""Taskcluster's error replies: codes, statuses and the body its clients read.

Every refusal under `/api/` has this body, whichever layer refuses: a handler, the
endpoint's checks, routing (an unknown path, a method the route does not take) or the
body-size limit in front of everything.
"""

from __future__ import annotations

from datetime import datetime, UTC
from collections.abc import Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from tcgraph.timefmt import format_time

# Where Taskcluster's services (and tcgraph's own REST routes) live.
API_PREFIX = "/api/"

# Taskcluster's error codes and the HTTP status of each (from its API library).
STATUS_OF_CODE = {
    "MalformedPayload": 400,  # the body is not JSON
    "InvalidRequestArguments": 400,  # a URL or query-string parameter is wrong
    "InputValidationError": 400,  # the body does not match the method's input schema
    "InputError": 400,  # the body matches, but asks for what cannot be answered
    "ResourceNotFound": 404,
    "InputTooLarge": 413,  # the body is over the size limit
    "InternalServerError": 500,
    # Not Taskcluster's codes: it never answers these statuses itself, but its clients
    # read any error in this shape (and retry any 5xx, which a database outage calls for).
    "MethodNotAllowed": 405,
    "RequestTimeout": 408,  # the body did not arrive in time (body_timeout_ms)
    "ServiceUnavailable": 503,
}


class ApiError(Exception):
    """A reply in Taskcluster's error shape; `code` is one of `STATUS_OF_CODE`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JSON(Response):
    """JSON through orjson, so stored documents go out as `orjson.Fragment`s, never re-encoded."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def error_body(method: str, params: dict[str, str], payload: object,
               error: ApiError) -> dict[str, object]:
    """Taskcluster's error body: its message ends with the summary its client shows."""
    status = STATUS_OF_CODE[error.code]
    now = format_time(datetime.now(UTC))
    message = (f"{error.message}\n\n---\n\n* method:     {method}\n* errorCode:  {error.code}"
               f"\n* statusCode: {status}\n* time:       {now}")
    return {"code": error.code, "message": message,
            "requestInfo": {"method": method, "params": params, "payload": payload,
                            "time": now}}


def error_response(method: str, params: dict[str, str], payload: object,
                   error: ApiError, headers: Mapping[str, str] | None = None) -> JSON:
    """`error` as Taskcluster answers it."""
    return JSON(error_body(method, params, payload, error),
                status_code=STATUS_OF_CODE[error.code], headers=headers)


def method_of(scope: Scope) -> tuple[str, dict[str, str]]:
    """The Taskcluster method whose route `scope`'s path is (whatever the HTTP method), and
    its path parameters; ("", {}) when no route has that path."""
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", ()):
        match, child = route.matches(scope)
        name = getattr(getattr(route, "endpoint", None), "taskcluster_method", None)
        if match is not Match.NONE and name is not None:
            return name, dict(child.get("path_params", {}))
    return "", {}


def too_large_body(scope: Scope, size: int, maximum: int) -> bytes:
    """The 413 body for a REST request whose body is over `max_body_bytes`."""
    method, params = method_of(scope)
    error = ApiError("InputTooLarge", f"the request body is larger than the limit of "
                                      f"{maximum} bytes (max_body_bytes): {size} bytes")
    return orjson.dumps(error_body(method, params, {}, error))


def refusal_body(scope: Scope, code: str, message: str) -> bytes:
    """The body refusing a REST request in front of every route (its `Host`, a late body)."""
    method, params = method_of(scope)
    return orjson.dumps(error_body(method, params, {}, ApiError(code, message)))


_ROUTING_CODES = {404: "ResourceNotFound", 405: "MethodNotAllowed"}


def routing_error(request: Request, status: int, headers: Mapping[str, str] | None) -> JSON:
    """A 404 or 405 from routing under `/api/`, in Taskcluster's shape."""
    method, params = method_of(request.scope)
    if status == 405:
        message = (f"{request.method} is not a method of this route; it takes "
                   f"{(headers or {}).get('allow', '')}")
    else:
        message = f"No such route: {request.method} {request.url.path}"
    code = _ROUTING_CODES.get(status, "ResourceNotFound")
    return error_response(method, params, {}, ApiError(code, message), headers=headers)
