"""Invox client and providers: headers, 401 refresh, status keys, payloads, signed-URL uploads."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from schemas.errors import ErrorType
from schemas.jobs import (
    ClinicalNoteField,
    DocumentRef,
    JobRequest,
    SoapField,
    Summary,
    Template,
    Transcript,
    TranscriptionHandle,
)
from worker.constants import MAX_TRANSCRIPT_BYTES, MAX_TRANSCRIPT_SEGMENTS
from worker.errors import PermanentError, ScribeError, TransientError
from worker.media import FetchPolicy, MediaFetcher
from worker.providers.base import PreparedAudio, PreparedDocument, Submitted
from worker.providers.http import VendorHttp
from worker.providers.invox import (
    InvoxClient,
    InvoxNoteWriter,
    InvoxSummarizer,
    InvoxTranscriber,
)
from worker.providers.invox_auth import InvoxTokenSource
from worker.settings import InvoxSettings, Secret

from .vendor_loopback import Loopback, loopback_server

BASE = "https://api.invox.test"
TOKEN_URL = "https://auth.invox.test/token"
STATIC = "MARKER-STATIC-TOKEN"
FRESH = "MARKER-FRESH-TOKEN"
SIGNED_URL = "https://bucket.storage.test/MARKER-SIGNED-URL?X-Amz-Signature=MARKER-SIG"
AUDIO_URL = "https://audio.test/MARKER-AUDIO-URL.wav?token=MARKER-AUDIO-SIG"
TRANSCRIPT = "MARKER-TRANSCRIPT the patient reports chest pain"
VERSION = "2025-11-01"

PRESIGNED = f"{BASE}/api/v1/generate-presigned-url"
TRANSCRIPTION = f"{BASE}/api/v1/get-transcription"
SUMMARY = f"{BASE}/api/v1/generate-consultation-summary"
NOTE = f"{BASE}/api/v1/generate-clinical-note-from-summary"
DOCUMENTS = f"{BASE}/v1/generate-signed-urls-for-documents"
MARKERS = (
    STATIC,
    FRESH,
    "MARKER-SIGNED-URL",
    "MARKER-SIG",
    "MARKER-AUDIO-URL",
    "MARKER-AUDIO-SIG",
    "MARKER-TRANSCRIPT",
    "api.invox.test",
)


@pytest.fixture
async def http() -> AsyncIterator[VendorHttp]:
    async with aiohttp.ClientSession() as session:
        yield VendorHttp(session, timeout_s=5.0)


def invox_settings(
    *, base: str | None = BASE, static: str | None = STATIC, token_url: str | None = TOKEN_URL
) -> InvoxSettings:
    return InvoxSettings(
        base_url=base,
        api_version=VERSION,
        access_token=Secret(static) if static else None,
        token_url=token_url,
        app_id="app" if token_url else None,
        app_key=Secret("key") if token_url else None,
    )


def make_client(
    http: VendorHttp,
    settings: InvoxSettings | None = None,
    upload_allowlist: frozenset[str] = frozenset(),
) -> InvoxClient:
    settings = settings or invox_settings()
    tokens = InvoxTokenSource(settings, http)
    return InvoxClient(settings, http, tokens, upload_allowlist=upload_allowlist)


def make_job(**fields: Any) -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": "0b7b3f0e-2a51-4d7c-9a4e-6b1f8d1c2e3f",
            "audio": {"url": AUDIO_URL},
            **fields,
        }
    )


TEMPLATE = Template.model_validate(
    {
        "id": "tpl-1",
        "template_name": "Consult",
        "template_description": "General consult",
        "template_language": "en",
        "fields": [
            {"id": "f1", "name": "Diagnosis", "description": "Dx", "type": "string"},
            {
                "id": "f2",
                "name": "Severity",
                "type": "enum",
                "enumerableOptions": ["mild", "severe"],
                "value": "mild",
            },
        ],
    }
)


@pytest.fixture
def audio(tmp_path: Path) -> PreparedAudio:
    path = tmp_path / "consult.webm"
    path.write_bytes(b"MARKER-AUDIO-BYTES" * 64)
    return PreparedAudio(
        path=path,
        size_bytes=path.stat().st_size,
        duration_s=5.0,
        mime_type="audio/webm",
        file_name="consult.webm",
        source_url=AUDIO_URL,
    )


def handle(request_id: str = "req-1") -> TranscriptionHandle:
    return TranscriptionHandle(provider="invox", handle=request_id, submitted_at=datetime.now(UTC))


def transcript() -> Transcript:
    return Transcript(provider="invox", text=TRANSCRIPT)


def calls(mocked: aioresponses, method: str, url: str) -> list[Any]:
    return list(mocked.requests.get((method, URL(url)), []))


def assert_clean(exc: BaseException) -> None:
    text = f"{exc!s} {exc!r}"
    for marker in MARKERS:
        assert marker not in text, marker


def auth_of(request: Any) -> str:
    return str(request.kwargs["headers"]["Authorization"])


# ---------------------------------------------------------------- client: headers, config, 401


async def test_invox_every_call_sends_auth_json_and_version(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(SUMMARY, payload={"clinicalNote": "ok", "generationTime": 1.0})
    await InvoxSummarizer(make_client(http)).summarize(make_job(), transcript())
    (request,) = calls(mocked, "POST", SUMMARY)
    assert request.kwargs["headers"] == {
        "Authorization": f"Bearer {STATIC}",
        "Content-Type": "application/json",
        "X-Invox-Medical-Api-Version": VERSION,
        "Accept-Encoding": "gzip, deflate",
    }


async def test_invox_not_configured(http: VendorHttp, mocked: aioresponses) -> None:
    for settings in (
        invox_settings(base=None),
        invox_settings(static=None, token_url=None),
    ):
        with pytest.raises(PermanentError) as info:
            await InvoxSummarizer(make_client(http, settings)).summarize(make_job(), transcript())
        assert info.value.error_type == ErrorType.PROVIDER_NOT_CONFIGURED
    assert mocked.requests == {}


async def test_invox_401_refreshes_once_then_succeeds(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(SUMMARY, status=401, payload={"messsage": "Unauthorized"})
    mocked.post(SUMMARY, payload={"clinicalNote": "fine"})
    mocked.post(TOKEN_URL, payload={"accessToken": FRESH, "expiresIn": 7200})
    summary = await InvoxSummarizer(make_client(http)).summarize(make_job(), transcript())
    assert summary.text == "fine"
    first, second = calls(mocked, "POST", SUMMARY)
    assert auth_of(first) == f"Bearer {STATIC}"
    assert auth_of(second) == f"Bearer {FRESH}"
    assert second.kwargs["headers"]["X-Invox-Medical-Api-Version"] == VERSION
    assert first.kwargs["data"] == second.kwargs["data"]
    assert len(calls(mocked, "POST", TOKEN_URL)) == 1


async def test_invox_401_twice_is_unauthorized(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(SUMMARY, status=401, payload={"messsage": "Unauthorized"}, repeat=True)
    mocked.post(TOKEN_URL, payload={"accessToken": FRESH, "expiresIn": 7200}, repeat=True)
    with pytest.raises(PermanentError) as info:
        await InvoxSummarizer(make_client(http)).summarize(make_job(), transcript())
    assert info.value.error_type == ErrorType.UNAUTHORIZED
    assert info.value.http_status == 401
    assert len(calls(mocked, "POST", SUMMARY)) == 2
    assert len(calls(mocked, "POST", TOKEN_URL)) == 1
    assert_clean(info.value)


async def test_invox_static_token_only_401_is_unauthorized(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(SUMMARY, status=401, payload={"messsage": "Unauthorized"}, repeat=True)
    client = make_client(http, invox_settings(token_url=None))
    with pytest.raises(PermanentError) as info:
        await InvoxSummarizer(client).summarize(make_job(), transcript())
    assert info.value.error_type == ErrorType.UNAUTHORIZED
    assert len(calls(mocked, "POST", SUMMARY)) == 1
    assert_clean(info.value)


async def test_invox_token_url_only_fetches_then_caches(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(TOKEN_URL, payload={"accessToken": FRESH, "expiresIn": 7200})
    mocked.post(SUMMARY, payload={"clinicalNote": "a"}, repeat=True)
    client = make_client(http, invox_settings(static=None))
    summarizer = InvoxSummarizer(client)
    await summarizer.summarize(make_job(), transcript())
    await summarizer.summarize(make_job(), transcript())
    assert [auth_of(r) for r in calls(mocked, "POST", SUMMARY)] == [f"Bearer {FRESH}"] * 2
    assert len(calls(mocked, "POST", TOKEN_URL)) == 1


async def test_invox_concurrent_401s_share_one_token_fetch(
    http: VendorHttp, mocked: aioresponses
) -> None:
    callers = 5
    arrived = 0
    all_rejected = asyncio.Event()

    async def api(url: URL, **kwargs: Any) -> CallbackResult:
        nonlocal arrived
        if kwargs["headers"]["Authorization"] == f"Bearer {STATIC}":
            # Hold every first attempt until all callers have been rejected with the old token.
            arrived += 1
            if arrived == callers:
                all_rejected.set()
            await all_rejected.wait()
            return CallbackResult(status=401, payload={"messsage": "Unauthorized"})
        return CallbackResult(status=200, payload={"clinicalNote": "ok"})

    mocked.post(SUMMARY, callback=api, repeat=True)
    mocked.post(TOKEN_URL, payload={"accessToken": FRESH, "expiresIn": 7200}, repeat=True)
    summarizer = InvoxSummarizer(make_client(http))
    results = await asyncio.gather(
        *(summarizer.summarize(make_job(), transcript()) for _ in range(callers))
    )
    assert [r.text for r in results] == ["ok"] * callers
    assert len(calls(mocked, "POST", TOKEN_URL)) == 1
    assert len(calls(mocked, "POST", SUMMARY)) == 2 * callers


@pytest.mark.parametrize("message_key", ["messsage", "message"])
async def test_invox_400_error_type_both_message_spellings(
    http: VendorHttp, mocked: aioresponses, message_key: str
) -> None:
    mocked.post(
        SUMMARY,
        status=400,
        payload={message_key: "Invalid output format", "errorType": "invalidOutputFormat"},
    )
    with pytest.raises(PermanentError) as info:
        await InvoxSummarizer(make_client(http)).summarize(make_job(), transcript())
    assert info.value.error_type == ErrorType.INVALID_OUTPUT_FORMAT
    assert info.value.message == "invox.summary answered HTTP 400 (invalidOutputFormat)"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"messsage": "Forbidden", "errorType": "missingPermission"}, "missingPermission"),
        ({"messsage": "Forbidden"}, ErrorType.FORBIDDEN),
    ],
)
async def test_invox_403(
    http: VendorHttp, mocked: aioresponses, payload: dict[str, str], expected: str
) -> None:
    mocked.post(NOTE, status=403, payload=payload)
    with pytest.raises(PermanentError) as info:
        await InvoxNoteWriter(make_client(http)).write_note(
            make_job(),
            TEMPLATE,
            transcript(),
            Summary(provider="invox", output_format="SUMMARY", text="s"),
        )
    assert info.value.error_type == expected
    assert len(calls(mocked, "POST", TOKEN_URL)) == 0


async def test_invox_429_and_5xx_are_transient(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(TRANSCRIPTION, status=429, headers={"Retry-After": "12"})
    mocked.post(TRANSCRIPTION, status=502, body="bad gateway")
    transcriber = InvoxTranscriber(make_client(http))
    with pytest.raises(TransientError) as info:
        await transcriber.status(make_job(), handle())
    assert (info.value.error_type, info.value.retry_after_s) == (ErrorType.RATE_LIMITED, 12.0)
    with pytest.raises(TransientError) as info:
        await transcriber.status(make_job(), handle())
    assert info.value.error_type == ErrorType.UPSTREAM_UNAVAILABLE


async def test_invox_timeout_and_connection_errors(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(TRANSCRIPTION, exception=TimeoutError())
    mocked.post(TRANSCRIPTION, exception=aiohttp.ClientConnectionError(f"refused {TRANSCRIPTION}"))
    transcriber = InvoxTranscriber(make_client(http))
    with pytest.raises(TransientError) as info:
        await transcriber.status(make_job(), handle())
    assert info.value.error_type == ErrorType.UPSTREAM_TIMEOUT
    with pytest.raises(TransientError) as info:
        await transcriber.status(make_job(), handle())
    assert info.value.error_type == ErrorType.CONNECTION_FAILED
    assert_clean(info.value)


# ---------------------------------------------------------------- transcription


async def test_invox_submit_presigned_url_then_put_without_auth(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    mocked.post(PRESIGNED, payload={"presignedUrl": SIGNED_URL, "requestId": "req-9"})
    mocked.put(SIGNED_URL, status=200)
    result = await InvoxTranscriber(make_client(http)).submit(make_job(), audio)
    assert isinstance(result, Submitted)
    assert (result.handle.provider, result.handle.handle) == ("invox", "req-9")
    (presign,) = calls(mocked, "POST", PRESIGNED)
    assert json.loads(presign.kwargs["data"]) == {"mimeType": "audio/webm"}
    assert presign.kwargs["headers"]["X-Invox-Medical-Api-Version"] == VERSION
    (put,) = calls(mocked, "PUT", SIGNED_URL)
    assert put.kwargs["headers"] == {
        "Content-Type": "audio/webm",
        "Accept-Encoding": "gzip, deflate",
    }


@pytest.mark.parametrize(
    "signed_url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:10.0.0.5]/bucket",
        "https://[64:ff9b::a00:5]/bucket",
        "https://[2002:a00:5::]/bucket",
        "https://127.0.0.1/bucket",
        "http://storage.example/bucket",
        "https://h:abc/bucket",
    ],
)
async def test_invox_signed_upload_urls_follow_the_url_policy(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio, signed_url: str
) -> None:
    """Item 6: the audio goes only where the fetch policy allows, whatever the vendor answers;
    the decision is made before any connection (aioresponses would record the PUT)."""
    mocked.post(PRESIGNED, payload={"presignedUrl": signed_url, "requestId": "req-9"})
    with pytest.raises(PermanentError) as info:
        await InvoxTranscriber(make_client(http)).submit(make_job(), audio)
    assert info.value.error_type == ErrorType.URL_NOT_ALLOWED
    assert "169.254" not in info.value.message
    assert "storage.example" not in info.value.message
    assert not [key for key in mocked.requests if key[0] == "PUT"]


@pytest.mark.parametrize(
    "payload",
    [
        {"requestId": "r"},
        {"presignedUrl": SIGNED_URL},
        {"presignedUrl": "file:///etc/passwd", "requestId": "r"},
        {"presignedUrl": SIGNED_URL, "requestId": ""},
    ],
)
async def test_invox_submit_malformed_presign(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio, payload: dict[str, str]
) -> None:
    mocked.post(PRESIGNED, payload=payload)
    with pytest.raises(TransientError) as info:
        await InvoxTranscriber(make_client(http)).submit(make_job(), audio)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert_clean(info.value)
    assert not [key for key in mocked.requests if key[0] == "PUT"]


@pytest.mark.parametrize("status_key", ["processingStatus", "transcriptionStatus"])
async def test_invox_status_completed(
    http: VendorHttp, mocked: aioresponses, status_key: str
) -> None:
    mocked.post(
        TRANSCRIPTION,
        payload={
            "transcription": [
                {"text": " Hello ", "start": 0.01, "end": 1.05},
                {"text": "doctor.", "start": 1.05, "end": 2.5},
            ],
            status_key: "COMPLETED",
        },
    )
    result = await InvoxTranscriber(make_client(http)).status(make_job(), handle("req-7"))
    assert result is not None
    assert result.provider == "invox"
    assert result.text == "Hello doctor."
    assert [(s.start, s.end, s.text) for s in result.segments] == [
        (0.01, 1.05, "Hello"),
        (1.05, 2.5, "doctor."),
    ]
    assert result.duration_s == 2.5
    (request,) = calls(mocked, "POST", TRANSCRIPTION)
    assert json.loads(request.kwargs["data"]) == {"requestId": "req-7"}


@pytest.mark.parametrize("status_key", ["processingStatus", "transcriptionStatus"])
async def test_invox_status_pending(
    http: VendorHttp, mocked: aioresponses, status_key: str
) -> None:
    mocked.post(TRANSCRIPTION, payload={"transcription": [], status_key: "PENDING"})
    assert await InvoxTranscriber(make_client(http)).status(make_job(), handle()) is None


async def test_invox_status_error(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(
        TRANSCRIPTION,
        payload={
            "transcription": [],
            "processingStatus": "ERROR",
            "errorMessage": f"decoder failed for {SIGNED_URL}",
        },
    )
    with pytest.raises(PermanentError) as info:
        await InvoxTranscriber(make_client(http)).status(make_job(), handle())
    assert info.value.error_type == ErrorType.TRANSCRIPTION_FAILED
    # errorMessage is vendor free text: our own wording only.
    assert info.value.message == "invox.transcription: ERROR"
    assert_clean(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        {"transcription": [], "processingStatus": "CANCELLED"},
        {"transcription": [], "transcriptionStatus": "completed"},
        {"transcription": []},
        {"processingStatus": None},
        {"transcription": [], "processingStatus": ["COMPLETED"]},
        {"transcription": [], "processingStatus": {"COMPLETED": True}},
        {"transcription": [], "processingStatus": 3},
        {"transcription": [], "processingStatus": f"PENDING {TRANSCRIPT}"},
    ],
)
async def test_invox_status_unknown(
    http: VendorHttp, mocked: aioresponses, payload: dict[str, Any]
) -> None:
    mocked.post(TRANSCRIPTION, payload=payload)
    with pytest.raises(PermanentError) as info:
        await InvoxTranscriber(make_client(http)).status(make_job(), handle())
    assert info.value.error_type == ErrorType.UNKNOWN_VENDOR_STATUS
    assert_clean(info.value)


async def test_invox_status_completed_malformed(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(TRANSCRIPTION, payload={"processingStatus": "COMPLETED", "transcription": "x"})
    with pytest.raises(TransientError) as info:
        await InvoxTranscriber(make_client(http)).status(make_job(), handle())
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


@pytest.mark.parametrize(
    "payload",
    [
        {"message": "Transcription not found", "errorType": "transcriptionNotFound"},
        {"messsage": "Not found"},
    ],
)
async def test_invox_status_404_is_permanent(
    http: VendorHttp, mocked: aioresponses, payload: dict[str, str]
) -> None:
    mocked.post(TRANSCRIPTION, status=404, payload=payload)
    with pytest.raises(PermanentError) as info:
        await InvoxTranscriber(make_client(http)).status(make_job(), handle())
    assert info.value.error_type == ErrorType.TRANSCRIPTION_NOT_FOUND
    assert info.value.http_status == 404


# ---------------------------------------------------------------- summary


async def test_invox_summary_text(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(SUMMARY, payload={"clinicalNote": "Clinical note content", "generationTime": 6.5})
    job = make_job(summary={"outputFormat": "SUMMARY", "outputLanguage": "es"})
    summary = await InvoxSummarizer(make_client(http)).summarize(job, transcript())
    assert summary == Summary(
        provider="invox", output_format="SUMMARY", text="Clinical note content"
    )
    (request,) = calls(mocked, "POST", SUMMARY)
    assert json.loads(request.kwargs["data"]) == {
        "transcript": TRANSCRIPT,
        "outputFormat": "SUMMARY",
        "outputLanguage": "es",
    }


@pytest.mark.parametrize("encoded", [False, True])
async def test_invox_summary_soap(http: VendorHttp, mocked: aioresponses, encoded: bool) -> None:
    note = {
        "fields": [
            {"name": "Subjective", "description": "S", "value": "cough"},
            {"name": "Plan", "description": "P", "value": "rest"},
        ]
    }
    mocked.post(SUMMARY, payload={"clinicalNote": json.dumps(note) if encoded else note})
    job = make_job(summary={"outputFormat": "SOAP_TEMPLATE"})
    summary = await InvoxSummarizer(make_client(http)).summarize(job, transcript())
    assert summary.output_format == "SOAP_TEMPLATE"
    assert summary.fields == (
        SoapField(name="Subjective", description="S", value="cough"),
        SoapField(name="Plan", description="P", value="rest"),
    )


@pytest.mark.parametrize(
    "payload",
    [{}, {"clinicalNote": 3}, {"clinicalNote": {"fields": "x"}}, {"clinicalNote": {"fields": [1]}}],
)
async def test_invox_summary_malformed(
    http: VendorHttp, mocked: aioresponses, payload: dict[str, Any]
) -> None:
    mocked.post(SUMMARY, payload=payload)
    with pytest.raises(TransientError) as info:
        await InvoxSummarizer(make_client(http)).summarize(
            make_job(summary={"outputFormat": "SOAP_TEMPLATE"}), transcript()
        )
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


# ---------------------------------------------------------------- clinical note


NOTE_ANSWER = {
    "clinicalNote": [
        {
            "id": "f1",
            "name": "Diagnosis",
            "description": "Dx",
            "type": "string",
            "value": "Acute bronchitis",
            "confidence": 0.9,
        },
        {
            "id": "f2",
            "name": "Severity",
            "description": "",
            "type": "enum",
            "enumerableOptions": ["mild", "severe"],
            "value": "mild",
        },
    ],
    "generationTime": 6.52,
}


async def test_invox_note_payload_and_answer(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(NOTE, payload=NOTE_ANSWER)
    summary = Summary(provider="invox", output_format="SUMMARY", text="Patient has a cough.")
    fields = await InvoxNoteWriter(make_client(http)).write_note(
        make_job(noteLanguage="pt-BR"), TEMPLATE, transcript(), summary
    )
    assert fields == (
        ClinicalNoteField(
            id="f1", name="Diagnosis", description="Dx", type="string", value="Acute bronchitis"
        ),
        ClinicalNoteField(
            id="f2",
            name="Severity",
            type="enum",
            enumerable_options=("mild", "severe"),
            value="mild",
        ),
    )
    (request,) = calls(mocked, "POST", NOTE)
    assert json.loads(request.kwargs["data"]) == {
        "template": {
            "id": "tpl-1",
            "template_name": "Consult",
            "template_description": "General consult",
            "template_language": "en",
            "fields": [
                {
                    "id": "f1",
                    "name": "Diagnosis",
                    "description": "Dx",
                    "type": "string",
                    "value": "",
                },
                {
                    "id": "f2",
                    "name": "Severity",
                    "description": "",
                    "type": "enum",
                    "enumerableOptions": ["mild", "severe"],
                    "value": "mild",
                },
            ],
        },
        "summary": "Patient has a cough.",
        "language": "pt-BR",
    }


async def test_invox_note_soap_summary_and_no_language(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(NOTE, payload=NOTE_ANSWER)
    summary = Summary(
        provider="invox",
        output_format="SOAP_TEMPLATE",
        fields=(SoapField(name="Subjective", value="cough"), SoapField(name="Plan", value="rest")),
    )
    await InvoxNoteWriter(make_client(http)).write_note(make_job(), TEMPLATE, transcript(), summary)
    (request,) = calls(mocked, "POST", NOTE)
    body = json.loads(request.kwargs["data"])
    assert body["summary"] == "Subjective: cough\nPlan: rest"
    assert "language" not in body


async def test_invox_note_empty_summary_is_summary_required(
    http: VendorHttp, mocked: aioresponses
) -> None:
    with pytest.raises(PermanentError) as info:
        await InvoxNoteWriter(make_client(http)).write_note(
            make_job(), TEMPLATE, transcript(), Summary(provider="invox", output_format="SUMMARY")
        )
    assert info.value.error_type == ErrorType.SUMMARY_IS_REQUIRED
    assert mocked.requests == {}


@pytest.mark.parametrize(
    "payload",
    [
        {"clinicalNote": "text"},
        {"clinicalNote": [{"id": "x", "name": "n", "type": "weird", "value": TRANSCRIPT}]},
        {"clinicalNote": [3]},
    ],
)
async def test_invox_note_malformed(
    http: VendorHttp, mocked: aioresponses, payload: dict[str, Any]
) -> None:
    mocked.post(NOTE, payload=payload)
    summary = Summary(provider="invox", output_format="SUMMARY", text="s")
    with pytest.raises(TransientError) as info:
        await InvoxNoteWriter(make_client(http)).write_note(
            make_job(), TEMPLATE, transcript(), summary
        )
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert_clean(info.value)


# ---------------------------------------------------------------- documents


DOCS = (
    PreparedDocument("PDF", "labs.pdf", "application/pdf", b"%PDF-1.7 MARKER"),
    PreparedDocument("TXT", "notes.txt", "text/plain; charset=utf-8", b"MARKER-TRANSCRIPT notes"),
)
PDF_URL = "https://bucket.storage.test/MARKER-SIGNED-URL/labs?X-Amz-Signature=MARKER-SIG"
TXT_URL = "https://bucket.storage.test/MARKER-SIGNED-URL/notes?X-Amz-Signature=MARKER-SIG"


NOTE_SUMMARY = Summary(provider="invox", output_format="SUMMARY", text="Patient has a cough.")


async def write_with_documents(
    writer: InvoxNoteWriter, job: JobRequest, documents: Sequence[PreparedDocument]
) -> None:
    """The note stage's one call: the documents go with the note request."""
    await writer.write_note(job, TEMPLATE, transcript(), NOTE_SUMMARY, documents)


async def test_invox_documents_none_makes_no_call(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(NOTE, payload=NOTE_ANSWER)
    await write_with_documents(InvoxNoteWriter(make_client(http)), make_job(), ())
    assert list(mocked.requests) == [("POST", URL(NOTE))]


async def test_invox_documents_signed_urls_then_puts(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(
        DOCUMENTS,
        payload={
            "documents": [
                # Answered out of order: matched by name.
                {
                    "documentId": "d2",
                    "documentType": "TXT",
                    "documentName": "notes.txt",
                    "signedUrl": TXT_URL,
                },
                {
                    "documentId": "d1",
                    "documentType": "PDF",
                    "documentName": "labs.pdf",
                    "signedUrl": PDF_URL,
                },
            ]
        },
    )
    mocked.put(PDF_URL, status=200)
    mocked.put(TXT_URL, status=200)
    mocked.post(NOTE, payload=NOTE_ANSWER)
    job = make_job(consultationSessionId="session-42")
    await write_with_documents(InvoxNoteWriter(make_client(http)), job, DOCS)
    # Uploaded before the note is asked for, so the note can use them.
    assert list(mocked.requests) == [
        ("POST", URL(DOCUMENTS)),
        ("PUT", URL(PDF_URL)),
        ("PUT", URL(TXT_URL)),
        ("POST", URL(NOTE)),
    ]
    (request,) = calls(mocked, "POST", DOCUMENTS)
    assert json.loads(request.kwargs["data"]) == {
        "consultationSessionId": "session-42",
        "documents": [
            {"documentType": "PDF", "documentName": "labs.pdf"},
            {"documentType": "TXT", "documentName": "notes.txt"},
        ],
    }
    assert request.kwargs["headers"]["X-Invox-Medical-Api-Version"] == VERSION
    (pdf,) = calls(mocked, "PUT", PDF_URL)
    (txt,) = calls(mocked, "PUT", TXT_URL)
    assert pdf.kwargs["headers"] == {
        "Content-Type": "application/pdf",
        "Accept-Encoding": "gzip, deflate",
    }
    assert pdf.kwargs["data"] == DOCS[0].source
    assert txt.kwargs["headers"] == {
        "Content-Type": "text/plain",
        "Accept-Encoding": "gzip, deflate",
    }
    assert txt.kwargs["data"] == DOCS[1].source


async def test_invox_documents_session_defaults_to_job_id(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(
        DOCUMENTS,
        payload={
            "documents": [{"documentName": "labs.pdf", "documentType": "PDF", "signedUrl": PDF_URL}]
        },
    )
    mocked.put(PDF_URL, status=200)
    mocked.post(NOTE, payload=NOTE_ANSWER)
    job = make_job()
    await write_with_documents(InvoxNoteWriter(make_client(http)), job, DOCS[:1])
    (request,) = calls(mocked, "POST", DOCUMENTS)
    assert json.loads(request.kwargs["data"])["consultationSessionId"] == str(job.job_id)


async def test_invox_documents_answer_mismatch_is_malformed(
    http: VendorHttp, mocked: aioresponses
) -> None:
    mocked.post(
        DOCUMENTS, payload={"documents": [{"documentName": "labs.pdf", "signedUrl": PDF_URL}]}
    )
    with pytest.raises(TransientError) as info:
        await write_with_documents(InvoxNoteWriter(make_client(http)), make_job(), DOCS)
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert not [key for key in mocked.requests if key[0] == "PUT"]
    assert not calls(mocked, "POST", NOTE)


async def test_invox_document_put_failure_is_mapped(http: VendorHttp, mocked: aioresponses) -> None:
    mocked.post(
        DOCUMENTS,
        payload={
            "documents": [{"documentName": "labs.pdf", "documentType": "PDF", "signedUrl": PDF_URL}]
        },
    )
    mocked.put(PDF_URL, status=503, headers={"Retry-After": "4"})
    with pytest.raises(TransientError) as info:
        await write_with_documents(InvoxNoteWriter(make_client(http)), make_job(), DOCS[:1])
    assert not calls(mocked, "POST", NOTE)
    assert info.value.error_type == ErrorType.UPSTREAM_UNAVAILABLE
    assert info.value.retry_after_s == 4.0
    assert "invox.document_put" in info.value.message
    assert_clean(info.value)


# ---------------------------------------------------------------- real HTTP on loopback


class FakeInvox:
    """Presign endpoint plus a signed-URL PUT target on loopback, recording what arrives."""

    def __init__(self) -> None:
        self.puts: list[tuple[dict[str, str], bytes, str]] = []
        self.presign_authorizations: list[str | None] = []
        self.base = ""

    async def presign(self, request: web.Request) -> web.Response:
        # Recorded, asserted by the test: an assert here would only turn into an HTTP 500.
        self.presign_authorizations.append(request.headers.get("Authorization"))
        body = await request.json()
        signed = f"{self.base}/bucket/MARKER-SIGNED-URL?X-Amz-Signature=MARKER-SIG"
        return web.json_response({"presignedUrl": signed, "requestId": f"req-{body['mimeType']}"})

    async def put(self, request: web.Request) -> web.Response:
        self.puts.append((dict(request.headers), await request.read(), request.query_string))
        return web.Response(status=200)


async def test_invox_submit_over_real_http(http: VendorHttp, audio: PreparedAudio) -> None:
    fake = FakeInvox()
    app = web.Application()
    app.router.add_post("/api/v1/generate-presigned-url", fake.presign)
    app.router.add_put("/bucket/MARKER-SIGNED-URL", fake.put)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        fake.base = str(server.make_url("")).rstrip("/")
        client = make_client(
            http, invox_settings(base=fake.base), upload_allowlist=frozenset({"127.0.0.1"})
        )
        result = await InvoxTranscriber(client).submit(make_job(), audio)
    finally:
        await server.close()
    assert isinstance(result, Submitted)
    assert result.handle.handle == "req-audio/webm"
    assert fake.presign_authorizations == [f"Bearer {STATIC}"]
    ((headers, body, query),) = fake.puts
    assert body == audio.path.read_bytes()
    assert headers["Content-Type"] == "audio/webm"
    assert headers["Content-Length"] == str(audio.size_bytes)
    assert "Authorization" not in headers
    assert "X-Invox-Medical-Api-Version" not in headers
    assert query == "X-Amz-Signature=MARKER-SIG"


# ---------------------------------------------------------------- no patient data in messages


async def test_invox_no_exception_message_leaks_markers(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    """Vendors echo whatever they like; none of it may reach an exception message."""
    # An echo of the credential the request carried, of the URLs, and of a JWT-shaped token.
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJNQVJLRVIifQ.c2lnbmF0dXJl"
    echo_urls = f"{SIGNED_URL} {AUDIO_URL} Bearer {STATIC} {jwt}"
    # Error bodies may also echo the bare credential the request carried.
    echo = f"{STATIC} {echo_urls}"
    scenarios: list[tuple[Callable[[], None], Callable[[], Awaitable[object]]]] = []
    client = make_client(http)
    summarizer = InvoxSummarizer(client)
    transcriber = InvoxTranscriber(client)

    def add(setup: Callable[[], None], run: Callable[[], Awaitable[object]]) -> None:
        scenarios.append((setup, run))

    add(
        lambda: mocked.post(SUMMARY, status=400, payload={"messsage": echo, "errorType": "x"}),
        lambda: summarizer.summarize(make_job(), transcript()),
    )
    add(
        lambda: mocked.post(SUMMARY, status=403, payload={"message": echo}),
        lambda: summarizer.summarize(make_job(), transcript()),
    )
    add(
        lambda: mocked.post(SUMMARY, status=500, body=echo),
        lambda: summarizer.summarize(make_job(), transcript()),
    )
    add(
        lambda: mocked.post(SUMMARY, status=200, body=f"<html>{TRANSCRIPT}</html>"),
        lambda: summarizer.summarize(make_job(), transcript()),
    )
    add(
        lambda: mocked.post(
            TRANSCRIPTION,
            payload={"processingStatus": f"WEIRD {SIGNED_URL}", "transcription": []},
        ),
        lambda: transcriber.status(make_job(), handle()),
    )
    add(
        lambda: mocked.post(
            TRANSCRIPTION,
            payload={"processingStatus": "ERROR", "errorMessage": echo_urls},
        ),
        lambda: transcriber.status(make_job(), handle()),
    )

    def presign_then_put_fails() -> None:
        mocked.post(PRESIGNED, payload={"presignedUrl": SIGNED_URL, "requestId": "r"})
        mocked.put(SIGNED_URL, exception=aiohttp.ClientConnectionError(f"to {SIGNED_URL}"))

    add(presign_then_put_fails, lambda: transcriber.submit(make_job(), audio))

    def both_401() -> None:
        mocked.post(NOTE, status=401, payload={"messsage": f"{echo} {FRESH}"}, repeat=True)
        mocked.post(TOKEN_URL, payload={"accessToken": FRESH})

    add(
        both_401,
        lambda: InvoxNoteWriter(client).write_note(
            make_job(),
            TEMPLATE,
            transcript(),
            Summary(provider="invox", output_format="SUMMARY", text=TRANSCRIPT),
        ),
    )

    seen: list[ScribeError] = []
    for setup, run in scenarios:
        setup()
        with pytest.raises(ScribeError) as info:
            await run()
        seen.append(info.value)
    assert len(seen) == len(scenarios)
    for error in seen:
        assert_clean(error)
        assert "eyJ" not in str(error)
        assert error.__cause__ is None


# ---------------------------------------------------------------- hostile answers (issue 12)


@pytest.fixture
async def vendor() -> AsyncIterator[tuple[Loopback, InvoxClient]]:
    """A loopback Invox answering whatever the test sets, and a client of it."""
    async with loopback_server() as server, aiohttp.ClientSession() as session:
        http = VendorHttp(session, timeout_s=10.0)
        yield server, make_client(http, invox_settings(base=server.base, token_url=None))


def completed(segments: str) -> str:
    return '{"processingStatus": "COMPLETED", "transcription": [' + segments + "]}"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("1e400", "2.5", (0.0, 2.5)),
        ("1", "1e400", (1.0, 1.0)),
        ("-1e400", "1" + "0" * 400, (0.0, 0.0)),  # 10**400: float() raised OverflowError
        ('"1"', "[2]", (0.0, 0.0)),
    ],
)
async def test_invox_segment_times_that_are_not_finite_are_absent(
    vendor: tuple[Loopback, InvoxClient], start: str, end: str, expected: tuple[float, float]
) -> None:
    server, client = vendor
    server.answer(completed(f'{{"text": "hello", "start": {start}, "end": {end}}}'))
    transcript = await InvoxTranscriber(client).status(make_job(), handle())
    assert transcript is not None
    assert [(s.start, s.end) for s in transcript.segments] == [expected]
    assert transcript.duration_s == expected[1]


async def test_invox_nan_in_an_answer_is_malformed(vendor: tuple[Loopback, InvoxClient]) -> None:
    server, client = vendor
    server.answer(completed('{"text": "hello", "start": NaN, "end": 1}'))
    with pytest.raises(TransientError) as info:
        await InvoxTranscriber(client).status(make_job(), handle())
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE


async def test_invox_transcript_over_5_mib_is_too_large(
    vendor: tuple[Loopback, InvoxClient],
) -> None:
    server, client = vendor
    half = json.dumps("\u00e9" * (MAX_TRANSCRIPT_BYTES // 4 + 1))
    server.answer(completed(f'{{"text": {half}}}, {{"text": {half}}}'))
    with pytest.raises(PermanentError) as info:
        await InvoxTranscriber(client).status(make_job(), handle())
    assert info.value.error_type == ErrorType.TRANSCRIPT_TOO_LARGE


async def test_invox_too_many_segments_are_too_large(
    vendor: tuple[Loopback, InvoxClient],
) -> None:
    server, client = vendor
    server.answer(completed(",".join(['{"text": "a"}'] * (MAX_TRANSCRIPT_SEGMENTS + 1))))
    with pytest.raises(PermanentError) as info:
        await InvoxTranscriber(client).status(make_job(), handle())
    assert info.value.error_type == ErrorType.TRANSCRIPT_TOO_LARGE


async def test_invox_soap_summary_string_nested_deep_is_summary_text(
    vendor: tuple[Loopback, InvoxClient],
) -> None:
    """json.loads of this clinicalNote raised RecursionError (internalError)."""
    server, client = vendor
    deep = '{"fields":' + "[" * 100_000
    server.answer(json.dumps({"clinicalNote": deep}))
    job = make_job(summary={"outputFormat": "SOAP_TEMPLATE"})
    summary = await InvoxSummarizer(client).summarize(job, transcript())
    assert (summary.output_format, summary.text) == ("SUMMARY", deep)


async def test_invox_summary_over_the_schema_bound_is_malformed(
    vendor: tuple[Loopback, InvoxClient],
) -> None:
    """A 5,000,001-character summary raised pydantic's ValidationError (internalError)."""
    server, client = vendor
    server.answer(json.dumps({"clinicalNote": "MARKER-TRANSCRIPT " + "x" * 5_000_000}))
    with pytest.raises(PermanentError) as info:
        await InvoxSummarizer(client).summarize(make_job(), transcript())
    assert info.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert_clean(info.value)


async def test_invox_error_text_echoing_the_transcript_is_not_forwarded(
    vendor: tuple[Loopback, InvoxClient],
) -> None:
    """Item 7: the vendor's message is never forwarded, only status and errorType."""
    server, client = vendor
    server.answer(
        json.dumps(
            {"messsage": f"template invalid for: {TRANSCRIPT}", "errorType": "invalidTemplate"}
        ),
        status=400,
    )
    with pytest.raises(PermanentError) as info:
        await InvoxSummarizer(client).summarize(make_job(), transcript())
    assert info.value.message == "invox.summary answered HTTP 400 (invalidTemplate)"
    assert_clean(info.value)


async def test_invox_documents_stream_from_disk(tmp_path: Path) -> None:
    """Item 5: documents are prepared as files and streamed (64 KiB chunks, Content-Length),
    never read whole: a downloaded one stays on disk only as long as its PreparedDocument."""
    stored = tmp_path / "referral.txt"
    stored.write_bytes(b"MARKER-TRANSCRIPT referral " * 200_000)  # 5.4 MB
    async with loopback_server() as server, aiohttp.ClientSession() as session:
        remote = b"%PDF-1.7 " + b"x" * 3_000_000
        server.answer(remote, headers={"Content-Type": "application/pdf"})
        policy = FetchPolicy(frozenset({"127.0.0.1"}), tmp_path, 10.0)
        media = MediaFetcher(session, policy, 10**8, 600.0, 20 * 1024 * 1024)
        local_doc = await media.document(
            DocumentRef(path="referral.txt", document_type="TXT", document_name="referral.txt")
        )
        remote_doc = await media.document(
            DocumentRef(url=f"{server.base}/labs.pdf", document_type="PDF", document_name="l.pdf")
        )
        assert local_doc.source == stored
        assert isinstance(remote_doc.source, Path)
        downloaded = remote_doc.source
        assert downloaded.read_bytes() == remote
        signed = f"{server.base}/bucket/MARKER-SIGNED-URL?X-Amz-Signature=MARKER-SIG"
        server.answer(
            json.dumps(
                {
                    "documents": [
                        {"documentName": "referral.txt", "signedUrl": signed + "&d=1"},
                        {"documentName": "l.pdf", "signedUrl": signed + "&d=2"},
                    ]
                }
            )
        )
        http = VendorHttp(session, timeout_s=10.0)
        client = make_client(
            http,
            invox_settings(base=server.base, token_url=None),
            upload_allowlist=frozenset({"127.0.0.1"}),
        )
        await InvoxNoteWriter(client).upload_documents(make_job(), [local_doc, remote_doc])
        puts = [(headers, body) for method, _, headers, body in server.requests if method == "PUT"]
        assert [body for _, body in puts] == [stored.read_bytes(), remote]
        assert [headers["Content-Length"] for headers, _ in puts] == [
            str(stored.stat().st_size),
            str(len(remote)),
        ]
        assert all("Authorization" not in headers for headers, _ in puts)
        assert local_doc.read_text(27) == "MARKER-TRANSCRIPT referral "
        del remote_doc
        gc.collect()
        assert not downloaded.exists()
        assert stored.exists()
