"""`python -m ops.bench.floor_worker`: the raw-broker floor, a minimal aio-pika pipeline.

Four durable quorum queues (the same arguments as the worker's stage queues), and per message:
consume -> stamp the time -> publish the next message with a publisher confirm -> ack. Between
transcribe and poll the message passes through a per-queue-TTL delay queue, as the worker's poll
hop does, so both pipelines make the same broker hops. The last stage publishes the message to
`<prefix>.events` as `job.completed`. Prints one JSON ready line, runs until SIGTERM.

`--raw`: the same four hops and delay hop with none of the topology: the default exchange only
(no direct, topic or headers exchanges, no bindings), plain quorum queues `<prefix>.<stage>`
without the stage queues' dead-letter arguments, a per-queue-TTL queue `<prefix>.delay`
dead-lettering to the poll queue, and job.completed sent to the plain queue `<prefix>.completed`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from worker import constants as c
from worker.constants import STAGES, Stage
from worker.settings import Settings
from worker.topology import Names, events_exchange_arguments, stage_queue_arguments

NEXT: dict[Stage, Stage] = {"transcribe": "poll", "poll": "summarize", "summarize": "note"}
DELAY_HEADER = "bench-delay-ms"


class Floor:
    def __init__(
        self, amqp_url: str, prefix: str, prefetch: int, delay_ms: int, events: bool = False
    ) -> None:
        self._events = events
        self._amqp_url = amqp_url
        self._names = Names(prefix)
        self._prefetch = prefetch
        self._delay_ms = delay_ms
        self._retry = Settings.from_env({"SCRIBE_PREFIX": prefix}).retry
        self._connection: AbstractRobustConnection | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    async def start(self) -> None:
        names = self._names
        self._connection = await aio_pika.connect_robust(self._amqp_url)
        setup = await self._connection.channel()
        jobs = await setup.declare_exchange(names.jobs_exchange, "direct", durable=True)
        await setup.declare_exchange(names.dead_exchange, "topic", durable=True)
        await setup.declare_exchange(
            names.events_exchange, "topic", durable=True, arguments=events_exchange_arguments(names)
        )
        delay = await setup.declare_exchange(names.delay_exchange, "headers", durable=True)
        for stage in STAGES:
            queue = await setup.declare_queue(
                names.stage_queue(stage),
                durable=True,
                arguments=stage_queue_arguments(names, stage, self._retry),
            )
            await queue.bind(jobs, routing_key=stage)
        if self._delay_ms:
            delay_queue = await setup.declare_queue(
                names.delay_queue(self._delay_ms),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": self._delay_ms,
                    "x-dead-letter-exchange": names.jobs_exchange,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
            binding: dict[str, Any] = {"x-match": "all", DELAY_HEADER: str(self._delay_ms)}
            await delay_queue.bind(delay, arguments=binding)
        await setup.close()
        publish_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        for name in (names.jobs_exchange, names.delay_exchange, names.events_exchange):
            self._exchanges[name] = await publish_channel.get_exchange(name, ensure=False)
        for stage in STAGES:
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.declare_queue(
                names.stage_queue(stage),
                durable=True,
                arguments=stage_queue_arguments(names, stage, self._retry),
            )
            await queue.consume(self._handler(stage))

    def _handler(self, stage: Stage) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        names = self._names

        async def on_message(message: AbstractIncomingMessage) -> None:
            body = json.loads(message.body)
            body["t"][stage] = time.time()
            body["stage"] = NEXT.get(stage, "done")
            headers: dict[str, Any] = {}
            if stage == "note":
                exchange, key = names.events_exchange, c.EVENT_COMPLETED
            elif stage == "transcribe" and self._delay_ms:
                exchange, key = names.delay_exchange, NEXT[stage]
                headers[DELAY_HEADER] = str(self._delay_ms)
            else:
                exchange, key = names.jobs_exchange, NEXT[stage]
            out = aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=message.correlation_id,
                headers=headers,
            )
            if self._events:  # like the worker's job.stage.<stage>: one more confirmed publish
                event = json.dumps({"jobId": body["jobId"], "stage": stage, "t": time.time()})
                await self._exchanges[names.events_exchange].publish(
                    aio_pika.Message(event.encode(), correlation_id=message.correlation_id),
                    routing_key=f"{c.EVENT_STAGE_PREFIX}{stage}",
                    mandatory=False,
                    timeout=30,
                )
            await self._exchanges[exchange].publish(
                out, routing_key=key, mandatory=stage != "note", timeout=30
            )
            await message.ack()

        return on_message

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()


def raw_queue(prefix: str, name: str) -> str:
    """`<prefix>.<name>`: a raw-floor queue (a stage, "delay" or "completed")."""
    return f"{prefix}.{name}"


class RawFloor:
    """The floor without the topology: what a plain aio-pika pipeline pays for the same hops."""

    def __init__(self, amqp_url: str, prefix: str, prefetch: int, delay_ms: int) -> None:
        self._amqp_url = amqp_url
        self._prefix = prefix
        self._prefetch = prefetch
        self._delay_ms = delay_ms
        self._connection: AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self._amqp_url)
        setup = await self._connection.channel()
        plain = {"x-queue-type": "quorum"}
        for name in (*STAGES, "completed"):
            await setup.declare_queue(raw_queue(self._prefix, name), durable=True, arguments=plain)
        if self._delay_ms:
            await setup.declare_queue(
                raw_queue(self._prefix, "delay"),
                durable=True,
                arguments={
                    **plain,
                    "x-message-ttl": self._delay_ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": raw_queue(self._prefix, "poll"),
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        await setup.close()
        publish_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        exchange = publish_channel.default_exchange
        for stage in STAGES:
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.get_queue(raw_queue(self._prefix, stage), ensure=False)
            await queue.consume(self._handler(stage, exchange))

    def _target(self, stage: Stage) -> str:
        if stage == "note":
            return raw_queue(self._prefix, "completed")
        if stage == "transcribe" and self._delay_ms:
            return raw_queue(self._prefix, "delay")
        return raw_queue(self._prefix, NEXT[stage])

    def _handler(
        self, stage: Stage, exchange: AbstractExchange
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        target = self._target(stage)

        async def on_message(message: AbstractIncomingMessage) -> None:
            body = json.loads(message.body)
            body["t"][stage] = time.time()
            body["stage"] = NEXT.get(stage, "done")
            out = aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=message.correlation_id,
            )
            await exchange.publish(out, routing_key=target, mandatory=True, timeout=30)
            await message.ack()

        return on_message

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()


async def _run(args: argparse.Namespace) -> None:
    floor: Floor | RawFloor
    if args.raw:
        floor = RawFloor(args.amqp_url, args.prefix, args.prefetch, args.delay_ms)
    else:
        floor = Floor(args.amqp_url, args.prefix, args.prefetch, args.delay_ms, args.events)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await floor.start()
    try:
        print(json.dumps({"event": "ready", "pid": os.getpid()}))
        sys.stdout.flush()
        await stop.wait()
    finally:
        await floor.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="floor_worker", description=__doc__)
    parser.add_argument("--amqp-url", default=c.DEFAULT_AMQP_URL)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--prefetch", type=int, default=c.DEFAULT_PREFETCH)
    parser.add_argument("--delay-ms", type=int, default=1, help="0: no delay hop before poll")
    parser.add_argument("--events", action="store_true", help="publish a progress event per stage")
    parser.add_argument("--raw", action="store_true", help="default exchange and plain queues only")
    asyncio.run(_run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
