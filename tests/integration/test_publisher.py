"""The Publisher on the real broker: confirms, the write order of publish_in_order, and errors
for messages the broker cannot route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import PublishError

from tests.harness import AMQP_URL
from worker.broker import Publication, Publisher, build_message
from worker.topology import Names

pytestmark = pytest.mark.broker


@pytest.fixture
async def connection() -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    yield connection
    await connection.close()


async def test_pairs_arrive_in_the_order_given_under_contention(
    connection: AbstractRobustConnection, prefix: str
) -> None:
    """Many concurrent callers, each writing a pair: the first of each pair is always routed
    first, though all confirms are awaited together."""
    names = Names(prefix)
    setup = await connection.channel()
    exchange = await setup.declare_exchange(names.events_exchange, "topic", durable=True)
    queue = await setup.declare_queue(f"{prefix}.order", exclusive=True)
    await queue.bind(exchange, routing_key="#")
    publisher = await Publisher.open(connection)
    pairs = 300

    async def pair(index: int) -> None:
        first, second = (
            build_message(json.dumps([index, part]).encode(), correlation_id=str(index))
            for part in (0, 1)
        )
        await publisher.publish_in_order(
            Publication(names.events_exchange, "a", first),
            Publication(names.events_exchange, "b", second),
        )

    await asyncio.gather(*(pair(index) for index in range(pairs)))
    seen: dict[int, list[int]] = {}
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            index, part = json.loads(message.body)
            seen.setdefault(index, []).append(part)
            if sum(len(parts) for parts in seen.values()) == 2 * pairs:
                break
    assert all(parts == [0, 1] for parts in seen.values())
    assert len(seen) == pairs
    await publisher.close()
    await exchange.delete()


async def test_an_unroutable_mandatory_message_raises(
    connection: AbstractRobustConnection, prefix: str
) -> None:
    names = Names(prefix)
    setup = await connection.channel()
    exchange = await setup.declare_exchange(names.jobs_exchange, "direct", durable=True)
    publisher = await Publisher.open(connection)
    message = build_message(b"{}", correlation_id="x")
    with pytest.raises(PublishError):
        await publisher.publish(names.jobs_exchange, "nobody-listens", message)
    # not mandatory (an event nobody subscribed to yet): confirmed and dropped
    await publisher.publish(names.jobs_exchange, "nobody-listens", message, mandatory=False)
    await publisher.close()
    await exchange.delete()
