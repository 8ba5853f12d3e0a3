"""The vendor emulator honours both vendors' documented contracts, quirks and faults."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ops.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from ops.sandbox.app import url_host
from ops.sandbox.cli import main as cli_main
from tests.fakes import FakeClock

STATIC_TOKEN = "static-test-token"
INTRON_KEY = "sandbox-intron-key"
INTRON_AUTH = {"Authorization": f"Bearer {INTRON_KEY}"}
INVOX_HEADERS = {
    "Authorization": f"Bearer {STATIC_TOKEN}",
    "X-Invox-Medical-Api-Version": "2026-03-01",
}
PROJECT_ROOT = Path(__file__).resolve().parents[2]

TEMPLATE: dict[str, Any] = {
    "id": "tpl-1",
    "template_name": "Knee visit",
    "template_description": "Orthopaedic follow-up",
    "template_language": "en",
    "fields": [
        {"id": "f1", "name": "Diagnosis", "description": "Diagnosis", "type": "string"},
        {"id": "f2", "name": "Pain score", "description": "0-10", "type": "number"},
        {"id": "f3", "name": "Red flags", "description": "Any", "type": "boolean"},
        {
            "id": "f4",
            "name": "Side",
            "description": "Which knee",
            "type": "enum",
            "enumerableOptions": ["right", "left"],
        },
        {"id": "f5", "name": "Advice", "description": "Given", "type": "array"},
    ],
}


@dataclass
class Reply:
    status: int
    body: Any
    text: str
    headers: dict[str, str]


class Api:
    """Thin client over the emulator so each test reads as the contract it checks."""

    def __init__(self, session: aiohttp.ClientSession, sandbox: RunningSandbox) -> None:
        self.session = session
        self.sandbox = sandbox

    async def call(self, method: str, url: str, **kwargs: Any) -> Reply:
        async with self.session.request(method, url, **kwargs) as response:
            text = await response.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            return Reply(response.status, body, text, dict(response.headers))

    async def invox(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
        return await self.call(
            "POST", path, json=body, headers=INVOX_HEADERS if headers is None else headers
        )

    async def upload(
        self,
        fields: dict[str, str],
        blob: bytes | None = b"RIFF-fake-wav",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        if blob is not None:
            form.add_field("audio_file_blob", blob, filename="a.wav", content_type="audio/wav")
        return await self.call(
            "POST",
            "/file/v1/upload",
            data=form,
            headers=INTRON_AUTH if headers is None else headers,
        )

    async def status(self, file_id: str, headers: dict[str, str] | None = None) -> Reply:
        return await self.call(
            "GET",
            f"/file/v1/status/{file_id}",
            headers=INTRON_AUTH if headers is None else headers,
        )

    async def file_id(self, **fields: str) -> str:
        reply = await self.upload({"audio_file_name": "visit-1", **fields})
        assert reply.status == 200, reply.text
        return str(reply.body["data"]["file_id"])

    async def control(self, method: str, path: str, body: Any = None) -> Reply:
        return await self.call(method, f"/_sandbox/{path}", json=body)

    async def configure(self, **knobs: Any) -> None:
        reply = await self.control("POST", "config", knobs)
        assert reply.status == 200, reply.text

    async def faults(self, *rules: dict[str, Any]) -> None:
        reply = await self.control("POST", "faults", list(rules))
        assert reply.status == 200, reply.text

    async def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.control("GET", "stats")).body
        return body

    async def uploaded_request_id(self, mime_type: str = "audio/wav") -> str:
        reply = await self.invox("/api/v1/generate-presigned-url", {"mimeType": mime_type})
        assert reply.status == 200, reply.text
        put = await self.call(
            "PUT", reply.body["presignedUrl"], data=b"audio", headers={"Content-Type": mime_type}
        )
        assert put.status == 200, put.text
        return str(reply.body["requestId"])


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    config = SandboxConfig(invox_static_token=STATIC_TOKEN, polls_before_ready=0)
    async with running_sandbox(config) as running:
        yield running


@pytest.fixture
async def api(sandbox: RunningSandbox) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=sandbox.base_url) as session:
        yield Api(session, sandbox)


@pytest.fixture
def clock(sandbox: RunningSandbox) -> FakeClock:
    fake = FakeClock()
    sandbox.state.clock = fake
    return fake


# --- Intron -----------------------------------------------------------------


async def test_intron_upload_then_status_until_transcribed(api: Api) -> None:
    await api.configure(polls_before_ready=2)
    reply = await api.upload({"audio_file_name": "visit-1"})
    assert reply.status == 200
    assert reply.body["message"] == "file queued for processing"
    assert reply.body["status"] == "Ok"
    file_id = reply.body["data"]["file_id"]
    assert list(reply.body["data"]) == ["file_id"]

    seen = [(await api.status(file_id)).body["data"]["processing_status"] for _ in range(3)]
    assert seen == ["FILE_QUEUED", "FILE_PROCESSING", "FILE_TRANSCRIBED"]
    done = (await api.status(file_id)).body
    assert done["status"] == "Ok"
    assert done["message"] == "file status found"
    assert done["data"]["audio_file_name"] == "visit-1"
    assert "knee" in done["data"]["audio_transcript"]
    assert isinstance(done["data"]["processed_audio_duration_in_seconds"], int)
    assert not any(key.startswith("transcript_") for key in done["data"])


async def test_intron_zero_polls_is_ready_at_once(api: Api) -> None:
    file_id = await api.file_id()
    reply = await api.status(file_id, headers=INTRON_AUTH)
    assert reply.body["data"]["processing_status"] == "FILE_TRANSCRIBED"


async def test_intron_upload_by_url_form_urlencoded(api: Api) -> None:
    fields = {"audio_file_name": "x", "audio_file_url": "https://files.example/a.wav"}
    reply = await api.call("POST", "/file/v1/upload", data=fields, headers=INTRON_AUTH)
    assert reply.status == 200
    assert api.sandbox.state.intron_files[reply.body["data"]["file_id"]].source == "url"


async def test_intron_post_processing_and_diarization(api: Api) -> None:
    flags = {
        "get_summary": "TRUE",
        "get_soap_note": "TRUE",
        "get_entity_list": "TRUE",
        "get_treatment_plan": "TRUE",
        "get_clerking": "true",
        "get_icd_codes": "FALSE",
    }
    file_id = await api.file_id(
        use_diarization="TRUE", use_category="file_category_telehealth", **flags
    )
    data = (await api.status(file_id)).body["data"]
    assert {key for key in data if key.startswith("transcript_")} == {
        "transcript_summary",
        "transcript_soap_note",
        "transcript_entity_list",
        "transcript_treatment_plan",
        "transcript_clerking",
    }
    assert "## Subjective" in data["transcript_soap_note"]
    lines = data["audio_transcript"].split("\n")
    assert lines[0].startswith("SPEAKER_01: ")
    assert lines[1].startswith("SPEAKER_02: ")


async def test_intron_status_accepts_structured_query(api: Api) -> None:
    file_id = await api.file_id()
    reply = await api.call(
        "GET",
        f"/file/v1/status/{file_id}",
        params={"get_structured_post_processing": "t"},
        headers=INTRON_AUTH,
    )
    assert reply.status == 200


@pytest.mark.parametrize(
    ("fields", "blob"),
    [
        ({}, b"x"),
        ({"audio_file_name": "  "}, b"x"),
        ({"audio_file_name": "a"}, None),
        ({"audio_file_name": "a", "use_diarization": "yes"}, b"x"),
        ({"audio_file_name": "a", "get_summary": "1"}, b"x"),
        ({"audio_file_name": "a", "use_category": "file_category_radio"}, b"x"),
    ],
)
async def test_intron_upload_validation(
    api: Api, fields: dict[str, str], blob: bytes | None
) -> None:
    reply = await api.upload(fields, blob)
    assert reply.status == 400
    assert reply.body["status"] == "Error"
    assert reply.body["data"] == {}
    assert reply.body["message"]


async def test_intron_upload_rejects_other_content_types(api: Api) -> None:
    reply = await api.call("POST", "/file/v1/upload", json={"a": 1}, headers=INTRON_AUTH)
    assert reply.status == 400


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {INTRON_KEY}"}],
)
async def test_intron_requires_the_api_key(api: Api, headers: dict[str, str]) -> None:
    upload = await api.upload({"audio_file_name": "a"}, headers=headers)
    assert upload.status == 401
    assert upload.body == {"data": {}, "message": "Unauthorized", "status": "Error"}
    status = await api.status(await api.file_id(), headers=headers)
    assert status.status == 401


async def test_intron_rejects_blob_over_size_limit() -> None:
    config = SandboxConfig(intron_max_upload_bytes=10)
    async with (
        running_sandbox(config) as sandbox,
        aiohttp.ClientSession(base_url=sandbox.base_url) as session,
    ):
        api = Api(session, sandbox)
        assert (await api.upload({"audio_file_name": "a"}, b"x" * 10)).status == 200
        too_big = await api.upload({"audio_file_name": "a"}, b"x" * 11)
        assert too_big.status == 413
        assert too_big.body["status"] == "Error"


async def test_intron_unknown_file_is_404(api: Api) -> None:
    reply = await api.status("4b1d4b1d-0000-0000-0000-000000000000")
    assert reply.status == 404
    assert reply.body["status"] == "Error"


async def test_intron_upload_rate_limit_with_retry_after(api: Api, clock: FakeClock) -> None:
    await api.configure(intron_upload_rate_per_min=2)
    await api.file_id()
    clock.now += 10
    await api.file_id()
    limited = await api.upload({"audio_file_name": "a"})
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "50"
    assert limited.body["status"] == "Error"
    clock.now += 50
    assert (await api.upload({"audio_file_name": "a"})).status == 200
    stats = await api.stats()
    assert stats["rate_limited"] == 1
    assert stats["responses"]["intron.upload"] == {"200": 3, "429": 1}


async def test_intron_status_rate_limit_is_separate_and_can_be_disabled(
    api: Api, clock: FakeClock
) -> None:
    file_id = await api.file_id()
    await api.configure(intron_status_rate_per_min=1)
    assert (await api.status(file_id)).status == 200
    limited = await api.status(file_id)
    assert limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert (await api.upload({"audio_file_name": "a"})).status == 200
    await api.configure(intron_status_rate_per_min=0)
    assert (await api.status(file_id)).status == 200


# --- Invox: auth, versions, permissions --------------------------------------


async def test_invox_token_issue_and_use(api: Api) -> None:
    reply = await api.invox("/auth/token", {"appId": "sandbox-app", "appKey": "sandbox-app-key"})
    assert reply.status == 200
    assert reply.body["expiresIn"] == 7200
    headers = {**INVOX_HEADERS, "Authorization": f"Bearer {reply.body['accessToken']}"}
    presign = await api.invox("/api/v1/generate-presigned-url", {"mimeType": "audio/wav"}, headers)
    assert presign.status == 200
    assert (await api.stats())["tokens_issued"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"appId": "sandbox-app", "appKey": "wrong"},
        {"appId": "other", "appKey": "sandbox-app-key"},
        {"appId": "sandbox-app"},
        {"appId": 1, "appKey": "sandbox-app-key"},
    ],
)
async def test_invox_token_rejects_bad_credentials(api: Api, body: dict[str, Any]) -> None:
    reply = await api.invox("/auth/token", body, headers={})
    assert reply.status == 401
    assert reply.body == {"messsage": "Unauthorized"}


async def _issued_headers(api: Api) -> dict[str, str]:
    reply = await api.invox("/auth/token", {"appId": "sandbox-app", "appKey": "sandbox-app-key"})
    return {**INVOX_HEADERS, "Authorization": f"Bearer {reply.body['accessToken']}"}


async def test_invox_token_expires(api: Api, clock: FakeClock) -> None:
    await api.configure(token_ttl_s=100)
    headers = await _issued_headers(api)
    body = {"mimeType": "audio/wav"}
    clock.now += 99
    assert (await api.invox("/api/v1/generate-presigned-url", body, headers)).status == 200
    clock.now += 1
    expired = await api.invox("/api/v1/generate-presigned-url", body, headers)
    assert expired.status == 401
    assert expired.body == {"messsage": "Unauthorized"}


async def test_invox_tokens_can_be_revoked_but_static_token_stays(api: Api) -> None:
    headers = await _issued_headers(api)
    body = {"mimeType": "audio/wav"}
    await api.configure(revoke_tokens=True)
    assert (await api.invox("/api/v1/generate-presigned-url", body, headers)).status == 401
    assert (await api.invox("/api/v1/generate-presigned-url", body)).status == 200
    assert (
        await api.invox("/api/v1/generate-presigned-url", body, await _issued_headers(api))
    ).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/generate-presigned-url",
        "/api/v1/get-transcription",
        "/api/v1/generate-consultation-summary",
        "/api/v1/generate-clinical-note-from-summary",
        "/v1/generate-signed-urls-for-documents",
    ],
)
@pytest.mark.parametrize("version", [None, "2024-01-01", ""])
async def test_invox_requires_a_known_api_version(api: Api, path: str, version: str | None) -> None:
    headers = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    if version is not None:
        headers["X-Invox-Medical-Api-Version"] = version
    reply = await api.invox(path, {}, headers)
    assert reply.status == 400
    assert reply.body["errorType"] == "invalidApiVersionForEndpoint"
    assert "messsage" in reply.body


@pytest.mark.parametrize("version", ["2025-10-01", "2025-11-01", "2026-03-01"])
async def test_invox_accepts_each_documented_version(api: Api, version: str) -> None:
    headers = {**INVOX_HEADERS, "X-Invox-Medical-Api-Version": version}
    reply = await api.invox("/api/v1/generate-presigned-url", {"mimeType": "audio/ogg"}, headers)
    assert reply.status == 200


async def test_invox_requires_a_bearer_token(api: Api) -> None:
    headers = {"X-Invox-Medical-Api-Version": "2026-03-01"}
    reply = await api.invox("/api/v1/generate-consultation-summary", {}, headers)
    assert reply.status == 401
    assert reply.body == {"messsage": "Unauthorized"}


async def test_forbidden_endpoints_answer_403_with_configured_error_type(api: Api) -> None:
    await api.configure(forbidden=["invox.summary", "intron.upload"])
    reply = await api.invox("/api/v1/generate-consultation-summary", {})
    assert reply.status == 403
    assert reply.body["errorType"] == "missingPermission"
    assert "messsage" in reply.body
    await api.configure(forbidden_error_type="CONSULTATION-SUMMARY")
    reply = await api.invox("/api/v1/generate-consultation-summary", {})
    assert reply.body["errorType"] == "CONSULTATION-SUMMARY"
    intron = await api.upload({"audio_file_name": "a"})
    assert intron.status == 403
    assert intron.body["status"] == "Error"
    await api.configure(forbidden=[])
    assert (await api.upload({"audio_file_name": "a"})).status == 200


async def test_invox_rejects_non_json_bodies(api: Api) -> None:
    for data in (b"not json", b"[1, 2]"):
        reply = await api.call(
            "POST", "/api/v1/generate-presigned-url", data=data, headers=INVOX_HEADERS
        )
        assert reply.status == 400
        assert reply.body["errorType"] == "invalidRequestBody"


# --- Invox: batch transcription -----------------------------------------------


async def test_invox_transcription_flow(api: Api) -> None:
    await api.configure(polls_before_ready=1)
    presign = await api.invox(
        "/api/v1/generate-presigned-url",
        {"mimeType": "audio/mpeg", "callbackUrl": "https://hooks.example/cb"},
    )
    request_id = presign.body["requestId"]
    assert presign.body["presignedUrl"] == f"{api.sandbox.base_url}/_uploads/audio/{request_id}"
    put = await api.call(
        "PUT", presign.body["presignedUrl"], data=b"mp3", headers={"Content-Type": "audio/mpeg"}
    )
    assert put.status == 200
    record = api.sandbox.state.transcriptions[request_id]
    assert record.uploaded
    assert record.size_bytes == 3

    first = await api.invox("/api/v1/get-transcription", {"requestId": request_id})
    assert first.body == {"transcription": [], "transcriptionStatus": "PENDING"}
    done = await api.invox("/api/v1/get-transcription", {"requestId": request_id})
    assert done.body["transcriptionStatus"] == "COMPLETED"
    segments = done.body["transcription"]
    assert segments[0]["start"] == 0.0
    assert all(s["end"] > s["start"] for s in segments)
    assert "knee" in " ".join(s["text"] for s in segments)
    assert (await api.stats())["uploads_recorded"]["invox_audio"] == 1


async def test_invox_status_key_knob(api: Api) -> None:
    await api.configure(invox_status_key="processingStatus")
    request_id = await api.uploaded_request_id()
    done = await api.invox("/api/v1/get-transcription", {"requestId": request_id})
    assert done.body["processingStatus"] == "COMPLETED"
    assert "transcriptionStatus" not in done.body


@pytest.mark.parametrize(
    "body",
    [{}, {"mimeType": "video/mp4"}, {"mimeType": 3}, {"mimeType": "audio/wav", "callbackUrl": 1}],
)
async def test_invox_presign_validation(api: Api, body: dict[str, Any]) -> None:
    reply = await api.invox("/api/v1/generate-presigned-url", body)
    assert reply.status == 400
    assert reply.body["errorType"] == "invalidRequestBody"


async def test_signed_audio_put_rules(api: Api) -> None:
    presign = await api.invox("/api/v1/generate-presigned-url", {"mimeType": "audio/wav"})
    url = presign.body["presignedUrl"]
    with_auth = {"Content-Type": "audio/wav", "Authorization": f"Bearer {STATIC_TOKEN}"}
    for headers in (with_auth, {"Content-Type": "audio/mpeg"}, {"Content-Type": "audio/wav; x=1"}):
        reply = await api.call("PUT", url, data=b"a", headers=headers)
        assert reply.status == 400
        assert reply.headers["Content-Type"].startswith("text/plain")
    assert not api.sandbox.state.transcriptions[presign.body["requestId"]].uploaded
    unknown = await api.call(
        "PUT", "/_uploads/audio/nope", data=b"a", headers={"Content-Type": "audio/wav"}
    )
    assert unknown.status == 404


@pytest.mark.parametrize("body", [{}, {"requestId": 5}, {"requestId": ""}])
async def test_get_transcription_needs_a_request_id(api: Api, body: dict[str, Any]) -> None:
    reply = await api.invox("/api/v1/get-transcription", body)
    assert reply.status == 400
    assert reply.body["errorType"] == "invalidRequestBody"


async def test_get_transcription_unknown_is_404_with_plain_message_key(api: Api) -> None:
    reply = await api.invox("/api/v1/get-transcription", {"requestId": "mock-requestId"})
    assert reply.status == 404
    assert reply.body == {
        "message": "Transcription not found",
        "errorType": "transcriptionNotFound",
    }


async def test_get_transcription_before_upload_is_inconsistent(api: Api) -> None:
    presign = await api.invox("/api/v1/generate-presigned-url", {"mimeType": "audio/wav"})
    reply = await api.invox("/api/v1/get-transcription", {"requestId": presign.body["requestId"]})
    assert reply.status == 400
    assert reply.body["errorType"] == "inconsistentInput"
    assert "messsage" in reply.body


# --- Invox: summary and clinical note -------------------------------------------

TRANSCRIPT = "SPEAKER_01: My knee hurts. SPEAKER_02: Since when? It started three weeks ago."


async def test_summary_plain_text_is_deterministic(api: Api) -> None:
    body = {"transcript": TRANSCRIPT, "outputFormat": "SUMMARY", "outputLanguage": "en"}
    first = await api.invox("/api/v1/generate-consultation-summary", body)
    second = await api.invox("/api/v1/generate-consultation-summary", body)
    assert first.status == 200
    assert first.body == second.body
    assert isinstance(first.body["clinicalNote"], str)
    assert "knee" in first.body["clinicalNote"]
    assert "SPEAKER_" not in first.body["clinicalNote"]
    assert isinstance(first.body["generationTime"], float)


async def test_summary_soap_template(api: Api) -> None:
    body = {"transcript": TRANSCRIPT, "outputFormat": "SOAP_TEMPLATE", "outputLanguage": "es-419"}
    reply = await api.invox("/api/v1/generate-consultation-summary", body)
    assert reply.status == 200
    fields = reply.body["clinicalNote"]["fields"]
    assert [f["name"] for f in fields] == ["Subjective", "Objective", "Assessment", "Plan"]
    assert all(set(f) == {"name", "description", "value"} for f in fields)
    assert all(isinstance(f["value"], str) and f["value"] for f in fields)


@pytest.mark.parametrize(
    ("changes", "error_type"),
    [
        ({"transcript": None}, "invalidRequestBody"),
        ({"transcript": "   "}, "invalidRequestBody"),
        ({"transcript": 12}, "invalidRequestBody"),
        ({"outputFormat": "NOTE"}, "invalidOutputFormat"),
        ({"outputFormat": None}, "invalidOutputFormat"),
        ({"outputLanguage": None}, "missingOutputLanguage"),
        ({"outputLanguage": ""}, "missingOutputLanguage"),
        ({"outputLanguage": "english"}, "invalidLanguage"),
        ({"outputLanguage": "e1"}, "invalidLanguage"),
        ({"outputLanguage": 7}, "invalidLanguage"),
    ],
)
async def test_summary_validation(api: Api, changes: dict[str, Any], error_type: str) -> None:
    body = {"transcript": TRANSCRIPT, "outputFormat": "SUMMARY", "outputLanguage": "en"}
    body.update(changes)
    body = {key: value for key, value in body.items() if value is not None}
    reply = await api.invox("/api/v1/generate-consultation-summary", body)
    assert reply.status == 400
    assert reply.body["errorType"] == error_type
    assert isinstance(reply.body["messsage"], str)


async def test_note_fills_each_field_type(api: Api) -> None:
    summary = "Patellofemoral pain. Reduce running. Start quadriceps exercises."
    body = {"template": TEMPLATE, "summary": summary, "language": "pt-BR"}
    reply = await api.invox("/api/v1/generate-clinical-note-from-summary", body)
    assert reply.status == 200
    values = {f["name"]: f["value"] for f in reply.body["clinicalNote"]}
    assert values["Diagnosis"] == "Patellofemoral pain."
    assert values["Pain score"] == 0
    assert values["Red flags"] is False
    assert values["Side"] == "right"
    assert values["Advice"] == [
        "Patellofemoral pain.",
        "Reduce running.",
        "Start quadriceps exercises.",
    ]
    assert reply.body["clinicalNote"][0]["id"] == "f1"
    assert isinstance(reply.body["generationTime"], float)


def _template(**changes: Any) -> dict[str, Any]:
    return {**TEMPLATE, **changes}


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ({"template": TEMPLATE}, "summaryIsRequired"),
        ({"template": TEMPLATE, "summary": ""}, "summaryIsRequired"),
        ({"summary": "s"}, "templateIsRequired"),
        ({"summary": "s", "template": "tpl-1"}, "invalidTemplate"),
        ({"summary": "s", "template": _template(id=None)}, "invalidTemplate"),
        ({"summary": "s", "template": _template(fields=None)}, "invalidTemplate"),
        (
            {"summary": "s", "template": _template(fields=[{"id": "a", "name": "n"}])},
            "invalidTemplate",
        ),
        (
            {
                "summary": "s",
                "template": _template(
                    fields=[{"id": "a", "name": "n", "description": "d", "type": "date"}]
                ),
            },
            "invalidTemplate",
        ),
        (
            {
                "summary": "s",
                "template": _template(
                    fields=[{"id": "a", "name": "n", "description": "d", "type": "enum"}]
                ),
            },
            "invalidTemplate",
        ),
        ({"summary": "s", "template": TEMPLATE, "language": "fr"}, "invalidLanguage"),
        ({"summary": "s", "template": TEMPLATE, "language": "pt"}, "invalidLanguage"),
    ],
)
async def test_note_validation(api: Api, body: dict[str, Any], error_type: str) -> None:
    reply = await api.invox("/api/v1/generate-clinical-note-from-summary", body)
    assert reply.status == 400
    assert reply.body["errorType"] == error_type
    assert "messsage" in reply.body


# --- Invox: supporting documents -------------------------------------------------


async def test_documents_signed_urls_and_uploads(api: Api) -> None:
    body = {
        "consultationSessionId": "session-1",
        "documents": [
            {"documentType": "PDF", "documentName": "referral.pdf"},
            {"documentType": "TXT", "documentName": "notes.TXT"},
        ],
    }
    reply = await api.invox("/v1/generate-signed-urls-for-documents", body)
    assert reply.status == 200
    docs = reply.body["documents"]
    assert [(d["documentType"], d["documentName"]) for d in docs] == [
        ("PDF", "referral.pdf"),
        ("TXT", "notes.TXT"),
    ]
    for doc, content_type in zip(docs, ("application/pdf", "text/plain"), strict=True):
        assert doc["signedUrl"] == f"{api.sandbox.base_url}/_uploads/documents/{doc['documentId']}"
        put = await api.call(
            "PUT", doc["signedUrl"], data=b"%PDF-1.4", headers={"Content-Type": content_type}
        )
        assert put.status == 200
    stats = await api.stats()
    assert stats["documents_uploaded"] == {"session-1": 2}
    assert stats["uploads_recorded"]["invox_documents"] == 2


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ({"documents": [{"documentType": "PDF", "documentName": "a.pdf"}]}, "invalidRequestBody"),
        ({"consultationSessionId": "s"}, "invalidRequestBody"),
        ({"consultationSessionId": "s", "documents": []}, "invalidRequestBody"),
        ({"consultationSessionId": "s", "documents": ["a.pdf"]}, "invalidRequestBody"),
        (
            {
                "consultationSessionId": "s",
                "documents": [{"documentType": "DOC", "documentName": "a.doc"}],
            },
            "invalidRequestBody",
        ),
        (
            {"consultationSessionId": "s", "documents": [{"documentType": "PDF"}]},
            "invalidRequestBody",
        ),
        (
            {
                "consultationSessionId": "s",
                "documents": [{"documentType": "PDF", "documentName": "a.txt"}],
            },
            "inconsistentInput",
        ),
        (
            {
                "consultationSessionId": "s",
                "documents": [{"documentType": "TXT", "documentName": "a.pdf"}],
            },
            "inconsistentInput",
        ),
    ],
)
async def test_documents_validation(api: Api, body: dict[str, Any], error_type: str) -> None:
    reply = await api.invox("/v1/generate-signed-urls-for-documents", body)
    assert reply.status == 400
    assert reply.body["errorType"] == error_type
    assert not api.sandbox.state.documents


async def test_signed_document_put_rules(api: Api) -> None:
    body = {
        "consultationSessionId": "s",
        "documents": [{"documentType": "TXT", "documentName": "a.txt"}],
    }
    url = (await api.invox("/v1/generate-signed-urls-for-documents", body)).body["documents"][0][
        "signedUrl"
    ]
    bad_headers = (
        {"Content-Type": "text/plain", "Authorization": f"Bearer {STATIC_TOKEN}"},
        {"Content-Type": "application/pdf"},
        {"Content-Type": "text/plain; charset=utf-8"},
    )
    for headers in bad_headers:
        reply = await api.call("PUT", url, data=b"a", headers=headers)
        assert reply.status == 400
        assert reply.headers["Content-Type"].startswith("text/plain")
    assert (await api.stats())["documents_uploaded"] == {}
    unknown = await api.call(
        "PUT", "/_uploads/documents/nope", data=b"a", headers={"Content-Type": "text/plain"}
    )
    assert unknown.status == 404


# --- Faults ---------------------------------------------------------------------

DOCUMENTED_ERROR_TYPES = [
    (400, "invalidRequestBody"),
    (400, "inconsistentInput"),
    (400, "invalidApiVersionForEndpoint"),
    (400, "summaryIsRequired"),
    (400, "templateIsRequired"),
    (400, "invalidTemplate"),
    (400, "invalidLanguage"),
    (400, "invalidOutputFormat"),
    (400, "missingOutputLanguage"),
    (403, "CONSULTATION-SUMMARY"),
]


@pytest.mark.parametrize(("status", "error_type"), DOCUMENTED_ERROR_TYPES)
async def test_http_error_fault_returns_any_documented_error_type(
    api: Api, status: int, error_type: str
) -> None:
    await api.faults(
        {
            "endpoint": "invox.summary",
            "kind": "http_error",
            "status": status,
            "errorType": error_type,
            "message": "boom",
            "times": 1,
        }
    )
    body = {"transcript": TRANSCRIPT, "outputFormat": "SUMMARY", "outputLanguage": "en"}
    reply = await api.invox("/api/v1/generate-consultation-summary", body)
    assert reply.status == status
    assert reply.body == {"messsage": "boom", "errorType": error_type}
    assert (await api.invox("/api/v1/generate-consultation-summary", body)).status == 200


async def test_http_error_fault_404_uses_message_key(api: Api) -> None:
    await api.faults(
        {
            "endpoint": "invox.transcription",
            "kind": "http_error",
            "status": 404,
            "errorType": "transcriptionNotFound",
            "message": "Transcription not found",
        }
    )
    reply = await api.invox("/api/v1/get-transcription", {"requestId": "x"})
    assert reply.body == {
        "message": "Transcription not found",
        "errorType": "transcriptionNotFound",
    }


async def test_http_error_fault_counts_down_and_shapes_intron_bodies(api: Api) -> None:
    await api.faults({"endpoint": "intron.upload", "kind": "http_error", "status": 503, "times": 2})
    for _ in range(2):
        reply = await api.upload({"audio_file_name": "a"})
        assert reply.status == 503
        assert reply.body == {"data": {}, "message": "Service Unavailable", "status": "Error"}
    assert (await api.upload({"audio_file_name": "a"})).status == 200
    faults = (await api.control("GET", "faults")).body["faults"]
    assert faults[0]["remaining"] == 0
    stats = await api.stats()
    assert stats["faults_injected"] == 2
    assert stats["calls"]["intron.upload"] == 3
    assert stats["responses"]["intron.upload"] == {"503": 2, "200": 1}


async def test_http_error_fault_on_signed_put_is_plain_text(api: Api) -> None:
    presign = await api.invox("/api/v1/generate-presigned-url", {"mimeType": "audio/wav"})
    await api.faults({"endpoint": "invox.audio_put", "kind": "http_error", "status": 500})
    reply = await api.call(
        "PUT", presign.body["presignedUrl"], data=b"a", headers={"Content-Type": "audio/wav"}
    )
    assert reply.status == 500
    assert reply.text == "Internal Server Error"


async def test_rate_limit_fault(api: Api) -> None:
    await api.faults({"endpoint": "*", "kind": "rate_limit", "retryAfterS": 7, "times": 2})
    reply = await api.invox("/api/v1/generate-presigned-url", {"mimeType": "audio/wav"})
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "7"
    assert "messsage" in reply.body
    intron = await api.upload({"audio_file_name": "a"})
    assert intron.status == 429
    assert intron.body["status"] == "Error"
    assert (await api.stats())["rate_limited"] == 2


async def test_timeout_fault_delays_then_answers(api: Api) -> None:
    await api.faults({"endpoint": "invox.presign", "kind": "timeout", "delayS": 0.01, "times": 1})
    reply = await api.invox("/api/v1/generate-presigned-url", {"mimeType": "audio/wav"})
    assert reply.status == 200
    assert (await api.stats())["faults_injected"] == 1


async def test_timeout_fault_outlasts_a_client_timeout(api: Api) -> None:
    await api.faults({"endpoint": "intron.status", "kind": "timeout", "delayS": 30})
    file_id = await api.file_id()
    with pytest.raises(asyncio.TimeoutError):
        await api.call(
            "GET",
            f"/file/v1/status/{file_id}",
            headers=INTRON_AUTH,
            timeout=aiohttp.ClientTimeout(total=0.2),
        )


@pytest.mark.parametrize(
    ("body", "content_type"), [("truncated_json", "application/json"), ("html", "text/html")]
)
async def test_malformed_fault(api: Api, body: str, content_type: str) -> None:
    await api.faults({"endpoint": "invox.summary", "kind": "malformed", "body": body})
    reply = await api.invox("/api/v1/generate-consultation-summary", {})
    assert reply.status == 200
    assert reply.body is None
    assert reply.headers["Content-Type"].startswith(content_type)


async def test_failed_and_unknown_status_faults_intron(api: Api) -> None:
    file_id = await api.file_id()
    await api.faults(
        {"endpoint": "*", "kind": "failed_status", "times": 1},
        {"endpoint": "intron.status", "kind": "unknown_status", "times": 1},
        {
            "endpoint": "intron.status",
            "kind": "failed_status",
            "statusValue": "FILE_INVALID_DURATION",
            "times": 1,
        },
    )
    seen = [(await api.status(file_id)).body["data"]["processing_status"] for _ in range(4)]
    assert seen == [
        "FILE_PROCESSING_FAILED",
        "FILE_WEIRD_STATUS",
        "FILE_INVALID_DURATION",
        "FILE_TRANSCRIBED",
    ]


async def test_status_faults_do_not_fire_on_other_endpoints(api: Api) -> None:
    await api.faults({"endpoint": "*", "kind": "failed_status", "times": 1})
    file_id = await api.file_id()
    request_id = await api.uploaded_request_id()
    assert (await api.status(file_id)).body["data"]["processing_status"] == "FILE_PROCESSING_FAILED"
    done = await api.invox("/api/v1/get-transcription", {"requestId": request_id})
    assert done.body["transcriptionStatus"] == "COMPLETED"


async def test_failed_and_unknown_status_faults_invox(api: Api) -> None:
    request_id = await api.uploaded_request_id()
    await api.configure(invox_status_key="processingStatus")
    await api.faults(
        {
            "endpoint": "invox.transcription",
            "kind": "failed_status",
            "message": "bad audio",
            "times": 1,
        },
        {"endpoint": "invox.transcription", "kind": "unknown_status", "times": 1},
    )
    failed = await api.invox("/api/v1/get-transcription", {"requestId": request_id})
    assert failed.body == {
        "transcription": [],
        "processingStatus": "ERROR",
        "errorMessage": "bad audio",
    }
    weird = await api.invox("/api/v1/get-transcription", {"requestId": request_id})
    assert weird.body == {"transcription": [], "processingStatus": "WEIRD"}


async def test_probability_faults_replay_with_the_seed(api: Api) -> None:
    rule = {"endpoint": "invox.presign", "kind": "http_error", "status": 502, "probability": 0.5}

    async def run(probability: float) -> list[int]:
        await api.faults({**rule, "probability": probability})
        body = {"mimeType": "audio/wav"}
        return [(await api.invox("/api/v1/generate-presigned-url", body)).status for _ in range(20)]

    first = await run(0.5)
    assert set(first) == {200, 502}
    assert await run(0.5) == first
    assert set(await run(0)) == {200}
    assert set(await run(1)) == {502}


@pytest.mark.parametrize(
    "rule",
    [
        {"endpoint": "nowhere", "kind": "http_error", "status": 500},
        {"endpoint": "*", "kind": "explode"},
        {"endpoint": "*", "kind": "http_error"},
        {"endpoint": "*", "kind": "http_error", "status": 200},
        {"endpoint": "invox.summary", "kind": "failed_status"},
        {"endpoint": "*", "kind": "timeout", "times": 0},
        {"endpoint": "*", "kind": "timeout", "probability": 2},
        {"endpoint": "*", "kind": "malformed", "body": "xml"},
        {"endpoint": "*", "kind": "timeout", "jobMarker": "x"},
        "not a rule",
    ],
)
async def test_invalid_fault_rules_are_refused(api: Api, rule: Any) -> None:
    await api.faults({"endpoint": "*", "kind": "timeout", "delayS": 0})
    reply = await api.control("POST", "faults", [rule])
    assert reply.status == 400
    assert reply.body["error"]
    assert len((await api.control("GET", "faults")).body["faults"]) == 1


async def test_delete_faults_clears_them(api: Api) -> None:
    await api.faults({"endpoint": "*", "kind": "http_error", "status": 500})
    assert (await api.control("DELETE", "faults")).body == {"faults": []}
    assert (await api.upload({"audio_file_name": "a"})).status == 200


# --- Control API, latency, config ------------------------------------------------


async def test_latency_knob_still_answers(api: Api) -> None:
    await api.configure(latency_ms=5)
    assert (await api.upload({"audio_file_name": "a"})).status == 200


@pytest.mark.parametrize(
    "knobs",
    [
        {"nope": 1},
        {"polls_before_ready": -1},
        {"latency_ms": "5"},
        {"invox_status_key": "status"},
        {"forbidden": ["invox.everything"]},
        {"forbidden": "invox.note"},
        {"revoke_tokens": "yes"},
        {"token_ttl_s": True},
        {"no_speech": "yes"},
        {"no_speech": 1},
    ],
)
async def test_config_rejects_bad_knobs(api: Api, knobs: dict[str, Any]) -> None:
    before = (await api.control("GET", "config")).body
    reply = await api.control("POST", "config", knobs)
    assert reply.status == 400
    assert (await api.control("GET", "config")).body == before


async def test_config_bodies_must_be_json(api: Api) -> None:
    for path in ("config", "faults"):
        reply = await api.call("POST", f"/_sandbox/{path}", data=b"{")
        assert reply.status == 400


async def test_reset_restores_start_up_state(api: Api) -> None:
    await api.configure(polls_before_ready=5, forbidden=["invox.note"])
    await api.faults({"endpoint": "*", "kind": "http_error", "status": 500})
    await api.call("GET", "/file/v1/status/x", headers=INTRON_AUTH)
    assert (await api.control("POST", "reset")).status == 200
    config = (await api.control("GET", "config")).body
    assert config["polls_before_ready"] == 0
    assert config["forbidden"] == []
    assert (await api.control("GET", "faults")).body == {"faults": []}
    assert (await api.stats())["calls"] == {}


def test_config_validates_at_construction() -> None:
    with pytest.raises(ValueError, match="invox_status_key"):
        SandboxConfig(invox_status_key="status")
    with pytest.raises(ValueError, match="transcript_turns"):
        SandboxConfig(transcript_turns=())
    assert SandboxConfig().replace(latency_ms=3).latency_ms == 3


async def test_custom_transcript_and_public_base_url() -> None:
    config = SandboxConfig(
        transcript_turns=("Hello doctor.", "Hello."),
        public_base_url="http://sandbox:8080",
        invox_static_token=STATIC_TOKEN,
        polls_before_ready=0,
    )
    async with (
        running_sandbox(config) as sandbox,
        aiohttp.ClientSession(base_url=sandbox.base_url) as session,
    ):
        api = Api(session, sandbox)
        presign = await api.invox("/api/v1/generate-presigned-url", {"mimeType": "audio/wav"})
        assert presign.body["presignedUrl"].startswith("http://sandbox:8080/_uploads/audio/")
        file_id = await api.file_id(use_diarization="TRUE")
        transcript = (await api.status(file_id)).body["data"]["audio_transcript"]
        assert transcript == "SPEAKER_01: Hello doctor.\nSPEAKER_02: Hello."


# --- CLI ------------------------------------------------------------------------


def test_cli_prints_ready_line_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "ops.sandbox.cli", "--port", "0", "--polls-before-ready", "0"]
    with subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        event = json.loads(line)
        assert event["event"] == "ready"
        assert event["base_url"].startswith("http://127.0.0.1:")
        assert set(event) == {"event", "base_url"}
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert stdout == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.org"])
def test_cli_refuses_non_loopback_hosts(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--host", host])
    assert exit_info.value.code == 2
    assert "non-loopback" in capsys.readouterr().err


def test_cli_rejects_invalid_knob_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--polls-before-ready", "-1"])
    assert "polls_before_ready" in capsys.readouterr().err


def test_base_url_brackets_ipv6_hosts() -> None:
    assert url_host("::1") == "[::1]"
    assert url_host("127.0.0.1") == "127.0.0.1"
    assert url_host("localhost") == "localhost"
