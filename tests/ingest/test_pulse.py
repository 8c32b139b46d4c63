"""The follower against a real RabbitMQ, fed the recorded messages of a real deployment.

Each test publishes the recording's messages to the real exchange names (with their
routing keys and CC headers), lets a follower with the replay upstream write them,
and checks every queue.task, queue.status, listTaskGroup and index.findTask answer
against the recorded one.
"""

from __future__ import annotations

import random

import asyncpg

from ingest.conftest import (follow_options, following, messages_written, prepare_queue,
                             wait_for)
from ingest.oracle import mismatches
from services.rabbitmq import RabbitMQ
from services.replay import Message, Recording, declare_exchanges, publish
from tcgraph.ingest.events import EXCHANGE_PREFIX, EXCHANGES

ALL_EXCHANGES = [EXCHANGE_PREFIX + name for name in EXCHANGES]


async def replay(database_url: str, broker: RabbitMQ, upstream: str, rec: Recording,
                 messages: list[Message]) -> list[str]:
    """Follow `messages` into the database; the answers that differ from the recording."""
    await declare_exchanges(broker.url, ALL_EXCHANGES)
    options = follow_options(broker.url, upstream)
    await prepare_queue(options)
    await publish(broker.url, messages)
    async with following(database_url, options) as pool:
        await wait_for(lambda: _written(pool, len(messages)), f"{len(messages)} messages")
        return await mismatches(pool, rec, database_url)


async def _written(pool: asyncpg.Pool, count: int) -> bool:
    return await messages_written(pool) >= count


async def test_the_recording_in_order_gives_every_recorded_answer(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    assert await replay(database_url, broker, upstream, recording, recording.messages) == []


async def test_shuffled_and_duplicated_messages_give_the_same_answers(
        database_url: str, broker: RabbitMQ, upstream: str, recording: Recording) -> None:
    shuffled = recording.messages + random.Random(8).sample(recording.messages, 400)
    random.Random(9).shuffle(shuffled)
    assert await replay(database_url, broker, upstream, recording, shuffled) == []
