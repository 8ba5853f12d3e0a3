"""How many dead letters wait, and how long the oldest has (issue 19, item 7: retention).

A dead letter is patient data kept in the broker; the alert ScribeOldDeadLetters
(ops/prometheus/alerts.yml) fires when the oldest is older than the retention an operator
promised, so that it is replayed or purged (`scribe-dlq purge --older-than 7d`).

The count comes from a passive queue.declare (free). The age needs the head of
<prefix>.dead-letters: basic.get, read its death time, basic.nack(requeue) (a quorum queue
serves returned messages first, so the head stays the head). Each peek adds one to the
message's delivery count, so it is rationed: new dead letters join the tail and leave the head
as it was, so the head is read again only when the count went down (a replay or a purge took
some) or REPEEK_EVERY_S after the last read; between reads the age grows from the death time
last read. At one read an hour, the queue's delivery limit (topology.DEAD_LETTER_DELIVERY_LIMIT,
a million) is a century away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.commands import Basic

from worker import constants as c
from worker.metrics import Metrics

log = structlog.get_logger("scribe.dead_letter_age")

PROBE_EVERY_S = 60.0
REPEEK_EVERY_S = 3600.0
GET_TIMEOUT_S = 30.0
_ERRORS = (AMQPError, ConnectionError, TimeoutError, ChannelInvalidStateError)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def death_time(headers: Mapping[str, Any] | None, timestamp: object) -> datetime | None:
    """When a dead letter died: the worker's x-last-failure-at, else the broker's newest
    x-death time, else the message's AMQP timestamp (set when the worker published it)."""
    headers = headers or {}
    last = headers.get(c.HEADER_LAST_FAILURE_AT)
    if isinstance(last, str):
        with contextlib.suppress(ValueError):
            return _aware(datetime.fromisoformat(last))
    deaths = headers.get(c.BROKER_HEADER_DEATH)
    times = [
        death.get("time")
        for death in (deaths if isinstance(deaths, list) else [])
        if isinstance(death, Mapping)
    ]
    moments = [_aware(moment) for moment in times if isinstance(moment, datetime)]
    if moments:
        return max(moments)
    return _aware(timestamp) if isinstance(timestamp, datetime) else None


class DeadLetterAge:
    """Sets scribe_dead_letters and scribe_oldest_dead_letter_age_seconds every PROBE_EVERY_S."""

    def __init__(self, connection: AbstractConnection, queue: str, metrics: Metrics) -> None:
        self._connection = connection
        self._queue = queue
        self._metrics = metrics
        self._channel: AbstractChannel | None = None
        self._count: int | None = None
        self._head_died_at: datetime | None = None
        self._peeked_at = 0.0
        self._failing = False

    async def run(self) -> None:
        while True:
            try:
                await self.probe()
                self._failing = False
            except _ERRORS as exc:
                if not self._failing:  # one line per outage, not one per minute
                    log.warning("dead_letter_age.failed", error=type(exc).__name__)
                self._failing = True
                self._channel = None
            await asyncio.sleep(PROBE_EVERY_S)

    async def probe(self) -> None:
        channel = await self._open()
        declared = await channel.declare_queue(self._queue, passive=True)
        count = int(declared.declaration_result.message_count or 0)
        now = time.monotonic()
        if count == 0:
            self._head_died_at = None
        elif self._count is None or count < self._count or now - self._peeked_at >= REPEEK_EVERY_S:
            self._head_died_at = await self._peek(channel)
            self._peeked_at = now
        self._count = count
        self._metrics.dead_letters.set(count)
        age_s = 0.0
        if self._head_died_at is not None:
            age_s = max(0.0, (datetime.now(UTC) - self._head_died_at).total_seconds())
        self._metrics.oldest_dead_letter_age.set(age_s)

    async def _peek(self, channel: AbstractChannel) -> datetime | None:
        underlay = await channel.get_underlay_channel()
        got = await underlay.basic_get(self._queue, no_ack=False, timeout=GET_TIMEOUT_S)
        if isinstance(got.delivery, Basic.GetEmpty) or got.delivery_tag is None:
            return None
        properties = got.header.properties
        try:
            return death_time(properties.headers, properties.timestamp)
        finally:
            await underlay.basic_nack(got.delivery_tag, requeue=True)

    async def _open(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        return self._channel

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*_ERRORS):
                await channel.close()
