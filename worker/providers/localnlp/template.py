"""Template filling: an Invox template's fields filled from the summary, the transcript and
TXT documents (see worker.providers.local_note for what each field type gets and the caps)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from schemas.errors import ErrorType
from schemas.jobs import ClinicalNoteField, Evidence, Summary, Template, TemplateField, Transcript
from worker.errors import PermanentError
from worker.evidence import SegmentMap, note_with_evidence, statement_key, value_statements
from worker.providers.local_budget import NO_DEADLINE, Deadline
from worker.providers.localnlp import rules
from worker.providers.localnlp.cleaning import split_sentences
from worker.providers.localnlp.note import check_transcript_size, note_statements_origins
from worker.providers.localnlp.numbers import digits_for_numbers
from worker.providers.localnlp.rules import AP, CC, EXAM, HPI, RESULTS, ROS

MAX_LIST_ITEMS: Final = 10
MAX_MATCHES: Final = 3
# Caps on what the note writer reads (see the module docstring). A real template has a few enum
# fields of a few options; the sources of the longest ACI-Bench consultation have ~300
# sentences and 20,000 characters. With every cap at its limit the note takes 15-25 s here
# (tests/unit/test_local_budget.py), inside the default budget of 60 s.
MAX_ENUM_OPTIONS: Final = 200  # per enum field
MAX_OPTION_CHARS: Final = 200  # per option
MAX_TEMPLATE_OPTIONS: Final = 2_000  # all enum fields together
MAX_NOTE_SENTENCES: Final = 5_000  # summary, documents, transcript statements, in that order
MAX_NOTE_SOURCE_CHARS: Final = 1_000_000  # of those sentences; a longer one is left out
MAX_FIELD_KEYWORDS: Final = 32  # a field name's words and synonyms, first ones kept


def _stem(word: str) -> str:
    for suffix in ("ings", "ing", "ies", "ied", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _stems(text: str) -> set[str]:
    return {
        _stem(w) for w in rules.WORD_RE.findall(text.lower()) if w not in rules.FIELD_STOP_WORDS
    }


@dataclass(frozen=True)
class _Sources:
    sections: dict[str, list[str]]  # "cc", "hpi", "ros", "exam", "results", "a", "p", ...
    sentences: list[str]  # everything, note style, summary first
    # The transcript spans of the sentences the local engine wrote, by statement_key.
    origins: dict[str, tuple[tuple[int, int], ...]] = dataclasses.field(default_factory=dict)


class _Index:
    """In which of the sources' sentences each key word and each enum option occurs: looked up
    once per note (fields share them) and checked against the deadline, instead of a regular
    expression per field, key word or option, and sentence (options x sentences on the loop)."""

    def __init__(self, sources: _Sources, deadline: Deadline) -> None:
        self.sentences = sources.sentences
        self.lowered = [sentence.lower() for sentence in sources.sentences]
        self.deadline = deadline
        self._keywords: dict[str, tuple[re.Pattern[str], list[int]]] = {}
        self._options: dict[str, list[int]] = {}
        self._age: float | str | None = None

    def keyword(self, keyword: str) -> tuple[re.Pattern[str], list[int]]:
        """The key word's pattern (at a word start) and the sentences it occurs in, in order."""
        found = self._keywords.get(keyword)
        if found is None:
            self.deadline.check()
            pattern = re.compile(rf"(?<![a-z0-9]){re.escape(keyword)}")
            hits = [
                i for i, low in enumerate(self.lowered) if keyword in low and pattern.search(low)
            ]
            found = self._keywords[keyword] = (pattern, hits)
        return found

    def mentions(self, keywords: Sequence[str]) -> dict[int, int]:
        """Sentence index -> how many of the key words it mentions (only those mentioning one)."""
        counts: dict[int, int] = {}
        for keyword in keywords:
            for i in self.keyword(keyword)[1]:
                counts[i] = counts.get(i, 0) + 1
        return counts

    def option(self, option: str) -> list[int]:
        """The sentences an enum option occurs in as words of its own, in order."""
        hits = self._options.get(option)
        if hits is None:
            self.deadline.check()
            needle = option.lower()
            pattern = re.compile(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])")
            hits = [
                i for i, low in enumerate(self.lowered) if needle in low and pattern.search(low)
            ]
            self._options[option] = hits
        return hits

    def age(self) -> float | str:
        if self._age is None:
            self._age = ""
            for sentence in self.sentences:
                found = rules.AGE_RE.search(sentence)
                if found:
                    self._age = float(found.group(1))
                    break
        return self._age


def _summary_sections(summary: Summary, deadline: Deadline) -> dict[str, list[str]]:
    """Sentences per section key from any provider's summary (sectioned text or SOAP fields)."""
    sections: dict[str, list[str]] = {}
    if summary.fields:
        for soap in summary.fields:
            key = _section_key(soap.name)
            if key and soap.value.strip():
                sections.setdefault(key, []).extend(split_sentences(soap.value))
    if summary.text:
        _text_sections(summary.text, sections, deadline)
    return sections


def _text_sections(text: str, sections: dict[str, list[str]], deadline: Deadline) -> None:
    """Sentences of a sectioned summary text under the section its last header names."""
    current: str | None = None
    for line in text.splitlines():
        deadline.check()
        stripped = line.strip().strip("#*").strip()
        if not stripped:
            continue
        header = stripped.rstrip(":")
        is_header = (header.isupper() and len(header) < 60) or (
            stripped.endswith(":") and len(stripped) < 60
        )
        inline = rules.INLINE_HEADER_RE.match(stripped)
        if is_header:
            current = _section_key(header)
            continue
        if inline and _section_key(inline.group(1)):
            current = _section_key(inline.group(1))
            stripped = inline.group(2)
        sections.setdefault(current or "other", []).extend(split_sentences(stripped))


def _section_key(name: str) -> str | None:
    lower = name.lower()
    for patterns, key in rules.SECTION_KEY_RES:
        if any(pattern.search(lower) for pattern in patterns):
            return key
    return None


def _sources(
    summary: Summary, transcript: Transcript, documents: Sequence[str], deadline: Deadline
) -> _Sources:
    sections = _summary_sections(summary, deadline)
    local, statements, origins = note_statements_origins(transcript.text, deadline)
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
    ordered = _first_sentences(sections, documents, statements, deadline)
    keyed = {statement_key(text): spans for text, spans in origins.items()}
    return _Sources(
        sections={k: v for k, v in sections.items() if v}, sentences=ordered, origins=keyed
    )


def _first_sentences(
    sections: dict[str, list[str]],
    documents: Sequence[str],
    statements: list[str],
    deadline: Deadline,
) -> list[str]:
    """Every distinct sentence, summary first, then documents, then the transcript: the first
    MAX_NOTE_SENTENCES of them, MAX_NOTE_SOURCE_CHARS characters at most (a sentence that does
    not fit any more is left out). Groups are split only when reached."""

    def groups() -> Iterator[list[str]]:
        yield from sections.values()
        for document in documents:
            yield split_sentences(document)
        yield statements  # the transcript's, last: what the summary left out

    ordered: list[str] = []
    seen: set[str] = set()
    chars = 0
    for group in groups():
        for sentence in group:
            deadline.check()
            key = " ".join(rules.WORD_RE.findall(sentence.lower()))
            if not key or key in seen or chars + len(sentence) > MAX_NOTE_SOURCE_CHARS:
                continue
            seen.add(key)
            chars += len(sentence)
            ordered.append(digits_for_numbers(sentence.strip()))
            if len(ordered) >= MAX_NOTE_SENTENCES:
                return ordered
    return ordered


def _keywords(template_field: TemplateField) -> list[str]:
    """Key phrases for a field: its name's words plus known synonyms (lower case, stems); the
    first MAX_FIELD_KEYWORDS of them."""
    text = template_field.name.lower()
    keys = sorted(_stems(template_field.name))
    for trigger, synonyms in rules.SYNONYMS.items():
        if trigger in text or trigger in template_field.description.lower():
            keys.extend(synonyms)
    return list(dict.fromkeys(keys))[:MAX_FIELD_KEYWORDS]


def _matching(index: _Index, keywords: Sequence[str]) -> list[str]:
    """The (at most MAX_MATCHES) sentences mentioning most of the key words, in source order."""
    scored = [(n, i) for i, n in index.mentions(keywords).items()]
    best = sorted(scored, key=lambda x: (-x[0], x[1]))[:MAX_MATCHES]
    return [index.sentences[i] for i in sorted(i for _, i in best)]


def _text_items(field: TemplateField, sources: _Sources, index: _Index) -> list[str]:
    key = _section_key(field.name)
    if key:
        # A field that names a section the visit did not cover stays empty: other sections'
        # sentences matched by key words would land in two fields.
        return list(sources.sections.get(key, ()))
    return _matching(index, _keywords(field))


def _number(field: TemplateField, index: _Index) -> float | str:
    name = field.name.lower()
    if rules.AGE_FIELD_RE.search(name):
        return index.age()
    systolic_or_diastolic = "systolic" in name or "diastolic" in name
    patterns = [index.keyword(keyword)[0] for keyword in _keywords(field)]
    for position in sorted(index.mentions(_keywords(field))):  # the others mention none
        index.deadline.check()
        lower = index.lowered[position]
        for pattern in patterns:
            for hit in pattern.finditer(lower):
                tail = lower[hit.end() : hit.end() + 60]
                pressure = rules.PRESSURE_RE.search(tail)
                if pressure and systolic_or_diastolic:
                    return float(pressure.group(2 if "diastolic" in name else 1))
                if systolic_or_diastolic:
                    continue
                number = rules.NUMBER_AFTER_KEYWORD_RE.match(tail)
                if number:
                    return float(number.group(1))
    return ""


def _boolean(field: TemplateField, index: _Index) -> bool | str:
    hits = [index.sentences[i] for i in sorted(index.mentions(_keywords(field)))]
    if not hits:
        return ""
    return not all(rules.NEGATION_RE.search(s) for s in hits)


def _enum(field: TemplateField, index: _Index) -> str:
    """The one option mentioned most (first counting only sentences near the field's key
    words, then all); a tie or no mention -> empty."""
    hits: dict[str, list[int]] = {}
    for option in field.enumerable_options or ():
        hits[option] = index.option(option)
    if not any(hits.values()):
        return ""
    near = index.mentions(_keywords(field))
    for near_field in (True, False):
        counts = {
            option: sum(1 for i in found if i in near) if near_field else len(found)
            for option, found in hits.items()
        }
        best = max(counts.values(), default=0)
        if best > 0:
            winners = [o for o, n in counts.items() if n == best]
            return winners[0] if len(winners) == 1 else ""
    return ""


def check_template(template: Template) -> None:
    """templateTooLarge over the option caps (counted before any work)."""
    total = 0
    for field in template.fields:
        options = field.enumerable_options or ()
        total += len(options)
        if (
            len(options) > MAX_ENUM_OPTIONS
            or total > MAX_TEMPLATE_OPTIONS
            or any(len(option) > MAX_OPTION_CHARS for option in options)
        ):
            raise PermanentError(
                ErrorType.TEMPLATE_TOO_LARGE,
                f"a local note reads at most {MAX_ENUM_OPTIONS} options of {MAX_OPTION_CHARS} "
                f"characters per enum field and {MAX_TEMPLATE_OPTIONS} in the template",
            )


def _value(
    field: TemplateField, sources: _Sources, index: _Index
) -> str | list[str] | float | bool:
    if field.type == "string":
        return " ".join(_text_items(field, sources, index))
    if field.type == "array":
        return _text_items(field, sources, index)[:MAX_LIST_ITEMS]
    if field.type == "number":
        return _number(field, index)
    if field.type == "boolean":
        return _boolean(field, index)
    return _enum(field, index)


def fill_template(
    template: Template,
    transcript: Transcript,
    summary: Summary,
    documents: Sequence[str] = (),
    deadline: Deadline = NO_DEADLINE,
) -> tuple[ClinicalNoteField, ...]:
    check_template(template)
    check_transcript_size(transcript.text)
    sources = _sources(summary, transcript, documents, deadline)
    index = _Index(sources, deadline)
    filled: list[ClinicalNoteField] = []
    for field in template.fields:
        deadline.check()
        filled.append(
            ClinicalNoteField(
                id=field.id,
                name=field.name,
                description=field.description,
                type=field.type,
                enumerable_options=field.enumerable_options,
                value=_value(field, sources, index),
            )
        )
    segmap = SegmentMap.of(transcript)
    recorded = [
        note_field.model_copy(update={"evidence": _recorded(note_field, sources, index, segmap)})
        for note_field in filled
    ]
    return note_with_evidence(recorded, transcript)


def _value_sources(note_field: ClinicalNoteField, index: _Index) -> list[str]:
    """The sentences a number, boolean or enum value was read from (the first MAX_MATCHES)."""
    template_field = TemplateField(
        id=note_field.id,
        name=note_field.name,
        description=note_field.description,
        type=note_field.type,
        enumerable_options=note_field.enumerable_options,
    )
    near = sorted(index.mentions(_keywords(template_field)))
    if note_field.type == "enum":
        hits = index.option(str(note_field.value))
        near = [i for i in hits if i in set(near)] or hits
    elif note_field.type == "number" and isinstance(note_field.value, float):
        value = note_field.value
        shown = str(int(value)) if value.is_integer() else str(value)
        near = [i for i in near if shown in index.sentences[i]] or near
    return [index.sentences[i] for i in near[:MAX_MATCHES]]


def _recorded(
    note_field: ClinicalNoteField, sources: _Sources, index: _Index, segmap: SegmentMap
) -> tuple[Evidence, ...] | None:
    """Evidence from where the engine took each statement, or None when one of them is not the
    engine's own (a vendor summary's sentence, a document's): then the note is aligned."""
    evidence: list[Evidence] = []
    if note_field.type in ("number", "boolean", "enum"):
        if note_field.value == "":
            return ()
        spans = [sources.origins.get(statement_key(s)) for s in _value_sources(note_field, index)]
        if not spans or any(found is None for found in spans):
            return None
        ids = segmap.covering(span for found in spans if found for span in found)
        return (segmap.evidence(ids),)
    for text, text_span, item in value_statements(note_field):
        found = sources.origins.get(statement_key(text))
        if found is None:
            return None
        evidence.append(segmap.evidence(segmap.covering(found), text_span, item))
    return tuple(evidence)
