"""The GraphQL endpoint: Strawberry's ASGI view with a per-request context."""

from __future__ import annotations

from typing import Any

import orjson
import strawberry
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from tcgraph.api import graphiql
from tcgraph.api.context import Context
from tcgraph.config import Settings
from tcgraph.errors import UNAVAILABLE_CODES


class GraphQLApp(GraphQL):
    """`/graphql`: POST (JSON) for any document, GET for queries only."""

    def __init__(self, schema: strawberry.Schema, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            multipart_uploads_enabled=False,
        )
        self.settings = settings

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Any:
        # A fresh context per request: loaders must not share caches across
        # requests (data changes between them) and bind to the running loop.
        return Context.create(request.app.state.pool, self.settings,
                              request=request, response=response)

    async def render_graphql_ide(self, request: Request) -> Response:
        # Strawberry's own page loads GraphiQL from a CDN; ours loads every
        # file from this server.
        return graphiql.page(request)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        # An answer the database could not give is a 503 as a whole, so load
        # balancers and clients retry it, whatever else the document asked.
        results = response_data if isinstance(response_data, list) else [response_data]
        if any((error.get("extensions") or {}).get("code") in UNAVAILABLE_CODES
               for result in results for error in result.get("errors") or ()):
            sub_response.status_code = 503
        return super().create_response(response_data, sub_response)
