"""Unit rules behind the hostile-frame handling (issue 12): total decoding, carried headers,
clamped counters, property problems, bounded metric labels, stall detection, bind address."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pamqp.frame
import pytest
from pamqp.commands import Basic

from tests.rawamqp import RawProperties, content_header_frame, long_str, nested_table, table
from worker import amqp_decoding
from worker.amqp_decoding import (
    MAX_TABLE_DEPTH,
    TIMESTAMP_MAX,
    UNDECODABLE_PROPERTIES_HEADER,
    UNDECODABLE_VALUE,
    field_table,
    timestamp_of,
)
from worker.broker import bounded_count, carried_headers, property_problem
from worker.codec import job_id_of_body
from worker.errors import SettingsError
from worker.metrics import OTHER_ERROR_TYPE, StageMetrics, error_label
from worker.settings import Settings

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def decode_header(properties: RawProperties) -> Basic.Properties:
    amqp_decoding.install()
    frame = content_header_frame(1, 2, properties)
    _consumed, _channel, decoded = pamqp.frame.unmarshal(frame)
    assert isinstance(decoded.properties, Basic.Properties)  # type: ignore[union-attr]
    return decoded.properties  # type: ignore[union-attr]


def test_short_strings_that_are_not_utf8_stay_bytes() -> None:
    properties = decode_header(RawProperties(correlation_id=b"\xff\xfe", message_id=b"fine"))
    correlation_id: object = properties.correlation_id
    assert correlation_id == b"\xff\xfe"
    assert properties.message_id == "fine"
    assert property_problem(properties) == "the AMQP property correlation_id is not valid UTF-8"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (2**63 - 1, TIMESTAMP_MAX),
        (2**64 - 1, TIMESTAMP_MAX),
        (1_700_000_000_000, datetime.fromtimestamp(1_700_000_000, tz=UTC)),  # milliseconds
    ],
)
def test_timestamps_are_clamped(raw: int, expected: datetime) -> None:
    assert timestamp_of(raw) == expected
    assert decode_header(RawProperties(timestamp=raw)).timestamp == expected


def test_tables_decode_every_type_and_bad_keys() -> None:
    entries = [
        (b"t", b"t\x01"),
        (b"b", b"b\xff"),
        (b"s", b"s" + struct.pack(">h", -2)),
        (b"I", b"I" + struct.pack(">i", -3)),
        (b"l", b"l" + struct.pack(">q", 2**63 - 1)),
        (b"d", b"d" + struct.pack(">d", 1.5)),
        (b"D", b"D\x02" + struct.pack(">i", 12345)),
        (b"S", b"S" + long_str(b"text")),
        (b"bad", b"S" + long_str(b"\xff")),
        (b"\xffkey", b"V"),
        (b"T", b"T" + struct.pack(">Q", 2**63 - 1)),
        (b"A", b"A" + long_str(b"I" + struct.pack(">i", 7))),
        (b"x", b"x" + long_str(b"\x00\x01")),
    ]
    consumed, decoded = field_table(table(entries))
    assert consumed == len(table(entries))
    assert decoded["t"] is True
    assert decoded["b"] == -1
    assert decoded["s"] == -2
    assert decoded["l"] == 2**63 - 1
    assert decoded["D"] == Decimal("123.45")
    assert decoded["S"] == "text"
    assert decoded["bad"] == b"\xff"
    assert decoded["\\xffkey"] is None
    assert decoded["T"] == TIMESTAMP_MAX
    assert decoded["A"] == [7]
    assert decoded["x"] == bytearray(b"\x00\x01")


def test_deep_tables_are_cut_not_recursed() -> None:
    _consumed, decoded = field_table(table([(b"n", nested_table(50_000))]))
    depth, value = 0, cast(Any, decoded)
    while isinstance(value, dict) and "n" in value:
        value, depth = value["n"], depth + 1
    assert value == UNDECODABLE_VALUE
    assert depth == MAX_TABLE_DEPTH  # the headers table itself and 15 levels below it


def test_unknown_field_type_marks_the_table_instead_of_raising() -> None:
    raw = table([(b"ok", b"S" + long_str(b"v")), (b"odd", b"?garbage")])
    _consumed, decoded = field_table(raw)
    assert decoded["ok"] == "v"
    assert decoded[UNDECODABLE_PROPERTIES_HEADER] == UNDECODABLE_VALUE
    properties = decode_header(RawProperties(headers=raw))
    assert property_problem(properties) == "the AMQP properties or headers could not be decoded"


def test_a_content_header_that_cannot_be_decoded_still_arrives_marked() -> None:
    amqp_decoding.install()
    # Flags announce a delivery_mode octet that is not there: truncated properties.
    payload = struct.pack(">HHQ", 60, 0, 5) + struct.pack(">H", 1 << 12)
    frame = struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"
    consumed, channel, decoded = pamqp.frame.unmarshal(frame)
    assert (consumed, channel) == (len(frame), 1)
    assert decoded.body_size == 5  # type: ignore[union-attr]
    assert property_problem(decoded.properties) is not None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "deaths",
    [
        [b"str"],
        ["str"],
        "str",
        [{"queue": "q"}, 5],
        {"queue": "q"},
    ],
)
def test_a_forged_x_death_is_a_problem(deaths: object) -> None:
    properties = Basic.Properties(headers={"x-death": cast(Any, deaths)})
    assert (
        property_problem(properties) == "the x-death header is not the broker's (a list of tables)"
    )


def test_the_broker_s_own_x_death_is_fine() -> None:
    deaths: Any = [{"count": 1, "queue": "scribe.delay.1000ms", "reason": "expired"}]
    assert property_problem(Basic.Properties(headers={"x-death": deaths})) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        (2**63 - 1, 1_000_000),
        (-5, 0),
        ("9223372036854775808", 1_000_000),
        (b"12", 12),
        ("1e400", 0),
        (float("inf"), 0),
        (float("nan"), 0),
        (Decimal("Infinity"), 0),
        (True, 0),
        ([1], 0),
        ("9" * 5000, 0),
        (None, 0),
    ],
)
def test_counters_are_clamped(value: object, expected: int) -> None:
    assert bounded_count(value) == expected


def test_only_known_checked_headers_are_carried() -> None:
    headers: dict[str, Any] = {
        "CC": ["elsewhere"],
        "BCC": ["elsewhere"],
        "x-stage": "note",
        "x-job-id": "forged",
        "x-error-message": "forged text",
        "x-http-status": 500,
        "x-attempts": 2**63 - 1,
        "x-polls": "7",
        "x-error-type": "rateLimited",
        "x-first-failure-at": "2026-12-01T10:00:00+00:00",
        "x-last-failure-at": {"nested": "table"},
        "traceparent": TRACEPARENT,
        "x-death": [{"count": 1}],
        "custom": "value",
    }
    assert carried_headers(headers) == {
        "x-attempts": 1_000_000,
        "x-polls": 7,
        "x-error-type": "rateLimited",
        "x-first-failure-at": "2026-12-01T10:00:00+00:00",
        "traceparent": TRACEPARENT,
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"jobId":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000,
        b'{"jobId": "not-a-uuid"}',
        b'{"jobId": NaN}',
        b"\xff\xfe",
        b"",
    ],
)
def test_job_id_of_hostile_bodies_is_none_without_raising(body: bytes) -> None:
    assert job_id_of_body(body) is None


def test_job_id_is_the_body_s_own() -> None:
    body = b'{"schemaVersion":1,"jobId":"7D0C31F6-52C5-4F53-A1B4-2A3C0DFC6A4E","x":1}'
    assert job_id_of_body(body) == "7d0c31f6-52c5-4f53-a1b4-2a3c0dfc6a4e"


def test_vendor_error_types_collapse_into_one_label() -> None:
    assert error_label("rateLimited") == "rateLimited"
    assert error_label("someVendorInvention123") == OTHER_ERROR_TYPE


def test_a_stage_stalls_only_while_it_holds_messages_without_settling() -> None:
    figures = StageMetrics()
    assert not figures.stalled(10_000.0, 600.0)
    figures.took(1_000.0)
    assert not figures.stalled(1_500.0, 600.0)
    assert figures.stalled(1_601.0, 600.0)
    figures.took(1_601.0)  # a new delivery is not progress
    figures.settled(1_602.0)
    assert not figures.stalled(2_000.0, 600.0)
    figures.settled(2_300.0)
    assert not figures.stalled(99_999.0, 600.0)  # holds nothing


def test_http_host_is_loopback_by_default_and_checked() -> None:
    assert Settings.from_env({}).http_host == "127.0.0.1"
    assert Settings.from_env({"SCRIBE_HTTP_HOST": "0.0.0.0"}).http_host == "0.0.0.0"
    with pytest.raises(SettingsError, match="SCRIBE_HTTP_HOST"):
        Settings.from_env({"SCRIBE_HTTP_HOST": "every-interface"})
    with pytest.raises(SettingsError, match="SCRIBE_STALL_AFTER_S"):
        Settings.from_env({"SCRIBE_STALL_AFTER_S": "0"})
