"""Exchange and queue names under the prefix and their idempotent declaration (DESIGN.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import ChannelPreconditionFailed

from schemas.errors import ErrorType
from worker import constants as c
from worker.constants import STAGES, Stage
from worker.settings import RetrySettings


@dataclass(frozen=True)
class Names:
    prefix: str

    @property
    def jobs_exchange(self) -> str:
        return f"{self.prefix}.{c.JOBS_EXCHANGE}"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.{c.DEAD_EXCHANGE}"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.{c.EVENTS_EXCHANGE}"

    @property
    def delay_exchange(self) -> str:
        return f"{self.prefix}.{c.DELAY_EXCHANGE}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.{c.DEAD_LETTER_QUEUE}"

    @property
    def unrouted_exchange(self) -> str:
        return f"{self.prefix}.{c.UNROUTED_EXCHANGE}"

    @property
    def unrouted_events_queue(self) -> str:
        return f"{self.prefix}.{c.UNROUTED_EVENTS_QUEUE}"

    @property
    def broker_dead_letter_queue(self) -> str:
        return f"{self.prefix}.{c.BROKER_DEAD_LETTER_QUEUE}"

    @property
    def index_events_queue(self) -> str:
        """Declared by `scribe-db follow` only (not by the worker, nor in all_queues)."""
        return f"{self.prefix}.{c.INDEX_EVENTS_QUEUE}"

    def stage_of_queue(self, queue: object) -> Stage | None:
        """The stage whose queue this is (a broker header's value), or None."""
        text = queue.decode("utf-8", "replace") if isinstance(queue, bytes) else queue
        for stage in STAGES:
            if text == self.stage_queue(stage):
                return stage
        return None

    def stage_queue(self, stage: Stage) -> str:
        return f"{self.prefix}.{stage}"

    def delay_queue(self, delay_ms: int) -> str:
        return f"{self.prefix}.{c.DELAY_QUEUE_PREFIX}.{delay_ms}ms"

    def all_queues(self, delay_tiers_ms: tuple[int, ...]) -> list[str]:
        return [
            *(self.stage_queue(stage) for stage in STAGES),
            *(self.delay_queue(ms) for ms in delay_tiers_ms),
            self.dead_letter_queue,
            self.broker_dead_letter_queue,
            self.unrouted_events_queue,
        ]

    def all_exchanges(self) -> list[str]:
        return [
            self.jobs_exchange,
            self.dead_exchange,
            self.events_exchange,
            self.delay_exchange,
            self.unrouted_exchange,
        ]


def dead_letter_routing_key(stage: str, error_type: str) -> str:
    """<stage>.<errorType>, the key of every dead letter on <prefix>.dead (a topic exchange: a
    binding can pick a stage, an errorType or both); parse_dead_letter_routing_key reads it."""
    return f"{stage}.{error_type}"


def parse_dead_letter_routing_key(routing_key: str) -> tuple[str, str]:
    """(stage, errorType) as a dead letter's key spells them, unchecked: either may be empty or
    no known value (a key is whatever the publisher wrote); the callers check them."""
    stage, _, error_type = routing_key.partition(".")
    return stage, error_type


def broker_death_stage(headers: Mapping[str, Any], names: Names, key_stage: str) -> Stage | None:
    """The stage whose queue the broker dead-lettered a message from, or None.

    That is the queue of the newest x-death entry (the broker puts its own first) and the
    routing key's stage (the broker took the key from that queue's x-dead-letter-routing-key);
    they must agree. x-first-death-queue is not used: the broker keeps one a sender set, and
    after a retry through a delay queue it names the delay queue.
    """
    deaths = headers.get(c.BROKER_HEADER_DEATH)
    newest = deaths[0] if isinstance(deaths, list) and deaths else None
    key = next((stage for stage in STAGES if stage == key_stage), None)
    if isinstance(newest, Mapping):
        recorded = names.stage_of_queue(newest.get("queue"))
        return recorded if recorded == key else None
    return key


DEAD_LETTER_DELIVERY_LIMIT = 1_000_000


def _quorum_args(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


def _at_least_once_dead_lettering(exchange: str, **extra: Any) -> dict[str, Any]:
    # at-least-once dead-lettering requires reject-publish overflow (RabbitMQ >= 3.10).
    return _quorum_args(
        **{
            "x-dead-letter-exchange": exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            **extra,
        }
    )


def stage_queue_arguments(names: Names, stage: Stage, retry: RetrySettings) -> dict[str, Any]:
    """Redelivered more than delivery_limit times: dead-letter as <stage>.deliveryLimitExceeded."""
    return _at_least_once_dead_lettering(
        names.dead_exchange,
        **{
            "x-delivery-limit": retry.delivery_limit,
            "x-dead-letter-routing-key": dead_letter_routing_key(
                stage, ErrorType.DELIVERY_LIMIT_EXCEEDED
            ),
        },
    )


def delay_queue_arguments(names: Names, delay_ms: int) -> dict[str, Any]:
    """Per-queue TTL; expired messages go back to <prefix>.jobs keeping their routing key."""
    return _at_least_once_dead_lettering(names.jobs_exchange, **{"x-message-ttl": delay_ms})


def dead_letter_queue_arguments() -> dict[str, Any]:
    """RabbitMQ 4.0-4.2 give quorum queues a default delivery limit of 20 and then drop the
    message; inspecting dead letters requeues them, so set a limit no one will reach."""
    return _quorum_args(**{"x-delivery-limit": DEAD_LETTER_DELIVERY_LIMIT})


BROKER_DEAD_LETTER_DELIVERY_LIMIT = 20
BROKER_DEAD_LETTER_BINDING = dead_letter_routing_key("*", ErrorType.DELIVERY_LIMIT_EXCEEDED)


def broker_dead_letter_queue_arguments() -> dict[str, Any]:
    """Its messages only trigger job.failed events; one that cannot be announced in 20
    deliveries is dropped (RabbitMQ 4's default): the dead letter itself is kept elsewhere."""
    return _quorum_args(**{"x-delivery-limit": BROKER_DEAD_LETTER_DELIVERY_LIMIT})


def events_exchange_arguments(names: Names) -> dict[str, Any]:
    """Declare <prefix>.events with exactly these (a consumer declaring it first included)."""
    return {"alternate-exchange": names.unrouted_exchange}


class TopologyMismatch(Exception):
    """An existing exchange or queue was declared with other arguments (an older version)."""


async def declare_events_exchange(channel: AbstractChannel, names: Names) -> AbstractExchange:
    try:
        return await channel.declare_exchange(
            names.events_exchange,
            aio_pika.ExchangeType.TOPIC,
            durable=True,
            arguments=events_exchange_arguments(names),
        )
    except ChannelPreconditionFailed:
        raise TopologyMismatch(
            f"exchange {names.events_exchange} exists without alternate-exchange="
            f"{names.unrouted_exchange} (declared by an older version): see docs/operations.md, "
            "'Upgrading'"
        ) from None


def delay_binding_arguments(delay_ms: int) -> dict[str, Any]:
    return {"x-match": "all", c.HEADER_DELAY_TIER_MS: str(delay_ms)}


async def declare_topology(channel: AbstractChannel, names: Names, retry: RetrySettings) -> None:
    """Declare everything; safe to run from every replica at every start."""
    jobs = await channel.declare_exchange(
        names.jobs_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dead = await channel.declare_exchange(
        names.dead_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    unrouted = await channel.declare_exchange(
        names.unrouted_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    unrouted_events = await channel.declare_queue(
        names.unrouted_events_queue, durable=True, arguments=dead_letter_queue_arguments()
    )
    await unrouted_events.bind(unrouted)
    await declare_events_exchange(channel, names)
    delay = await channel.declare_exchange(
        names.delay_exchange, aio_pika.ExchangeType.HEADERS, durable=True
    )
    for stage in STAGES:
        queue = await channel.declare_queue(
            names.stage_queue(stage),
            durable=True,
            arguments=stage_queue_arguments(names, stage, retry),
        )
        await queue.bind(jobs, routing_key=stage)
    for delay_ms in retry.delay_tiers_ms:
        queue = await channel.declare_queue(
            names.delay_queue(delay_ms),
            durable=True,
            arguments=delay_queue_arguments(names, delay_ms),
        )
        await queue.bind(delay, arguments=delay_binding_arguments(delay_ms))
    dead_letters = await channel.declare_queue(
        names.dead_letter_queue, durable=True, arguments=dead_letter_queue_arguments()
    )
    await dead_letters.bind(dead, routing_key="#")
    broker_dead = await channel.declare_queue(
        names.broker_dead_letter_queue,
        durable=True,
        arguments=broker_dead_letter_queue_arguments(),
    )
    await broker_dead.bind(dead, routing_key=BROKER_DEAD_LETTER_BINDING)
