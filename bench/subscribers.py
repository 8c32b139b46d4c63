"""The subscription series' clients: WebSocket subscribers in a process of their own
(bench/subscriptions.py starts them), recording when each frame arrived."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from api.subscriptions.wsclient import connected  # noqa: E402

DOCUMENT = """subscription($g: ID!) {
  taskGroupChanges(taskGroupId: $g) { cursor taskId task { label status { state runs { state } } } }
}"""


def client_process(url: str, groups: list[str], per_connection: int, ready: Any,
                    go: Any, out: str) -> None:
    """Subscribe (one subscription per group in `groups`, `per_connection` per connection),
    say so on `ready`, then record (receive time, cursor) for every frame until `go`
    says stop; write them to `out`."""

    async def run() -> None:
        received: list[tuple[float, str]] = []
        refused: list[str] = []
        stop = asyncio.Event()

        async def connection(chunk: list[str]) -> None:
            async with connected(url, ping_interval=None) as client:
                for n, group in enumerate(chunk):
                    await client.subscribe(str(n), DOCUMENT, g=group)
                # Each group holds one marker task: a subscription is live once its
                # snapshot (that task) has arrived.
                live = 0
                while live < len(chunk):
                    message = await client.receive()
                    if message.get("type") == "next":
                        live += 1
                    else:
                        refused.append(orjson.dumps(message).decode())
                        live += message.get("type") in ("error", "complete")
                opened.append(1)
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(client.ws.recv(), 1.0)
                    except TimeoutError:
                        continue
                    now = time.time()
                    message = orjson.loads(raw)
                    if message.get("type") == "next":
                        received.append((now, message["payload"]["data"]
                                         ["taskGroupChanges"]["cursor"]))
                    elif message.get("type") in ("error", "complete"):
                        refused.append(str(raw))

        opened: list[int] = []
        chunks = [groups[i:i + per_connection] for i in range(0, len(groups), per_connection)]
        tasks = [asyncio.create_task(connection(c)) for c in chunks]
        while len(opened) < len(chunks):
            await asyncio.sleep(0.05)
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()  # type: ignore[misc]
        # The client is the instrument: its own collector pausing must not be
        # counted as the server's latency. What exists now lives until the end.
        gc.collect()
        gc.freeze()
        ready.send(len(chunks))
        await asyncio.to_thread(go.recv)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        Path(out).write_bytes(orjson.dumps({"received": received, "refused": refused}))

    asyncio.run(run())
