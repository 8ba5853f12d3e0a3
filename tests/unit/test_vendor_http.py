"""VendorHttp: the one mapping from vendor HTTP answers to worker errors (aioresponses boundary)."""

from __future__ import annotations

import gzip
import json
import resource
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from yarl import URL

from schemas.errors import ErrorType
from worker.constants import DEFAULT_MAX_VENDOR_RESPONSE_BYTES
from worker.errors import PermanentError, ScribeError, TransientError
from worker.providers.http import (
    AuthenticationRejected,
    VendorHttp,
    error_for_status,
    finite_number,
    parse_json,
    parse_retry_after,
)
from worker.settings import Settings

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
    assert info.value.message == f"invox.thing answered HTTP {status} (invalidTemplate)"
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
    assert info.value.message == f"invox.thing answered HTTP {status}"


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
    # Accept-Encoding is what aiohttp would send anyway, named so that we decode what comes.
    assert request.kwargs["headers"] == {
        "Content-Type": "application/pdf",
        "Accept-Encoding": "gzip, deflate",
    }
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


async def test_vendor_message_carries_no_vendor_text(
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
    assert info.value.message == "invox.thing answered HTTP 400"


async def test_vendor_error_type_that_echoes_the_credential_is_dropped(
    http: VendorHttp, mocked: aioresponses
) -> None:
    # TOKEN is a plain word, so it would pass the errorType syntax check on its own.
    mocked.post(API, status=400, payload={"message": "odd", "errorType": TOKEN})
    with pytest.raises(PermanentError) as info:
        await call(http)
    assert info.value.error_type == ErrorType.BAD_REQUEST
    assert info.value.message == "invox.thing answered HTTP 400"


async def test_vendor_401_carries_no_vendor_text(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(API, status=401, payload={"messsage": "token MARKER-OTHER expired"})
    with pytest.raises(AuthenticationRejected) as info:
        await call(http)
    assert info.value.message == "invox.thing answered HTTP 401"


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


# ---------------------------------------------------------------- hostile answers (issue 12)

PATIENT_SENTENCE = "MARKER-PATIENT the patient reports crushing chest pain since Tuesday"
CAP_BYTES = 1024 * 1024


def test_vendor_error_for_status_never_forwards_vendor_free_text() -> None:
    """Item 7: a vendor that echoes the transcript in its error text must not leak it."""
    body = json.dumps(
        {"messsage": f"cannot summarise: {PATIENT_SENTENCE}", "errorType": "invalidTemplate"}
    ).encode()
    for status in (400, 403, 404, 409, 413, 422, 429, 500, 503, 304):
        error = error_for_status("invox.summary", status, body, {})
        for text in (error.message, str(error), repr(error)):
            assert "MARKER-PATIENT" not in text
            assert "chest pain" not in text
        assert error.message == f"invox.summary answered HTTP {status} (invalidTemplate)"


async def test_vendor_echoing_the_transcript_leaks_nothing(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(
        API, status=400, payload={"message": PATIENT_SENTENCE, "errorType": "invalidTemplate"}
    )
    mocked.post(API, status=502, body=PATIENT_SENTENCE)
    mocked.post(API, status=403, payload={"messsage": PATIENT_SENTENCE})
    for expected in (
        "invox.thing answered HTTP 400 (invalidTemplate)",
        "invox.thing answered HTTP 502",
        "invox.thing answered HTTP 403",
    ):
        with pytest.raises(ScribeError) as info:
            await call(http)
        assert info.value.message == expected
        assert "MARKER-PATIENT" not in f"{info.value!s} {info.value!r}"


@pytest.mark.parametrize(
    "error_type", ["x" * 65, "9lives", "two words", "a.b", "caf\u00e9", "", 42, ["x"], None]
)
def test_vendor_error_type_is_bounded(error_type: object) -> None:
    body = json.dumps({"errorType": error_type}).encode()
    error = error_for_status("invox.summary", 400, body, {})
    assert error.error_type == ErrorType.BAD_REQUEST
    assert error.message == "invox.summary answered HTTP 400"


def test_vendor_error_body_nested_deep_is_not_a_crash() -> None:
    error = error_for_status("invox.summary", 400, b"[" * 100_000, {})
    assert isinstance(error, PermanentError)
    assert error.error_type == ErrorType.BAD_REQUEST


@pytest.mark.parametrize("deep", [b'{"a":' * 100_000 + b"1" + b"}" * 100_000, b"[" * 100_000])
async def test_vendor_json_nested_100000_deep_is_malformed_at_once(
    session: aiohttp.ClientSession, loopback: Loopback, deep: bytes
) -> None:
    """Item 8: json.loads raised RecursionError here (an internalError, retried to the limit)."""
    loopback.reply = answer(deep)
    with pytest.raises(PermanentError) as info:
        await capped_call(session, loopback.url)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert not info.value.retryable
    assert info.value.message == "invox.thing: the answer is JSON nested deeper than 200 levels"


def test_vendor_json_depth_allowed() -> None:
    """pydantic_core's own guard: 200 levels parse, 202 do not (enough for any vendor answer)."""
    parse_json(b"[" * 200 + b"]" * 200, "x.y")
    parse_json(b'{"a":' * 200 + b"1" + b"}" * 200, "x.y")
    for deep in (b"[" * 202 + b"]" * 202, b'{"a":' * 202 + b"1" + b"}" * 202):
        with pytest.raises(PermanentError) as info:
            parse_json(deep, "x.y")
        assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


@pytest.mark.parametrize("body", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'])
async def test_vendor_nan_and_infinity_are_not_json(
    http: VendorHttp, mocked: aioresponses, body: str
) -> None:
    mocked.post(API, status=200, body=body)
    with pytest.raises(TransientError) as info:
        await call(http)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (2.5, 2.5),
        (float("inf"), None),
        (float("-inf"), None),
        (float("nan"), None),
        (10**400, None),
        (True, None),
        ("3", None),
        (None, None),
    ],
)
def test_vendor_finite_number(value: object, expected: float | None) -> None:
    assert finite_number(value) == expected


def gzip_bomb(expanded_mib: int) -> bytes:
    """A gzip stream of `expanded_mib` MiB of zeros (about 1 KiB on the wire per MiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1024 * 1024)
    parts = [compressor.compress(zeros) for _ in range(expanded_mib)]
    return b"".join([*parts, compressor.flush()])


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Loopback:
    """A real HTTP server on 127.0.0.1 that answers whatever `reply` says, recording requests."""

    def __init__(self) -> None:
        self.reply: Reply | None = None
        self.headers: list[dict[str, str]] = []
        self.unanswered = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A request the test gave no reply for is recorded (the fixture fails the test on it)
        rather than asserted here, where it would only turn into an HTTP 500."""
        self.headers.append(dict(request.headers))
        await request.read()
        if self.reply is None:
            self.unanswered += 1
            return web.Response(status=501)
        return await self.reply(request)


@pytest.fixture
async def loopback() -> AsyncIterator[Loopback]:
    server_state = Loopback()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server_state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    server_state.url = str(server.make_url("/api/thing"))
    try:
        yield server_state
    finally:
        await server.close()
    assert server_state.unanswered == 0, "a request arrived before the test set a reply"


def answer(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body,
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    return reply


def streamed(chunk: bytes, count: int, **headers: str) -> Reply:
    """A chunked answer without Content-Length: only a running total can stop it."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        try:
            for _ in range(count):
                await response.write(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client stopped reading at its cap
        return response

    return reply


async def capped_call(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    http = VendorHttp(session, timeout_s=10.0, max_response_bytes=CAP_BYTES)
    return await http.request_json("invox", "invox.thing", "POST", url)


async def test_vendor_gzip_bomb_is_refused_while_reading(
    session: aiohttp.ClientSession, loopback: Loopback
) -> None:
    """Item 5: 256 KiB on the wire expanding to 256 MiB must not be expanded past the cap."""
    loopback.reply = answer(gzip_bomb(256), headers={"Content-Encoding": "gzip"})
    before = peak_rss_bytes()
    with pytest.raises(PermanentError) as info:
        await capped_call(session, loopback.url)
    grown = peak_rss_bytes() - before
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert info.value.message == f"invox.thing: the answer is larger than {CAP_BYTES} bytes"
    assert grown < 64 * 1024 * 1024, grown


async def test_vendor_deflate_bomb_streamed_is_refused(
    session: aiohttp.ClientSession, loopback: Loopback
) -> None:
    """Chunked (no Content-Length), zlib-wrapped deflate: stopped by the running decoded total."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Encoding": "deflate"})
        await response.prepare(request)
        compressor = zlib.compressobj(1)
        try:
            for _ in range(64):
                await response.write(
                    compressor.compress(b"\0" * (1024 * 1024)) + compressor.flush(zlib.Z_SYNC_FLUSH)
                )
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client stopped reading at its cap
        return response

    loopback.reply = reply
    with pytest.raises(PermanentError) as info:
        await capped_call(session, loopback.url)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


@pytest.mark.parametrize("with_length", [True, False])
async def test_vendor_plain_answer_over_the_cap_is_refused(
    session: aiohttp.ClientSession, loopback: Loopback, with_length: bool
) -> None:
    if with_length:
        loopback.reply = answer(b" " * (CAP_BYTES + 1))
    else:
        loopback.reply = streamed(b" " * 65536, 64)
    with pytest.raises(PermanentError) as info:
        await capped_call(session, loopback.url)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert "larger than" in info.value.message


async def test_vendor_answer_at_the_cap_is_read(
    session: aiohttp.ClientSession, loopback: Loopback
) -> None:
    body = b'{"a": "' + b"x" * (CAP_BYTES - 10) + b'"}'
    assert len(body) == CAP_BYTES - 1
    loopback.reply = answer(body)
    assert (await capped_call(session, loopback.url))["a"] == "x" * (CAP_BYTES - 10)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _two_gzip_members(data: bytes) -> bytes:
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", _gzip),
        ("x-gzip", _gzip),
        ("GZIP", _two_gzip_members),
        ("deflate", _zlib),
        ("deflate", _raw_deflate),
        ("identity", bytes),
    ],
)
async def test_vendor_compressed_answers_within_the_cap_are_decoded(
    session: aiohttp.ClientSession,
    loopback: Loopback,
    encoding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    payload = {"text": "hello " * 50_000, "n": 1}
    loopback.reply = answer(
        encode(json.dumps(payload).encode()), headers={"Content-Encoding": encoding}
    )
    assert await capped_call(session, loopback.url) == payload
    assert loopback.headers[0]["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("br", b"\x0b\x02\x80{}\x03"),
        ("gzip, gzip", _gzip(_gzip(b"{}"))),
        ("gzip", _gzip(b'{"a": "' + b"x" * 10_000 + b'"}')[:-100]),  # truncated
        ("gzip", b"not gzip at all"),
    ],
)
async def test_vendor_undecodable_answers_are_malformed(
    session: aiohttp.ClientSession, loopback: Loopback, encoding: str, body: bytes
) -> None:
    loopback.reply = answer(body, headers={"Content-Encoding": encoding})
    with pytest.raises(ScribeError) as info:
        await capped_call(session, loopback.url)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


async def test_vendor_error_answer_over_the_cap_still_maps_the_status(
    session: aiohttp.ClientSession, loopback: Loopback
) -> None:
    loopback.reply = answer(gzip_bomb(64), status=400, headers={"Content-Encoding": "gzip"})
    with pytest.raises(PermanentError) as info:
        await capped_call(session, loopback.url)
    assert info.value.error_type == ErrorType.BAD_REQUEST
    assert info.value.http_status == 400


def test_vendor_default_answer_cap_is_the_setting_default() -> None:
    settings = Settings.from_env({})
    assert settings.max_vendor_response_bytes == DEFAULT_MAX_VENDOR_RESPONSE_BYTES
    assert DEFAULT_MAX_VENDOR_RESPONSE_BYTES == 32 * 1024 * 1024


@pytest.mark.parametrize(
    "body", [b"[" + b",".join([b"0"] * 1_000_001) + b"]", b'{"a": [' + b"{}," * 1_000_000 + b"{}]}"]
)
def test_vendor_json_with_too_many_values_is_refused_before_parsing(body: bytes) -> None:
    """32 MiB of "[0,0,...]" took pydantic_core to +1.4 GiB: the value count is bounded first."""
    with pytest.raises(PermanentError) as info:
        parse_json(body, "x.y")
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert info.value.message == "x.y: the answer has over 1000000 JSON values"


def test_vendor_json_at_the_value_bound_parses() -> None:
    assert parse_json(b"[" + b",".join([b"0"] * 1_000_000) + b"]", "x.y") == [0] * 1_000_000
