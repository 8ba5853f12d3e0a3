"""An in-memory broker side for Delivery: it records what is published and how a message is
settled, so the delivery rules run without RabbitMQ (worker/ports.py's two Protocols).

Modelled on dramatiq's StubBroker: the code under test is the real Delivery; only the two
places it touches the broker are replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aio_pika.abc import HeadersType
from aiormq.exceptions import ChannelInvalidStateError

from worker.broker import Outgoing, Publication
from worker.ports import Publishing, Settling


@dataclass(frozen=True)
class Published:
    """One publication as the broker would have received it."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    mandatory: bool
    correlation_id: str | None
    message_id: str | None
    content_type: str | None


class Recorder:
    """Publishing in memory: every publication in the order written, or a broker error."""

    def __init__(self) -> None:
        self.published: list[Published] = []
        # Set to make every publish fail the way a closed channel does.
        self.fail_publishing = False

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
        if self.fail_publishing:
            raise ChannelInvalidStateError("the recorder's channel is closed")
        for item in publications:
            properties = item.message.properties
            self.published.append(
                Published(
                    exchange=item.exchange,
                    routing_key=item.routing_key,
                    body=item.message.body,
                    headers=dict(properties.headers or {}),
                    mandatory=item.mandatory,
                    correlation_id=properties.correlation_id,
                    message_id=properties.message_id,
                    content_type=properties.content_type,
                )
            )


@dataclass
class RecordedMessage:
    """Settling in memory: a consumed message whose ack and nack calls are recorded."""

    body: bytes
    headers: HeadersType | None = None
    correlation_id: str | None = None
    message_id: str | None = None
    content_type: str | None = "application/json"
    routing_key: str = ""
    redelivered: bool = False
    problem: str | None = None
    settlements: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.settlements.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settlements.append(f"nack(requeue={requeue})")


if TYPE_CHECKING:  # mypy checks here that the recorder implements both Protocols
    _publishing: Publishing = Recorder()
    _settling: Settling = RecordedMessage(b"")
