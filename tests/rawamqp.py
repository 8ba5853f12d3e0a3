"""A minimal AMQP 0-9-1 publisher that writes content-header frames byte by byte.

Client libraries refuse to encode what a hostile publisher can send (a correlation_id that is
not UTF-8, a timestamp of 2^63-1, a header table nested 10,000 deep); the broker passes such
properties through untouched. This client speaks just enough of the protocol (PLAIN login,
one channel, publisher confirms) to put them on the wire, with pamqp marshalling every frame
but the content header.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import TypeVar

from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ProtocolHeader

F = TypeVar("F")

FRAME_HEADER = 2
BASIC_CLASS_ID = 60

# Basic property flags, in the order AMQP encodes them.
CONTENT_TYPE = 1 << 15
HEADERS = 1 << 13
DELIVERY_MODE = 1 << 12
CORRELATION_ID = 1 << 10
MESSAGE_ID = 1 << 7
TIMESTAMP = 1 << 6


def short_str(raw: bytes) -> bytes:
    return struct.pack("B", len(raw)) + raw


def long_str(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A field table of (key bytes, typed value bytes: type byte + payload)."""
    payload = b"".join(short_str(key) + value for key, value in entries)
    return long_str(payload)


def nested_table(depth: int) -> bytes:
    """A value of type 'F' holding itself depth times: {"n": {"n": ...}}."""
    value = b"F" + table([])
    for _ in range(depth):
        value = b"F" + table([(b"n", value)])
    return value


@dataclass
class RawProperties:
    """Basic properties as raw wire fields; None leaves a property out."""

    content_type: bytes | None = b"application/json"
    headers: bytes | None = None  # an encoded field table (see table())
    delivery_mode: int | None = 2
    correlation_id: bytes | None = None
    message_id: bytes | None = None
    timestamp: int | None = None

    def encode(self) -> bytes:
        flags = 0
        parts: list[bytes] = []
        if self.content_type is not None:
            flags |= CONTENT_TYPE
            parts.append(short_str(self.content_type))
        if self.headers is not None:
            flags |= HEADERS
            parts.append(self.headers)
        if self.delivery_mode is not None:
            flags |= DELIVERY_MODE
            parts.append(struct.pack("B", self.delivery_mode))
        if self.correlation_id is not None:
            flags |= CORRELATION_ID
            parts.append(short_str(self.correlation_id))
        if self.message_id is not None:
            flags |= MESSAGE_ID
            parts.append(short_str(self.message_id))
        if self.timestamp is not None:
            flags |= TIMESTAMP
            parts.append(struct.pack(">Q", self.timestamp))
        return struct.pack(">H", flags) + b"".join(parts)


def content_header_frame(channel: int, body_size: int, properties: RawProperties) -> bytes:
    payload = struct.pack(">HHQ", BASIC_CLASS_ID, 0, body_size) + properties.encode()
    return struct.pack(">BHI", FRAME_HEADER, channel, len(payload)) + payload + b"\xce"


@dataclass
class RawPublisher:
    """One connection, one confirm-mode channel; publish() returns once the broker confirms."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    channel: int = 1
    frame_max: int = 131072
    _buffer: bytes = field(default=b"")
    _published: int = 0

    @classmethod
    async def connect(
        cls, host: str = "127.0.0.1", port: int = 5672, user: str = "guest", password: str = "guest"
    ) -> RawPublisher:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        writer.write(ProtocolHeader().marshal())
        await client._expect(commands.Connection.Start)
        response = f"\0{user}\0{password}"
        client._send(0, commands.Connection.StartOk(mechanism="PLAIN", response=response))
        tune = await client._expect(commands.Connection.Tune)
        client.frame_max = tune.frame_max or client.frame_max
        client._send(
            0, commands.Connection.TuneOk(channel_max=1, frame_max=client.frame_max, heartbeat=0)
        )
        client._send(0, commands.Connection.Open(virtual_host="/"))
        await client._expect(commands.Connection.OpenOk)
        client._send(1, commands.Channel.Open())
        await client._expect(commands.Channel.OpenOk)
        client._send(1, commands.Confirm.Select())
        await client._expect(commands.Confirm.SelectOk)
        return client

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: RawProperties
    ) -> None:
        """Publish (mandatory) and wait for the broker's ack; raise on a nack or a return."""
        self._send(
            self.channel,
            commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
        )
        self.writer.write(content_header_frame(self.channel, len(body), properties))
        step = self.frame_max - 8
        for start in range(0, len(body), step):
            self._send(self.channel, ContentBody(body[start : start + step]))
        self._published += 1
        answer = await self._next()
        if isinstance(answer, commands.Basic.Return):
            raise RuntimeError(f"returned unroutable: {answer.reply_text}")
        if not isinstance(answer, commands.Basic.Ack):
            raise RuntimeError(f"expected a confirm, got {answer!r}")

    async def close(self) -> None:
        self._send(
            0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
        )
        try:
            await asyncio.wait_for(self._expect(commands.Connection.CloseOk), 5)
        finally:
            self.writer.close()
            await self.writer.wait_closed()

    def _send(self, channel: int, value: frame.FrameTypes) -> None:
        self.writer.write(frame.marshal(value, channel))

    async def _next(self) -> frame.FrameTypes:
        while True:
            if len(self._buffer) >= 7:
                _kind, _channel, size = struct.unpack(">BHI", self._buffer[:7])
                if len(self._buffer) >= 8 + size:
                    consumed, _ch, value = frame.unmarshal(self._buffer[: 8 + size])
                    self._buffer = self._buffer[consumed:]
                    return value
            chunk = await asyncio.wait_for(self.reader.read(65536), 10)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self._buffer += chunk

    async def _expect(self, kind: type[F]) -> F:
        value = await self._next()
        if not isinstance(value, kind):
            raise RuntimeError(f"expected {kind.__name__}, got {value!r}")
        return value
