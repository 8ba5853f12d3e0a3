"""Optional summary and note providers ("llm") over an OpenAI-compatible chat endpoint.

Configured by SCRIBE_LLM_BASE_URL (registered only when set), SCRIBE_LLM_MODEL and
SCRIBE_LLM_API_KEY (a secret, also SCRIBE_LLM_API_KEY_FILE). Calls
`POST {base}/v1/chat/completions` through VendorHttp, so HTTP failures map like any vendor's
(429/5xx/timeouts retry, other 4xx are permanent; messages never carry the URL or the key).

The model must answer with one JSON object and nothing else (`response_format` json_object is
asked for); the answer is parsed strictly: not JSON, the wrong shape, an unknown field id, a
value of the wrong type or an enum value outside enumerableOptions -> malformedResponse (a
transient error: the next attempt may answer well). The shapes are the Invox ones, so later
stages do not care which provider ran:
- summary SUMMARY: {"summary": "<sectioned note text>"};
- summary SOAP_TEMPLATE: {"fields": [{"name", "description", "value"}, ...]} (S, O, A, P);
- note: {"clinicalNote": [{"id": "<template field id>", "value": ...}, ...]}; a field left out
  is empty ("" or [] for arrays), as with the local note writer.
TXT supporting documents are passed to the note prompt (the first MAX_DOCUMENT_TEXT_BYTES of
each, read from disk in a thread); PDFs are ignored.

Hostile answers (issue 12): the content is parsed depth-limited (nested past 200 levels ->
PermanentError(malformedResponse)); a number that is not finite (1e400, 10**400) is a wrong type;
an answer that does not fit the schemas' bounds (a 6 MB string, say) is PermanentError
(malformedResponse), never a ValidationError quoting it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from schemas.errors import ErrorType
from schemas.jobs import (
    ClinicalNoteField,
    JobRequest,
    SoapField,
    Summary,
    Template,
    TemplateField,
    Transcript,
)
from worker.errors import PermanentError
from worker.evidence import (
    MAX_ALIGN_SENTENCES,
    SegmentMap,
    cited_evidence,
    cited_note_evidence,
    numbered_segments,
)
from worker.providers.base import PreparedDocument
from worker.providers.http import JsonObject, VendorHttp, finite_number, malformed, parse_json
from worker.settings import LlmSettings

T = TypeVar("T")

VENDOR: Final = "llm"
PROVIDER: Final = "llm"
SUMMARY_ENDPOINT: Final = "llm.summary"
NOTE_ENDPOINT: Final = "llm.note"
CHAT_PATH: Final = "/v1/chat/completions"
# What of each TXT document goes into the note prompt (a 20 MB document would be 20 MB of prompt).
MAX_DOCUMENT_TEXT_BYTES: Final = 256 * 1024
SOAP_NAMES: Final = ("Subjective", "Objective", "Assessment", "Plan")
# The transcript goes to the model as numbered segments (its segments, or its pseudo-segments,
# worker/evidence.py) so that it can cite them; the transcript is already capped in bytes.
MAX_PROMPT_SEGMENT_CHARS: Final = 6 * 1024 * 1024
MAX_CITED_SEGMENTS: Final = 200  # per sentence or field; a longer list is not a citation
TRANSCRIPT_LABEL: Final = "Transcript (one segment per line, each after its [id]):"
CITE_SENTENCES: Final = (
    ' Also give "citations": one list per sentence of the note, in order (section headings '
    "are not sentences), of the ids of the transcript segments that sentence rests on."
)

_RULES: Final = (
    "You write clinical documentation from a consultation transcript. Use only facts stated in "
    "the transcript (and the supporting documents, when given). Never invent findings, numbers, "
    "medications or diagnoses; leave out what was not said. Answer with one JSON object only."
)


class LlmClient:
    def __init__(self, settings: LlmSettings, http: VendorHttp) -> None:
        if settings.base_url is None:
            raise ValueError("LlmClient needs SCRIBE_LLM_BASE_URL")
        self._settings = settings
        self._http = http
        self._url = settings.base_url.rstrip("/") + CHAT_PATH

    async def ask_json(self, endpoint: str, system: str, user: str) -> JsonObject:
        headers = {"Content-Type": "application/json"}
        if self._settings.api_key is not None:
            headers["Authorization"] = f"Bearer {self._settings.api_key.value}"
        body = await self._http.request_json(
            VENDOR,
            endpoint,
            "POST",
            self._url,
            headers=headers,
            data=json.dumps(
                {
                    "model": self._settings.model,
                    "temperature": 0,
                    "response_format": {"type": "json_object"},
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": user},
                    ],
                }
            ),
            timeout_s=self._settings.timeout_s,
        )
        return parse_answer(body, endpoint)


def parse_answer(body: JsonObject, endpoint: str) -> JsonObject:
    """choices[0].message.content, which must itself be a JSON object."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed(endpoint, "response has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise malformed(endpoint, "response has no message content")
    answer = parse_json(content, endpoint)
    if not isinstance(answer, dict):
        raise malformed(endpoint, "the answer is not a JSON object")
    return answer


class LlmSummarizer:
    name = PROVIDER

    def __init__(self, client: LlmClient) -> None:
        self._client = client

    def close(self) -> None:
        """Nothing of its own to release (the shared HTTP session is closed by the worker)."""

    async def summarize(self, job: JobRequest, transcript: Transcript) -> Summary:
        language = job.summary.output_language
        if job.summary.output_format == "SOAP_TEMPLATE":
            instruction = (
                f"Write a SOAP summary in language '{language}'. Answer "
                '{"fields": [{"name": "Subjective", "description": "...", "value": "..."}, '
                '{"name": "Objective", ...}, {"name": "Assessment", ...}, {"name": "Plan", ...}]}.'
            )
        else:
            instruction = (
                f"Write a clinical note in language '{language}' with the sections CHIEF "
                "COMPLAINT, HISTORY OF PRESENT ILLNESS, REVIEW OF SYSTEMS, PHYSICAL EXAMINATION, "
                "RESULTS, ASSESSMENT AND PLAN (leave out a section with nothing to say). Answer "
                '{"summary": "<the note>"}.'
            )
        segmap = await asyncio.to_thread(SegmentMap.of, transcript)
        if job.summary.output_format == "SUMMARY":
            instruction += CITE_SENTENCES
        numbered = await asyncio.to_thread(numbered_segments, segmap, MAX_PROMPT_SEGMENT_CHARS)
        answer = await self._client.ask_json(
            SUMMARY_ENDPOINT, _RULES, f"{instruction}\n\n{TRANSCRIPT_LABEL}\n{numbered}"
        )
        if job.summary.output_format == "SOAP_TEMPLATE":
            return _fitting(
                SUMMARY_ENDPOINT,
                lambda: Summary(
                    provider=PROVIDER, output_format="SOAP_TEMPLATE", fields=_soap_fields(answer)
                ),
            )
        text = answer.get("summary")
        if not isinstance(text, str):
            raise malformed(SUMMARY_ENDPOINT, "the answer has no string 'summary'")
        citations = _citations(answer.get("citations"))
        evidence = None
        if citations is not None:
            evidence = await asyncio.to_thread(cited_evidence, text, citations, segmap)
        return _fitting(
            SUMMARY_ENDPOINT,
            lambda: Summary(
                provider=PROVIDER,
                output_format="SUMMARY",
                text=text,
                evidence=tuple(evidence) if evidence is not None else None,
            ),
        )


def _citations(raw: Any) -> list[list[int]] | None:
    """The model's citations: one list of segment ids per sentence, or None when it gave none
    or gave them in another shape (the worker aligns the text instead)."""
    if not isinstance(raw, list) or len(raw) > MAX_ALIGN_SENTENCES:
        return None
    out: list[list[int]] = []
    for entry in raw:
        ids = _segment_ids(entry)
        if ids is None:
            return None
        out.append(ids)
    return out


def _segment_ids(raw: Any) -> list[int] | None:
    if not isinstance(raw, list) or len(raw) > MAX_CITED_SEGMENTS:
        return None
    if not all(type(i) is int for i in raw):  # not bool, not float
        return None
    return list(raw)


def _fitting(endpoint: str, build: Callable[[], T]) -> T:
    """build(), with a model that rejects the answer (a string over the schema's bound) turned
    into malformedResponse: permanent (the same prompt gives the same kind of answer) and
    without the ValidationError's text, which would quote the answer."""
    try:
        return build()
    except ValidationError:
        raise PermanentError(
            ErrorType.MALFORMED_RESPONSE, f"{endpoint}: the answer does not fit the schema"
        ) from None


def _soap_fields(answer: JsonObject) -> tuple[SoapField, ...]:
    fields = answer.get("fields")
    if not isinstance(fields, list):
        raise malformed(SUMMARY_ENDPOINT, "the answer has no list 'fields'")
    result: list[SoapField] = []
    for entry in fields:
        if not isinstance(entry, dict):
            raise malformed(SUMMARY_ENDPOINT, "a field is not an object")
        name, value = entry.get("name"), entry.get("value")
        description = entry.get("description", "")
        if not (isinstance(name, str) and isinstance(value, str) and isinstance(description, str)):
            raise malformed(SUMMARY_ENDPOINT, "a field lacks string name/description/value")
        result.append(SoapField(name=name, description=description, value=value))
    return tuple(result)


def _empty(field: TemplateField) -> str | list[str]:
    return [] if field.type == "array" else ""


def _checked_value(field: TemplateField, value: Any) -> str | list[str] | float | bool:
    """The model's value if it has the field's type; raise malformedResponse otherwise."""
    if value is None or value == "":
        return _empty(field)
    ok: bool
    if field.type == "string":
        ok = isinstance(value, str)
    elif field.type == "number":
        number = finite_number(value)
        ok = number is not None
        if ok:
            value = number
    elif field.type == "boolean":
        ok = isinstance(value, bool)
    elif field.type == "array":
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, str) and value in (field.enumerable_options or ())
    if not ok:
        raise malformed(NOTE_ENDPOINT, f"field {field.id!r} has a value of the wrong type")
    result: str | list[str] | float | bool = value
    return result


class LlmNoteWriter:
    name = PROVIDER

    def __init__(self, client: LlmClient) -> None:
        self._client = client

    def close(self) -> None:
        """Nothing of its own to release (the shared HTTP session is closed by the worker)."""

    async def write_note(
        self,
        job: JobRequest,
        template: Template,
        transcript: Transcript,
        summary: Summary,
        documents: Sequence[PreparedDocument] = (),
    ) -> tuple[ClinicalNoteField, ...]:
        """TXT documents' text (a bounded prefix each) goes into the prompt; PDFs are skipped."""
        texts = [
            await asyncio.to_thread(doc.read_text, MAX_DOCUMENT_TEXT_BYTES)
            for doc in documents
            if doc.document_type == "TXT"
        ]
        segmap = await asyncio.to_thread(SegmentMap.of, transcript)
        numbered = await asyncio.to_thread(numbered_segments, segmap, MAX_PROMPT_SEGMENT_CHARS)
        prompt = _note_prompt(job, template, numbered, summary, texts)
        answer = await self._client.ask_json(NOTE_ENDPOINT, _RULES, prompt)
        values = _note_values(template, answer)
        fields = _fitting(
            NOTE_ENDPOINT,
            lambda: tuple(
                ClinicalNoteField(
                    id=f.id,
                    name=f.name,
                    description=f.description,
                    type=f.type,
                    enumerable_options=f.enumerable_options,
                    value=values.get(f.id, _empty(f)),
                )
                for f in template.fields
            ),
        )
        cited = _note_citations(answer)
        return await asyncio.to_thread(cited_note_evidence, fields, cited, segmap)


def _note_citations(answer: JsonObject) -> dict[str, list[int]]:
    """Each answered field's segmentIds, where the model gave them as a list of ids."""
    entries = answer.get("clinicalNote")
    cited: dict[str, list[int]] = {}
    for entry in entries if isinstance(entries, list) else ():
        ids = _segment_ids(entry.get("segmentIds")) if isinstance(entry, dict) else None
        if ids is not None and isinstance(entry.get("id"), str):
            cited[entry["id"]] = ids
    return cited


def _note_prompt(
    job: JobRequest,
    template: Template,
    numbered: str,
    summary: Summary,
    texts: Sequence[str],
) -> str:
    """The note request: the template's fields, the summary, the transcript and the documents."""
    fields = [
        {
            "id": f.id,
            "name": f.name,
            "description": f.description,
            "type": f.type,
            **({"enumerableOptions": list(f.enumerable_options)} if f.enumerable_options else {}),
        }
        for f in template.fields
    ]
    summary_text = summary.text or "\n".join(
        f"{field.name}: {field.value}" for field in summary.fields or ()
    )
    language = job.note_language or template.template_language
    instruction = (
        f"Fill every template field in language '{language}'. Answer "
        '{"clinicalNote": [{"id": "<field id>", "value": <value>}, ...]} where a string '
        "field gets a string, number a number, boolean true/false, array a list of strings, "
        "enum exactly one of its enumerableOptions. A value not stated in the sources is "
        '"" ([] for arrays). Give each entry "segmentIds" too: the ids of the transcript '
        "segments its value rests on."
    )
    parts = [
        instruction,
        "Template fields:\n" + json.dumps(fields, ensure_ascii=False),
        "Summary:\n" + summary_text,
        f"{TRANSCRIPT_LABEL}\n{numbered}",
        *(f"Supporting document:\n{text}" for text in texts),
    ]
    return "\n\n".join(parts)


def _note_values(
    template: Template, answer: JsonObject
) -> dict[str, str | list[str] | float | bool]:
    """Each answered field's value, checked against its template field's type."""
    entries = answer.get("clinicalNote")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise malformed(NOTE_ENDPOINT, "the answer has no list 'clinicalNote'")
    by_id = {f.id: f for f in template.fields}
    values: dict[str, str | list[str] | float | bool] = {}
    for entry in entries:
        field_id = entry.get("id")
        if not isinstance(field_id, str) or field_id not in by_id:
            raise malformed(NOTE_ENDPOINT, "the answer names a field the template lacks")
        values[field_id] = _checked_value(by_id[field_id], entry.get("value"))
    return values
