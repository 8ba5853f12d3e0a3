"""VendorHttp: the one mapping from vendor HTTP answers to worker errors (aioresponses boundary)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from schemas.errors import ErrorType
from worker.errors import PermanentError, ScribeError, TransientError
from worker.providers.http import (
    AuthenticationRejected,
    VendorHttp,
    error_for_status,
    parse_retry_after,
    scrub_vendor_text,
)

API = "https://vendor.test/api/thing"
SECRET_URL = "https://bucket.test/MARKER-SIGNED-URL?X-Amz-Signature=MARKER-SIG"
TOKEN = "MARKER-TOKEN-abc123"


def assert_clean(exc: BaseException) -> None:
    text = f"{exc!s} {exc!r}"
    for marker in ("MARKER-SIGNED-URL", "MARKER-SIG", TOKEN, "vendor.test", "bucket.test"):
        assert marker not in text


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | str]] = []

    async def __call__(
        self, vendor: str, endpoint: str, outcome: int | str, duration: float
    ) -> None:
        assert duration >= 0
        self.calls.append((vendor, endpoint, outcome))


@pytest.fixture
def hook() -> Recorder:
    return Recorder()


@pytest.fixture
def http(session: aiohttp.ClientSession, hook: Recorder) -> VendorHttp:
    return VendorHttp(session, timeout_s=5.0, on_call=hook)


async def call(http: VendorHttp) -> dict[str, Any]:
    return await http.request_json(
        "invox", "invox.thing", "POST", API, headers={"Authorization": f"Bearer {TOKEN}"}
    )


async def test_vendor_2xx_json_object_is_returned(
    http: VendorHttp, mocked: aioresponses, hook: Recorder
) -> None:
    mocked.post(API, status=200, payload={"a": 1})
    assert await call(http) == {"a": 1}
    assert hook.calls == [("invox", "invox.thing", 200)]


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '"text"', ""])
async def test_vendor_2xx_malformed_body_is_transient(
    http: VendorHttp, mocked: aioresponses, body: str
) -> None:
    mocked.post(API, status=200, body=body)
    with pytest.raises(TransientError) as info:
        await call(http)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert "invox.thing" in info.value.message
    assert_clean(info.value)


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
@pytest.mark.parametrize("message_key", ["messsage", "message"])
async def test_vendor_4xx_with_error_type_is_permanent(
    http: VendorHttp, mocked: aioresponses, status: int, message_key: str
) -> None:
    mocked.post(
        API, status=status, payload={message_key: "Bad input here", "errorType": "invalidTemplate"}
    )
    with pytest.raises(PermanentError) as info:
        await call(http)
    assert info.value.error_type == "invalidTemplate"
    assert info.value.http_status == status
    assert "Bad input here" in info.value.message
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ErrorType.BAD_REQUEST),
        (404, ErrorType.BAD_REQUEST),
        (409, ErrorType.BAD_REQUEST),
        (413, ErrorType.FILE_TOO_LARGE),
        (422, ErrorType.BAD_REQUEST),
        (410, ErrorType.BAD_REQUEST),
    ],
)
async def test_vendor_4xx_without_error_type(
    http: VendorHttp, mocked: aioresponses, status: int, expected: ErrorType
) -> None:
    # Intron's error body: no machine code, the HTTP status decides.
    mocked.post(API, status=status, payload={"data": {}, "message": "nope", "status": "Error"})
    with pytest.raises(PermanentError) as info:
        await call(http)
    assert info.value.error_type == expected
    assert info.value.message == f"invox.thing: HTTP {status}: nope"


async def test_vendor_status_errors_override_for_404(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.get(API, status=404, body="<html>not found</html>")
    with pytest.raises(PermanentError) as info:
        await http.request_json(
            "intron", "intron.status", "GET", API, status_errors={404: "transcriptionNotFound"}
        )
    assert info.value.error_type == ErrorType.TRANSCRIPTION_NOT_FOUND


async def test_vendor_error_type_that_is_not_a_word_is_ignored(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(API, status=400, payload={"message": "x", "errorType": "a.b #c"})
    with pytest.raises(PermanentError) as info:
        await call(http)
    assert info.value.error_type == ErrorType.BAD_REQUEST


async def test_vendor_401_is_authentication_rejected(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(API, status=401, payload={"messsage": "Unauthorized"})
    with pytest.raises(AuthenticationRejected) as info:
        await call(http)
    assert isinstance(info.value, PermanentError)
    assert info.value.error_type == ErrorType.UNAUTHORIZED
    assert info.value.http_status == 401


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"messsage": "no permission", "errorType": "CONSULTATION-SUMMARY"},
            "CONSULTATION-SUMMARY",
        ),
        ({"message": "no permission", "errorType": "missingPermission"}, "missingPermission"),
        ({"messsage": "no permission"}, ErrorType.FORBIDDEN),
    ],
)
async def test_vendor_403(
    http: VendorHttp, mocked: aioresponses, payload: dict[str, str], expected: str
) -> None:
    mocked.post(API, status=403, payload=payload)
    with pytest.raises(PermanentError) as info:
        await call(http)
    assert info.value.error_type == expected
    assert info.value.http_status == 403


async def test_vendor_429_with_retry_after_seconds(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(API, status=429, payload={"message": "slow down"}, headers={"Retry-After": "17"})
    with pytest.raises(TransientError) as info:
        await call(http)
    assert info.value.error_type == ErrorType.RATE_LIMITED
    assert info.value.retry_after_s == 17.0
    assert info.value.http_status == 429
    assert info.value.retryable


async def test_vendor_429_with_retry_after_date(http: VendorHttp, mocked: aioresponses) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    mocked.post(API, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(TransientError) as info:
        await call(http)
    assert info.value.retry_after_s is not None
    assert 3000 < info.value.retry_after_s <= 3600


@pytest.mark.parametrize("status", [408, 425, 500, 502, 503, 504])
async def test_vendor_transient_statuses(
    http: VendorHttp, mocked: aioresponses, status: int
) -> None:
    mocked.post(API, status=status, body="upstream trouble")
    with pytest.raises(TransientError) as info:
        await call(http)
    assert info.value.error_type == ErrorType.UPSTREAM_UNAVAILABLE
    assert info.value.http_status == status
    assert info.value.retry_after_s is None


async def test_vendor_503_with_retry_after(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(API, status=503, headers={"Retry-After": "120"})
    with pytest.raises(TransientError) as info:
        await call(http)
    assert info.value.retry_after_s == 120.0


async def test_vendor_timeout(http: VendorHttp, mocked: aioresponses, hook: Recorder) -> None:
    mocked.post(API, exception=TimeoutError())
    with pytest.raises(TransientError) as info:
        await call(http)
    assert info.value.error_type == ErrorType.UPSTREAM_TIMEOUT
    assert hook.calls == [("invox", "invox.thing", "timeout")]


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientConnectionError(f"Cannot connect to {SECRET_URL}"),
        aiohttp.ClientPayloadError(f"payload broken {SECRET_URL}"),
        aiohttp.ServerDisconnectedError(),
    ],
)
async def test_vendor_connection_errors(
    http: VendorHttp, mocked: aioresponses, hook: Recorder, exc: Exception
) -> None:
    mocked.put(SECRET_URL, exception=exc)
    with pytest.raises(TransientError) as info:
        await http.upload("invox", "invox.audio_upload", SECRET_URL, b"x", content_type="audio/wav")
    assert info.value.error_type == ErrorType.CONNECTION_FAILED
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert_clean(info.value)
    assert hook.calls == [("invox", "invox.audio_upload", "connection")]


async def test_vendor_upload_sends_only_content_type(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.put(SECRET_URL, status=200, body="")
    await http.upload(
        "invox", "invox.document_upload", SECRET_URL, b"%PDF", content_type="application/pdf"
    )
    (request,) = mocked.requests[("PUT", URL(SECRET_URL))]
    assert request.kwargs["headers"] == {"Content-Type": "application/pdf"}
    assert request.kwargs["allow_redirects"] is False
    assert request.kwargs["data"] == b"%PDF"


async def test_vendor_upload_403_from_storage_is_forbidden(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.put(SECRET_URL, status=403, body=f"<Error>SignatureDoesNotMatch {SECRET_URL}</Error>")
    with pytest.raises(PermanentError) as info:
        await http.upload("invox", "invox.audio_upload", SECRET_URL, b"x", content_type="audio/wav")
    assert info.value.error_type == ErrorType.FORBIDDEN
    assert_clean(info.value)


async def test_vendor_session_with_default_credentials_is_refused() -> None:
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer x"}) as s:
        with pytest.raises(ValueError, match="credentials"):
            VendorHttp(s, timeout_s=1.0)


async def test_vendor_failing_hook_does_not_fail_the_call(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    async def broken(vendor: str, endpoint: str, outcome: int | str, duration: float) -> None:
        raise RuntimeError("metrics down")

    mocked.post(API, status=200, payload={"ok": True})
    assert await call(VendorHttp(session, timeout_s=1.0, on_call=broken)) == {"ok": True}


async def test_vendor_message_scrubs_urls_and_tokens(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(
        API,
        status=400,
        payload={"messsage": f"cannot fetch {SECRET_URL} with Bearer {TOKEN}\n" + "x" * 500},
    )
    with pytest.raises(PermanentError) as info:
        await call(http)
    assert_clean(info.value)
    assert "<url>" in info.value.message
    assert len(info.value.message) <= 200


def test_vendor_scrub_vendor_text() -> None:
    assert scrub_vendor_text(f"see  {SECRET_URL}\n now") == "see <url> now"
    assert scrub_vendor_text(f"bearer {TOKEN}") == "Bearer <redacted>"
    assert scrub_vendor_text(f"token {TOKEN} bad", secrets=[TOKEN]) == "token <redacted> bad"
    assert scrub_vendor_text("key " + "aB3" * 12 + " bad") == "key <redacted> bad"
    assert scrub_vendor_text("jwt eyJhbGciOi.eyJzdWIi.sig here") == "jwt <redacted> here"
    assert scrub_vendor_text("Invalid output format") == "Invalid output format"


async def test_vendor_echoed_request_credential_is_removed(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(API, status=400, payload={"message": f"token {TOKEN} is odd", "errorType": "x"})
    with pytest.raises(PermanentError) as info:
        await call(http)
    assert info.value.message == "invox.thing: HTTP 400: token <redacted> is odd"


async def test_vendor_401_carries_no_vendor_text(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(API, status=401, payload={"messsage": "token MARKER-OTHER expired"})
    with pytest.raises(AuthenticationRejected) as info:
        await call(http)
    assert info.value.message == "invox.thing: HTTP 401"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("2.5", 2.5),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),
    ],
)
def test_vendor_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 27, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected


def test_vendor_error_for_status_other_statuses_are_transient() -> None:
    error: ScribeError = error_for_status("x.y", 304, b"", {})
    assert isinstance(error, TransientError)
    assert error.error_type == ErrorType.UPSTREAM_UNAVAILABLE
