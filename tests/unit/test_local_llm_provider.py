"""The optional OpenAI-compatible "llm" summary and note providers, against aioresponses."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, Summary, Template, Transcript
from worker.errors import PermanentError, TransientError
from worker.providers.base import PreparedDocument
from worker.providers.http import VendorHttp
from worker.providers.llm import MAX_DOCUMENT_TEXT_BYTES, LlmClient, LlmNoteWriter, LlmSummarizer
from worker.settings import LlmSettings, Secret, Settings

from .vendor_loopback import Loopback, loopback_server

BASE = "https://llm.test"
CHAT = f"{BASE}/v1/chat/completions"
KEY = "MARKER-LLM-KEY"
TRANSCRIPT = Transcript(provider="local", text="[patient] my left knee hurts since monday .")
TEMPLATE = Template.model_validate(
    {
        "id": "t",
        "template_name": "T",
        "template_language": "en",
        "fields": [
            {"id": "cc", "name": "Chief complaint", "type": "string", "value": ""},
            {"id": "pain", "name": "Pain score", "type": "number", "value": 0},
            {"id": "smoker", "name": "Smoker", "type": "boolean", "value": False},
            {
                "id": "side",
                "name": "Side",
                "type": "enum",
                "enumerableOptions": ["left", "right"],
                "value": "",
            },
            {"id": "meds", "name": "Medications", "type": "array", "value": []},
        ],
    }
)


def job(output_format: str = "SUMMARY") -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": "/x.wav"},
            "providers": {"summarizer": "llm", "note": "llm"},
            "summary": {"outputFormat": output_format, "outputLanguage": "en"},
        }
    )


def answer(content: Any) -> dict[str, Any]:
    text = content if isinstance(content, str) else json.dumps(content)
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


@pytest.fixture
async def client() -> AsyncIterator[LlmClient]:
    async with aiohttp.ClientSession() as session:
        settings = LlmSettings(base_url=BASE, model="tiny", api_key=Secret(KEY), timeout_s=5)
        yield LlmClient(settings, VendorHttp(session, timeout_s=5))


async def test_summary_request_and_answer(mocked: aioresponses, client: LlmClient) -> None:
    seen: list[dict[str, Any]] = []

    def capture(url: Any, **kwargs: Any) -> CallbackResult:
        seen.append({"headers": kwargs["headers"], "body": json.loads(kwargs["data"])})
        return CallbackResult(payload=answer({"summary": "CHIEF COMPLAINT\n\nLeft knee pain."}))

    mocked.post(CHAT, callback=capture)
    summary = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert summary == Summary(
        provider="llm", output_format="SUMMARY", text="CHIEF COMPLAINT\n\nLeft knee pain."
    )
    [request] = seen
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "tiny"
    assert request["body"]["response_format"] == {"type": "json_object"}
    assert "my left knee hurts" in request["body"]["messages"][1]["content"]


async def test_soap_summary(mocked: aioresponses, client: LlmClient) -> None:
    fields = [
        {"name": n, "description": "", "value": f"{n} text"}
        for n in ("Subjective", "Objective", "Assessment", "Plan")
    ]
    mocked.post(CHAT, payload=answer({"fields": fields}))
    summary = await LlmSummarizer(client).summarize(job("SOAP_TEMPLATE"), TRANSCRIPT)
    assert summary.output_format == "SOAP_TEMPLATE"
    assert [f.name for f in summary.fields or ()] == [
        "Subjective",
        "Objective",
        "Assessment",
        "Plan",
    ]


@pytest.mark.parametrize(
    "content",
    [
        "Sure! Here is the note: {}",  # not strict JSON
        '["a list"]',
        {"text": "wrong key"},
        {"summary": 3},
    ],
)
async def test_answers_that_are_not_the_contract_are_malformed(
    mocked: aioresponses, client: LlmClient, content: Any
) -> None:
    mocked.post(CHAT, payload=answer(content))
    with pytest.raises(TransientError) as caught:
        await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert caught.value.error_type == ErrorType.MALFORMED_RESPONSE


async def test_http_errors_map_like_any_vendor(mocked: aioresponses, client: LlmClient) -> None:
    mocked.post(CHAT, status=429, headers={"Retry-After": "7"}, payload={"error": "slow down"})
    with pytest.raises(TransientError) as transient:
        await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    mocked.post(CHAT, status=401, payload={"message": f"bad key {KEY}"})
    with pytest.raises(PermanentError) as permanent:
        await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert transient.value.error_type == ErrorType.RATE_LIMITED
    assert transient.value.retry_after_s == 7
    assert permanent.value.error_type == ErrorType.UNAUTHORIZED
    assert KEY not in str(permanent.value)
    assert BASE not in str(permanent.value)


async def test_note_fills_the_template_with_checked_types(
    mocked: aioresponses, client: LlmClient
) -> None:
    seen: list[str] = []

    def capture(url: Any, **kwargs: Any) -> CallbackResult:
        seen.append(json.loads(kwargs["data"])["messages"][1]["content"])
        return CallbackResult(
            payload=answer(
                {
                    "clinicalNote": [
                        {"id": "cc", "value": "Left knee pain."},
                        {"id": "pain", "value": 6},
                        {"id": "side", "value": "left"},
                        {"id": "meds", "value": ["ibuprofen"]},
                    ]
                }
            )
        )

    writer = LlmNoteWriter(client)
    request = job()
    documents = [PreparedDocument("TXT", "r.txt", "text/plain", b"MARKER-REFERRAL")]
    summary = Summary(provider="local", output_format="SUMMARY", text="Left knee pain.")
    mocked.post(CHAT, callback=capture)
    fields = await writer.write_note(request, TEMPLATE, TRANSCRIPT, summary, documents)
    values = {f.id: f.value for f in fields}
    assert values == {
        "cc": "Left knee pain.",
        "pain": 6.0,
        "smoker": "",  # left out -> empty
        "side": "left",
        "meds": ["ibuprofen"],
    }
    assert [f.id for f in fields] == [f.id for f in TEMPLATE.fields]
    assert "MARKER-REFERRAL" in seen[0]
    assert '"enumerableOptions": ["left", "right"]' in seen[0]


@pytest.mark.parametrize(
    "entry",
    [
        {"id": "side", "value": "both"},  # not a listed option
        {"id": "pain", "value": "six"},
        {"id": "smoker", "value": "yes"},
        {"id": "meds", "value": "ibuprofen"},
        {"id": "unknown", "value": "x"},
    ],
)
async def test_note_values_outside_the_template_are_malformed(
    mocked: aioresponses, client: LlmClient, entry: dict[str, Any]
) -> None:
    summary = Summary(provider="local", output_format="SUMMARY", text="x")
    mocked.post(CHAT, payload=answer({"clinicalNote": [entry]}))
    with pytest.raises(TransientError) as caught:
        await LlmNoteWriter(client).write_note(job(), TEMPLATE, TRANSCRIPT, summary)
    assert caught.value.error_type == ErrorType.MALFORMED_RESPONSE


async def test_settings_and_registration() -> None:
    from worker.providers.factory import build_registry

    unset = Settings.from_env({})
    assert not unset.llm.configured
    assert unset.local.asr_workers == 1
    settings = Settings.from_env(
        {
            "SCRIBE_LLM_BASE_URL": BASE + "/",
            "SCRIBE_LLM_MODEL": "m",
            "SCRIBE_LLM_API_KEY": KEY,
            "SCRIBE_LOCAL_ASR_WORKERS": "2",
        }
    )
    assert settings.llm.base_url == BASE
    assert KEY not in repr(settings)
    assert settings.local.asr_workers == 2
    async with aiohttp.ClientSession() as session:
        http = VendorHttp(session, timeout_s=5)
        registry = build_registry(settings, http)
        without = build_registry(unset, http)
    assert registry.summarizer("llm").name == "llm"
    assert registry.note_writer("llm").name == "llm"
    for reg in (registry, without):
        assert reg.transcriber("local").name == "local"
        assert reg.summarizer("local").name == "local"
        assert reg.note_writer("local").name == "local"
    with pytest.raises(PermanentError) as caught:
        without.summarizer("llm")
    assert caught.value.error_type == ErrorType.PROVIDER_NOT_CONFIGURED


# ---------------------------------------------------------------- hostile answers (issue 12)


@pytest.fixture
async def model() -> AsyncIterator[tuple[Loopback, LlmClient]]:
    """A loopback chat endpoint answering whatever the test sets, and a client of it."""
    async with loopback_server() as server, aiohttp.ClientSession() as session:
        settings = LlmSettings(base_url=server.base, model="tiny", api_key=Secret(KEY), timeout_s=5)
        yield server, LlmClient(settings, VendorHttp(session, timeout_s=5))


async def test_answer_nested_deep_is_malformed_at_once(
    model: tuple[Loopback, LlmClient],
) -> None:
    """json.loads of the content raised RecursionError (internalError, retried)."""
    server, client = model
    server.answer(json.dumps(answer('{"summary":' * 100_000)))
    with pytest.raises(PermanentError) as caught:
        await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert caught.value.error_type == ErrorType.MALFORMED_RESPONSE


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400])
async def test_note_number_that_is_not_finite_is_malformed(
    model: tuple[Loopback, LlmClient], number: str
) -> None:
    """inf became a ClinicalNoteField (ValidationError), 10**400 raised OverflowError."""
    server, client = model
    content = '{"clinicalNote": [{"id": "pain", "value": ' + number + "}]}"
    server.answer(json.dumps(answer(content)))
    summary = Summary(provider="local", output_format="SUMMARY", text="x")
    with pytest.raises(TransientError) as caught:
        await LlmNoteWriter(client).write_note(job(), TEMPLATE, TRANSCRIPT, summary)
    assert caught.value.error_type == ErrorType.MALFORMED_RESPONSE


async def test_summary_over_the_schema_bound_is_malformed(
    model: tuple[Loopback, LlmClient],
) -> None:
    server, client = model
    server.answer(json.dumps(answer({"summary": "MARKER-SUMMARY " + "x" * 5_000_000})))
    with pytest.raises(PermanentError) as caught:
        await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert caught.value.error_type == ErrorType.MALFORMED_RESPONSE
    assert "MARKER-SUMMARY" not in str(caught.value)


async def test_documents_go_to_the_prompt_bounded(
    model: tuple[Loopback, LlmClient], tmp_path: Path
) -> None:
    """Item 5: a 20 MB TXT document was decoded whole into the prompt; now its first
    MAX_DOCUMENT_TEXT_BYTES only, read from disk (a character cut at the bound is dropped)."""
    server, client = model
    path = tmp_path / "referral.txt"
    path.write_bytes("\u00e9".encode() * (10 * 1024 * 1024))  # 20 MiB
    writer = LlmNoteWriter(client)
    request = job()
    documents = [PreparedDocument("TXT", "r.txt", "text/plain", path)]
    server.answer(json.dumps(answer({"clinicalNote": []})))
    summary = Summary(provider="local", output_format="SUMMARY", text="x")
    await writer.write_note(request, TEMPLATE, TRANSCRIPT, summary, documents)
    ((_, _, _, body),) = server.requests
    prompt = json.loads(body)["messages"][1]["content"]
    assert prompt.endswith("Supporting document:\n" + "\u00e9" * (MAX_DOCUMENT_TEXT_BYTES // 2))
