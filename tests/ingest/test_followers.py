"""Several `tcgraph follow` processes on one queue (competing consumers) writing one
database: the same final state as one follower, with one of them killed -9 in the middle
of a batch (written, not committed) and another added meanwhile, without a gap.

The followers do not reconcile here (--reconcile-rate 0): the messages alone must give
every recorded answer. The kill point is a checkpoint (the k-th batch written in that
process, TCGRAPH_TEST_STOP_AT), the end the marker's row and an empty queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aio_pika
import asyncpg
import orjson
import pytest

from waiting import eventually_async
from ingest.conftest import follow_options, prepare_queue
from ingest.oracle import mismatches
from ingest.test_pulse import ALL_EXCHANGES
from services.rabbitmq import RabbitMQ
from services.replay import Message, Recording, declare_exchanges, publish
from tcgraph.config import Settings
from tcgraph.ingest import gaps
from tcgraph.store.pool import open_pool

BATCH = 20

# Not of its exchange's shape: set aside in mirror_rejected under its routing key,
# which tells the test that some follower has committed it.
MARKER = Message("exchange/taskcluster-queue/v1/task-pending", "primary.followers-marker", (),
                 orjson.dumps({"version": 1}))


def start_follower(database_url: str, broker: RabbitMQ, upstream: str, queue: str, name: str,
                   log: Path, stop_at: str | None = None) -> subprocess.Popen[bytes]:
    """`tcgraph follow` named `name`, in its own process group."""
    env = dict(os.environ)
    env.pop("TCGRAPH_TEST_STOP_AT", None)
    if stop_at:
        env["TCGRAPH_TEST_STOP_AT"] = stop_at
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tcgraph", "follow", "--database-url", database_url,
             "--root-url", upstream, "--pulse-url", broker.url, "--queue-name", queue,
             "--follower-name", name, "--no-backfill", "--batch-size", str(BATCH),
             "--reconcile-rate", "0", "--verify-every", "0"],
            stdout=out, stderr=out, start_new_session=True, env=env)


def stopped(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process stopped itself at its checkpoint (SIGSTOP)."""
    found = os.waitid(os.P_PID, process.pid, os.WSTOPPED | os.WNOHANG | os.WNOWAIT)
    return found is not None and found.si_code == os.CLD_STOPPED


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


async def queue_ready(url: str, name: str) -> int:
    """Messages waiting in the queue, not delivered to any consumer."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


@pytest.mark.parametrize("count", [2, 3])
async def test_followers_on_one_queue_give_the_recorded_answers_with_one_killed_mid_batch(
        count: int, database_url: str, broker: RabbitMQ, upstream: str, recording: Recording,
        tmp_path: Path) -> None:
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = follow_options(broker.url, upstream)
    queue = options.pulse.queue_name
    await prepare_queue(options)
    await publish(broker.url, [*recording.messages, MARKER])
    log = tmp_path / "log"
    victim = start_follower(database_url, broker, upstream, queue, "victim", log,
                            stop_at="batch-written#3")
    others = [start_follower(database_url, broker, upstream, queue, f"follower-{i}", log)
              for i in range(1, count)]
    conn = await asyncpg.connect(database_url)
    try:
        async def victim_stopped() -> bool:
            return stopped(victim)

        # Its third batch is written and not committed; then it dies.
        await eventually_async(victim_stopped, what="the victim at its third batch")
        kill(victim)
        # A follower added meanwhile: no gap, since the others kept consuming.
        others.append(start_follower(database_url, broker, upstream, queue, "added", log))

        async def drained() -> bool:
            marked = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM mirror_rejected WHERE routing_key = $1)",
                MARKER.routing_key)
            return bool(marked) and await queue_ready(broker.url, queue) == 0

        await eventually_async(drained, what="the marker committed and the queue drained")
        pool = await open_pool(database_url, Settings(pool_min_size=1, pool_max_size=2))
        try:
            # The survivors may still hold the victim's redelivered batch for a moment.
            async def agrees() -> bool:
                return await mismatches(pool, recording, database_url) == []

            await eventually_async(agrees, what="every answer equal to the recording's")
        finally:
            await pool.close()
        names = {r["name"] for r in await conn.fetch("SELECT name FROM mirror_followers")}
        reasons = {r["reason"] for r in await conn.fetch("SELECT reason FROM mirror_gaps")}
    finally:
        await conn.close()
        for process in others:
            kill(process)
        if victim.poll() is None:
            kill(victim)
    assert {"added", *(f"follower-{i}" for i in range(1, count))} <= names
    # Shuffled between consumers, a message may name a run before the one before it
    # is stored (a runs-skipped check); no follower stopped consuming the queue.
    assert reasons <= {gaps.RUNS_SKIPPED}
