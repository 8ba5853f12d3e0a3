"""W3C trace context: a traceparent header travels from submit through every stage to the events,
so one consultation can be followed across services (OpenTelemetry can pick it up unchanged)."""

from __future__ import annotations

import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def valid_traceparent(value: object) -> str | None:
    """The header if it is a well-formed version-00 traceparent with non-zero ids, else None."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not isinstance(text, str):
        return None
    match = _TRACEPARENT.match(text)
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return text
