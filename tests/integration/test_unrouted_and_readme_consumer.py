"""Results never vanish (issue 13, items 2 and 8): events published before any consumer queue is
bound are kept in <prefix>.unrouted-events and drained back by scribe-unrouted; the README's
consumer code block, run as it is, handles job.completed and job.failed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from ops.procs import delete_prefix
from ops.sandbox import RunningSandbox
from ops.unrouted import count, drain
from tests.harness import (
    AMQP_URL,
    TEST_DELAY_TIERS_MS,
    make_job,
    running_worker,
    sandbox_control,
    worker_env,
)
from worker.broker import Publisher, build_message
from worker.topology import Names, declare_events_exchange

pytestmark = pytest.mark.broker

README = Path(__file__).resolve().parents[2] / "README.md"


async def submit(
    channel: aio_pika.abc.AbstractChannel, names: Names, body: bytes, job_id: str
) -> None:
    message = build_message(body, correlation_id=job_id)
    await Publisher(channel).publish(names.jobs_exchange, "transcribe", message)


async def wait_for_count(channel: aio_pika.abc.AbstractChannel, names: Names, at_least: int) -> int:
    for _ in range(200):
        found = await count(channel, names)
        if found >= at_least:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} unrouted events")


async def test_events_without_a_bound_queue_are_kept_and_drained(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    names = Names(prefix)
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_STAGE_EVENTS="none")
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection, running_worker(env):
        channel = await connection.channel()
        job = make_job(audio_file)
        await submit(channel, names, job.to_wire(), str(job.job_id))
        assert await wait_for_count(channel, names, 1) == 1  # job.completed, nobody bound
        results = await channel.declare_queue(exclusive=True)
        await results.bind(names.events_exchange, routing_key="job.completed")
        report = await drain(channel, names)
        assert (report.moved, report.still_unrouted) == (1, 0)
        delivered = None
        for _ in range(100):
            delivered = await results.get(fail=False, no_ack=True)
            if delivered is not None:
                break
            await asyncio.sleep(0.05)
        assert delivered is not None
        assert delivered.routing_key == "job.completed"
        assert str(job.job_id) in delivered.body.decode()
        assert await count(channel, names) == 0


async def test_drain_never_loops_on_events_that_still_have_no_queue(prefix: str) -> None:
    names = Names(prefix)
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        from worker.settings import Settings
        from worker.topology import declare_topology

        retry = Settings.from_env({"SCRIBE_DELAY_TIERS_MS": TEST_DELAY_TIERS_MS}).retry
        await declare_topology(channel, names, retry)
        publisher = Publisher(channel)
        for key in ("job.failed", "job.completed"):
            await publisher.publish(
                names.events_exchange,
                key,
                build_message(b"{}", correlation_id=None),
                mandatory=False,
            )
        await wait_for_count(channel, names, 2)
        report = await drain(channel, names)
        assert (report.moved, report.still_unrouted) == (2, 2)
        assert await wait_for_count(channel, names, 2) == 2  # kept, not lost, not doubled


def readme_consumer_code() -> str:
    text = README.read_text()
    blocks: list[str] = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    [block] = [b for b in blocks if b.startswith("# consume our events")]
    return block


async def test_the_readme_consumer_handles_completed_and_failed_events(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """The README's code block, executed as it is, before any worker has declared anything."""
    namespace: dict[str, Any] = {}
    exec(compile(readme_consumer_code(), "README.md", "exec"), namespace)
    received: list[Any] = []
    arrived = asyncio.Event()

    async def handle(event: Any) -> None:
        received.append(event)
        arrived.set()

    queue_name = f"{prefix}.billing-events"
    consumer = asyncio.create_task(
        namespace["consume_events"](AMQP_URL, prefix, queue_name, handle)
    )
    try:
        await asyncio.sleep(0.5)  # the consumer declared the exchange and its queue first
        assert not consumer.done()
        env = worker_env(prefix, sandbox.base_url, storage_root)
        rule = {
            "endpoint": "invox.summary",
            "kind": "http_error",
            "status": 400,
            "errorType": "invalidTemplate",
            "times": 1,
        }
        await sandbox_control(sandbox.base_url, "faults", [rule])
        connection = await aio_pika.connect_robust(AMQP_URL)
        async with connection, running_worker(env):
            channel = await connection.channel()
            failing, completing = make_job(audio_file), make_job(audio_file)
            await submit(channel, Names(prefix), failing.to_wire(), str(failing.job_id))
            await submit(channel, Names(prefix), completing.to_wire(), str(completing.job_id))
            for _ in range(200):
                if len(received) >= 2:
                    break
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 20)
        kinds = {str(event.job_id): event.type for event in received}
        assert kinds == {str(failing.job_id): "job.failed", str(completing.job_id): "job.completed"}
        assert not consumer.done()
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        tiers = tuple(int(t) for t in TEST_DELAY_TIERS_MS.split(","))
        await delete_prefix(AMQP_URL, prefix, tiers, extra_queues=(queue_name,))


async def test_an_events_exchange_from_an_older_version_fails_loudly(prefix: str) -> None:
    from worker.topology import TopologyMismatch

    names = Names(prefix)
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(
            names.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        with pytest.raises(TopologyMismatch, match="alternate-exchange"):
            await declare_events_exchange(await connection.channel(), names)
