"""Failover across the nodes of a RabbitMQ cluster (issue 19, item 2).

SCRIBE_AMQP_URL may list several node URLs. aio-pika's RobustConnection reconnects to its one
URL only, so a worker whose node died would wait for that node while two others hold the
queues. FailoverConnection is a RobustConnection that, when its connection is lost, points its
public `url` at the next node that accepts a TCP connection before aio-pika's own reconnect
loop reads it; that loop then restores channels, queues and consumers on the new node as it
does after any reconnect. While no attempt succeeds it keeps moving on, one node per
reconnect interval, so a node that accepts TCP but not AMQP (still booting) is not waited on.

The public surface used: the `url` and `connected` attributes, `close_callbacks`, `connect()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiormq
import structlog
from aio_pika.robust_connection import RobustConnection
from yarl import URL

log = structlog.get_logger("scribe.failover")

# A node that does not accept a TCP connection within this is taken for dead.
PROBE_TIMEOUT_S = 1.0
# Between reconnect attempts (aio-pika's default is 5 s): a failover waits this at most once
# per node that fails after accepting TCP.
RECONNECT_INTERVAL_S = 1.0


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def broker_endpoint(amqp_url: str) -> str:
    """host:port of an AMQP URL: what an operator needs to see, without the credentials."""
    parts = urlsplit(amqp_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default_port = 5671 if parts.scheme == "amqps" else 5672
    return host_port(parts.hostname or "?", port or default_port)


def node_list(urls: str | Sequence[str]) -> tuple[str, ...]:
    """A tuple of node URLs; one URL given as a string is a list of one (not of characters)."""
    return (urls,) if isinstance(urls, str) else tuple(urls)


def endpoints(urls: str | Sequence[str]) -> str:
    """Every node's host:port, comma-separated, for a message about them all."""
    return ", ".join(broker_endpoint(url) for url in node_list(urls))


async def accepts_tcp(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the node's port accepts a TCP connection (closed again at once)."""
    parts = urlsplit(url)
    try:
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port), timeout_s
        )
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def first_live(urls: Sequence[str], start: int = 0) -> int:
    """The index of the first node, from start on (wrapping), that accepts TCP; start itself
    if none does (the caller's attempt then fails and says so)."""
    for step in range(len(urls)):
        index = (start + step) % len(urls)
        if await accepts_tcp(urls[index]):
            return index
    return start % len(urls)


class FailoverConnection(RobustConnection):
    """A robust connection over an ordered list of node URLs (see the module docstring)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        first: int = 0,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        if not urls:
            raise ValueError("no node URL")
        kwargs.setdefault("reconnect_interval", RECONNECT_INTERVAL_S)
        self.node_urls = node_list(urls)
        super().__init__(URL(self.node_urls[first]), loop=loop, **kwargs)
        self.node_index = first
        self.failovers = 0
        self._steering: asyncio.Task[None] | None = None
        self.close_callbacks.add(self._on_lost)

    @property
    def endpoint(self) -> str:
        """host:port of the node this connection uses (or is about to try)."""
        return broker_endpoint(self.node_urls[self.node_index])

    async def _on_lost(self, *_args: object) -> None:
        """The connection is gone (the node died, or restoring on it failed): point the next
        attempt at another live node, and keep doing so until one attempt succeeds."""
        if self.close_called or self.is_closed or len(self.node_urls) < 2:
            return
        await self._move_on()
        if self._steering is None or self._steering.done():
            self._steering = asyncio.create_task(self._steer_until_connected())

    async def _move_on(self) -> None:
        lost = self.endpoint
        self.node_index = await first_live(self.node_urls, self.node_index + 1)
        self.url = URL(self.node_urls[self.node_index])
        self.failovers += 1
        log.warning("broker.failover", lost=lost, to=self.endpoint, failovers=self.failovers)

    async def _steer_until_connected(self) -> None:
        wait_s = float(self.reconnect_interval) + PROBE_TIMEOUT_S
        while not (self.close_called or self.is_closed):
            try:
                await asyncio.wait_for(self.connected.wait(), wait_s)
            except TimeoutError:
                await self._move_on()
                continue
            return

    async def close(self, exc: aiormq.abc.ExceptionType | None = asyncio.CancelledError) -> None:
        steering, self._steering = self._steering, None
        if steering is not None:
            steering.cancel()
            await asyncio.gather(steering, return_exceptions=True)
        await super().close(exc)


async def connect_failover(
    urls: str | Sequence[str],
    connection_class: type[FailoverConnection] = FailoverConnection,
    *,
    first: int | None = None,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> FailoverConnection:
    """One connection attempt, to node `first`, or (None) to the first node that accepts TCP
    in the order given."""
    index = await first_live(node_list(urls)) if first is None else first
    connection = connection_class(urls, index, **kwargs)
    try:
        await connection.connect(timeout=timeout_s)
    except BaseException:
        await connection.close()
        raise
    return connection
