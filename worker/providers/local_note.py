"""Offline template filling ("local" note provider): an Invox IAPITemplate filled from the
summary, the transcript and any TXT supporting documents, returned like Invox's
generate-clinical-note-from-summary (one ClinicalNoteField per template field, same order, same
id/name/description/type/enumerableOptions).

Nothing is invented: every value is text found in those sources (sentences put in note style by
worker.providers.local_summary), a number read from them, or an enum option they mention.

How each field type is filled:
- string: the summary section the field's name points at (chief complaint, history, review of
  systems, examination, results, assessment, plan, subjective, objective, ...); otherwise the
  sentences that mention the field's key words (at most 3).
- array: the same sentences, one item each.
- number: a number stated next to one of the field's key words ("heart rate 72", "pain is a
  7 out of 10", "blood pressure 120 over 80" -> 120 for systolic, 80 for diastolic).
- boolean: true if a sentence mentions the field's key words, false if every mention is negated
  ("denies", "no", "not", "never"); not mentioned -> empty.
- enum: the one listed option the sources mention (preferably next to the field's key words);
  several equally supported or none -> empty. Never an unlisted value.

"Empty" (the decision for a value that cannot be found, whatever the type) is "" for string,
number, boolean and enum and [] for array. A number field is never filled with 0 or with the
template's placeholder value: either would read as a measurement nobody took.

Documents: `attach_documents` keeps TXT documents' text (UTF-8, undecodable bytes replaced) for
the job's `write_note`; PDFs are ignored (no PDF parser ships with the worker). Both calls happen
in the same note stage delivery, so the text is held in memory only until write_note runs (and
at most for MAX_PENDING_JOBS jobs).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from schemas.jobs import ClinicalNoteField, JobRequest, Summary, Template, TemplateField, Transcript
from worker.providers.base import PreparedDocument
from worker.providers.local_summary import (
    AP,
    CC,
    EXAM,
    HPI,
    RESULTS,
    ROS,
    build_note,
    digits_for_numbers,
    note_style_sentences,
    split_sentences,
)

PROVIDER: Final = "local"
MAX_PENDING_JOBS: Final = 64
MAX_LIST_ITEMS: Final = 10
MAX_MATCHES: Final = 3

_WORD_RE: Final = re.compile(r"[a-z0-9]+")
_STOP: Final = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "by",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "any",
        "all",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "patient",
        "patients",
        "patient's",
        "note",
        "field",
        "value",
        "values",
        "current",
        "reported",
        "report",
        "documented",
        "document",
        "if",
        "yes",
        "no",
        "not",
        "none",
        "other",
        "type",
        "list",
        "describe",
        "enter",
        "free",
        "text",
        "please",
        "include",
        "including",
        "e",
        "g",
        "eg",
        "etc",
        "per",
        "current",
        "past",
        "present",
        "any",
        "overall",
        "main",
    ]
)
# Section names a field may point at, by key phrase (English, Spanish, Catalan, Portuguese).
_SECTION_KEYS: Final = (
    (("chief complaint", "reason for visit", "reason for consultation", "motivo", "queixa"), "cc"),
    (("review of systems", "ros"), "ros"),
    (
        (
            "history of present illness",
            "present illness",
            "hpi",
            "enfermedad actual",
            "anamnesis",
        ),
        "hpi",
    ),
    (("subjective", "subjetivo"), "subjective"),
    (("physical exam", "examination", "exam", "exploracion", "exploración", "exame"), "exam"),
    (("objective", "objetivo"), "objective"),
    (("results", "investigations", "labs", "imaging", "pruebas", "resultados"), "results"),
    (("assessment and plan", "a&p"), "ap"),
    (("assessment", "impression", "diagnosis", "diagnoses", "diagnóstico", "diagnostico"), "a"),
    (
        (
            "plan",
            "treatment",
            "recommendation",
            "management",
            "instructions",
            "tratamiento",
        ),
        "p",
    ),
)
_SYNONYMS: Final = {
    "medication": ("mg", "medication", "medicine", "taking", "prescri", "tablet", "pill", "dose"),
    "allergi": ("allerg",),
    "smok": ("smok", "cigarette", "tobacco", "pack"),
    "alcohol": ("alcohol", "drink", "beer", "wine"),
    "heart rate": ("heart rate", "pulse"),
    "pulse": ("heart rate", "pulse"),
    "temperature": ("temperature", "fever"),
    "blood pressure": ("blood pressure", "over"),
    "systolic": ("blood pressure",),
    "diastolic": ("blood pressure",),
    "pain": ("pain", "hurt", "ache", "sore"),
    "weight": ("weight", "pound", "kilogram"),
    "age": ("year-old", "year old", "years old"),
    "follow": ("follow up", "follow-up", "come back", "see you", "return"),
    "referral": ("refer", "specialist"),
    "symptom": ("pain", "hurt", "swell", "fever", "cough", "nause", "tired", "dizz"),
    "diagnos": ("diagnos", "impression", "assessment", "consistent with", "likely"),
    "respiratory rate": ("respirat", "breaths"),
    "oxygen": ("oxygen", "saturation", "pulse ox"),
}
_NEGATION_RE: Final = re.compile(
    r"\b(?:denies|denied|no|not|never|without|negative|none|nor|quit|stopped)\b", re.IGNORECASE
)


def _stem(word: str) -> str:
    for suffix in ("ings", "ing", "ies", "ied", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _stems(text: str) -> set[str]:
    return {_stem(w) for w in _WORD_RE.findall(text.lower()) if w not in _STOP}


@dataclass(frozen=True)
class _Sources:
    sections: dict[str, list[str]]  # "cc", "hpi", "ros", "exam", "results", "a", "p", ...
    sentences: list[str]  # everything, note style, summary first


def _summary_sections(summary: Summary) -> dict[str, list[str]]:
    """Sentences per section key from any provider's summary (sectioned text or SOAP fields)."""
    sections: dict[str, list[str]] = {}
    if summary.fields:
        for soap in summary.fields:
            key = _section_key(soap.name)
            if key and soap.value.strip():
                sections.setdefault(key, []).extend(split_sentences(soap.value))
    if summary.text:
        current: str | None = None
        for line in summary.text.splitlines():
            stripped = line.strip().strip("#*").strip()
            if not stripped:
                continue
            header = stripped.rstrip(":")
            is_header = (header.isupper() and len(header) < 60) or (
                stripped.endswith(":") and len(stripped) < 60
            )
            inline = re.match(r"^([A-Za-z][A-Za-z &/-]{2,40}):\s+(.+)$", stripped)
            if is_header:
                current = _section_key(header)
                continue
            if inline and _section_key(inline.group(1)):
                current = _section_key(inline.group(1))
                stripped = inline.group(2)
            sections.setdefault(current or "other", []).extend(split_sentences(stripped))
    return sections


def _section_key(name: str) -> str | None:
    lower = name.lower()
    for phrases, key in _SECTION_KEYS:
        if any(re.search(rf"(?<![a-z]){re.escape(p)}(?![a-z])", lower) for p in phrases):
            return key
    return None


def _sources(summary: Summary, transcript: Transcript, documents: Sequence[str]) -> _Sources:
    sections = _summary_sections(summary)
    local = build_note(transcript.text)
    mapping = {CC: "cc", HPI: "hpi", ROS: "ros", EXAM: "exam", RESULTS: "results", AP: "ap"}
    transcript_sections: dict[str, list[str]] = {
        key: list(local.sections[name]) for name, key in mapping.items()
    }
    transcript_sections["a"] = list(local.assessment)
    transcript_sections["p"] = list(local.plan)
    for key, sentences in transcript_sections.items():
        if sentences and not sections.get(key):
            sections[key] = sentences
    if "ap" in sections:
        sections.setdefault("a", sections["ap"])
        sections.setdefault("p", sections["ap"])
    if not sections.get("subjective"):
        sections["subjective"] = [
            *sections.get("cc", []),
            *sections.get("hpi", []),
            *sections.get("ros", []),
        ]
    if not sections.get("objective"):
        sections["objective"] = [*sections.get("exam", []), *sections.get("results", [])]
    ordered: list[str] = []
    seen: set[str] = set()
    groups = (
        *sections.values(),
        *(split_sentences(d) for d in documents),
        note_style_sentences(transcript.text),  # last: what the summary left out
    )
    for group in groups:
        for sentence in group:
            key = " ".join(_WORD_RE.findall(sentence.lower()))
            if key and key not in seen:
                seen.add(key)
                ordered.append(digits_for_numbers(sentence.strip()))
    return _Sources(sections={k: v for k, v in sections.items() if v}, sentences=ordered)


def _keywords(template_field: TemplateField) -> list[str]:
    """Key phrases for a field: its name's words plus known synonyms (lower case, stems)."""
    text = template_field.name.lower()
    keys = sorted(_stems(template_field.name))
    for trigger, synonyms in _SYNONYMS.items():
        if trigger in text or trigger in template_field.description.lower():
            keys.extend(synonyms)
    return list(dict.fromkeys(keys))


def _mentions(sentence: str, keywords: Sequence[str]) -> int:
    lower = sentence.lower()
    return sum(1 for k in keywords if re.search(rf"(?<![a-z0-9]){re.escape(k)}", lower))


def _matching(sources: _Sources, keywords: Sequence[str]) -> list[str]:
    scored = [(_mentions(s, keywords), i, s) for i, s in enumerate(sources.sentences)]
    best = sorted((x for x in scored if x[0] > 0), key=lambda x: (-x[0], x[1]))[:MAX_MATCHES]
    return [s for _, _, s in sorted(best, key=lambda x: x[1])]


def _text_items(field: TemplateField, sources: _Sources) -> list[str]:
    key = _section_key(field.name)
    if key and sources.sections.get(key):
        return list(sources.sections[key])
    return _matching(sources, _keywords(field))


def _number(field: TemplateField, sources: _Sources) -> float | str:
    keywords = _keywords(field)
    name = field.name.lower()
    if re.search(r"\bage\b|\bedad\b|\bidade\b", name):
        for sentence in sources.sentences:
            age = re.search(r"\b(\d{1,3})[- ]years?[- ]old\b", sentence, re.IGNORECASE)
            if age:
                return float(age.group(1))
        return ""
    for sentence in sources.sentences:
        lower = sentence.lower()
        for keyword in keywords:
            for hit in re.finditer(rf"(?<![a-z0-9]){re.escape(keyword)}", lower):
                tail = lower[hit.end() : hit.end() + 60]
                pressure = re.search(r"(\d+)\s*(?:over|/)\s*(\d+)", tail)
                if pressure and ("systolic" in name or "diastolic" in name):
                    return float(pressure.group(2 if "diastolic" in name else 1))
                if "systolic" in name or "diastolic" in name:
                    continue
                number = re.match(r"^[^.;\d]{0,30}?(\d+(?:\.\d+)?)(?![\w])", tail)
                if number:
                    return float(number.group(1))
    return ""


def _boolean(field: TemplateField, sources: _Sources) -> bool | str:
    keywords = _keywords(field)
    hits = [s for s in sources.sentences if _mentions(s, keywords)]
    if not hits:
        return ""
    return not all(_NEGATION_RE.search(s) for s in hits)


def _enum(field: TemplateField, sources: _Sources) -> str:
    options = field.enumerable_options or ()
    keywords = _keywords(field)

    def support(option: str, near_field: bool) -> int:
        pattern = rf"(?<![a-z0-9]){re.escape(option.lower())}(?![a-z0-9])"
        total = 0
        for sentence in sources.sentences:
            lower = sentence.lower()
            if re.search(pattern, lower) and (not near_field or _mentions(sentence, keywords)):
                total += 1
        return total

    for near_field in (True, False):
        counts = {option: support(option, near_field) for option in options}
        best = max(counts.values(), default=0)
        if best > 0:
            winners = [o for o, n in counts.items() if n == best]
            return winners[0] if len(winners) == 1 else ""
    return ""


def fill_template(
    template: Template,
    transcript: Transcript,
    summary: Summary,
    documents: Sequence[str] = (),
) -> tuple[ClinicalNoteField, ...]:
    sources = _sources(summary, transcript, documents)
    filled: list[ClinicalNoteField] = []
    for field in template.fields:
        value: str | list[str] | float | bool
        if field.type == "string":
            value = " ".join(_text_items(field, sources))
        elif field.type == "array":
            value = _text_items(field, sources)[:MAX_LIST_ITEMS]
        elif field.type == "number":
            value = _number(field, sources)
        elif field.type == "boolean":
            value = _boolean(field, sources)
        else:
            value = _enum(field, sources)
        filled.append(
            ClinicalNoteField(
                id=field.id,
                name=field.name,
                description=field.description,
                type=field.type,
                enumerable_options=field.enumerable_options,
                value=value,
            )
        )
    return tuple(filled)


class LocalNoteWriter:
    """NoteProvider "local": offline template filling, no network."""

    name = PROVIDER

    def __init__(self) -> None:
        self._documents: OrderedDict[str, list[str]] = OrderedDict()

    async def attach_documents(
        self, job: JobRequest, documents: Sequence[PreparedDocument]
    ) -> None:
        texts = [
            doc.content.decode("utf-8", errors="replace")
            for doc in documents
            if doc.document_type == "TXT"
        ]
        key = str(job.job_id)
        self._documents[key] = texts
        self._documents.move_to_end(key)
        while len(self._documents) > MAX_PENDING_JOBS:
            self._documents.popitem(last=False)

    async def write_note(
        self, job: JobRequest, template: Template, transcript: Transcript, summary: Summary
    ) -> tuple[ClinicalNoteField, ...]:
        documents = self._documents.pop(str(job.job_id), [])
        return fill_template(template, transcript, summary, documents)
