"""graphql-transport-ws on `/graphql`: Strawberry's handler with tcgraph's caps and codes.

- At most `max_websockets` WebSocket connections per server process; one more
  is accepted and closed at once with code 4503 and a reason that says so.
- At most `max_subscriptions` operations at once on one connection; one more
  gets an `error` message with `code: LIMIT_EXCEEDED` (the connection stays).
- Each operation runs with a context of its own (loaders, compiled
  selections), never one shared by the connection's other operations.
- A client that does not read is closed by the hub (api/subscriptions/hub.py)
  with code 4413 once `max_queued_changes` changes wait for it.
- A direct subscription (api/subscriptions/frames.py) ends its operation's task
  once the hub writes its frames (`Detached`); the operation stays registered
  until the client completes it or the connection ends, which releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol
from collections.abc import Callable, Mapping

import orjson
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler, Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage

from tcgraph import metrics
from tcgraph.api.context import Context
from tcgraph.api.subscriptions.frames import Outbox
from tcgraph.config import Settings
from tcgraph.errors import LimitExceeded

CLOSE_TOO_MANY = 4503  # graphql-transport-ws leaves 4xxx codes to the server
# Direct operations detached between two full garbage collections (see `Connections`).
COLLECT_EVERY = 1_000
# Operations being set up at once in one process (see `SetupSlot`).
SETUPS_AT_ONCE = 64


class SetupSlot:
    """One of the process's `SETUPS_AT_ONCE` places for an operation being set up.

    An operation's setup (parsing aside: its execution state, its snapshot)
    costs tens of KB while it lasts. When thousands of clients subscribe at
    once (every browser reconnecting after a deploy), all of that at once would
    be the process's peak memory, kept afterwards by the allocator; queued
    behind these places, the subscriptions start a few dozen at a time (their
    snapshots are still read together, api/subscriptions/snapshots.py). A
    subscription gives its place back once its stream has started; any other
    operation when it ends.
    """

    def __init__(self, places: asyncio.Semaphore) -> None:
        self._places = places
        self._held = False

    async def take(self) -> None:
        """Wait for a place."""
        await self._places.acquire()
        self._held = True

    def give_back(self) -> None:
        """Give the place back (once; later calls do nothing)."""
        if self._held:
            self._held = False
            self._places.release()


@dataclass(frozen=True, slots=True)
class Running:
    """The operation whose task is running: its id, its connection's handler, its place."""

    op_id: str
    handler: TransportHandler
    setup: SetupSlot


# Each operation runs in a task of its own.
_operation: ContextVar[Running | None] = ContextVar("tcgraph_operation", default=None)


def current_operation() -> Running | None:
    """The graphql-transport-ws operation being run; None outside one."""
    return _operation.get()


class Detached(BaseException):  # noqa: N818 (not an error: the operation's way out)
    """Raised by a direct subscription's stream once the hub writes its frames: ends the
    operation's task without a `complete` message.

    A BaseException, so that no `except Exception` on the way (Strawberry's,
    graphql-core's) turns it into an error result; TransportHandler.run_operation
    catches it.
    """


class _PerOperation:
    """The schema as the handler sees it: each operation streamed with its own context."""

    def __init__(self, schema: Any) -> None:
        self._schema = schema

    def stream(self, *args: Any, context_value: Any = None, **kwargs: Any) -> Any:
        if isinstance(context_value, Context):
            context_value = context_value.for_operation()
        return self._schema.stream(*args, context_value=context_value, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._schema, name)


class TextFrames(ASGIWebSocketAdapter):
    """Strawberry's WebSocket adapter, sending text frames as graphql-transport-ws requires
    (the view encodes JSON to bytes for HTTP, which the adapter would send as binary)."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc

    async def send_text(self, data: str) -> None:
        """Send `data` as one text frame (Starlette's exceptions as they are)."""
        await self.ws.send_text(data)


class TransportHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """Strawberry's graphql-transport-ws handler, with a coded subscription limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = _PerOperation(self.schema)  # type: ignore[assignment]
        self.outbox = Outbox(self.websocket)  # type: ignore[arg-type]
        # Detached operations: what ends each one's registration with the hub.
        self._releases: dict[str, Callable[[], None]] = {}

    def detach(self, op_id: str, release: Callable[[], None]) -> None:
        """Operation `op_id` is served by the hub from now on; `release` ends that when
        the client completes it or the connection ends."""
        self._releases[op_id] = release

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        view: _CountsConnections = self.view  # type: ignore[assignment]
        setup = SetupSlot(view.websockets.setups)
        await setup.take()
        _operation.set(Running(operation.id, self, setup))
        try:
            await super().run_operation(operation)
        except Detached:
            view.websockets.operation_detached()
        finally:
            setup.give_back()

    async def cleanup_operation(self, operation_id: str) -> None:
        release = self._releases.pop(operation_id, None)
        if release is not None:
            release()
        await super().cleanup_operation(operation_id)

    async def shutdown(self) -> None:
        self.outbox.close()
        await super().shutdown()

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        maximum = self.max_subscriptions_per_connection
        if (self.connection_acknowledged and maximum is not None
                and message.get("id") not in self.operations
                and len(self.operations) >= maximum):
            error = LimitExceeded("max_subscriptions", len(self.operations) + 1, maximum,
                                  "too many operations at once on this connection")
            metrics.note_errors([error.extensions])
            await self.send_message({"id": message["id"], "type": "error",
                                     "payload": [{"message": error.message,
                                                  "extensions": error.extensions}]})
            return
        await super().handle_subscribe(message)


class _CountsConnections(Protocol):
    """The view that serves the connections (api/graphql.py's GraphQLApp)."""

    websockets: Connections


class Connections:
    """Counts this process's WebSocket connections and refuses those over the cap.

    Also collects the garbage direct operations leave: each one's execution
    state (graphql-core's executor, the variables, the context) refers to
    itself, so only a full collection frees it, and with thousands of
    subscriptions made at once (every browser reconnecting after a deploy)
    the next full one can be far off and long. One full collection every
    `COLLECT_EVERY` detached operations keeps that memory and that pause small.
    """

    def __init__(self, settings: Settings) -> None:
        self.maximum = settings.max_websockets
        self.open = 0
        self.detached = 0
        self.setups = asyncio.Semaphore(SETUPS_AT_ONCE)  # see SetupSlot

    def operation_detached(self) -> None:
        """A direct operation's task ended (its execution state is garbage now)."""
        self.detached += 1
        if self.detached % COLLECT_EVERY == 0:
            gc.collect()

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: Any) -> None:
        """Serve one WebSocket connection with `app`, or close it at once over the cap."""
        if self.open >= self.maximum:
            websocket = WebSocket(scope, receive, send)
            offered = scope.get("subprotocols") or ()
            await websocket.accept(subprotocol=GRAPHQL_TRANSPORT_WS_PROTOCOL
                                   if GRAPHQL_TRANSPORT_WS_PROTOCOL in offered else None)
            metrics.client_dropped("too_many_connections")
            with contextlib.suppress(RuntimeError):
                await websocket.close(CLOSE_TOO_MANY, f"this server has {self.maximum} "
                                                      f"WebSocket connections (max_websockets)")
            return
        self.open += 1
        metrics.ws_connections(1)
        try:
            await app(scope, receive, send)
        finally:
            self.open -= 1
            metrics.ws_connections(-1)
