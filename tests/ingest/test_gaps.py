"""Gaps noticed and repaired, against a real RabbitMQ and the replay upstream: the
follower's queue deleted under it (with the messages in it), and the follower stopped
while its queue was deleted and messages were published. Each ends with every answer
equal to the recorded one, and the gap recorded, with its reason, and repaired.

Points of failure are chosen by events (committed batches, the sentinel's batch, the
gap's row), never by time.
"""

from __future__ import annotations

import asyncpg
from prometheus_client import REGISTRY

from waiting import eventually_async
from ingest.conftest import batches_written, following, prepare_queue, reached
from ingest.drift import delete_queue, drifting_options, gap_recorded, publish_and_settle
from ingest.oracle import mismatches
from ingest.test_pulse import ALL_EXCHANGES
from services.rabbitmq import RabbitMQ
from services.replay import Recording, declare_exchanges, publish, sentinel
from tcgraph.ingest import gaps
from tcgraph.ingest.gaps import task_groups, task_runs
from tcgraph.ingest.mirror import Delivery


def gaps_counted(reason: str) -> float:
    return REGISTRY.get_sample_value("tcgraph_mirror_gaps_total", {"reason": reason}) or 0.0


async def gap_rows(conn: asyncpg.Pool | asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT reason, detail, follower, started <= ended AS ordered, "
        "repaired_at FROM mirror_gaps ORDER BY id")
    return rows


async def test_the_queue_deleted_mid_stream_is_a_gap_the_follower_repairs(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = drifting_options(broker.url, upstream, batch_size=20)
    await prepare_queue(options)
    third = len(recording.messages) // 3
    before = gaps_counted(gaps.QUEUE_DECLARED_ANEW)
    await publish(broker.url, recording.messages[:2 * third])
    async with following(database_url, options) as pool:
        await eventually_async(lambda: _batches(pool, 3), what="three committed batches")
        # The messages still in the queue (or prefetched, unacknowledged) go with it.
        await delete_queue(broker.url, options.pulse.queue_name)
        await eventually_async(lambda: gap_recorded(pool, gaps.QUEUE_DECLARED_ANEW),
                      what="the gap, once the queue is declared anew")
        await publish_and_settle(pool, broker.url, recording.messages[2 * third:], 1)
        assert await mismatches(pool, recording, database_url) == []
        rows = await gap_rows(pool)
    assert [r["reason"] for r in rows if r["reason"] != gaps.RUNS_SKIPPED] == [
        gaps.QUEUE_DECLARED_ANEW]
    gap = next(r for r in rows if r["reason"] == gaps.QUEUE_DECLARED_ANEW)
    assert gaps.CONSUMER_CANCELLED in gap["detail"]  # the broker said so first
    assert gap["ordered"] and gap["repaired_at"] is not None
    assert gap["follower"] == options.name
    assert gaps_counted(gaps.QUEUE_DECLARED_ANEW) - before == 1


async def _batches(pool: asyncpg.Pool, count: int) -> bool:
    return await batches_written(pool) >= count


async def test_a_follower_stopped_for_the_middle_third_while_its_queue_was_deleted_repairs_it(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = drifting_options(broker.url, upstream)
    await prepare_queue(options)
    third = len(recording.messages) // 3
    first = sentinel(1)
    await publish(broker.url, [*recording.messages[:third], first])
    async with following(database_url, options) as pool:
        await eventually_async(lambda: reached(pool, first), what="the first third's batch")
    await delete_queue(broker.url, options.pulse.queue_name)
    # Published with no queue bound: lost, as while pulse had deleted the queue.
    await publish(broker.url, recording.messages[third:2 * third])
    async with following(database_url, options) as pool:
        await eventually_async(lambda: gap_recorded(pool, gaps.QUEUE_DECLARED_ANEW),
                      what="the gap, once the queue is declared anew")
        await publish_and_settle(pool, broker.url, recording.messages[2 * third:], 2)
        assert await mismatches(pool, recording, database_url) == []
        rows = await gap_rows(pool)
        state = await pool.fetchrow("SELECT consuming, messages FROM mirror_followers "
                                    "WHERE name = $1", options.name)
    gap = next(r for r in rows if r["reason"] == gaps.QUEUE_DECLARED_ANEW)
    assert gap["repaired_at"] is not None and gap["ordered"]
    assert state is not None  # the follower's heartbeat row


def _delivery(routing_key: str) -> Delivery:
    return Delivery(exchange="exchange/taskcluster-queue/v1/task-pending",
                    routing_key=routing_key, body=b"{}")


def test_run_ids_and_groups_are_read_from_routing_keys() -> None:
    deliveries = [
        _delivery("primary.AAAAAAAAAAAAAAAAAAAAAA.0._._.prov.wt.sched.GGGGGGGGGGGGGGGGGGGGGG._"),
        _delivery("primary.AAAAAAAAAAAAAAAAAAAAAA.2.wg.wi.prov.wt.sched.GGGGGGGGGGGGGGGGGGGGGG._"),
        _delivery("primary.BBBBBBBBBBBBBBBBBBBBBB._._._.prov.wt.sched.HHHHHHHHHHHHHHHHHHHHHH._"),
        _delivery("primary.KKKKKKKKKKKKKKKKKKKKKK.sched._"),  # task-group-resolved
    ]
    assert task_runs(deliveries) == {"AAAAAAAAAAAAAAAAAAAAAA": 2}
    assert task_groups(deliveries) == {"GGGGGGGGGGGGGGGGGGGGGG", "HHHHHHHHHHHHHHHHHHHHHH",
                                       "KKKKKKKKKKKKKKKKKKKKKK"}
