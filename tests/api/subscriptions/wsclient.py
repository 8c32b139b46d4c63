"""A small graphql-transport-ws client for tests and the bench (websockets' asyncio client)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PROTOCOL = "graphql-transport-ws"
# Nothing in these tests should take this long; a wait past it is a failure, not a pause.
TIMEOUT_S = 60.0

GROUP_CHANGES = """
subscription($g: ID!, $after: String) {
  taskGroupChanges(taskGroupId: $g, after: $after) {
    cursor taskId task { taskId label status { state retriesLeft runs { runId state } } }
  }
}"""

TASK_CHANGES = """
subscription($ids: [ID!]!, $after: String) {
  taskChanges(taskIds: $ids, after: $after) {
    cursor taskId task { taskId status { state runs { runId state } } }
  }
}"""


class Client:
    """One connection: subscribe, and read the server's messages in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def receive(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        message: dict[str, Any] = orjson.loads(raw)
        return message

    async def subscribe(self, op_id: str, query: str, **variables: Any) -> None:
        await self.send({"id": op_id, "type": "subscribe",
                         "payload": {"query": query, "variables": variables}})

    async def complete(self, op_id: str) -> None:
        await self.send({"id": op_id, "type": "complete"})

    async def close_code(self, timeout: float = TIMEOUT_S) -> tuple[int | None, str]:
        """Read until the server closes the connection; its close code and reason."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.ws.recv()
        received = self.ws.protocol.close_rcvd
        return (received.code, received.reason) if received else (None, "")


@contextlib.asynccontextmanager
async def connected(base_url: str, *, init: bool = True, **options: Any) -> AsyncIterator[Client]:
    """A connection to `base_url`'s /graphql, acknowledged (unless `init` is false)."""
    url = base_url.replace("http://", "ws://", 1) + "/graphql"
    async with connect(url, subprotocols=[PROTOCOL], max_size=None,  # type: ignore[list-item]
                       open_timeout=TIMEOUT_S, **options) as ws:
        client = Client(ws)
        if init:
            await client.send({"type": "connection_init", "payload": {}})
            ack = await client.receive()
            assert ack["type"] == "connection_ack", ack
        yield client


def change_of(message: dict[str, Any]) -> dict[str, Any]:
    """The TaskChange of a `next` message (of either subscription field)."""
    assert message["type"] == "next", message
    data = message["payload"]["data"]
    assert data is not None, message
    change: dict[str, Any] = next(iter(data.values()))
    return change
