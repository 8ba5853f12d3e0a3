"""The one place where vendor HTTP answers become results or worker.errors exceptions.

Both vendors (Intron, Invox) call through `VendorHttp`, which wraps one shared
aiohttp.ClientSession (created by the caller, never at import) and maps:

- 2xx: a JSON object body -> the parsed dict; anything else -> TransientError(malformedResponse)
  (the next attempt may answer well), except two answers no retry can fix, which are
  PermanentError(malformedResponse): JSON nested deeper than pydantic_core's limit (200 levels;
  Python's json would raise RecursionError on 100,000) and an answer over the size cap.
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

Messages are our own wording only: the endpoint (never its URL), the HTTP status and the vendor's
errorType when it is a plain word ("invox.summary answered HTTP 400 (invalidTemplate)"). Vendor
free text is never forwarded: vendors echo their input, which is the transcript, into their error
messages, and messages end up in dead-letter headers and job.failed events. Exceptions are raised
`from None` so that a traceback cannot carry aiohttp's own message (which may include the URL).

Answers are bounded while they are read (issue 12): the body is read in chunks with aiohttp's own
decompression off (`auto_decompress=False` per request) and decoded here with zlib's `max_length`,
so that neither the bytes on the wire nor the decoded bytes ever exceed `max_response_bytes`
(SCRIBE_MAX_VENDOR_RESPONSE_BYTES); only gzip and deflate are asked for and accepted. JSON is
parsed by pydantic_core (depth-limited, no NaN/Infinity) only after the size is known to be
within the cap.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, Any, Final

import aiohttp
import pydantic_core
from multidict import CIMultiDictProxy

from schemas.base import WireModel
from schemas.errors import ErrorType
from worker.constants import (
    DEFAULT_MAX_VENDOR_RESPONSE_BYTES,
    MAX_TRANSCRIPT_BYTES,
    MAX_TRANSCRIPT_SEGMENTS,
)
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
# An error body is read for its errorType only: more than this is not worth holding.
MAX_ERROR_BODY_BYTES: Final = 64 * 1024
# Read size per network chunk, and the most one zlib call may produce (keeps each step short).
READ_CHUNK_BYTES: Final = 64 * 1024
DECODE_STEP_BYTES: Final = 1024 * 1024
# What we ask for and decode; anything else in Content-Encoding is refused.
ACCEPT_ENCODING: Final = "gzip, deflate"
# pydantic_core's parser refuses JSON nested deeper than this (its recursion guard, not ours).
MAX_JSON_DEPTH: Final = 200
# Parsing costs ~90 bytes per JSON value on top of the text: 32 MiB of "[0,0,0,...]" peaked at
# +1.4 GiB. Values are counted (from above) by their separators, strings included, before any
# parse; the largest answer we accept (100,000 transcript segments of three values) has ~400,000.
MAX_JSON_VALUES: Final = 1_000_000
_RECURSION_MARK: Final = "recursion limit exceeded"
_STATUS_TOKEN_RE: Final = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
# The wire models' bound on one string (schemas/base.py), in characters.
_WIRE_MAX_CHARS: Final[int] = WireModel.model_config.get("str_max_length") or MAX_TRANSCRIPT_BYTES


async def _no_hook(vendor: str, endpoint: str, outcome: int | str, duration_s: float) -> None:
    return None


class AuthenticationRejected(PermanentError):
    """The vendor answered 401. Permanent unless the caller refreshes its token and retries once."""

    def __init__(self, endpoint: str) -> None:
        # No vendor text: a 401 message is about credentials, the one thing that must not leak.
        super().__init__(ErrorType.UNAUTHORIZED, _describe(endpoint, 401, None), http_status=401)


def safe_error_type(value: object, secrets: Sequence[str] = ()) -> str | None:
    """The vendor's errorType if it is a plain word (letters, digits, _ and -, at most 64) and
    not an echo of the credential the request carried, else None."""
    if not isinstance(value, str) or not _ERROR_TYPE_RE.fullmatch(value):
        return None
    if any(secret and (secret in value or value in secret) for secret in secrets):
        return None
    return value


def status_name(value: object) -> str:
    """A vendor status for a message: only when it looks like a status token (upper-case word,
    at most 40 characters), because anything else may be vendor free text."""
    if not isinstance(value, str):
        return "<missing>" if value is None else f"<{type(value).__name__}>"
    return value if _STATUS_TOKEN_RE.fullmatch(value) else "<not a status word>"


def finite_number(value: object) -> float | None:
    """A JSON number as a finite float, else None.

    pydantic_core refuses NaN and Infinity, but 1e400 is valid JSON that parses to inf, and
    10**400 parses to an int that float() cannot hold: both mean "no usable number".
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _separators_over(data: bytes | bytearray | str, limit: int) -> bool:
    """Whether data has more than `limit` of ',', '[' and '{' (each value but the first follows
    one); three C-speed passes, and none at all for texts too short to hold that many."""
    if len(data) <= limit:
        return False
    if isinstance(data, str):
        return data.count(",") + data.count("[") + data.count("{") > limit
    return data.count(b",") + data.count(b"[") + data.count(b"{") > limit


def parse_json(data: bytes | bytearray | str, endpoint: str) -> object:
    """Vendor JSON, parsed with a depth limit and without NaN/Infinity.

    Nesting deeper than MAX_JSON_DEPTH, or more than MAX_JSON_VALUES values, is
    PermanentError(malformedResponse): the same request gets the same answer. Any other parse
    error is TransientError(malformedResponse).
    """
    if _separators_over(data, MAX_JSON_VALUES):
        raise PermanentError(
            ErrorType.MALFORMED_RESPONSE,
            f"{endpoint}: the answer has over {MAX_JSON_VALUES} JSON values",
        )
    try:
        return pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        # pydantic_core's message names a position, never the input.
        if _RECURSION_MARK in str(exc):
            raise PermanentError(
                ErrorType.MALFORMED_RESPONSE,
                f"{endpoint}: the answer is JSON nested deeper than {MAX_JSON_DEPTH} levels",
            ) from None
        raise malformed(endpoint, "response body is not JSON") from None


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


def too_large(endpoint: str, max_bytes: int) -> PermanentError:
    """An answer over the cap: permanent, because the same request gets the same answer, and
    retrying would only read up to the cap again on every attempt."""
    return PermanentError(
        ErrorType.MALFORMED_RESPONSE, f"{endpoint}: the answer is larger than {max_bytes} bytes"
    )


def utf8_over(texts: Iterable[str], max_bytes: int) -> bool:
    """Whether the texts together take more than max_bytes of UTF-8 (without encoding them when
    their length alone settles it: a character takes 1 to 4 bytes)."""
    chars = 0
    strings = list(texts)
    for text in strings:
        chars += len(text)
        if chars > max_bytes:
            return True
    if chars * 4 <= max_bytes:
        return False
    return sum(len(text.encode("utf-8", "surrogatepass")) for text in strings) > max_bytes


def check_transcript_size(endpoint: str, texts: Iterable[str], segments: int = 0) -> None:
    """transcriptTooLarge (permanent: the vendor holds this transcript as it is) over the caps:
    MAX_TRANSCRIPT_BYTES of UTF-8 together, or one text over the wire models' own string bound
    (str_max_length, in characters), which the Transcript model would refuse anyway."""
    strings = list(texts)
    if utf8_over(strings, MAX_TRANSCRIPT_BYTES) or any(len(t) > _WIRE_MAX_CHARS for t in strings):
        raise PermanentError(
            ErrorType.TRANSCRIPT_TOO_LARGE,
            f"{endpoint}: the transcript is over {MAX_TRANSCRIPT_BYTES} bytes",
        )
    if segments > MAX_TRANSCRIPT_SEGMENTS:
        raise PermanentError(
            ErrorType.TRANSCRIPT_TOO_LARGE,
            f"{endpoint}: the transcript has over {MAX_TRANSCRIPT_SEGMENTS} segments",
        )


def _describe(endpoint: str, status: int, error_type: str | None) -> str:
    """Our own wording: the endpoint, the status and the vendor's errorType, never its text."""
    base = f"{endpoint} answered HTTP {status}"
    return f"{base} ({error_type})" if error_type else base


def _error_type_of(body: bytes | bytearray, secrets: Sequence[str]) -> str | None:
    """The errorType of a vendor error body; None when there is none we can trust.

    The body's message ("messsage" / "message") is deliberately not read: it is vendor free text.
    """
    if not body:
        return None
    try:
        parsed = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError:  # not JSON, too deep, bad UTF-8: the status decides
        return None
    if not isinstance(parsed, dict):
        return None
    return safe_error_type(parsed.get("errorType"), secrets)


def error_for_status(
    endpoint: str,
    status: int,
    body: bytes | bytearray,
    headers: Mapping[str, str],
    status_errors: Mapping[int, str] | None = None,
    secrets: Sequence[str] = (),
) -> ScribeError:
    """The exception a non-2xx answer means. Pure, so that the mapping is testable on its own."""
    if status == 401:
        return AuthenticationRejected(endpoint)
    error_type = _error_type_of(body, secrets)
    text = _describe(endpoint, status, error_type)
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


class _Decoder:
    """Content-Encoding decoding that never produces more than it is allowed to.

    zlib's `max_length` bounds each call's output; the input it has not consumed yet is kept in
    `unconsumed_tail` and fed again, so a 1 MB bomb is decoded only up to the cap.
    """

    def __init__(self, encoding: str | None, endpoint: str) -> None:
        name = (encoding or "identity").strip().lower()
        if name in ("gzip", "x-gzip"):
            self._wbits: int | None = _GZIP_WBITS
        elif name == "deflate":
            self._wbits = None  # zlib-wrapped (RFC 9110) or raw: decided by the first bytes
        elif name == "identity":
            self._wbits = 0
        else:
            # Never asked for (Accept-Encoding is ours): br, zstd, stacked encodings, ...
            raise PermanentError(
                ErrorType.MALFORMED_RESPONSE, f"{endpoint}: unsupported Content-Encoding"
            )
        self._endpoint = endpoint
        self._zlib: Any = None  # zlib's decompress object has no public type
        self._pending = b""

    def _start(self, data: bytes) -> None:
        wbits = self._wbits
        if wbits is None:
            # A zlib header: CM=8 in the low nibble and the 16-bit header a multiple of 31.
            zlib_wrapped = data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            wbits = zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS
        self._wbits = wbits
        self._zlib = zlib.decompressobj(wbits)

    def feed(self, data: bytes, budget: int, sink: bytearray) -> None:
        """Append the decoding of `data` to sink; stop (leaving sink over budget) once sink has
        more than `budget` bytes."""
        if self._wbits == 0:
            sink += data
            return
        data = self._pending + data
        self._pending = b""
        if self._zlib is None:
            if len(data) < 2:
                self._pending = data
                return
            self._start(data)
        try:
            self._feed(data, budget, sink)
        except zlib.error:
            raise malformed(self._endpoint, "the answer's compression is corrupt") from None

    def _feed(self, data: bytes, budget: int, sink: bytearray) -> None:
        while len(sink) <= budget:
            if self._zlib.eof:
                if not data or self._wbits != _GZIP_WBITS:
                    return  # the end; bytes after a deflate stream are ignored
                self._zlib = zlib.decompressobj(self._wbits)  # another gzip member
            step = min(DECODE_STEP_BYTES, budget + 1 - len(sink))
            out = self._zlib.decompress(data, step)
            sink += out
            data = self._zlib.unconsumed_tail or (self._zlib.unused_data if self._zlib.eof else b"")
            # A full step may leave output pending inside zlib even with no input left: go on.
            if not data and len(out) < step and not self._zlib.eof:
                return

    def finish(self) -> None:
        if self._wbits == 0:
            return
        if self._zlib is None or not self._zlib.eof:
            raise malformed(self._endpoint, "the answer's compressed stream is truncated")


async def read_bounded(
    response: aiohttp.ClientResponse, max_bytes: int, endpoint: str
) -> bytearray:
    """The decoded body, refused as soon as the wire bytes or the decoded bytes pass max_bytes.

    Nothing is read when Content-Length already says too much. The response must have been
    requested with auto_decompress=False, so that the bytes arriving here are the wire bytes.
    """
    if (response.content_length or 0) > max_bytes:
        raise too_large(endpoint, max_bytes)
    decoder = _Decoder(response.headers.get("Content-Encoding"), endpoint)
    body = bytearray()
    wire_bytes = 0
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        wire_bytes += len(chunk)
        if wire_bytes > max_bytes:
            raise too_large(endpoint, max_bytes)
        decoder.feed(chunk, max_bytes, body)
        if len(body) > max_bytes:
            raise too_large(endpoint, max_bytes)
    decoder.finish()
    return body


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
        max_response_bytes: int = DEFAULT_MAX_VENDOR_RESPONSE_BYTES,
    ) -> None:
        if "Authorization" in session.headers or session.auth is not None:
            raise ValueError("the shared session must not carry default credentials")
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be positive")
        self._session = session
        self._max_response_bytes = max_response_bytes
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
        """Send; return the 2xx body as a JSON object, or raise the mapped worker error.

        The body's size is checked while it is read (read_bounded), before any parse."""
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
        parsed = parse_json(body, endpoint)
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
        """PUT bytes to a pre-signed URL: only Content-Type (and Accept-Encoding), no
        Authorization, no redirects. The answer is read only for an error's errorType."""
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
            want_body=False,
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
        want_body: bool = True,
    ) -> bytearray:
        await self._take_slot(endpoint)
        started = time.monotonic()
        outcome: int | str = OUTCOME_CONNECTION
        try:
            async with self._session.request(
                method,
                url,
                headers={"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})},
                data=data,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout_s or self._timeout_s),
                allow_redirects=allow_redirects,
                raise_for_status=False,
                # Decoded here, within the cap (read_bounded): aiohttp would expand a bomb first.
                auto_decompress=False,
            ) as response:
                outcome = response.status
                status = response.status
                response_headers: CIMultiDictProxy[str] = response.headers
                body = await self._read_body(response, endpoint, want_body)
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

    async def _read_body(
        self, response: aiohttp.ClientResponse, endpoint: str, want_body: bool
    ) -> bytearray:
        """A 2xx body within the cap, or raise. Any other body (an error's, an upload's answer)
        is read only for its errorType, so one that is too large or undecodable is dropped and
        the status alone decides."""
        if want_body and 200 <= response.status <= 299:
            return await read_bounded(response, self._max_response_bytes, endpoint)
        try:
            return await read_bounded(
                response, min(self._max_response_bytes, MAX_ERROR_BODY_BYTES), endpoint
            )
        except ScribeError:
            return bytearray()

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
