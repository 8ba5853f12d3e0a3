"""Evidence: which transcript segments each sentence of a summary or note rests on (issue 16).

Segment ids are 0-based indexes into transcript.segments. A transcript without segments (plain
text, ACI-Bench dialogues, Intron without diarization) is cut into pseudo-segments, always the
same way: its non-empty lines, each split after every run of '.', '?' or '!' that white space
follows; pseudo-segments have no times.

The local providers know where each sentence came from and record it as they write (its span
in the transcript's text, mapped onto segments here by `SegmentMap.covering`). Other providers'
output (Invox, Intron, an LLM) is aligned afterwards by `align`: fuzzy, order-aware matching of
each sentence's content words (lower case, stop words and note vocabulary such as "patient" or
"reports" left out, crude suffix stemming, number words as digits) against windows of up to
MAX_WINDOW consecutive segments; a dynamic programme over the sentences picks, for each, one of
its best candidate windows, preferring windows that do not go back in the transcript (notes
mostly follow the visit, but sections reorder it: a step back costs only the order bonus). A
sentence whose best window covers less than SUPPORTED_SHARE of its content words is kept and
marked supported=false, with no segments.

Bounded: at most MAX_ALIGN_SENTENCES statements are aligned (the rest are marked unsupported),
at most MAX_SENTENCE_WORDS content words of each, candidates only from words in at most
MAX_POSTING segments; CPU work, so callers run it in a thread (`summary_with_evidence` and
`note_with_evidence` are synchronous).
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from schemas.jobs import ClinicalNoteField, Evidence, SoapField, Summary, Transcript
from worker.providers.localnlp.numbers import digits_for_numbers
from worker.providers.localnlp.rules import STOP_WORDS, wordset

MAX_ALIGN_SENTENCES: Final = 2_000
MAX_SENTENCE_WORDS: Final = 40
MAX_POSTING: Final = 500
MAX_CANDIDATES: Final = 12
MAX_WINDOW: Final = 3
SUPPORTED_SHARE: Final = 0.5
ORDER_BONUS: Final = 0.15
WINDOW_COST: Final = 0.02

Span = tuple[int, int]

_WORD_RE: Final = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_SENTENCE_END_RE: Final = re.compile(r"(?<=[.?!])\s+")
# Statements of an output text end like sentences, but not after a title ("Dr. Brooks").
_STATEMENT_END_RE: Final = re.compile(
    r"(?<![Dd]r\.)(?<![Mm]rs\.)(?<![Mm][rs]\.)(?<![Ss]t\.)(?<![Vv]s\.)(?<=[.?!])\s+"
)
_BULLET_RE: Final = re.compile(r"^\s*(?:[-*\u2022#]+|\d+[.)])\s+")
_HEADER_RE: Final = re.compile(r"^[\s#*]*([A-Z][A-Z0-9 &/,()-]{1,58}|[^.?!]{1,58}:)[\s*]*$")
# Words of note style that a transcript does not say ("the patient reports ...").
_NOTE_WORDS: Final = wordset(
    "patient patients reports reported report states stated endorses endorsed denies denied "
    "notes noted presents presented also per mr mrs ms dr he she his her"
)
_SUFFIXES: Final = ("ings", "ing", "ies", "ied", "edly", "ed", "es", "ly", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_stems(text: str) -> list[str]:
    """The content words of text, stemmed, number words as digits, in order, distinct."""
    words = _WORD_RE.findall(digits_for_numbers(text).lower())
    stems = (_stem(w) for w in words if w not in STOP_WORDS and w not in _NOTE_WORDS and len(w) > 1)
    return list(dict.fromkeys(stems))


def statement_key(text: str) -> str:
    """A sentence's words, lower case, number words as digits: to find it again."""
    return " ".join(_WORD_RE.findall(digits_for_numbers(text).lower()))


@dataclass(frozen=True)
class Segment:
    char_start: int
    char_end: int
    start_s: float | None
    end_s: float | None
    text: str


def _pseudo_segments(text: str) -> list[Segment]:
    out: list[Segment] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        position = 0
        for piece in _SENTENCE_END_RE.split(line):
            start = line.index(piece, position) if piece else position
            position = start + len(piece)
            stripped = piece.strip()
            if stripped:
                lead = len(piece) - len(piece.lstrip())
                begin = offset + start + lead
                out.append(Segment(begin, begin + len(stripped), None, None, stripped))
        offset += len(line)
    return out


class SegmentMap:
    """The transcript's segments (or pseudo-segments) with where each sits in its text."""

    def __init__(self, text: str, segments: Sequence[Segment], pseudo: bool) -> None:
        self.text = text
        self.segments = list(segments)
        self.pseudo = pseudo
        self._ends = [s.char_end for s in self.segments]
        self._stems: list[frozenset[str]] | None = None
        self._postings: dict[str, list[int]] | None = None

    @classmethod
    def of(cls, transcript: Transcript) -> SegmentMap:
        if not transcript.segments:
            return cls(transcript.text, _pseudo_segments(transcript.text), pseudo=True)
        located: list[Segment] = []
        cursor = 0
        for segment in transcript.segments:
            body = segment.text.strip()
            found = transcript.text.find(body, cursor) if body else -1
            start, end = (found, found + len(body)) if found >= 0 else (cursor, cursor)
            cursor = max(cursor, end)
            timed = segment.end > segment.start
            located.append(
                Segment(
                    start,
                    end,
                    segment.start if timed else None,
                    segment.end if timed else None,
                    segment.text,
                )
            )
        return cls(transcript.text, located, pseudo=False)

    def covering(self, spans: Iterable[Span]) -> tuple[int, ...]:
        """The ids of the segments that overlap any of the character spans."""
        ids: set[int] = set()
        for begin, end in spans:
            index = bisect.bisect_right(self._ends, begin)
            while index < len(self.segments) and self.segments[index].char_start < end:
                if self.segments[index].char_end > begin:
                    ids.add(index)
                index += 1
        return tuple(sorted(ids))

    def evidence(
        self,
        ids: Sequence[int],
        text_span: Span | None = None,
        item: int | None = None,
        supported: bool | None = None,
    ) -> Evidence:
        times = [
            (self.segments[i].start_s, self.segments[i].end_s)
            for i in ids
            if self.segments[i].start_s is not None
        ]
        starts = [s for s, _ in times if s is not None]
        ends = [e for _, e in times if e is not None]
        return Evidence(
            item=item,
            text_start=text_span[0] if text_span else None,
            text_end=text_span[1] if text_span else None,
            segment_ids=tuple(ids),
            start=min(starts) if starts else None,
            end=max(ends) if ends else None,
            supported=bool(ids) if supported is None else supported,
        )

    # ------------------------------------------------------------------ alignment index

    def stems(self) -> list[frozenset[str]]:
        if self._stems is None:
            self._stems = [frozenset(content_stems(s.text)) for s in self.segments]
        return self._stems

    def postings(self) -> dict[str, list[int]]:
        if self._postings is None:
            postings: dict[str, list[int]] = {}
            for index, stems in enumerate(self.stems()):
                for stem in stems:
                    postings.setdefault(stem, []).append(index)
            self._postings = postings
        return self._postings


def statement_spans(text: str) -> list[Span]:
    """The sentences of an output text as character spans: its lines, headers ("PLAN",
    "Assessment:") and bullets left out, each line split at sentence ends."""
    spans: list[Span] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.strip() and not _HEADER_RE.match(line):
            bullet = _BULLET_RE.match(line)
            body_start = bullet.end() if bullet else 0
            position = body_start
            for piece in _STATEMENT_END_RE.split(line[body_start:]):
                start = line.index(piece, position) if piece else position
                position = start + len(piece)
                stripped = piece.strip()
                if stripped:
                    lead = len(piece) - len(piece.lstrip())
                    spans.append((offset + start + lead, offset + start + lead + len(stripped)))
        offset += len(line)
    return spans


@dataclass(frozen=True)
class Alignment:
    segment_ids: tuple[int, ...]
    coverage: float  # weighted share of the sentence's content words the segments hold

    @property
    def supported(self) -> bool:
        return bool(self.segment_ids)


_NONE: Final = Alignment((), 0.0)


def _candidates(
    words: Sequence[str], segmap: SegmentMap, weights: dict[str, float]
) -> list[tuple[float, int, int]]:
    """(score, first segment, window length): the sentence's best windows."""
    postings = segmap.postings()
    hits: Counter[int] = Counter()
    for word in words:
        found = postings.get(word, ())
        if len(found) <= MAX_POSTING:
            for index in found:
                hits[index] += 1
    if not hits:
        return []
    stems = segmap.stems()
    scored = [
        best
        for first, _ in hits.most_common(MAX_CANDIDATES * 3)
        if (best := _best_window(words, weights, stems, first)) is not None
    ]
    scored.sort(key=lambda c: (-c[0], c[1]))
    return scored[:MAX_CANDIDATES]


def _best_window(
    words: Sequence[str],
    weights: dict[str, float],
    stems: Sequence[frozenset[str]],
    first: int,
) -> tuple[float, int, int] | None:
    """The best window of 1..MAX_WINDOW segments from first that supports the sentence."""
    total = sum(weights[w] for w in words)
    best: tuple[float, int, int] | None = None
    seen: set[str] = set()
    for size in range(1, min(MAX_WINDOW, len(stems) - first) + 1):
        seen |= stems[first + size - 1]
        matched = [w for w in words if w in seen]
        share = sum(weights[w] for w in matched) / total
        enough = len(matched) >= min(2, len(words)) and share >= SUPPORTED_SHARE
        score = share - WINDOW_COST * (size - 1)
        if enough and (best is None or score > best[0]):
            best = (score, first, size)
    return best


def align(sentences: Sequence[str], segmap: SegmentMap) -> list[Alignment]:
    """Each sentence's segments, or none (unsupported), chosen by an order-aware programme."""
    if not segmap.segments:
        return [_NONE for _ in sentences]
    count = len(segmap.segments)
    postings = segmap.postings()
    options: list[list[tuple[float, int, int]]] = []
    for sentence in sentences[:MAX_ALIGN_SENTENCES]:
        words = content_stems(sentence[:4_000])[:MAX_SENTENCE_WORDS]
        weights = {w: math.log(1 + count / (1 + len(postings.get(w, ())))) + 0.1 for w in words}
        options.append(_candidates(words, segmap, weights) if words else [])
    chosen = _best_path(options)
    out = [
        Alignment(tuple(range(first, first + size)), score) if size else _NONE
        for score, first, size in chosen
    ]
    return out + [_NONE] * (len(sentences) - len(out))


def _best_path(options: list[list[tuple[float, int, int]]]) -> list[tuple[float, int, int]]:
    """One option per sentence (or no segment: (0, -1, 0)), maximising the summed scores plus
    ORDER_BONUS for each step that does not go back in the transcript."""
    none = (0.0, -1, 0)
    back: list[list[int]] = []
    previous: list[tuple[float, int]] = [(0.0, -1)]  # (total, first segment) per state
    for row in options:
        states = [*row, none]
        totals: list[tuple[float, int]] = []
        links: list[int] = []
        for score, first, _ in states:
            best_total, best_link = -math.inf, 0
            for link, (total, anchor) in enumerate(previous):
                value = total + (ORDER_BONUS if first < 0 or first >= anchor else 0.0)
                if value > best_total:
                    best_total, best_link = value, link
            # A sentence without segments keeps the anchor it came after.
            anchor = first if first >= 0 else previous[best_link][1]
            totals.append((best_total + score, anchor))
            links.append(best_link)
        back.append(links)
        previous = totals
    path: list[tuple[float, int, int]] = []
    state = max(range(len(previous)), key=lambda i: previous[i][0]) if back else 0
    for index in range(len(options) - 1, -1, -1):
        states = [*options[index], none]
        path.append(states[state])
        state = back[index][state]
    path.reverse()
    return path


# ---------------------------------------------------------------------- providers' output


def _text_evidence(text: str, segmap: SegmentMap, item: int | None = None) -> list[Evidence]:
    spans = statement_spans(text)
    alignments = align([text[a:b] for a, b in spans], segmap)
    return [
        segmap.evidence(al.segment_ids, span, item)
        for span, al in zip(spans, alignments, strict=True)
    ]


def summary_with_evidence(summary: Summary, transcript: Transcript) -> Summary:
    """The summary with aligned evidence where the provider gave none."""
    segmap = SegmentMap.of(transcript)
    update: dict[str, object] = {}
    if summary.text and summary.evidence is None:
        update["evidence"] = tuple(_text_evidence(summary.text, segmap))
    if summary.fields and any(f.evidence is None for f in summary.fields):
        update["fields"] = tuple(
            f
            if f.evidence is not None or not f.value.strip()
            else f.model_copy(update={"evidence": tuple(_text_evidence(f.value, segmap))})
            for f in summary.fields
        )
    return summary.model_copy(update=update) if update else summary


def value_statements(field: ClinicalNoteField) -> list[tuple[str, Span | None, int | None]]:
    """(text to align, its span in the value or None, array item): a note field's statements."""
    value = field.value
    if isinstance(value, list):
        return [
            (item[a:b], (a, b), index)
            for index, item in enumerate(value)
            for a, b in statement_spans(item)
        ]
    if isinstance(value, str):
        if field.type == "enum":
            return [(f"{field.name} {value}", None, None)] if value else []
        return [(value[a:b], (a, b), None) for a, b in statement_spans(value)]
    if isinstance(value, bool):
        return [(field.name, None, None)]
    shown = str(int(value)) if float(value).is_integer() else str(value)
    return [(f"{field.name} {shown}", None, None)]


def note_with_evidence(
    fields: Sequence[ClinicalNoteField], transcript: Transcript
) -> tuple[ClinicalNoteField, ...]:
    """The note's fields with aligned evidence where the provider gave none (one alignment over
    the whole note, in field order)."""
    missing = [i for i, f in enumerate(fields) if f.evidence is None]
    if not missing:
        return tuple(fields)
    segmap = SegmentMap.of(transcript)
    statements = {i: value_statements(fields[i]) for i in missing}
    flat = [text for i in missing for text, _, _ in statements[i]]
    alignments = iter(align(flat, segmap))
    out = list(fields)
    for i in missing:
        evidence = tuple(
            segmap.evidence(next(alignments).segment_ids, span, item)
            for _, span, item in statements[i]
        )
        out[i] = fields[i].model_copy(update={"evidence": evidence})
    return tuple(out)


def soap_with_evidence(field: SoapField, segmap: SegmentMap) -> SoapField:
    return field.model_copy(update={"evidence": tuple(_text_evidence(field.value, segmap))})


# ---------------------------------------------------------------------- citations (llm)


def numbered_segments(segmap: SegmentMap, max_chars: int) -> str:
    """The segments as "[id] text" lines, for a model to cite (at most max_chars)."""
    lines: list[str] = []
    used = 0
    for index, segment in enumerate(segmap.segments):
        line = f"[{index}] {' '.join(segment.text.split())}"
        used += len(line) + 1
        if used > max_chars:
            break
        lines.append(line)
    return "\n".join(lines)


def citation_holds(sentence: str, ids: Sequence[int], segmap: SegmentMap) -> bool:
    """Whether the cited segments hold at least SUPPORTED_SHARE of the sentence's content
    words (two at least, when it has two)."""
    words = content_stems(sentence[:4_000])[:MAX_SENTENCE_WORDS]
    if not words or not ids:
        return False
    cited: set[str] = set()
    for i in ids:
        cited |= segmap.stems()[i]
    found = sum(1 for w in words if w in cited)
    return found >= min(2, len(words)) and found / len(words) >= SUPPORTED_SHARE


def cited_evidence(
    text: str, citations: Sequence[Sequence[int]], segmap: SegmentMap, item: int | None = None
) -> list[Evidence] | None:
    """The evidence of text's statements from a model's citations (one id list per statement,
    in order), each checked: ids outside the transcript are dropped, and a statement whose
    cited segments do not hold its words is flagged supported=false. None when the citations do
    not match the statements one to one (the caller aligns instead)."""
    spans = statement_spans(text)
    if len(spans) != len(citations):
        return None
    out: list[Evidence] = []
    for (begin, end), ids in zip(spans, citations, strict=True):
        valid = sorted({i for i in ids if 0 <= i < len(segmap.segments)})
        holds = len(valid) == len(set(ids)) and citation_holds(text[begin:end], valid, segmap)
        out.append(segmap.evidence(valid, (begin, end), item, supported=holds))
    return out


def cited_note_evidence(
    fields: Sequence[ClinicalNoteField], cited: dict[str, list[int]], segmap: SegmentMap
) -> tuple[ClinicalNoteField, ...]:
    """Each field a model cited segments for, with evidence per statement from those segments,
    checked as in cited_evidence; a field it cited nothing for is left for alignment."""
    out: list[ClinicalNoteField] = []
    for note_field in fields:
        ids = cited.get(note_field.id)
        if ids is None:
            out.append(note_field)
            continue
        valid = sorted({i for i in ids if 0 <= i < len(segmap.segments)})
        exact = len(valid) == len(set(ids))
        evidence = tuple(
            segmap.evidence(
                valid, span, item, supported=exact and citation_holds(text, valid, segmap)
            )
            for text, span, item in value_statements(note_field)
        )
        out.append(note_field.model_copy(update={"evidence": evidence}))
    return tuple(out)
