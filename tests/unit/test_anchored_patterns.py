"""'$' matches before a trailing newline: every allow-list pattern is matched whole (fullmatch),
so a vendor errorType or a status word cannot smuggle a line break into routing keys,
metric labels, headers or log lines (scribe-fuzz found it in traceparent first)."""

from __future__ import annotations

from worker.providers.http import safe_error_type, status_name
from worker.tracing import valid_traceparent

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_vendor_error_types_with_a_trailing_newline_are_not_words() -> None:
    assert safe_error_type("invalidTemplate") == "invalidTemplate"
    assert safe_error_type("invalidTemplate\n") is None


def test_status_words_with_a_trailing_newline_are_not_named() -> None:
    assert status_name("FILE_PENDING") == "FILE_PENDING"
    assert status_name("FILE_PENDING\n") == "<not a status word>"


def test_traceparent_with_a_trailing_newline_is_refused() -> None:
    assert valid_traceparent(TRACEPARENT) == TRACEPARENT
    assert valid_traceparent(TRACEPARENT + "\n") is None
