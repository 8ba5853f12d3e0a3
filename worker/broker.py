"""AMQP plumbing: one robust connection, a confirm channel for publishing, a channel per stage."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractRobustChannel,
    AbstractRobustConnection,
    ConsumerTag,
    HeadersType,
)
from aio_pika.exceptions import AMQPError
from aio_pika.robust_channel import RobustChannel
from aio_pika.robust_queue import RobustQueue
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import (
    AuthenticationError,
    ChannelInvalidStateError,
    ProbableAuthenticationError,
)
from pamqp.commands import Basic
from pamqp.common import Arguments

from worker import amqp_decoding
from worker import constants as c
from worker.amqp_decoding import UNDECODABLE_PROPERTIES_HEADER
from worker.amqp_tls import tls_error
from worker.failover import FailoverConnection, connect_failover
from worker.tracing import valid_traceparent

PUBLISH_TIMEOUT_S = 30.0
# How long a publish lost with its connection waits for the connection to come back (on any
# node), and the pause before each new attempt.
PUBLISH_RETRY_S = 60.0
PUBLISH_RETRY_PAUSE_S = 0.2
# One attempt to open a connection (TCP, TLS, AMQP handshake) to one node, then the next.
CONNECT_ATTEMPT_TIMEOUT_S = 10.0

log = structlog.get_logger("scribe.broker")

BasicProperties = Basic.Properties
PERSISTENT = 2  # delivery_mode: written to disk by the broker


@dataclass(frozen=True)
class Outgoing:
    """A message ready to publish: its body and AMQP properties."""

    body: bytes
    properties: BasicProperties


def build_message(
    body: bytes,
    *,
    correlation_id: str | None,
    headers: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    content_type: str = "application/json",
) -> Outgoing:
    """Persistent, timestamped; without message_id the client assigns a random one."""
    return Outgoing(
        body,
        BasicProperties(
            content_type=content_type,
            delivery_mode=PERSISTENT,
            correlation_id=correlation_id,
            message_id=message_id,
            headers=dict(headers or {}),
            timestamp=datetime.now(UTC),
        ),
    )


@dataclass(frozen=True)
class Publication:
    exchange: str
    routing_key: str
    message: Outgoing
    mandatory: bool = True


def _cancelled_here() -> bool:
    """Whether this task is being cancelled (not a future inside it that aiormq cancelled)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _lost_with_connection(exc: Exception) -> bool:
    """What aiormq fails a pending publish with when its channel or connection closes: a
    connection error, ChannelInvalidStateError, or (closed without a reason) a bare Exception
    (its future store's placeholder). A nack or a return is none of these."""
    return isinstance(exc, ConnectionError | ChannelInvalidStateError) or type(exc) is Exception


class Publisher:
    """Publishes with publisher confirms; unroutable mandatory messages raise instead of vanishing.

    Every call returns only after the broker has confirmed every message it published. Messages
    go straight to the channel's aiormq layer: aio-pika's Message and Exchange add nothing here
    but CPU on the hot path.
    """

    def __init__(
        self, channel: AbstractChannel, connection: AbstractConnection | None = None
    ) -> None:
        self._channel = channel
        # Set (by open()): a publish lost with its connection is retried once it is restored.
        self._connection = connection
        # A channel this publisher closed is not coming back: a publish on it fails at once.
        self._closed = False

    @classmethod
    async def open(cls, connection: AbstractRobustConnection) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, connection)

    async def publish(
        self,
        exchange_name: str,
        routing_key: str,
        message: Outgoing,
        *,
        mandatory: bool = True,
    ) -> None:
        await self.publish_in_order(Publication(exchange_name, routing_key, message, mandatory))

    async def publish_in_order(self, *publications: Publication) -> None:
        """Writes the messages to the channel in the order given, then waits for all confirms.

        A publish whose connection is lost before every confirm came (its node died) is
        written again once the robust channel is restored, on whichever node the connection
        moved to (worker/failover.py), for up to PUBLISH_RETRY_S. The broker may have routed
        some before the loss, so a message may arrive twice: delivery is at-least-once, and the
        consuming stage drops the copy by its jobId's done-mark (DESIGN.md, "Delivery rules").
        A nack (a full queue rejects publishes) or a return (unroutable) is not retried here:
        the caller decides, as before.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_RETRY_S
        while True:
            try:
                await self._publish_once(publications)
                return
            except asyncio.CancelledError as exc:
                if _cancelled_here() or not self._may_retry():
                    raise
                error: BaseException = exc
            except Exception as exc:
                if not _lost_with_connection(exc) or not self._may_retry():
                    raise
                error = exc
            if loop.time() >= deadline:
                raise ChannelInvalidStateError("the publish channel was not restored") from error
            log.warning("broker.publish_retried", error=type(error).__name__)
            await asyncio.sleep(PUBLISH_RETRY_PAUSE_S)
            await asyncio.wait_for(self._restored(), max(0.0, deadline - loop.time()))

    def _may_retry(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and not self._closed

    async def _restored(self) -> None:
        if isinstance(self._channel, AbstractRobustChannel):
            await self._channel.ready()

    async def _publish_once(self, publications: tuple[Publication, ...]) -> None:
        """One attempt: write every publication, then wait for all of their confirms.

        One wait instead of one per message. The order holds because each publish runs as a
        task started in this order, and until its frames are queued for the socket it waits
        only on FIFO primitives (the channel lock, the connection's write queue); the broker
        routes one channel's messages in the order they arrive.
        """
        if self._channel.is_closed:
            raise ChannelInvalidStateError("the publish channel is closed")
        channel = await self._channel.get_underlay_channel()
        if not isinstance(channel, aiormq.Channel):  # wait=False is aiormq's, not the ABC's
            raise TypeError(f"unexpected channel type {type(channel).__name__}")
        confirms = [
            channel.basic_publish(
                item.message.body,
                exchange=item.exchange,
                routing_key=item.routing_key,
                properties=item.message.properties,
                mandatory=item.mandatory,
                timeout=PUBLISH_TIMEOUT_S,
                wait=False,
            )
            for item in publications
        ]
        if len(confirms) == 1:
            await confirms[0]
            return
        results = await asyncio.gather(*confirms, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        self._closed = True
        if not self._channel.is_closed:
            await self._channel.close()


# What the worker carries from a consumed message onto what it publishes, and how each is
# checked. Nothing else is copied: AMQP's CC/BCC headers re-route a message (sender-selected
# distribution), and x-stage, x-job-id, x-error-message are the worker's own words on a dead
# letter, never a sender's.
_COUNT_HEADERS = frozenset({c.HEADER_ATTEMPTS, c.HEADER_POLLS, c.HEADER_REPLAYS, c.HEADER_CHUNK})
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
_TEXT_HEADERS = frozenset(
    {
        c.HEADER_FIRST_FAILURE_AT,
        c.HEADER_LAST_FAILURE_AT,
        c.HEADER_ERROR_TYPE,
        c.HEADER_REPLAY_OF,
    }
)

# AMQP short-string properties the worker reads or copies; tolerant decoding leaves any that is
# not UTF-8 as bytes (worker/amqp_decoding.py).
_TEXT_PROPERTIES = ("correlation_id", "message_id", "content_type", "content_encoding")


def bounded_count(value: object) -> int:
    """A counter header as 0..MAX_HEADER_COUNT, whatever its type; anything unreadable is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", "replace")
    if isinstance(value, str):
        value = value.strip()
        if not (0 < len(value) <= 20 and value.isascii() and value.isdigit()):
            return 0
    if isinstance(value, int | str | float | Decimal):
        try:
            number = int(value)
        except (ValueError, OverflowError):
            return 0
        return min(max(0, number), c.MAX_HEADER_COUNT)
    return 0


def carried_headers(headers: HeadersType | None) -> dict[str, Any]:
    """The headers of a consumed message the worker carries on, each checked; nothing else."""
    if not headers:
        return {}
    carried: dict[str, Any] = {}
    for name in _COUNT_HEADERS:
        if name in headers:
            carried[name] = bounded_count(headers[name])
    for name in _TEXT_HEADERS:
        value = headers.get(name)
        if isinstance(value, str) and _TOKEN.fullmatch(value):
            carried[name] = value
    traceparent = valid_traceparent(headers.get(c.HEADER_TRACEPARENT))
    if traceparent is not None:
        carried[c.HEADER_TRACEPARENT] = traceparent
    return carried


def property_problem(properties: BasicProperties) -> str | None:
    """Why a message's AMQP properties are unusable, in words without their values; or None."""
    for name in _TEXT_PROPERTIES:
        if isinstance(getattr(properties, name), bytes):
            return f"the AMQP property {name} is not valid UTF-8"
    headers = properties.headers
    if headers is None:
        return None
    if UNDECODABLE_PROPERTIES_HEADER in headers:
        return "the AMQP properties or headers could not be decoded"
    deaths = headers.get(c.BROKER_HEADER_DEATH)
    if deaths is not None and not (
        isinstance(deaths, list) and all(isinstance(death, dict) for death in deaths)
    ):
        # Only the broker writes x-death (a list of tables). RabbitMQ 3.10 crashes its
        # at-least-once dead-lettering, for every queue of the node, when it dead-letters a
        # message whose x-death holds anything else: such a message must not stay in a queue.
        return "the x-death header is not the broker's (a list of tables)"
    return None


class Delivered:
    """One consumed message: the few fields the worker reads, and its settlement.

    Built straight from aiormq's delivery. aio-pika's IncomingMessage copies every property
    through two dozen guarded attribute writes and runs the consumer in a second task; on the
    hot path that cost more than the worker's own bookkeeping.
    """

    __slots__ = (
        "body",
        "channel",
        "content_type",
        "correlation_id",
        "delivery_tag",
        "headers",
        "message_id",
        "problem",
        "redelivered",
        "routing_key",
    )

    def __init__(self, delivery: DeliveredMessage) -> None:
        properties = delivery.header.properties
        self.body: bytes = delivery.body
        self.headers: HeadersType | None = properties.headers
        # Why the properties are unusable (None: they are fine). Then the text properties are
        # not used: the message is dead-lettered as invalidMessage without them.
        self.problem = property_problem(properties)
        usable = self.problem is None
        self.correlation_id: str | None = properties.correlation_id if usable else None
        self.message_id: str | None = properties.message_id if usable else None
        self.content_type: str | None = properties.content_type if usable else None
        self.delivery_tag: int | None = delivery.delivery_tag
        self.redelivered: bool = bool(delivery.redelivered)
        key = delivery.routing_key
        self.routing_key: str = key if isinstance(key, str) else ""
        self.channel: aiormq.abc.AbstractChannel = delivery.channel

    async def ack(self) -> None:
        """Queued for the socket without waiting for the write: an ack that never reaches the
        broker means a redelivery, which the ledger turns into a duplicate drop."""
        if self.delivery_tag is not None:
            await self.channel.basic_ack(self.delivery_tag, wait=False)

    async def nack(self, requeue: bool = True) -> None:
        if self.delivery_tag is not None:
            await self.channel.basic_nack(self.delivery_tag, requeue=requeue)


Consumer = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


class StageQueue(RobustQueue):
    """A robust queue whose consumers receive aiormq's delivery as it comes (see Delivered).

    Registered like aio-pika's own consumers, so the robust channel restores them after a
    reconnect through this same method.
    """

    async def consume(  # type: ignore[override]  # the callback takes a DeliveredMessage
        self,
        callback: Consumer,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - aio-pika's signature, for restore()
        robust: bool = True,
    ) -> ConsumerTag:
        channel = await self.channel.get_underlay_channel()
        result = await channel.basic_consume(
            queue=self.name,
            consumer_callback=callback,
            exclusive=exclusive,
            no_ack=no_ack,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        if result.consumer_tag is None:
            raise RuntimeError("the broker returned no consumer tag")
        if robust:
            self._consumers[result.consumer_tag] = {
                "callback": callback,
                "no_ack": no_ack,
                "exclusive": exclusive,
                "arguments": arguments,
            }
        return result.consumer_tag


class _StageChannel(RobustChannel):
    QUEUE_CLASS = StageQueue


class _WorkerConnection(FailoverConnection):
    CHANNEL_CLASS = _StageChannel


async def connect(
    amqp_urls: str | Sequence[str],
    name: str,
    give_up_after_s: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
) -> FailoverConnection:
    """A robust connection to the first live node of amqp_urls: it reconnects, to another node
    when its own is gone (worker/failover.py), and restores channels, queues and consumers.

    Installs tolerant frame decoding first (worker/amqp_decoding.py): a message whose
    properties the client library cannot decode must not take the connection down.
    The first connection is retried too (a broker restarting while workers start), up to
    give_up_after_s; then the error propagates and the process exits for its supervisor.
    """
    amqp_decoding.install()
    deadline = time.monotonic() + give_up_after_s
    failures = 0
    while True:
        try:
            return await connect_failover(
                amqp_urls,
                _WorkerConnection,
                timeout_s=CONNECT_ATTEMPT_TIMEOUT_S,
                client_properties={"connection_name": name},
                ssl_context=ssl_context,
            )
        except (ProbableAuthenticationError, AuthenticationError):
            raise  # a refused login does not get better by retrying
        except (OSError, AMQPError) as exc:
            if tls_error(exc) is not None or time.monotonic() >= deadline:  # TLS: nor a bad CA
                raise
            if failures == 0:  # one line, not one per retry
                log.warning("broker.connect_failed", error=type(exc).__name__, retry_every_s=1.0)
            failures += 1
            await asyncio.sleep(1.0)
