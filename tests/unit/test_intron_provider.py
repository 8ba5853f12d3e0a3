"""Intron transcriber and summarizer: status mapping (aioresponses) and upload forms (loopback)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from yarl import URL

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, Transcript, TranscriptionHandle
from worker.constants import MAX_TRANSCRIPT_BYTES, MAX_TRANSCRIPT_SEGMENTS
from worker.errors import PermanentError, TransientError
from worker.providers.base import PreparedAudio, Submitted
from worker.providers.http import VendorHttp
from worker.providers.intron import IntronSummarizer, IntronTranscriber
from worker.settings import IntronSettings, Secret

from .vendor_loopback import loopback_server

BASE = "https://infer.intron.test"
API_KEY = "MARKER-INTRON-KEY"
AUDIO_URL = "https://storage.test/MARKER-AUDIO-URL.wav?sig=MARKER-AUDIO-SIG"
TRANSCRIPT = "MARKER-TRANSCRIPT patient says chest pain"
AUDIO_BYTES = b"RIFF....WAVEfmt MARKER-AUDIO-BYTES" * 100
STATUS_URL = re.compile(r"^https://infer\.intron\.test/file/v1/status/.*$")


@pytest.fixture
async def http() -> AsyncIterator[VendorHttp]:
    async with aiohttp.ClientSession() as session:
        yield VendorHttp(session, timeout_s=5.0)


def intron_settings(base: str = BASE, api_key: str | None = API_KEY) -> IntronSettings:
    return IntronSettings(
        base_url=base,
        api_key=Secret(api_key) if api_key else None,
        upload_path="/file/v1/upload",
        status_path="/file/v1/status/{file_id}",
    )


def make_job(audio: dict[str, Any] | None = None, **intron: Any) -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": "6f1c1b8e-1f0e-4c39-9d53-2f8a3a1f0b11",
            "audio": audio or {"url": AUDIO_URL},
            "intron": intron,
        }
    )


@pytest.fixture
def audio(tmp_path: Path) -> PreparedAudio:
    path = tmp_path / "consult.wav"
    path.write_bytes(AUDIO_BYTES)
    return PreparedAudio(
        path=path,
        size_bytes=len(AUDIO_BYTES),
        duration_s=12.0,
        mime_type="audio/wav",
        file_name="consult.wav",
        source_url=AUDIO_URL,
    )


def handle(file_id: str = "file-123") -> TranscriptionHandle:
    return TranscriptionHandle(provider="intron", handle=file_id, submitted_at=datetime.now(UTC))


def assert_clean(exc: BaseException) -> None:
    text = f"{exc!s} {exc!r}"
    for marker in ("MARKER-AUDIO-URL", "MARKER-AUDIO-SIG", API_KEY, "MARKER-TRANSCRIPT", BASE):
        assert marker not in text


# ---------------------------------------------------------------- upload form (loopback server)


class FakeIntron:
    """The upload endpoint on loopback, recording each multipart form it receives."""

    def __init__(self) -> None:
        self.forms: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.nested_parts = 0

    async def upload(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        fields: dict[str, Any] = {}
        order: list[str] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                # Recorded, asserted by the fixture: an assert here would be an HTTP 500.
                self.nested_parts += 1
                continue
            name = part.name or ""
            order.append(name)
            if part.filename is not None:
                fields[name] = {
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type"),
                    "bytes": await part.read(),
                }
            else:
                fields[name] = await part.text()
        fields["__order__"] = order
        self.forms.append(fields)
        return web.json_response(
            {"data": {"file_id": "file-123"}, "message": "file queued", "status": "Ok"}
        )


@pytest.fixture
async def fake_intron() -> AsyncIterator[tuple[FakeIntron, str]]:
    fake = FakeIntron()
    app = web.Application()
    app.router.add_post("/file/v1/upload", fake.upload)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
    assert fake.nested_parts == 0, "the upload form held a nested multipart"


async def test_intron_submit_url_mode_sends_audio_file_url(
    http: VendorHttp, fake_intron: tuple[FakeIntron, str], audio: PreparedAudio
) -> None:
    fake, base = fake_intron
    transcriber = IntronTranscriber(intron_settings(base), http)
    job = make_job(
        upload_mode="url",
        use_diarization=True,
        category="file_category_general",
        post_processing=["get_summary", "get_soap_note"],
    )
    result = await transcriber.submit(job, audio)
    assert isinstance(result, Submitted)
    assert result.handle.provider == "intron"
    assert result.handle.handle == "file-123"
    (form,) = fake.forms
    assert form["__order__"][0] == "audio_file_name"
    assert form["audio_file_name"] == "consult.wav"
    assert form["audio_file_url"] == AUDIO_URL
    assert "audio_file_blob" not in form
    assert form["use_diarization"] == "TRUE"
    assert form["use_category"] == "file_category_general"
    assert form["get_summary"] == "TRUE"
    assert form["get_soap_note"] == "TRUE"
    assert "get_clerking" not in form
    assert fake.headers[0]["Authorization"] == f"Bearer {API_KEY}"


async def test_intron_submit_file_mode_streams_the_blob(
    http: VendorHttp, fake_intron: tuple[FakeIntron, str], audio: PreparedAudio
) -> None:
    fake, base = fake_intron
    transcriber = IntronTranscriber(intron_settings(base), http)
    await transcriber.submit(make_job(upload_mode="file", use_diarization=False), audio)
    (form,) = fake.forms
    assert form["audio_file_name"] == "consult.wav"
    assert "audio_file_url" not in form
    assert form["audio_file_blob"] == {
        "filename": "consult.wav",
        "content_type": "audio/wav",
        "bytes": AUDIO_BYTES,
    }
    assert form["use_diarization"] == "FALSE"
    assert form["use_category"] == "file_category_telehealth"


@pytest.mark.parametrize(
    ("source_url", "expected_field"),
    [
        (AUDIO_URL, "audio_file_url"),
        (None, "audio_file_blob"),
        ("http://storage.test/plain.wav", "audio_file_blob"),
    ],
)
async def test_intron_submit_auto_mode(
    http: VendorHttp,
    fake_intron: tuple[FakeIntron, str],
    audio: PreparedAudio,
    source_url: str | None,
    expected_field: str,
) -> None:
    fake, base = fake_intron
    prepared = PreparedAudio(
        path=audio.path,
        size_bytes=audio.size_bytes,
        duration_s=audio.duration_s,
        mime_type=audio.mime_type,
        file_name=audio.file_name,
        source_url=source_url,
    )
    await IntronTranscriber(intron_settings(base), http).submit(make_job(), prepared)
    (form,) = fake.forms
    other = ({"audio_file_url", "audio_file_blob"} - {expected_field}).pop()
    assert expected_field in form
    assert other not in form


async def test_intron_submit_url_mode_without_https_url(
    http: VendorHttp, audio: PreparedAudio, mocked: aioresponses
) -> None:
    prepared = PreparedAudio(
        path=audio.path,
        size_bytes=1,
        duration_s=1.0,
        mime_type="audio/wav",
        file_name="a.wav",
        source_url=None,
    )
    with pytest.raises(PermanentError) as info:
        await IntronTranscriber(intron_settings(), http).submit(
            make_job(upload_mode="url"), prepared
        )
    assert info.value.error_type == ErrorType.INVALID_MESSAGE
    assert mocked.requests == {}


async def test_intron_without_api_key_is_not_configured(
    http: VendorHttp, audio: PreparedAudio, mocked: aioresponses
) -> None:
    transcriber = IntronTranscriber(intron_settings(api_key=None), http)
    with pytest.raises(PermanentError) as info:
        await transcriber.submit(make_job(), audio)
    assert info.value.error_type == ErrorType.PROVIDER_NOT_CONFIGURED
    with pytest.raises(PermanentError) as info:
        await transcriber.status(make_job(), handle())
    assert info.value.error_type == ErrorType.PROVIDER_NOT_CONFIGURED
    assert mocked.requests == {}


@pytest.mark.parametrize(
    "payload",
    [
        {"data": {}, "status": "Ok"},
        {"data": {"file_id": ""}},
        {"data": {"file_id": 42}},
        {"message": "queued"},
    ],
)
async def test_intron_submit_malformed_answer(
    http: VendorHttp, audio: PreparedAudio, mocked: aioresponses, payload: dict[str, Any]
) -> None:
    mocked.post(f"{BASE}/file/v1/upload", payload=payload)
    with pytest.raises(TransientError) as info:
        await IntronTranscriber(intron_settings(), http).submit(make_job(), audio)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert_clean(info.value)


async def test_intron_submit_413_is_file_too_large(
    http: VendorHttp, audio: PreparedAudio, mocked: aioresponses
) -> None:
    mocked.post(
        f"{BASE}/file/v1/upload",
        status=413,
        payload={"data": {}, "message": "file too large", "status": "Error"},
    )
    with pytest.raises(PermanentError) as info:
        await IntronTranscriber(intron_settings(), http).submit(make_job(), audio)
    assert info.value.error_type == ErrorType.FILE_TOO_LARGE


async def test_intron_submit_401_is_unauthorized_at_once(
    http: VendorHttp, audio: PreparedAudio, mocked: aioresponses
) -> None:
    mocked.post(f"{BASE}/file/v1/upload", status=401, payload={"message": "bad key"})
    with pytest.raises(PermanentError) as info:
        await IntronTranscriber(intron_settings(), http).submit(make_job(upload_mode="url"), audio)
    assert info.value.error_type == ErrorType.UNAUTHORIZED
    assert len(mocked.requests[("POST", URL(f"{BASE}/file/v1/upload"))]) == 1
    assert_clean(info.value)


# ---------------------------------------------------------------- status (aioresponses)


def status_body(status: str | None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"audio_file_name": "consult.wav", **extra}
    if status is not None:
        data["processing_status"] = status
    return {"status": "Ok", "message": "file status found", "data": data}


@pytest.mark.parametrize("status", ["FILE_QUEUED", "FILE_PENDING", "FILE_PROCESSING"])
async def test_intron_status_pending(http: VendorHttp, mocked: aioresponses, status: str) -> None:
    mocked.get(STATUS_URL, payload=status_body(status))
    assert await IntronTranscriber(intron_settings(), http).status(make_job(), handle()) is None


async def test_intron_status_request(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.get(STATUS_URL, payload=status_body("FILE_QUEUED"))
    await IntronTranscriber(intron_settings(), http).status(make_job(), handle("a/b c"))
    ((method, url),) = mocked.requests.keys()
    assert method == "GET"
    assert url.raw_path == "/file/v1/status/a%2Fb%20c"
    assert url.query["get_structured_post_processing"] == "f"
    (request,) = next(iter(mocked.requests.values()))
    assert request.kwargs["headers"]["Authorization"] == f"Bearer {API_KEY}"


async def test_intron_status_transcribed_plain(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.get(
        STATUS_URL,
        payload=status_body(
            "FILE_TRANSCRIBED",
            audio_transcript="hello world",
            processed_audio_duration_in_seconds=20,
        ),
    )
    transcript = await IntronTranscriber(intron_settings(), http).status(
        make_job(use_diarization=False), handle()
    )
    assert transcript == Transcript(provider="intron", text="hello world", duration_s=20.0)


async def test_intron_status_transcribed_diarized_with_post_processing(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.get(
        STATUS_URL,
        payload=status_body(
            "FILE_TRANSCRIBED",
            audio_transcript="\n    SPEAKER_01: Hello world.  \n    SPEAKER_02: Welcome.\n  ",
            processed_audio_duration_in_seconds=20.5,
            transcript_summary="# Summary",
            transcript_soap_note="# SOAP",
            transcript_entity_list="- aspirin",
        ),
    )
    transcript = await IntronTranscriber(intron_settings(), http).status(make_job(), handle())
    assert transcript is not None
    assert transcript.text == "SPEAKER_01: Hello world.\nSPEAKER_02: Welcome."
    assert [(s.speaker, s.text, s.start, s.end) for s in transcript.segments] == [
        ("SPEAKER_01", "Hello world.", 0.0, 0.0),
        ("SPEAKER_02", "Welcome.", 0.0, 0.0),
    ]
    assert transcript.duration_s == 20.5
    assert transcript.post_processing == {
        "get_summary": "# Summary",
        "get_soap_note": "# SOAP",
        "get_entity_list": "- aspirin",
    }


async def test_intron_status_transcribed_without_transcript_is_malformed(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.get(STATUS_URL, payload=status_body("FILE_TRANSCRIBED"))
    with pytest.raises(TransientError) as info:
        await IntronTranscriber(intron_settings(), http).status(make_job(), handle())
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("FILE_PROCESSING_FAILED", ErrorType.TRANSCRIPTION_FAILED),
        ("FILE_INVALID", ErrorType.TRANSCRIPTION_FAILED),
        ("FILE_PROCESSING_CANCELLED", ErrorType.TRANSCRIPTION_FAILED),
        ("FILE_PROCESSING_TIMEOUT", ErrorType.TRANSCRIPTION_FAILED),
        ("FILE_INVALID_SIZE", ErrorType.FILE_TOO_LARGE),
        ("FILE_INVALID_DURATION", ErrorType.AUDIO_TOO_LONG),
    ],
)
async def test_intron_status_failures(
    http: VendorHttp, mocked: aioresponses, status: str, expected: ErrorType
) -> None:
    mocked.get(STATUS_URL, payload=status_body(status, audio_transcript=TRANSCRIPT))
    with pytest.raises(PermanentError) as info:
        await IntronTranscriber(intron_settings(), http).status(make_job(), handle())
    assert info.value.error_type == expected
    assert status in info.value.message
    assert_clean(info.value)


@pytest.mark.parametrize(
    "status",
    # Issue 12, item 8: a list or an object is unhashable and crashed the set lookup.
    ["FILE_ARCHIVED", "file_queued", "", None, 3, 1.5, True, ["FILE_QUEUED"], {"a": 1}],
)
async def test_intron_status_unknown_is_permanent(
    http: VendorHttp, mocked: aioresponses, status: Any
) -> None:
    mocked.get(STATUS_URL, payload=status_body(status, audio_transcript=TRANSCRIPT))
    with pytest.raises(PermanentError) as info:
        await IntronTranscriber(intron_settings(), http).status(make_job(), handle())
    assert info.value.error_type == ErrorType.UNKNOWN_VENDOR_STATUS
    assert_clean(info.value)


async def test_intron_status_404_is_transcription_not_found(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.get(
        STATUS_URL, status=404, payload={"data": {}, "message": "not found", "status": "Error"}
    )
    with pytest.raises(PermanentError) as info:
        await IntronTranscriber(intron_settings(), http).status(make_job(), handle())
    assert info.value.error_type == ErrorType.TRANSCRIPTION_NOT_FOUND
    assert info.value.http_status == 404


async def test_intron_status_429_retry_after(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.get(
        STATUS_URL,
        status=429,
        headers={"Retry-After": "30"},
        payload={"data": {}, "message": "too many requests", "status": "Error"},
    )
    with pytest.raises(TransientError) as info:
        await IntronTranscriber(intron_settings(), http).status(make_job(), handle())
    assert info.value.error_type == ErrorType.RATE_LIMITED
    assert info.value.retry_after_s == 30.0


# ---------------------------------------------------------------- summarizer


async def test_intron_summarizer_uses_post_processing() -> None:
    transcript = Transcript(
        provider="intron", text=TRANSCRIPT, post_processing={"get_soap_note": "# SOAP"}
    )
    summary = await IntronSummarizer().summarize(
        make_job(summary_source="get_soap_note"), transcript
    )
    assert summary.provider == "intron"
    assert summary.output_format == "SUMMARY"
    assert summary.text == "# SOAP"


@pytest.mark.parametrize(
    "transcript",
    [
        Transcript(provider="intron", text=TRANSCRIPT),
        Transcript(provider="intron", text=TRANSCRIPT, post_processing={"get_summary": "  "}),
    ],
)
async def test_intron_summarizer_without_output_is_malformed(transcript: Transcript) -> None:
    """Not inconsistentInput (an Invox 400): the worker asked for the output, Intron sent none."""
    with pytest.raises(PermanentError) as info:
        await IntronSummarizer().summarize(make_job(), transcript)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert "get_summary" in info.value.message
    assert_clean(info.value)


async def test_intron_summarizer_of_another_transcript_is_incompatible() -> None:
    transcript = Transcript(provider="local", text=TRANSCRIPT, post_processing={"get_summary": "S"})
    with pytest.raises(PermanentError) as info:
        await IntronSummarizer().summarize(make_job(), transcript)
    assert info.value.error_type == ErrorType.INCOMPATIBLE_PROVIDERS
    assert_clean(info.value)


@pytest.mark.parametrize(
    ("summarizer", "intron", "flags"),
    [
        pytest.param("intron", {}, {"get_summary"}, id="intron-summary-asked-for-by-itself"),
        pytest.param(
            "intron", {"summarySource": "get_clerking"}, {"get_clerking"}, id="summary-source"
        ),
        pytest.param(
            "intron",
            {"postProcessing": ["get_entity_list", "get_summary"]},
            {"get_entity_list", "get_summary"},
            id="no-repeat",
        ),
        pytest.param("invox", {}, set(), id="other-summarizer-asks-nothing"),
    ],
)
async def test_intron_upload_asks_for_what_the_summary_needs(
    http: VendorHttp,
    fake_intron: tuple[FakeIntron, str],
    audio: PreparedAudio,
    summarizer: str,
    intron: dict[str, Any],
    flags: set[str],
) -> None:
    """Before, `--summarizer intron` without the matching post-processing flag paid for the
    whole transcription and then failed at the summary stage."""
    fake, base = fake_intron
    job = JobRequest.model_validate(
        {
            "jobId": "6f1c1b8e-1f0e-4c39-9d53-2f8a3a1f0b11",
            "audio": {"url": AUDIO_URL},
            "providers": {"transcriber": "intron", "summarizer": summarizer},
            "intron": intron,
        }
    )
    await IntronTranscriber(intron_settings(base), http).submit(job, audio)
    (form,) = fake.forms
    assert {name for name in form["__order__"] if name.startswith("get_")} == flags
    assert len(form["__order__"]) == len(set(form["__order__"]))
    assert all(form[flag] == "TRUE" for flag in flags)


# ---------------------------------------------------------------- hostile answers (issue 12)


async def intron_status_over_loopback(body: str | bytes, **intron: Any) -> Transcript | None:
    """The status call against a real loopback server answering `body`."""
    async with loopback_server() as server, aiohttp.ClientSession() as session:
        server.answer(body)
        transcriber = IntronTranscriber(
            intron_settings(server.base), VendorHttp(session, timeout_s=10)
        )
        return await transcriber.status(make_job(**intron), handle())


def transcribed(transcript: str, extra: str = "") -> str:
    return (
        '{"status": "Ok", "data": {"processing_status": "FILE_TRANSCRIBED", '
        f'"audio_transcript": {json.dumps(transcript)}{extra}}}}}'
    )


@pytest.mark.parametrize("duration", ["1e400", "-1e400", "1" + "0" * 400, "[20]", '"20"'])
async def test_intron_duration_that_is_not_a_finite_number_is_ignored(duration: str) -> None:
    """1e400 parsed to inf (a ValidationError later), 10**400 raised OverflowError: both crashed."""
    transcript = await intron_status_over_loopback(
        transcribed("hello", f', "processed_audio_duration_in_seconds": {duration}'),
        use_diarization=False,
    )
    assert transcript == Transcript(provider="intron", text="hello", duration_s=None)


async def test_intron_transcript_nan_is_malformed() -> None:
    with pytest.raises(TransientError) as info:
        await intron_status_over_loopback(
            transcribed("hello", ', "processed_audio_duration_in_seconds": NaN')
        )
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


async def test_intron_transcript_over_5_mib_is_too_large() -> None:
    # 2.6 million characters, 5 MiB + 2 bytes of UTF-8: the bound is on bytes, not characters.
    text = "\u00e9" * (MAX_TRANSCRIPT_BYTES // 2 + 1)
    with pytest.raises(PermanentError) as info:
        await intron_status_over_loopback(transcribed(text), use_diarization=False)
    assert info.value.error_type == ErrorType.TRANSCRIPT_TOO_LARGE
    assert info.value.message == "intron.status: the transcript is over 5242880 bytes"


async def test_intron_transcript_at_5_mib_is_read() -> None:
    text = "\u00e9" * (MAX_TRANSCRIPT_BYTES // 2 - 1)
    transcript = await intron_status_over_loopback(transcribed(text), use_diarization=False)
    assert transcript is not None
    assert len(transcript.text.encode()) == MAX_TRANSCRIPT_BYTES - 2


async def test_intron_transcript_over_the_wire_string_bound_is_too_large() -> None:
    """Under 5 MiB of bytes but over the wire models' 5,000,000 characters: the Transcript model
    would refuse it (a ValidationError, which crashed as internalError before)."""
    text = "a" * 5_000_001
    with pytest.raises(PermanentError) as info:
        await intron_status_over_loopback(transcribed(text), use_diarization=False)
    assert info.value.error_type == ErrorType.TRANSCRIPT_TOO_LARGE


async def test_intron_post_processing_over_5_mib_is_too_large() -> None:
    big = json.dumps("#" * (MAX_TRANSCRIPT_BYTES // 2 + 1))
    extra = f', "transcript_summary": {big}, "transcript_soap_note": {big}'
    with pytest.raises(PermanentError) as info:
        await intron_status_over_loopback(transcribed("hello", extra))
    assert info.value.error_type == ErrorType.TRANSCRIPT_TOO_LARGE


async def test_intron_too_many_diarized_turns_are_too_large() -> None:
    text = "SPEAKER_1: a\n" * (MAX_TRANSCRIPT_SEGMENTS + 1)
    with pytest.raises(PermanentError) as info:
        await intron_status_over_loopback(transcribed(text), use_diarization=True)
    assert info.value.error_type == ErrorType.TRANSCRIPT_TOO_LARGE
    assert "segments" in info.value.message
