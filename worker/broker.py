"""AMQP plumbing: one robust connection, a confirm channel for publishing, a channel per stage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustConnection,
    HeadersType,
)
from aio_pika.exceptions import AMQPError

from worker.topology import Names

PUBLISH_TIMEOUT_S = 30.0

log = structlog.get_logger("scribe.broker")


def build_message(
    body: bytes,
    *,
    correlation_id: str | None,
    headers: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    content_type: str = "application/json",
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=correlation_id,
        message_id=message_id,
        headers=dict(headers or {}),
        timestamp=datetime.now(UTC),
    )


class Publisher:
    """Publishes with publisher confirms; unroutable mandatory messages raise instead of vanishing.

    Every call returns only after the broker has confirmed the message.
    """

    def __init__(self, channel: AbstractChannel, names: Names) -> None:
        self._channel = channel
        self._names = names
        self._exchanges: dict[str, AbstractExchange] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, connection: AbstractRobustConnection, names: Names) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, names)

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            async with self._lock:
                exchange = await self._channel.get_exchange(name, ensure=False)
                self._exchanges[name] = exchange
        return exchange

    async def publish(
        self,
        exchange_name: str,
        routing_key: str,
        message: aio_pika.Message,
        *,
        mandatory: bool = True,
    ) -> None:
        exchange = await self._exchange(exchange_name)
        await exchange.publish(
            message, routing_key=routing_key, mandatory=mandatory, timeout=PUBLISH_TIMEOUT_S
        )

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()


def copy_headers(headers: HeadersType | None) -> dict[str, Any]:
    """Headers of a consumed message, minus the broker's own bookkeeping."""
    skip = {"x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason"}
    skip |= {
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
    return {key: value for key, value in (headers or {}).items() if key not in skip}


async def connect(
    amqp_url: str, name: str, give_up_after_s: float = 60.0
) -> AbstractRobustConnection:
    """A robust connection: it reconnects and restores channels, queues and consumers.

    The first connection is retried too (a broker restarting while workers start), up to
    give_up_after_s; then the error propagates and the process exits for its supervisor.
    """
    deadline = time.monotonic() + give_up_after_s
    while True:
        try:
            return await aio_pika.connect_robust(
                amqp_url, client_properties={"connection_name": name}
            )
        except (OSError, AMQPError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("broker.connect_failed", error=type(exc).__name__, retry_in_s=1.0)
            await asyncio.sleep(1.0)
