"""scribe-dlq's value handling on what tolerant AMQP decoding and hostile bodies can hand it
(issue 12, item 1): every function is total and bounded, and its output is plain JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from worker import dlq


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


def test_jsonable_is_bounded_on_deep_tables() -> None:
    shown = dlq.jsonable(nested(5_000))
    depth = 0
    while isinstance(shown, dict):
        shown = shown["n"]
        depth += 1
    assert depth == dlq.MAX_SHOWN_DEPTH
    assert shown == dlq.TOO_DEEP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\xff", {"base64": "/w=="}),
        (bytearray(b"\xff"), {"base64": "/w=="}),
        (bytearray(b"ok"), "ok"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (Decimal("-2147483648E-255"), "-2.147483648E-246"),
        (datetime.max.replace(tzinfo=UTC), "9999-12-31T23:59:59.999999+00:00"),
        ({b"\xffk": 1}, {"b'\\xffk'": 1}),
    ],
)
def test_jsonable_gives_plain_json(value: object, expected: object) -> None:
    shown = dlq.jsonable(value)
    assert shown == expected
    json.dumps(shown, allow_nan=False)


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "not a time", "x" * 10_000]
)
def test_parse_time_never_raises(text: str) -> None:
    assert dlq.parse_time(text) is None
    assert dlq.parse_time(text.encode()) is None


def test_decode_body_is_bounded_on_deep_bodies() -> None:
    deep = b'{"jobId":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    redacted = dlq.decode_body(deep, redacted=True)
    assert isinstance(redacted, str)
    assert redacted.startswith(dlq.REDACTED)
    assert dlq.decode_body(deep, redacted=False) == {"text": deep.decode()}


def test_decode_body_gives_plain_json() -> None:
    shown = dlq.decode_body(b'{"a": 1e400, "b": [-1e400]}', redacted=False)
    assert shown == {"a": "inf", "b": ["-inf"]}
    json.dumps(shown, allow_nan=False)
