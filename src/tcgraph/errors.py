"""Errors a client can act on.

Each carries a machine-readable `extensions` dict (`code`, and the details that
name what was wrong). GraphQL copies `extensions` into the error it reports;
the REST front door turns the same errors into HTTP 400 bodies.
"""

from __future__ import annotations

import orjson


class ClientError(Exception):
    """The request was wrong; retrying it unchanged will fail the same way."""

    code = "BAD_REQUEST"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, object] = {"code": self.code, **details}


class LimitExceeded(ClientError):
    """A documented limit (keys, page size, ...) was exceeded."""

    code = "LIMIT_EXCEEDED"

    def __init__(self, limit: str, value: int, maximum: int, what: str) -> None:
        super().__init__(
            f"{what}: {value} is over the limit of {maximum} ({limit})",
            limit=limit, value=value, maximum=maximum,
        )


def check_key_count(argument: str, count: int, maximum: int) -> None:
    """Refuse `count` keys in the list `argument` when over `maximum` (`max_keys`)."""
    if count > maximum:
        raise LimitExceeded("max_keys", count, maximum, f"`{argument}` has too many keys")


class BadCursor(ClientError):
    """A pagination cursor that this connection did not hand out."""

    code = "BAD_CURSOR"


class BadInput(ClientError):
    """An argument value that is well-typed but unusable."""

    code = "BAD_USER_INPUT"


class ServiceUnavailable(Exception):
    """The request was fine but cannot be answered now; it may succeed later."""

    code = "SERVICE_UNAVAILABLE"
    http_status = 503

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, object] = {"code": self.code, **details}


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL is down, unreachable, or every pooled connection is busy."""

    code = "DATABASE_UNAVAILABLE"


class StatementTimeout(ServiceUnavailable):
    """A statement ran past `statement_timeout` and PostgreSQL cancelled it."""

    code = "STATEMENT_TIMEOUT"


class RequestRefused(Exception):
    """Raised from an ASGI `receive` by a middleware that answers the request itself
    (the body too large, too slow). A handler that catches every exception lets it through."""


# The codes for which an HTTP response as a whole should say 503.
UNAVAILABLE_CODES = frozenset({DatabaseUnavailable.code, StatementTimeout.code})


# The codes of refusals made before any GraphQL runs (routing, the HTTP view), by status.
HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
              415: "UNSUPPORTED_MEDIA_TYPE"}


def error_body(message: str, code: str, **details: object) -> bytes:
    """A GraphQL error answer given outside GraphQL (HTTP refusals): one coded error."""
    return orjson.dumps({"errors": [{"message": message,
                                     "extensions": {"code": code, **details}}]})
