"""The emulator's OpenAI-compatible endpoint (ops/sandbox/llm.py) driven by the worker's own
"llm" providers (issue 16, item 4): the citations it gives are checked by the worker, kept when
they hold and flagged supported=false when they do not (never dropped), and its faults end as the
worker's errors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp
import pytest

from ops.sandbox import FaultRule, RunningSandbox, SandboxConfig, content, running_sandbox
from ops.sandbox.config import DEFAULT_TRANSCRIPT_TURNS
from ops.sandbox.llm import HPI_HEADER, PLAN_HEADER, read_prompt, sentences
from schemas.errors import ErrorType
from schemas.jobs import (
    ClinicalNoteField,
    JobRequest,
    Summary,
    Template,
    Transcript,
    TranscriptSegment,
)
from tests.harness import SAMPLE_TEMPLATE
from worker.errors import PermanentError, TransientError
from worker.evidence import statement_spans
from worker.providers.http import VendorHttp
from worker.providers.llm import LlmClient, LlmNoteWriter, LlmSummarizer
from worker.settings import LlmSettings, Secret

TRANSCRIPT = Transcript(
    provider="invox",
    text="\n".join(DEFAULT_TRANSCRIPT_TURNS),
    segments=tuple(
        TranscriptSegment(start=s["start"], end=s["end"], text=s["text"])
        for s in content.segments(DEFAULT_TRANSCRIPT_TURNS)
    ),
)
TEMPLATE = Template.model_validate(SAMPLE_TEMPLATE)
KEY = "sandbox-llm-key"


def job(output_format: str = "SUMMARY") -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": "/x.wav"},
            "providers": {"summarizer": "llm", "note": "llm"},
            "summary": {"outputFormat": output_format, "outputLanguage": "en"},
        }
    )


@pytest.fixture
async def llm_sandbox() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(SandboxConfig(llm_api_key=KEY)) as running:
        yield running


@pytest.fixture
async def client(llm_sandbox: RunningSandbox) -> AsyncIterator[LlmClient]:
    async with aiohttp.ClientSession() as session:
        settings = LlmSettings(
            base_url=llm_sandbox.base_url, model="sandbox", api_key=Secret(KEY), timeout_s=1
        )
        yield LlmClient(settings, VendorHttp(session, timeout_s=1))


def fault(sandbox: RunningSandbox, **rule: Any) -> None:
    sandbox.state.faults.replace([FaultRule.parse({"endpoint": "llm.chat", **rule})])


def statements(summary: Summary) -> list[str]:
    assert summary.text is not None
    return [summary.text[a:b] for a, b in statement_spans(summary.text)]


async def test_summary_citations_hold_and_are_kept(client: LlmClient) -> None:
    summary = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert summary.text is not None
    assert summary.text.startswith(HPI_HEADER + "\n")
    assert f"\n\n{PLAN_HEADER}\n" in summary.text
    assert summary.evidence is not None
    said = statements(summary)
    assert len(summary.evidence) == len(said) >= 4
    for evidence, sentence in zip(summary.evidence, said, strict=True):
        assert evidence.supported, sentence
        [segment] = evidence.segment_ids
        # Extractive: the sentence is in the segment it cites, which is timed.
        assert sentence in TRANSCRIPT.segments[segment].text
        assert evidence.start == TRANSCRIPT.segments[segment].start


@pytest.mark.parametrize("how", ["out_of_range", "unsupported"])
async def test_bad_summary_citations_are_flagged_never_dropped(
    llm_sandbox: RunningSandbox, client: LlmClient, how: str
) -> None:
    good = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    fault(llm_sandbox, kind="bad_citations", citations=how)
    bad = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert bad.text == good.text  # every statement is still there
    assert bad.evidence is not None
    assert good.evidence is not None
    assert len(bad.evidence) == len(good.evidence)
    for index, (was, now) in enumerate(zip(good.evidence, bad.evidence, strict=True)):
        if index % 2 == 0:
            assert now == was
            continue
        assert not now.supported
        assert (now.text_start, now.text_end) == (was.text_start, was.text_end)
        if how == "out_of_range":
            assert now.segment_ids == ()  # ids outside the transcript are not kept as ids
        else:
            assert now.segment_ids != was.segment_ids
            assert now.segment_ids[0] < len(TRANSCRIPT.segments)


async def test_summary_without_citations_is_left_to_the_aligner(
    llm_sandbox: RunningSandbox, client: LlmClient
) -> None:
    fault(llm_sandbox, kind="bad_citations", citations="missing")
    summary = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert summary.text
    assert summary.evidence is None


async def test_soap_summary_has_the_four_sections(client: LlmClient) -> None:
    summary = await LlmSummarizer(client).summarize(job("SOAP_TEMPLATE"), TRANSCRIPT)
    assert summary.fields is not None
    assert [f.name for f in summary.fields] == ["Subjective", "Objective", "Assessment", "Plan"]
    transcript = " ".join(TRANSCRIPT.text.split())
    for soap in summary.fields:
        assert soap.value
        assert all(s.text in transcript for s in sentences([(0, soap.value)]))


def by_id(fields: tuple[ClinicalNoteField, ...]) -> dict[str, ClinicalNoteField]:
    return {f.id: f for f in fields}


async def write(client: LlmClient) -> dict[str, ClinicalNoteField]:
    summary = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    return by_id(await LlmNoteWriter(client).write_note(job(), TEMPLATE, TRANSCRIPT, summary))


async def test_note_fields_carry_citations_that_hold(client: LlmClient) -> None:
    note = await write(client)
    assert list(note) == [f.id for f in TEMPLATE.fields]
    complaint, medications = note["f1"], note["f5"]
    assert isinstance(complaint.value, str)
    assert complaint.value
    assert isinstance(medications.value, list)
    assert medications.value
    for cited in (complaint, medications):
        assert cited.evidence
        assert all(e.supported and e.segment_ids for e in cited.evidence)
    # What it cannot cite it leaves empty (not stated), with no evidence of its own.
    for empty in ("f2", "f3", "f4"):
        assert note[empty].value == ""
        assert note[empty].evidence is None


@pytest.mark.parametrize("how", ["out_of_range", "unsupported"])
async def test_bad_note_citations_are_flagged_never_dropped(
    llm_sandbox: RunningSandbox, client: LlmClient, how: str
) -> None:
    good = await write(client)
    fault(llm_sandbox, kind="bad_citations", citations=how)
    bad = await write(client)
    # The first cited field keeps its citation, the second (f5) gets a wrong one.
    assert bad["f1"] == good["f1"]
    assert bad["f5"].value == good["f5"].value
    evidence = bad["f5"].evidence
    assert evidence
    assert not any(e.supported for e in evidence)


@pytest.mark.parametrize(
    ("rule", "error_type"),
    [
        ({"kind": "bad_answer", "answer": "not_json"}, ErrorType.MALFORMED_RESPONSE),
        ({"kind": "bad_answer", "answer": "wrong_shape"}, ErrorType.MALFORMED_RESPONSE),
        ({"kind": "bad_answer", "answer": "no_choices"}, ErrorType.MALFORMED_RESPONSE),
        ({"kind": "malformed", "body": "truncated_json"}, ErrorType.MALFORMED_RESPONSE),
        ({"kind": "malformed", "body": "html"}, ErrorType.MALFORMED_RESPONSE),
        ({"kind": "http_error", "status": 503}, ErrorType.UPSTREAM_UNAVAILABLE),
        ({"kind": "timeout", "delayS": 5}, ErrorType.UPSTREAM_TIMEOUT),
        ({"kind": "slow_answer", "delayS": 5}, ErrorType.UPSTREAM_TIMEOUT),
    ],
    ids=["not-json", "wrong-shape", "no-choices", "truncated", "html", "503", "timeout", "slow"],
)
@pytest.mark.parametrize("stage", ["summary", "note"])
async def test_faults_end_as_transient_errors(
    llm_sandbox: RunningSandbox,
    client: LlmClient,
    rule: dict[str, Any],
    error_type: str,
    stage: str,
) -> None:
    summary = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    call: Coroutine[Any, Any, object]
    if stage == "summary":
        call = LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    else:
        call = LlmNoteWriter(client).write_note(job(), TEMPLATE, TRANSCRIPT, summary)
    fault(llm_sandbox, **rule, times=1)
    with pytest.raises(TransientError) as caught:
        await call
    assert caught.value.error_type == error_type
    # Our own words only: nothing of the transcript, the answer or the URL.
    assert "knee" not in caught.value.message.lower()
    assert llm_sandbox.base_url not in caught.value.message
    # The fault fired once: the next call answers well.
    assert (await LlmSummarizer(client).summarize(job(), TRANSCRIPT)).evidence


async def test_rate_limit_carries_retry_after(
    llm_sandbox: RunningSandbox, client: LlmClient
) -> None:
    fault(llm_sandbox, kind="rate_limit", retryAfterS=7, times=1)
    with pytest.raises(TransientError) as caught:
        await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert caught.value.error_type == ErrorType.RATE_LIMITED
    assert caught.value.retry_after_s == 7


async def test_errors_speak_openai_and_the_key_is_checked(llm_sandbox: RunningSandbox) -> None:
    url = f"{llm_sandbox.base_url}/v1/chat/completions"
    good = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    auth = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=good) as response:
            assert response.status == 401
            assert (await response.json())["error"]["message"] == "Unauthorized"
        async with session.post(url, json={"messages": []}, headers=auth) as response:
            assert response.status == 400
            error = (await response.json())["error"]
            assert error["type"] == "invalid_request_error"
        async with session.post(url, json=good, headers=auth) as response:
            body = await response.json()
    assert body["object"] == "chat.completion"
    # Not a prompt it knows: prose, as a chat model answers, which the worker cannot parse.
    assert not body["choices"][0]["message"]["content"].startswith("{")


async def test_the_key_is_optional_by_default() -> None:
    async with running_sandbox() as sandbox, aiohttp.ClientSession() as session:
        settings = LlmSettings(base_url=sandbox.base_url, model="m", api_key=None, timeout_s=2)
        client = LlmClient(settings, VendorHttp(session, timeout_s=2))
        summary = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert summary.evidence


async def test_a_wrong_key_is_refused(llm_sandbox: RunningSandbox) -> None:
    async with aiohttp.ClientSession() as session:
        settings = LlmSettings(
            base_url=llm_sandbox.base_url, model="m", api_key=Secret("wrong"), timeout_s=2
        )
        client = LlmClient(settings, VendorHttp(session, timeout_s=2))
        with pytest.raises(PermanentError) as caught:
            await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert caught.value.error_type == ErrorType.UNAUTHORIZED


def test_the_prompt_is_read_as_the_worker_writes_it() -> None:
    prompt = read_prompt(
        'Write a note. Answer {"summary": "<the note>"}. Also give "citations": ...\n\n'
        "Transcript (one segment per line, each after its [id]):\n"
        "[0] [doctor] what brings you in ?\n"
        "[1] [patient] my left knee hurts since monday after a fall .\n"
        "\nSupporting document:\n[7] not a segment"
    )
    assert (prompt.task, prompt.cite) == ("summary", True)
    assert [sid for sid, _ in prompt.segments] == [0, 1]
    [said] = sentences(prompt.segments)
    assert (said.text, said.segment) == ("My left knee hurts since monday after a fall .", 1)


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ({"endpoint": "invox.summary", "kind": "bad_citations"}, "only applies to"),
        ({"endpoint": "llm.chat", "kind": "bad_citations", "citations": "all"}, "citations must"),
        ({"endpoint": "llm.chat", "kind": "bad_answer", "answer": "rude"}, "answer must"),
    ],
)
def test_llm_fault_rules_are_validated(rule: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        FaultRule.parse(rule)
