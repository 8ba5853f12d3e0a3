"""The delivery-rule table (tests/delivery_table.py) against RabbitMQ: the real Publisher on a
confirm channel, the real topology under a unique prefix, a message consumed from its stage
queue as a real Delivered, and what arrived read back from a queue bound to the jobs, delay,
dead-letter and events exchanges. What the recorder says must be what the broker does
(issue 14, item 2)."""

from __future__ import annotations

import aiormq
import pytest
from aio_pika.abc import AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from ops.procs import delete_prefix
from tests.delivery_table import (
    NOT_RUN,
    RETRY,
    ROWS,
    Arrived,
    Row,
    exchange_kind,
    mismatches,
    run_row,
)
from tests.harness import AMQP_URL, unique_prefix
from worker.amqp_decoding import UNDECODABLE_PROPERTIES_HEADER
from worker.broker import Delivered, Publisher, build_message, connect
from worker.constants import STAGES
from worker.topology import Names, declare_topology

pytestmark = pytest.mark.broker


class SettledDelivered(Delivered):
    """A real Delivered that also notes how it was settled."""

    def __init__(self, delivery: DeliveredMessage) -> None:
        super().__init__(delivery)
        self.settlements: list[str] = []

    async def ack(self) -> None:
        self.settlements.append("ack")
        await super().ack()

    async def nack(self, requeue: bool = True) -> None:
        self.settlements.append(f"nack(requeue={requeue})")
        await super().nack(requeue=requeue)


async def _underlay(connection: AbstractRobustConnection) -> aiormq.abc.AbstractChannel:
    channel = await connection.channel()
    return await channel.get_underlay_channel()


async def _drain(channel: aiormq.abc.AbstractChannel, queue: str) -> list[DeliveredMessage]:
    got: list[DeliveredMessage] = []
    while True:
        message = await channel.basic_get(queue, no_ack=True)
        if message.delivery_tag is None:  # get-empty
            return got
        got.append(message)


async def _run_on_broker(
    row: Row, connection: AbstractRobustConnection, names: Names, observed: str
) -> list[str]:
    """One row: feed, consume, process, read back; what differs from the row, in words."""
    cleaner = await _underlay(connection)
    for stage in STAGES:  # what an earlier row advanced into a stage queue is not this row's
        await cleaner.queue_purge(names.stage_queue(stage))
    await cleaner.close()
    feeder = await Publisher.open(connection)
    headers = dict(row.headers)
    if row.problem is not None:
        # What tolerant decoding writes for undecodable properties: the real Delivered's own
        # property check then finds the problem.
        headers[UNDECODABLE_PROPERTIES_HEADER] = "1"
    incoming = build_message(row.body, correlation_id=None, headers=headers, message_id="in-1")
    await feeder.publish("", names.stage_queue(row.stage), incoming)
    await feeder.close()

    consume = await _underlay(connection)
    got = await consume.basic_get(names.stage_queue(row.stage), no_ack=False)
    message = SettledDelivered(got)
    publisher = await Publisher.open(connection)
    if row.publish_fails:
        await publisher.close()
    calls = await run_row(row, publisher, message, names)
    await publisher.close()
    await consume.close()  # after the ack frame: what was not acked goes back to the queue

    reader = await _underlay(connection)
    arrived = [
        Arrived(
            exchange_kind(names, m.exchange or ""),
            m.routing_key or "",
            m.body,
            dict(m.header.properties.headers or {}),
            None,
        )
        for m in await _drain(reader, observed)
    ]
    problems = mismatches(row, arrived, row.body)
    left = await _drain(reader, names.stage_queue(row.stage))
    await reader.close()
    if message.settlements != [row.settled]:
        problems.append(f"settled {message.settlements}, expected {row.settled}")
    if (row.settled == "ack") != (not left):
        problems.append(f"{len(left)} message(s) left in the stage queue after {row.settled}")
    if row.script is NOT_RUN and calls:
        problems.append("the handler ran")
    return problems


async def test_the_delivery_table_holds_on_rabbitmq() -> None:
    prefix = unique_prefix()
    names = Names(prefix)
    observed = f"{prefix}.observed"
    connection = await connect(AMQP_URL, "delivery-table")
    try:
        channel = await connection.channel()
        await declare_topology(channel, names, RETRY)
        queue = await channel.declare_queue(observed, exclusive=True)
        for stage in STAGES:
            await queue.bind(names.jobs_exchange, routing_key=stage)
        await queue.bind(names.dead_exchange, routing_key="#")
        await queue.bind(names.events_exchange, routing_key="#")
        await queue.bind(names.delay_exchange, arguments={"x-match": "all"})
        failures = {
            row.name: await _run_on_broker(row, connection, names, observed) for row in ROWS
        }
        assert {name: problems for name, problems in failures.items() if problems} == {}
    finally:
        await connection.close()
        await delete_prefix(AMQP_URL, prefix, RETRY.delay_tiers_ms)
