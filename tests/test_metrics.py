"""GET /metrics: the counters move with what is served, also summed over workers.

The follower's figures move with the batches it commits: see ingest/test_pulse.py.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx

from factories import FakeTask, store
from scraped import Samples, samples, value
from servers import serve_process, serving
from tcgraph import metrics
from tcgraph.config import MULTIPROC_ENV, Settings
from tcgraph.server import create_app

QUERY = '{ task(taskId: "%s") { taskId label status { state } } }'


def scrape(http: httpx.Client) -> Samples:
    return samples(http.get("/metrics"))


async def test_counters_move_with_requests(pool: asyncpg.Pool, settings: Settings,
                                           database_url: str) -> None:
    task = FakeTask()
    await store(pool, [task])
    app = create_app(settings.with_(max_keys=2), database_url)
    with serving(app) as url, httpx.Client(base_url=url) as http:
        before = scrape(http)
        for _ in range(3):
            body = http.post("/graphql", json={"query": QUERY % task.task_id}).json()
            assert body["data"]["task"]["taskId"] == task.task_id
        refused = http.post("/graphql",
                            json={"query": '{ tasks(taskIds: ["a", "b", "c"]) { taskId } }'})
        assert refused.status_code == 400
        rest = http.post("/api/queue/v1/tasks/status", json={"taskIds": [task.task_id]})
        assert rest.status_code == 200
        after = scrape(http)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    graphql = {"route": "/graphql", "operation": "query"}
    assert moved("tcgraph_requests_total", status="200", **graphql) == 3
    assert moved("tcgraph_requests_total", route="/api/queue/v1/tasks/status",
                 operation="rest", status="200") == 1
    assert moved("tcgraph_requests_total", status="400", **graphql) == 1
    assert moved("tcgraph_request_duration_seconds_count", **graphql) == 4
    assert moved("tcgraph_request_duration_seconds_sum", **graphql) > 0
    # One task, its status: SQL statements and rows counted per request.
    assert moved("tcgraph_request_sql_statements_count", route="/graphql") == 4
    assert moved("tcgraph_request_sql_statements_sum", route="/graphql") == 3
    assert moved("tcgraph_request_sql_rows_sum", route="/graphql") == 3
    assert moved("tcgraph_limit_refusals_total", limit="max_keys") == 1
    assert moved("tcgraph_errors_total", code="LIMIT_EXCEEDED") == 1
    assert value(after, "tcgraph_pool_size") >= 1
    assert value(after, "tcgraph_pool_in_use") == 0 and value(after, "tcgraph_pool_waiting") == 0


def test_with_two_workers_the_figures_are_their_sum(database_url: str) -> None:
    sent = 40
    with serve_process("--database-url", database_url, "--demo", "--workers", "2") as served:
        def one(_: int) -> int:
            # A new connection each time, so that both workers take some.
            return httpx.post(f"{served.url}/graphql", json={"query": QUERY % "none"}).status_code

        with ThreadPoolExecutor(8) as threads:
            assert list(threads.map(one, range(sent))) == [200] * sent
        for _ in range(6):  # each scrape may be answered by either worker
            with httpx.Client(base_url=served.url) as http:
                samples = scrape(http)
            assert value(samples, "tcgraph_workers") == 2
            assert value(samples, "tcgraph_requests_total", route="/graphql",
                         operation="query", status="200") == sent
    assert served.returncode == 0, served.stderr


def test_an_operators_multiprocess_directory_is_used_and_kept(database_url: str,
                                                              tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    with serve_process("--database-url", database_url, "--demo", "--workers", "2",
                       env=env) as served:
        assert httpx.post(f"{served.url}/graphql",
                          json={"query": QUERY % "none"}).status_code == 200
        with httpx.Client(base_url=served.url) as http:
            assert value(scrape(http), "tcgraph_workers") == 2
        assert list(directory.glob("*.db")), "the workers kept their figures elsewhere"
    assert served.returncode == 0, served.stderr
    assert directory.is_dir()


def test_the_multiprocess_variable_is_named_in_one_place() -> None:
    # prometheus-client's variable: config.MULTIPROC_ENV is its one spelling.
    source = Path(metrics.__file__).parent
    naming = sorted(str(p.relative_to(source)) for p in source.rglob("*.py")
                    if f'"{MULTIPROC_ENV}"' in p.read_text())
    assert naming == ["config.py"]
