"""scribe-unrouted: count and drain <prefix>.unrouted-events.

<prefix>.events has an alternate exchange: an event published while no consumer queue was bound
for its routing key (a job that completed before its consumers were set up) is kept in
<prefix>.unrouted-events instead of being dropped. Once the consumers are bound, `drain` moves
each kept event back to <prefix>.events, unchanged (body, routing key, correlation_id,
message_id, headers), with publisher confirms, acking the kept copy only after the confirm.

An event that comes back (still no queue for its routing key) is recognised by its message_id,
put back, and ends the run: `drain` never loops. Exit codes: 0 all moved (or nothing to move),
1 some are still unrouted or the broker failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError

from worker import amqp_decoding
from worker.broker import Outgoing, Publisher, build_message, carried_headers
from worker.errors import SettingsError
from worker.payload_crypto import seal_headers
from worker.settings import Settings
from worker.topology import Names

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class DrainReport:
    moved: int
    still_unrouted: int

    def line(self) -> str:
        return f"moved={self.moved} still_unrouted={self.still_unrouted}"


async def count(channel: AbstractChannel, names: Names) -> int:
    """The queue's message count (queue.declare-ok, passive; asked anew each time)."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(names.unrouted_events_queue, passive=True)
    return declared.message_count or 0


async def drain(channel: AbstractChannel, names: Names, limit: int | None = None) -> DrainReport:
    """Move kept events back to <prefix>.events, at most `limit`, each one at most once.

    An event that comes back in this run (still no queue for its routing key) is held unacked
    until the queue is empty, so it is not taken again, and then handed back: it stays kept.
    """
    queue = await channel.declare_queue(names.unrouted_events_queue, passive=True)
    publisher = Publisher(channel)
    moved: set[str] = set()
    returned: list[AbstractIncomingMessage] = []
    try:
        while limit is None or len(moved) < limit:
            message = await queue.get(fail=False)
            if message is None:
                break
            identity = _identity(message)
            if identity in moved:
                returned.append(message)
                continue
            await publisher.publish(
                names.events_exchange, message.routing_key or "", _copy(message), mandatory=False
            )
            await message.ack()
            moved.add(identity)
    finally:
        for message in returned:
            await message.nack(requeue=True)
    return DrainReport(len(moved), len(returned))


def _identity(message: AbstractIncomingMessage) -> str:
    """Events carry a message_id of their own; anything else is known by its content."""
    if message.message_id:
        return f"id:{message.message_id}"
    digest = hashlib.sha256(message.body)
    digest.update((message.routing_key or "").encode())
    return f"sha256:{digest.hexdigest()}"


def _copy(message: AbstractIncomingMessage) -> Outgoing:
    """The event as it was; a sealed one (SCRIBE_ENCRYPT_EVENTS) keeps its seal headers, its
    correlation_id and routing key being what its tag is bound to."""
    return build_message(
        message.body,
        correlation_id=message.correlation_id,
        headers={**carried_headers(message.headers), **seal_headers(message.headers)},
        message_id=message.message_id,
        content_type=message.content_type or "application/json",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scribe-unrouted", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("count", help="how many events are kept")
    drain_parser = commands.add_parser("drain", help="move kept events back to <prefix>.events")
    drain_parser.add_argument("--limit", type=int, default=None, help="move at most N")
    return parser


async def _run(arguments: argparse.Namespace, settings: Settings) -> int:
    amqp_decoding.install()
    names = Names(settings.prefix)
    connection = await aio_pika.connect(settings.amqp_url.value)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        if arguments.command == "count":
            print(json.dumps({"unroutedEvents": await count(channel, names)}))
            return EXIT_OK
        report = await drain(channel, names, arguments.limit)
        print(report.line())
        return EXIT_OK if report.still_unrouted == 0 else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"scribe-unrouted: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(arguments, settings))
    except (AMQPError, OSError) as exc:
        print(f"scribe-unrouted: broker error ({type(exc).__name__})", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
