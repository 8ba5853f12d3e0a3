"""Tolerant decoding of AMQP frames: a frame the client library cannot decode costs only its own
message, never the connection.

pamqp (under aiormq and aio-pika) raises on properties that AMQP carries but it cannot turn into
Python values: a short string (correlation_id, message_id, a routing key) that is not UTF-8, a
timestamp past the year 9999, a header table nested deeper than the interpreter's recursion
limit, a header key that is not UTF-8. aiormq then drops the whole connection: every unacked
message of every stage comes back with its delivery count raised, so one hostile publish burns
the jobs around it. The broker does not check any of these for us.

install() replaces the decoders pamqp looks up by type name (``pamqp.decode.METHODS``) and by
field-type byte (``pamqp.decode.TABLE_MAPPING``) with total ones:

* a short string that is not UTF-8 stays ``bytes`` (long strings already do, in pamqp itself);
  the worker dead-letters such a message as invalidMessage (worker/broker.py, Delivered);
* a timestamp outside what ``datetime`` holds is clamped to its bounds;
* header tables and arrays decode iteratively by offset (pamqp copies the rest of the frame at
  every value), at most MAX_TABLE_DEPTH levels deep; a deeper value, an unknown field type or a
  truncated table becomes UNDECODABLE_VALUE and the table's declared length is skipped;
* a header key that is not UTF-8 is kept with its bad bytes escaped.

A content-header frame that still cannot be decoded is delivered with only the marker header
UNDECODABLE_PROPERTIES_HEADER, so its message reaches the worker and is dead-lettered on its own.

These are pamqp's documented decoder tables (public names, the same dictionaries its own
``decode.by_type`` and ``embedded_value`` consult); there is no other hook: aiormq builds its frame
reader inside ``Connection.connect``.
"""

from __future__ import annotations

import decimal
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import pamqp.decode
import pamqp.frame
from pamqp import constants, header
from pamqp.commands import Basic
from pamqp.common import FieldArray, FieldTable, FieldValue
from pamqp.exceptions import PAMQPException

MAX_TABLE_DEPTH: Final = 16
UNDECODABLE_VALUE: Final = "(undecodable)"
UNDECODABLE_PROPERTIES_HEADER: Final = "scribe-undecodable-properties"
TIMESTAMP_MIN: Final = datetime.min.replace(tzinfo=UTC)
TIMESTAMP_MAX: Final = datetime.max.replace(tzinfo=UTC)
_MILLISECONDS_ABOVE: Final = 0xFFFFFFFF  # pamqp's rule: larger values are milliseconds

_BYTE = struct.Struct("B")
_UINT32 = struct.Struct(">I")
_TIMESTAMP = struct.Struct(">Q")
_HEADER_START = struct.Struct(">HHQ")

Decoded = tuple[int, FieldValue]

_FIXED: Final[dict[bytes, struct.Struct]] = {
    b"b": struct.Struct(">b"),
    b"B": struct.Struct(">B"),
    b"s": struct.Struct(">h"),
    b"u": struct.Struct(">H"),
    b"I": struct.Struct(">i"),
    b"i": struct.Struct(">I"),
    b"l": struct.Struct(">q"),
    b"L": struct.Struct(">q"),
    b"f": struct.Struct(">f"),
    b"d": struct.Struct(">d"),
}


class _Undecodable(Exception):
    """A value whose length cannot be known (unknown type, truncated data)."""


def _utf8_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def timestamp_of(raw: int) -> datetime:
    """Seconds (or, above 2^32, milliseconds, as pamqp reads them) as a UTC datetime, clamped."""
    seconds = raw / 1000.0 if raw > _MILLISECONDS_ABOVE else raw
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return TIMESTAMP_MAX if seconds > 0 else TIMESTAMP_MIN


def _short_str(data: bytes, offset: int = 0) -> tuple[int, str | bytes]:
    try:
        (length,) = _BYTE.unpack_from(data, offset)
    except struct.error as exc:
        raise ValueError("Could not unpack short string value") from exc
    return length + 1, _utf8_or_bytes(data[offset + 1 : offset + 1 + length])


def _timestamp(data: bytes, offset: int = 0) -> tuple[int, datetime]:
    try:
        (raw,) = _TIMESTAMP.unpack_from(data, offset)
    except struct.error as exc:
        raise ValueError("Could not unpack timestamp value") from exc
    return 8, timestamp_of(raw)


def _length_at(data: bytes, offset: int) -> int:
    try:
        (length,) = _UINT32.unpack_from(data, offset)
    except struct.error as exc:
        raise _Undecodable from exc
    return int(length)


class _Reader:
    """Decodes one field table or array by offsets, bounded in depth."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def value(self, offset: int, depth: int) -> Decoded:
        """(bytes consumed including the type byte, value) of the field value at offset."""
        kind = self.data[offset : offset + 1]
        start = offset + 1
        fixed = _FIXED.get(kind)
        if fixed is not None:
            try:
                return 1 + fixed.size, fixed.unpack_from(self.data, start)[0]
            except struct.error as exc:
                raise _Undecodable from exc
        decoder = self._variable.get(kind)
        if decoder is None:
            raise _Undecodable
        consumed, value = decoder(self, start, depth)
        return 1 + consumed, value

    def _boolean(self, offset: int, _depth: int) -> Decoded:
        if offset >= len(self.data):
            raise _Undecodable
        return 1, bool(self.data[offset])

    def _long_str(self, offset: int, _depth: int) -> Decoded:
        length = _length_at(self.data, offset)
        end = offset + 4 + length
        if end > len(self.data):
            raise _Undecodable
        return 4 + length, _utf8_or_bytes(self.data[offset + 4 : end])

    def _byte_array(self, offset: int, _depth: int) -> Decoded:
        length = _length_at(self.data, offset)
        end = offset + 4 + length
        if end > len(self.data):
            raise _Undecodable
        return 4 + length, bytearray(self.data[offset + 4 : end])

    def _decimal(self, offset: int, _depth: int) -> Decoded:
        try:
            places, raw = struct.unpack_from(">Bi", self.data, offset)
        except struct.error as exc:
            raise _Undecodable from exc
        return 5, decimal.Decimal(raw).scaleb(-places)

    def _timestamp(self, offset: int, _depth: int) -> Decoded:
        try:
            return _timestamp(self.data, offset)
        except ValueError as exc:
            raise _Undecodable from exc

    def _void(self, _offset: int, _depth: int) -> Decoded:
        return 0, None

    def _table(self, offset: int, depth: int) -> Decoded:
        length = _length_at(self.data, offset)
        if depth >= MAX_TABLE_DEPTH:
            return 4 + length, UNDECODABLE_VALUE
        end = min(offset + 4 + length, len(self.data))
        return 4 + length, self.table_entries(offset + 4, end, depth + 1)

    def _array(self, offset: int, depth: int) -> Decoded:
        length = _length_at(self.data, offset)
        if depth >= MAX_TABLE_DEPTH:
            return 4 + length, UNDECODABLE_VALUE
        end = min(offset + 4 + length, len(self.data))
        items: FieldArray = []
        position = offset + 4
        try:
            while position < end:
                consumed, item = self.value(position, depth + 1)
                position += consumed
                items.append(item)
        except _Undecodable:
            items.append(UNDECODABLE_VALUE)
        return 4 + length, items

    def table_entries(self, position: int, end: int, depth: int) -> FieldTable:
        """The entries between position and end; an undecodable rest becomes one marker entry."""
        entries: FieldTable = {}
        try:
            while position < end:
                key_length = self.data[position]
                key = self.data[position + 1 : position + 1 + key_length]
                position += 1 + key_length
                consumed, value = self.value(position, depth)
                entries[key.decode("utf-8", "backslashreplace")] = value
                position += consumed
        except (_Undecodable, IndexError):
            entries[UNDECODABLE_PROPERTIES_HEADER] = UNDECODABLE_VALUE
        return entries

    _variable: Final[dict[bytes, Callable[[_Reader, int, int], Decoded]]] = {
        b"t": _boolean,
        b"S": _long_str,
        b"x": _byte_array,
        b"D": _decimal,
        b"T": _timestamp,
        b"V": _void,
        b"\x00": _void,
        b"F": _table,
        b"A": _array,
    }


def field_table(data: bytes) -> tuple[int, FieldTable]:
    """A length-prefixed field table at the start of data (pamqp's decoder signature)."""
    try:
        length = _length_at(data, 0)
    except _Undecodable as exc:
        raise ValueError("Could not unpack field table length") from exc
    end = min(4 + length, len(data))
    return 4 + length, _Reader(data).table_entries(4, end, 1)


def _marked_header(data_in: bytes) -> tuple[int, int, header.ContentHeader]:
    """A content header whose properties could not be decoded: its body size (which precedes
    the properties and is fixed-width) and the marker header only."""
    frame_type, channel_id, frame_size = pamqp.frame.frame_parts(data_in)
    if frame_type != constants.FRAME_HEADER or frame_size is None:
        raise ValueError("not a content header frame")
    start = constants.FRAME_HEADER_SIZE
    _class_id, weight, body_size = _HEADER_START.unpack_from(data_in, start)
    properties = Basic.Properties(headers={UNDECODABLE_PROPERTIES_HEADER: True})
    consumed = start + frame_size + 1
    return consumed, channel_id, header.ContentHeader(weight, body_size, properties)


_PamqpUnmarshal = Callable[[bytes], tuple[int, int, pamqp.frame.FrameTypes]]


def _tolerant(unmarshal: _PamqpUnmarshal) -> _PamqpUnmarshal:
    def tolerant_unmarshal(data_in: bytes) -> tuple[int, int, pamqp.frame.FrameTypes]:
        try:
            return unmarshal(data_in)
        except (PAMQPException, ValueError, OverflowError, OSError, RecursionError):
            if data_in[:1] != bytes([constants.FRAME_HEADER]):
                raise
        try:
            return _marked_header(data_in)
        except (ValueError, struct.error) as exc:
            raise ValueError("undecodable content header frame") from exc

    tolerant_unmarshal.scribe_tolerant = True  # type: ignore[attr-defined]
    return tolerant_unmarshal


def install() -> None:
    """Make this process's AMQP decoding total (idempotent; call before connecting)."""
    pamqp.decode.METHODS["shortstr"] = _short_str
    pamqp.decode.METHODS["timestamp"] = _timestamp
    pamqp.decode.METHODS["table"] = field_table
    if not getattr(pamqp.frame.unmarshal, "scribe_tolerant", False):
        pamqp.frame.unmarshal = _tolerant(pamqp.frame.unmarshal)  # type: ignore[assignment]
