"""The GraphQL endpoint: Strawberry's ASGI view with a per-request context.

It speaks GraphQL over HTTP as the spec asks: a client that accepts
`application/graphql-response+json` gets that media type, and a request that
never reached execution (a parse, validation or variable error) is a 400
without a `data` entry. Clients that only accept `application/json` get the
traditional answer: 200, and the errors in the body.
"""

from __future__ import annotations

from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from tcgraph import metrics
from tcgraph.api import graphiql, persisted
from tcgraph.api.context import Context
from tcgraph.api.persisted import PersistedQueryError
from tcgraph.api.schema import Schema
from tcgraph.api.subscriptions.transport import Connections, TextFrames, TransportHandler
from tcgraph.config import Settings
from tcgraph.errors import HTTP_CODES, UNAVAILABLE_CODES, LimitExceeded, error_body

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


def _accepts_graphql_response_json(request: Request) -> bool:
    for part in request.headers.get("accept", "").split(","):
        media_type, *params = (p.strip() for p in part.split(";"))
        if media_type.lower() == GRAPHQL_RESPONSE_JSON and "q=0" not in params:
            return True
    return False


def _is_request_error(result: ExecutionResult) -> bool:
    # Errors raised while executing carry the path of their field; a document
    # that failed to parse, validate or coerce its variables has none.
    return result.data is None and bool(result.errors) and all(
        not e.path for e in result.errors or ())


class GraphQLApp(GraphQL):
    """`/graphql`: POST (JSON) for any document, GET for queries only."""

    # Subscriptions: graphql-transport-ws only, with tcgraph's caps (api/subscriptions/).
    graphql_transport_ws_handler_class = TransportHandler
    websocket_adapter_class = TextFrames

    def __init__(self, schema: Schema, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            multipart_uploads_enabled=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=settings.max_subscriptions,
        )
        self.settings = settings
        self.websockets = Connections(settings)
        self.documents = schema.documents

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.websockets.serve(scope, receive, send, super().__call__)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as e:
            # Strawberry answers these in plain text; every tcgraph error is a
            # GraphQL error body with a code, in the media type asked for.
            response = error_response(request, e.status_code, e.reason,
                                      HTTP_CODES.get(e.status_code, "BAD_REQUEST"))
        except PersistedQueryError as e:
            # Not found is an answer the client acts on (it sends the query):
            # 200 as for other GraphQL errors, unless it asked for the
            # GraphQL-over-HTTP media type, where a document that never ran is a 400.
            found_nothing = e.code == persisted.NOT_FOUND
            status = 400 if _accepts_graphql_response_json(request) or not found_nothing else 200
            response = error_response(request, status, e.message, e.code)
        await response(scope, receive, send)

    async def get_context(self, request: Request | WebSocket,
                          response: Response | WebSocket) -> Any:
        # A fresh context per request: loaders must not share caches across
        # requests (data changes between them) and bind to the running loop.
        request.state.sub_response = response
        return Context.create(request.app.state.pool, self.settings,
                              request=request, response=response)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A GET naming its document by hash (a persisted query) has no `query`
        # either, but asks for an answer, not the IDE.
        return (super().should_render_graphql_ide(request)
                and request.query_params.get("extensions") is None)

    async def render_graphql_ide(self, request: Request) -> Response:
        # Strawberry's own page loads GraphiQL from a CDN; ours loads every
        # file from this server.
        return graphiql.page(request)

    async def process_result(self, request: Request,
                             result: ExecutionResult) -> GraphQLHTTPResponse:
        processed = await super().process_result(request, result)
        if _accepts_graphql_response_json(request):
            sub_response = request.state.sub_response
            sub_response.media_type = GRAPHQL_RESPONSE_JSON
            if _is_request_error(result):
                processed.pop("data", None)
                sub_response.status_code = 400
        return processed

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        parsed = await super().parse_http_body(request)
        if isinstance(parsed, list):
            return parsed  # a batch, which Strawberry refuses while batching is off
        return persisted.resolve(parsed, self.documents)

    def decode_json(self, data: str | bytes) -> object:
        # orjson refuses what json.loads lets through or chokes on (bytes
        # that are not UTF-8, lone surrogates, nesting past 1,024 levels) with
        # a JSONDecodeError, which Strawberry answers as a 400.
        return orjson.loads(data)

    def parse_json(self, data: str | bytes) -> Any:
        value = super().parse_json(data)
        # A request body is a JSON object (a list is a batch, which Strawberry
        # refuses while batching is off), and so are GET's `variables` and
        # `extensions`; anything else would reach Strawberry's `data.get(...)`
        # and fail there as a 500.
        if not isinstance(value, (dict, list)):
            raise HTTPException(400, f"expected a JSON object (a request with `query`, or "
                                     f"`variables`), got a JSON {_json_kind(value)}")
        return value

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        results = response_data if isinstance(response_data, list) else [response_data]
        status = sub_response.status_code or 200
        # An answer the database could not give is a 503 as a whole, so load
        # balancers and clients retry it, whatever else the document asked.
        extensions = [error.get("extensions") or {}
                      for result in results for error in result.get("errors") or ()]
        metrics.note_errors(extensions)
        codes = {ext.get("code") for ext in extensions}
        if codes & UNAVAILABLE_CODES:
            status = 503
        elif LimitExceeded.code in codes:
            # Over a documented limit: nothing was (or will be) done for it.
            status = 400
        response = Response(
            self.encode_json(response_data),
            status_code=status,
            media_type=getattr(sub_response, "media_type", None) or "application/json",
        )
        response.headers.raw.extend(
            (k, v) for k, v in sub_response.headers.raw if k.lower() != b"content-type")
        if sub_response.background:
            response.background = sub_response.background
        return response


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "string"


def error_response(request: Request, status: int, message: str, code: str,
                   **details: object) -> Response:
    """A GraphQL-over-HTTP error answer: `{"errors": [...]}` with `code` and `details`."""
    metrics.note_errors([{"code": code}])
    media_type = (GRAPHQL_RESPONSE_JSON if _accepts_graphql_response_json(request)
                  else "application/json")
    return Response(error_body(message, code, **details), status_code=status,
                    media_type=media_type)
