"""The GraphQL endpoint: Strawberry's ASGI view with a per-request context."""

from __future__ import annotations

from typing import Any

import orjson
import strawberry
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from tcgraph.api.context import Context
from tcgraph.config import Settings


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

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)
