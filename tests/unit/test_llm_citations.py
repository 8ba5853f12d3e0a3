"""The "llm" providers ask the model for segment-id citations and check them against the
transcript (issue 16, item 4): against aioresponses at the HTTP boundary."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses

from schemas.jobs import JobRequest, Summary, Template, Transcript, TranscriptSegment
from worker.providers.http import VendorHttp
from worker.providers.llm import LlmClient, LlmNoteWriter, LlmSummarizer
from worker.settings import LlmSettings

BASE = "https://llm.test"
CHAT = f"{BASE}/v1/chat/completions"
LINES = (
    "[doctor] what brings you in today ?",
    "[patient] my left knee hurts since monday after a fall on the stairs .",
    "[doctor] i want you to take ibuprofen and rest the knee for a week .",
)
TRANSCRIPT = Transcript(
    provider="local",
    text="\n".join(LINES),
    segments=tuple(
        TranscriptSegment(start=4.0 * i, end=4.0 * i + 3.5, text=line)
        for i, line in enumerate(LINES)
    ),
)
TEMPLATE = Template.model_validate(
    {
        "id": "t",
        "template_name": "T",
        "template_language": "en",
        "fields": [
            {"id": "hpi", "name": "History", "type": "string", "value": ""},
            {"id": "plan", "name": "Plan", "type": "string", "value": ""},
            {"id": "meds", "name": "Medications", "type": "array", "value": []},
        ],
    }
)


def job() -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": "/x.wav"},
            "providers": {"summarizer": "llm", "note": "llm"},
            "summary": {"outputFormat": "SUMMARY", "outputLanguage": "en"},
        }
    )


def reply(content: dict[str, Any], seen: list[str]) -> Any:
    def callback(url: Any, **kwargs: Any) -> CallbackResult:
        seen.append(json.loads(kwargs["data"])["messages"][1]["content"])
        message = {"role": "assistant", "content": json.dumps(content)}
        return CallbackResult(payload={"choices": [{"index": 0, "message": message}]})

    return callback


@pytest.fixture
async def client() -> AsyncIterator[LlmClient]:
    async with aiohttp.ClientSession() as session:
        settings = LlmSettings(base_url=BASE, model="tiny", api_key=None, timeout_s=5)
        yield LlmClient(settings, VendorHttp(session, timeout_s=5))


async def test_summary_citations_are_checked_against_the_transcript(
    mocked: aioresponses, client: LlmClient
) -> None:
    text = (
        "HISTORY OF PRESENT ILLNESS\n"
        "Left knee pain since Monday after a fall on the stairs.\n"
        "He takes ibuprofen and rests the knee.\n"
        "He has diabetes.\n"
        "Knee pain since Monday."
    )
    content = {"summary": text, "citations": [[1], [1], [0], [1, 9]]}
    seen: list[str] = []
    mocked.post(CHAT, callback=reply(content, seen))
    summary = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    [prompt] = seen
    assert "[1] [patient] my left knee hurts since monday" in prompt
    assert '"citations"' in prompt
    assert summary.text == text
    assert summary.evidence is not None
    knee, ibuprofen, diabetes, out_of_range = summary.evidence
    assert text[knee.text_start : knee.text_end].startswith("Left knee pain")
    assert (knee.segment_ids, knee.supported, knee.start, knee.end) == ((1,), True, 4.0, 7.5)
    # Cited, but the cited segment does not hold it: kept, flagged.
    assert ibuprofen.segment_ids == (1,)
    assert not ibuprofen.supported
    assert not diabetes.supported
    # An id outside the transcript is dropped and the citation does not hold.
    assert out_of_range.segment_ids == (1,)
    assert not out_of_range.supported


@pytest.mark.parametrize(
    "citations",
    [None, [[1]], [[1], ["1"]], [[1], [True]], "1"],
    ids=["none", "too-few", "string-id", "bool-id", "not-a-list"],
)
async def test_summary_without_usable_citations_is_left_to_the_aligner(
    mocked: aioresponses, client: LlmClient, citations: Any
) -> None:
    content: dict[str, Any] = {"summary": "Left knee pain.\nIbuprofen and rest."}
    if citations is not None:
        content["citations"] = citations
    mocked.post(CHAT, callback=reply(content, []))
    summary = await LlmSummarizer(client).summarize(job(), TRANSCRIPT)
    assert summary.evidence is None


async def test_note_fields_carry_their_cited_segments(
    mocked: aioresponses, client: LlmClient
) -> None:
    content = {
        "clinicalNote": [
            {"id": "hpi", "value": "Left knee pain after a fall on the stairs.", "segmentIds": [1]},
            {"id": "plan", "value": "Ibuprofen and rest for a week.", "segmentIds": [0]},
            {"id": "meds", "value": ["Ibuprofen."]},
        ]
    }
    seen: list[str] = []
    summary = Summary(provider="llm", output_format="SUMMARY", text="Knee pain.")
    mocked.post(CHAT, callback=reply(content, seen))
    hpi, plan, meds = await LlmNoteWriter(client).write_note(job(), TEMPLATE, TRANSCRIPT, summary)
    assert '"segmentIds"' in seen[0]
    assert hpi.evidence is not None
    assert [(e.segment_ids, e.supported) for e in hpi.evidence] == [((1,), True)]
    assert plan.evidence is not None
    assert [(e.segment_ids, e.supported) for e in plan.evidence] == [((0,), False)]
    assert meds.evidence is None  # no citation: the note stage aligns it
