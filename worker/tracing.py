"""W3C trace context: a traceparent header travels from submit through every stage to the events,
so one consultation can be followed across services (OpenTelemetry can pick it up unchanged)."""

from __future__ import annotations

import os
import re

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16


def new_traceparent() -> str:
    ids = os.urandom(24).hex()  # one read of the system's random source for both ids
    return f"00-{ids[:32]}-{ids[32:]}-01"


def valid_traceparent(value: object) -> str | None:
    """The header if it is a well-formed version-00 traceparent with non-zero ids, else None."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not isinstance(text, str):
        return None
    match = _TRACEPARENT.fullmatch(text)  # not match(): '$' would allow a trailing newline
    if match is None or match.group(1) == _ZERO_TRACE_ID or match.group(2) == _ZERO_PARENT_ID:
        return None
    return text
