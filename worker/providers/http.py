"""The one place where vendor HTTP answers become results or worker.errors exceptions.

Both vendors (Intron, Invox) call through `VendorHttp`, which wraps one shared
aiohttp.ClientSession (created by the caller, never at import) and maps:

- 2xx: a JSON object body -> the parsed dict; anything else -> TransientError(malformedResponse).
- 401 -> `AuthenticationRejected`, a PermanentError(unauthorized). A caller that can refresh its
  token (Invox) catches it and retries once; anyone else just lets it propagate.
- 403 -> PermanentError(<errorType from the body> or forbidden).
- 408, 425, 429, 5xx -> TransientError(rateLimited for 429, upstreamUnavailable otherwise), with
  Retry-After (seconds or HTTP-date) in retry_after_s.
- Other 4xx (400, 404, 409, 413, 422, ...) -> PermanentError(<errorType from the body>), else the
  per-call `status_errors` override (Intron status passes 404 -> transcriptionNotFound), else
  fileTooLarge for 413, else badRequest.
- Any other status (1xx, 3xx left after redirects) -> TransientError(upstreamUnavailable).
- TimeoutError -> TransientError(upstreamTimeout); any aiohttp.ClientError (connection, payload,
  redirects, ...) -> TransientError(connectionFailed).

Messages name the endpoint ("invox.summary"), never its URL, and carry at most the vendor's short
error message, scrubbed of URLs, "Bearer ..." values, the credential the request itself carried and
long opaque strings (JWTs, keys); a 401 carries no vendor text at all. Exceptions are raised
`from None` so that a traceback cannot carry aiohttp's own message (which may include the URL).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, Any, Final

import aiohttp
from multidict import CIMultiDictProxy

from schemas.errors import ErrorType
from worker.errors import Deferred, PermanentError, ScribeError, TransientError
from worker.ratelimit import RateLimiter, interval_s

JsonObject = dict[str, Any]

# on_call(vendor, endpoint, status_or_error, duration_s): status_or_error is the HTTP status, or
# "timeout" / "connection" when no answer came. For metrics; it must not raise.
CallHook = Callable[[str, str, int | str, float], Awaitable[None]]

OUTCOME_TIMEOUT: Final = "timeout"
OUTCOME_CONNECTION: Final = "connection"

_TRANSIENT_STATUSES: Final = frozenset({408, 425, 429})
# errorType values become dead-letter routing keys and metric labels: accept only tame words.
_ERROR_TYPE_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_URL_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_BEARER_RE: Final = re.compile(r"(?i)bearer\s+\S+")
# JWTs and other long opaque strings (keys, signatures): no clinical word looks like one.
_OPAQUE_RE: Final = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9._-]+|[A-Za-z0-9_+/=.-]{32,}")
_SPACE_RE: Final = re.compile(r"\s+")
_MAX_VENDOR_MESSAGE_CHARS: Final = 120


async def _no_hook(vendor: str, endpoint: str, outcome: int | str, duration_s: float) -> None:
    return None


class AuthenticationRejected(PermanentError):
    """The vendor answered 401. Permanent unless the caller refreshes its token and retries once."""

    def __init__(self, endpoint: str) -> None:
        # No vendor text: a 401 message is about credentials, the one thing that must not leak.
        super().__init__(ErrorType.UNAUTHORIZED, _describe(endpoint, 401, None), http_status=401)


def scrub_vendor_text(text: str, secrets: Sequence[str] = ()) -> str:
    """A vendor's short message, safe for headers and logs: no URLs, no tokens, one line, capped.

    `secrets` (the credential the request carried) are removed verbatim, whatever their shape.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    text = _URL_RE.sub("<url>", text)
    text = _BEARER_RE.sub("Bearer <redacted>", text)
    text = _OPAQUE_RE.sub("<redacted>", text)
    text = _SPACE_RE.sub(" ", text).strip()
    return text[:_MAX_VENDOR_MESSAGE_CHARS]


def safe_error_type(value: object) -> str | None:
    """The vendor's errorType if it is a plain word, else None."""
    if isinstance(value, str) and _ERROR_TYPE_RE.match(value):
        return value
    return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date; None if absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def malformed(endpoint: str, what: str) -> TransientError:
    """A 2xx answer whose body lacks what we need. `what` names a field, never its value."""
    return TransientError(ErrorType.MALFORMED_RESPONSE, f"{endpoint}: {what}")


def expect_dict(obj: JsonObject, key: str, endpoint: str) -> JsonObject:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise malformed(endpoint, f"response has no object {key!r}")
    return value


def expect_str(obj: JsonObject, key: str, endpoint: str, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not allow_empty and not value):
        raise malformed(endpoint, f"response has no string {key!r}")
    return value


def _describe(endpoint: str, status: int, vendor_message: str | None) -> str:
    base = f"{endpoint}: HTTP {status}"
    return f"{base}: {vendor_message}" if vendor_message else base


def _error_body(body: bytes, secrets: Sequence[str]) -> tuple[str | None, str | None]:
    """(errorType, message) from a vendor error body; (None, None) when it is not a JSON object."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    # Invox spells the key "messsage" (three s) in most pages and "message" in others.
    message = next(
        (
            value
            for key in ("messsage", "message")
            if isinstance(value := parsed.get(key), str) and value.strip()
        ),
        None,
    )
    return safe_error_type(parsed.get("errorType")), (
        scrub_vendor_text(message, secrets) if message is not None else None
    )


def error_for_status(
    endpoint: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    status_errors: Mapping[int, str] | None = None,
    secrets: Sequence[str] = (),
) -> ScribeError:
    """The exception a non-2xx answer means. Pure, so that the mapping is testable on its own."""
    if status == 401:
        return AuthenticationRejected(endpoint)
    error_type, message = _error_body(body, secrets)
    text = _describe(endpoint, status, message)
    if status == 403:
        return PermanentError(error_type or ErrorType.FORBIDDEN, text, http_status=status)
    if status in _TRANSIENT_STATUSES or 500 <= status <= 599:
        return TransientError(
            ErrorType.RATE_LIMITED if status == 429 else ErrorType.UPSTREAM_UNAVAILABLE,
            text,
            http_status=status,
            retry_after_s=parse_retry_after(headers.get("Retry-After")),
        )
    if 400 <= status <= 499:
        fallback = (status_errors or {}).get(status) or (
            ErrorType.FILE_TOO_LARGE if status == 413 else ErrorType.BAD_REQUEST
        )
        return PermanentError(error_type or fallback, text, http_status=status)
    return TransientError(ErrorType.UPSTREAM_UNAVAILABLE, text, http_status=status)


def _credentials(headers: Mapping[str, str] | None) -> tuple[str, ...]:
    """The credential a request carried, so that a vendor echoing it cannot leak it."""
    value = next(
        (v for k, v in (headers or {}).items() if k.lower() == "authorization"), ""
    ).strip()
    scheme, _, credential = value.partition(" ")
    return tuple(secret for secret in (value, credential.strip() or scheme) if secret)


class VendorHttp:
    """Vendor calls over one shared session, with a per-request timeout and one error mapping.

    The session must carry no default Authorization header or auth: uploads to signed URLs (which
    may be on another host) go through the same session and must not carry credentials.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float,
        on_call: CallHook | None = None,
        limiter: RateLimiter | None = None,
        limits_per_min: Mapping[str, int] | None = None,
        max_wait_s: float = 2.5,
    ) -> None:
        if "Authorization" in session.headers or session.auth is not None:
            raise ValueError("the shared session must not carry default credentials")
        self._session = session
        self._timeout_s = timeout_s
        self._on_call: CallHook = on_call or _no_hook
        self._limiter = limiter
        self._limits_per_min = dict(limits_per_min or {})
        self._max_wait_s = max_wait_s

    async def request_json(
        self,
        vendor: str,
        endpoint: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        status_errors: Mapping[int, str] | None = None,
        timeout_s: float | None = None,
    ) -> JsonObject:
        """Send; return the 2xx body as a JSON object, or raise the mapped worker error."""
        body = await self._send(
            vendor,
            endpoint,
            method,
            url,
            headers=headers,
            data=data,
            params=params,
            status_errors=status_errors,
            timeout_s=timeout_s,
            allow_redirects=True,
        )
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise malformed(endpoint, "response body is not JSON") from None
        if not isinstance(parsed, dict):
            raise malformed(endpoint, "response body is not a JSON object")
        return parsed

    async def upload(
        self,
        vendor: str,
        endpoint: str,
        signed_url: str,
        content: bytes | IO[bytes],
        *,
        content_type: str,
        timeout_s: float | None = None,
    ) -> None:
        """PUT bytes to a pre-signed URL: only Content-Type, no Authorization, no redirects."""
        await self._send(
            vendor,
            endpoint,
            "PUT",
            signed_url,
            headers={"Content-Type": content_type},
            data=content,
            params=None,
            status_errors=None,
            timeout_s=timeout_s,
            allow_redirects=False,
        )

    async def _send(
        self,
        vendor: str,
        endpoint: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        data: Any,
        params: Mapping[str, str] | None,
        status_errors: Mapping[int, str] | None,
        timeout_s: float | None,
        allow_redirects: bool,
    ) -> bytes:
        await self._take_slot(endpoint)
        started = time.monotonic()
        outcome: int | str = OUTCOME_CONNECTION
        try:
            async with self._session.request(
                method,
                url,
                headers=dict(headers or {}),
                data=data,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout_s or self._timeout_s),
                allow_redirects=allow_redirects,
                raise_for_status=False,
            ) as response:
                body = await response.read()
                outcome = response.status
                status = response.status
                response_headers: CIMultiDictProxy[str] = response.headers
        except TimeoutError:
            outcome = OUTCOME_TIMEOUT
            raise TransientError(ErrorType.UPSTREAM_TIMEOUT, f"{endpoint}: timed out") from None
        except aiohttp.ClientError as exc:
            # str(exc) may contain the URL: name the exception class only.
            raise TransientError(
                ErrorType.CONNECTION_FAILED, f"{endpoint}: {type(exc).__name__}"
            ) from None
        finally:
            await self._report(vendor, endpoint, outcome, time.monotonic() - started)
        if 200 <= status <= 299:
            return body
        if status == 429:
            await self._hold_off(endpoint, response_headers)
        raise error_for_status(
            endpoint, status, body, response_headers, status_errors, _credentials(headers)
        )

    async def _take_slot(self, endpoint: str) -> None:
        """Wait for this endpoint's shared rate-limit slot, or defer if it is too far away."""
        per_minute = self._limits_per_min.get(endpoint)
        if per_minute is None or self._limiter is None:
            return
        wait_s = await self._limiter.reserve(endpoint, per_minute, self._max_wait_s)
        if wait_s > self._max_wait_s:
            raise Deferred(f"{endpoint}: rate-limit budget in use", delay_s=wait_s)
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def _hold_off(self, endpoint: str, headers: CIMultiDictProxy[str]) -> None:
        per_minute = self._limits_per_min.get(endpoint)
        if per_minute is None or self._limiter is None:
            return
        retry_after_s = parse_retry_after(headers.get("Retry-After")) or interval_s(per_minute)
        await self._limiter.hold_off(endpoint, retry_after_s)

    async def _report(
        self, vendor: str, endpoint: str, outcome: int | str, duration: float
    ) -> None:
        try:
            await self._on_call(vendor, endpoint, outcome, duration)
        except Exception:  # noqa: BLE001 - a metrics hook must never fail a vendor call
            return
