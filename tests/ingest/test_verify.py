"""`tcgraph verify` against the replay upstream: a mirror that lost messages is found to
differ (exit status 1, each difference printed) and says so in `mirror`; once reconciled,
it verifies clean (exit status 0) and `mirror.verified` is true."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import asyncpg

from waiting import eventually_async
from ingest.conftest import following, prepare_queue, reached
from ingest.drift import database_now, drifting_options, dropped, reconciled_since
from ingest.test_pulse import ALL_EXCHANGES
from servers import asgi_client
from services.rabbitmq import RabbitMQ
from services.replay import Recording, declare_exchanges, publish, sentinel
from tcgraph.config import Settings
from tcgraph.ingest.reconcile import ReconcileOptions
from tcgraph.server import create_app

MIRROR = """{ mirror { verified drift lastVerified differences unrepairedGaps tasksRepaired
                       followers { name consuming } } }"""


def verify(database_url: str, upstream: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcgraph", "verify", "--database-url", database_url,
         "--upstream-root-url", upstream, *args], capture_output=True, text=True, timeout=120)


async def mirror_answer(pool: asyncpg.Pool, database_url: str) -> dict[str, Any]:
    app = create_app(Settings(database_url=database_url, allowed_hosts="tcgraph.test"),
                     database_url)
    async with asgi_client(app, pool) as client:
        answer = await client.post("/graphql", json={"query": MIRROR})
        rest = await client.get("/api/tcgraph/v1/mirror")
    body = answer.json()
    assert "errors" not in body, body
    assert rest.status_code == 200
    mirror: dict[str, Any] = body["data"]["mirror"]
    assert rest.json()["verified"] == mirror["verified"]
    return mirror


async def test_verify_finds_the_drift_of_lost_messages_and_none_once_reconciled(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    repairing = drifting_options(broker.url, upstream)
    lossy = replace(repairing, reconcile=ReconcileOptions(rate=0))  # nothing repairs it
    await prepare_queue(lossy)
    marker = sentinel(1)
    await publish(broker.url, [*dropped(recording.messages, 0.10, seed=18), marker])
    group = next(iter(recording.groups))
    async with following(database_url, lossy) as pool:
        await eventually_async(lambda: reached(pool, marker), what="the sentinel's batch")
        whole = verify(database_url, upstream, "--sample", "1000")
        one_group = verify(database_url, upstream, "--task-group", group)
        drifted = await mirror_answer(pool, database_url)
    assert whole.returncode == 1, whole.stderr
    assert "queue.status " in whole.stdout and "differences" in whole.stderr
    assert one_group.returncode == 1, one_group.stderr
    assert f"verified {len(recording.groups[group])} tasks" in one_group.stderr
    assert drifted["verified"] is False and drifted["drift"] > 0 and drifted["differences"]

    async with following(database_url, repairing) as pool:
        after = await database_now(pool)
        await eventually_async(lambda: reconciled_since(pool, after), what="a reconciliation pass")
        clean = verify(database_url, upstream, "--sample", "1000")
        fine = await mirror_answer(pool, database_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 differences" in clean.stderr
    assert fine["verified"] is True and fine["drift"] == 0 and fine["lastVerified"]
    assert fine["tasksRepaired"] > 0
    assert [f["name"] for f in fine["followers"]] == [repairing.name]


def test_verify_without_a_root_url_is_refused_with_a_clear_error(database_url: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tcgraph", "verify", "--database-url",
                           database_url], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "the deployment's root URL is required (--upstream-root-url" in done.stderr
