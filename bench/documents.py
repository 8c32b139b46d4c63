"""CPU per request spent reading a document (parse, checks, validation), in process.

`python -m bench.documents [N]` runs each document N + 1 times through the
schema of default settings and prints the CPU time (`time.process_time`) of the
first request and the mean of the N after it (default 50), with the load
average. The operation run is
`{ __typename }`, so no database is needed and the figure is the cost of the
document itself. Run it with PYTHONPATH pointing at another checkout's `src`
to measure that version (the figures in docs/performance.md compare two).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import orjson

from tcgraph.api.context import Context
from tcgraph.api.schema import build_schema
from tcgraph.config import Settings

_RUN = "query Run { __typename }"


def many_operations() -> str:
    """The reported attack's shape: 700 small operations, 62 KB."""
    return "\n".join([_RUN, *(
        f'query Q{i} {{ task(taskId: "NiOphb3AQf65nOJVfFZs7g") {{ taskId label '
        f'status {{ state }} }} }}' for i in range(700))])


def resolve_inline() -> str:
    """tcgraph.client's decision-task document with its 10,000 keys written inline: the
    largest legitimate document."""
    paths = [f"gecko.cache.level-3.toolchain.{n:064x}" for n in range(5_000)]
    labels = [f"test-linux64/opt-mochitest-{n}" for n in range(4_000)]
    ids = ["NiOphb3AQf65nOJVfFZs7g"] * 1_000
    return (f"query Resolve($filter: TaskFilter) {{ "
            f"indexedTasks(indexPaths: {orjson.dumps(paths).decode()}) "
            f"{{ taskId task {{ status {{ ...Status }} }} }} "
            f"labels(labels: {orjson.dumps(labels).decode()}, filter: $filter) "
            f"{{ latest {{ status {{ ...Status }} }} }} "
            f"statuses(taskIds: {orjson.dumps(ids).decode()}) {{ ...Status }} }} "
            "fragment Status on TaskStatus { taskId state expires }")


def inline_keys() -> str:
    """`resolve_inline`, with the operation the bench runs beside it."""
    return f"{_RUN} {resolve_inline()}"


async def cpu_per_request(document: str, requests: int) -> tuple[float, float]:
    """CPU seconds of the first request of `document` on a fresh schema (as a server
    process sees a document the first time), and the mean of the `requests` after it."""
    settings = Settings()
    schema = build_schema(settings)
    times = []
    for _ in range(requests + 1):
        context = Context.create(None, settings)  # no SQL runs
        start = time.process_time()
        await schema.execute(document, context_value=context, operation_name="Run")
        times.append(time.process_time() - start)
    return times[0], sum(times[1:]) / requests


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, document in (("700 operations", many_operations()),
                           ("10,000 keys inline", inline_keys())):
        first, then = asyncio.run(cpu_per_request(document, requests))
        print(f"{name} ({len(document):,} bytes): first request {first * 1000:.1f} ms CPU, "
              f"then {then * 1000:.2f} ms per request (mean of {requests})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
