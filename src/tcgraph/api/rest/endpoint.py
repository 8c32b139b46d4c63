"""One Taskcluster method as a Starlette route: its checks, its context, its error replies.

A method declares its route, its path parameters' patterns and whether it is paged; the
endpoint checks the request the way Taskcluster's API library does (path parameters
against their patterns, query-string parameters against the method's own, the body
parsed as JSON) before the handler runs, and turns every failure into Taskcluster's
error body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tcgraph import keys, metrics
from tcgraph.api.context import Context
from tcgraph.api.references import root_url
from tcgraph.api.rest.errors import JSON, ApiError, error_response
from tcgraph.errors import ClientError, LimitExceeded, RequestRefused, ServiceUnavailable

logger = logging.getLogger(__name__)

# Taskcluster's patterns for path parameters, as its API library reports them.
SLUGID = keys.SLUGID_PATTERN
INDEX_PATH = keys.INDEX_PATH_PATTERN
NAMESPACE = keys.NAMESPACE_PATTERN

PAGED = ("continuationToken", "limit")
_LIMIT = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class Call:
    """One request to a method, as its handler sees it."""

    request: Request
    context: Context
    method: str  # Taskcluster's name for the method, reported in `requestInfo`
    payload: object  # the JSON body; `{}` for a GET
    limit: int  # `?limit=`, clamped to the page size; the page size when absent
    continuation_token: str | None

    def param(self, name: str) -> str:
        """A path parameter (already checked against its pattern)."""
        return str(self.request.path_params[name])

    def schema_error(self, service: str, schema: str, *problems: str) -> ApiError:
        """The body does not match `schema`: Taskcluster's report, one line per problem."""
        lines = "".join(f"\n  * {problem}" for problem in problems)
        return ApiError("InputValidationError",
                        f"\nSchema Validation Failed!\nRejecting Schema: "
                        f"{root_url(self.request)}/schemas/{service}/v1/{schema}#\nErrors:{lines}")


Handler = Callable[[Call], Awaitable[object]]


@dataclass(frozen=True)
class Method:
    """A Taskcluster method: its name, HTTP method, route and what it takes."""

    name: str
    verb: str  # GET or POST
    route: str  # under the service's /api/<service>/v1; {param} marks a path parameter
    handler: Handler
    params: dict[str, str] = field(default_factory=dict)  # path parameter -> pattern
    query: tuple[str, ...] = ()  # the query-string parameters it takes

    @property
    def reads_body(self) -> bool:
        return self.verb == "POST"


def _check_params(method: Method, request: Request) -> None:
    for name, pattern in method.params.items():
        value = str(request.path_params[name])
        if not re.fullmatch(pattern, value):
            raise ApiError("InvalidRequestArguments",
                           f"Invalid URL patterns:\nURL parameter '{name}' given as '{value}' "
                           f"must match regular expression: '/{pattern}/'")


def _page_size(method: Method, request: Request, maximum: int) -> tuple[int, str | None]:
    problems = []
    for name, value in request.query_params.items():
        if name not in method.query:
            problems.append(f"Query-string parameter: {name} is not supported!")
        elif name == "limit" and not _LIMIT.match(value):
            problems.append(f'Query-string parameter: limit="{value}" does not match '
                            f"expression: /^[0-9]+$/")
    if problems:
        raise ApiError("InvalidRequestArguments", "\n".join(problems))
    raw = request.query_params.get("limit")
    # As Taskcluster does, a larger limit is the page size (and int() never sees a huge text).
    limit = maximum if raw is None or len(raw) > 9 else min(int(raw), maximum)
    return limit, request.query_params.get("continuationToken") or None


def _parse_body(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError("MalformedPayload", f"the request body is not JSON: {e}") from None


def endpoint(method: Method) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that checks the request, runs the handler with a fresh Context
    and replies as Taskcluster."""

    async def serve(request: Request) -> Response:
        payload: object = {}
        context: Context | None = None
        settings = request.app.state.settings
        try:
            if method.reads_body:
                payload = _parse_body(await request.body())
            _check_params(method, request)
            limit, token = _page_size(method, request, settings.max_page_size)
            context = Context.create(request.app.state.pool, settings, request=request)
            call = Call(request, context, method.name, payload, limit, token)
            response: Response = JSON(await method.handler(call))
        except ApiError as e:
            metrics.note_errors([{"code": e.code}])
            response = _reply(method, request, payload, e)
        except LimitExceeded as e:
            metrics.note_errors([e.extensions])
            response = _reply(method, request, payload, ApiError("InputError", e.message))
        except ClientError as e:
            metrics.note_errors([e.extensions])
            response = _reply(method, request, payload,
                              ApiError("InputValidationError", e.message))
        except ServiceUnavailable as e:
            metrics.note_errors([e.extensions])
            response = _reply(method, request, payload, ApiError("ServiceUnavailable", e.message))
        except RequestRefused:
            raise  # the body's size or deadline: the middleware answers
        except Exception:
            # Whatever broke stays in the log, under an id the client can quote.
            incident = uuid.uuid4()
            logger.exception("incident %s: %s %s failed", incident, request.method,
                             request.url.path)
            response = _reply(method, request, payload, ApiError(
                "InternalServerError", f"Internal Server Error, incidentId: {incident}"))
        if context is not None and settings.explain:
            response.headers["Tcgraph-Sql"] = orjson.dumps(context.db.stats.as_dict()).decode()
        return response

    serve.taskcluster_method = method.name  # type: ignore[attr-defined]
    return serve


def _reply(method: Method, request: Request, payload: object, error: ApiError) -> Response:
    return error_response(method.name, dict(request.path_params), payload, error)


def routes(prefix: str, methods: tuple[Method, ...]) -> list[Route]:
    """The Starlette routes of one service's methods under `prefix`."""
    return [Route(prefix + m.route, endpoint(m), methods=[m.verb]) for m in methods]


_STARTED = time.monotonic()


async def ping(call: Call) -> object:
    """`ping` of every service: alive, and for how many seconds."""
    return {"alive": True, "uptime": time.monotonic() - _STARTED}
