"""Publishes in flight when their node dies are retried once the connection is back
(worker/broker.py Publisher on a worker/failover.py connection): confirmed, not raised.

A private node (ops/rabbit_node.py, never the machine's node on 5672) is SIGKILLed while a batch
of publishes waits for its confirms, then started again: every publish returns, and the queue
(durable) holds at least every message (some twice: at-least-once).
"""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
import structlog

from ops.cluster import kill_node
from ops.rabbit_node import private_node
from worker.broker import Publisher, build_message
from worker.failover import connect_failover

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]

MESSAGES = 200
QUEUE = "publish-retry"


async def test_publishes_lost_with_their_node_are_confirmed_after_it_is_back() -> None:
    async with private_node("scribe-test-retry") as node:
        connection = await connect_failover([node.amqp_url])
        try:
            channel = await connection.channel()
            await channel.declare_queue(QUEUE, durable=True)
            publisher = await Publisher.open(connection)
            body = b"{}" * 20_000  # large enough that the kill finds confirms outstanding
            with structlog.testing.capture_logs() as logs:
                publishes = [
                    asyncio.create_task(
                        publisher.publish("", QUEUE, build_message(body, correlation_id=None))
                    )
                    for _ in range(MESSAGES)
                ]
                await asyncio.sleep(0.05)
                kill_node(node)
                await asyncio.sleep(1.0)
                await node.start()
                await asyncio.wait_for(asyncio.gather(*publishes), 90)
            assert "broker.publish_retried" in [entry["event"] for entry in logs]
            # A plain channel of its own: the robust one answers a passive declare from memory.
            async with await aio_pika.connect(node.amqp_url) as counting:
                counter = await counting.channel()
                declared = await counter.declare_queue(QUEUE, durable=True, passive=True)
                assert (declared.declaration_result.message_count or 0) >= MESSAGES
        finally:
            await connection.close()
