"""The two things Delivery needs from a broker, as Protocols: publishing with confirms, and
settling one consumed message.

worker/broker.py's Publisher and Delivered implement them over aiormq; tests/recorder.py
implements both in memory, so that the delivery rules can be checked without a broker (and the
same table of rules against the real one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from aio_pika.abc import HeadersType

    from worker.broker import Outgoing, Publication


class Publishing(Protocol):
    """Publishes and returns only once the broker has confirmed every message."""

    async def publish(
        self,
        exchange_name: str,
        routing_key: str,
        message: Outgoing,
        *,
        mandatory: bool = True,
    ) -> None: ...

    async def publish_in_order(self, *publications: Publication) -> None:
        """Written in the order given, each confirmed before this returns."""
        ...


class Settling(Protocol):
    """One consumed message: the fields Delivery reads, and its ack or nack."""

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> HeadersType | None: ...

    @property
    def correlation_id(self) -> str | None: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def routing_key(self) -> str: ...

    @property
    def redelivered(self) -> bool: ...

    @property
    def problem(self) -> str | None:
        """Why the message's AMQP properties are unusable, or None."""
        ...

    async def ack(self) -> None: ...

    async def nack(self, requeue: bool = True) -> None: ...
