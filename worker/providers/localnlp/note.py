"""Note assembly: a transcript's first MAX_SENTENCES sentences, cleaned and zoned once, sorted
into the sectioned note and its statements; the note as text or as SOAP fields."""

from __future__ import annotations

from schemas.errors import ErrorType
from schemas.jobs import Evidence, SoapField
from worker.constants import MAX_TRANSCRIPT_BYTES
from worker.errors import PermanentError
from worker.evidence import SegmentMap
from worker.providers.local_budget import NO_DEADLINE, Deadline
from worker.providers.localnlp import rules
from worker.providers.localnlp.cleaning import clean, finish, split_sentences
from worker.providers.localnlp.cues import (
    chief_complaint,
    informative,
    label_review,
    review_of_systems,
    route,
)
from worker.providers.localnlp.model import Gender, Note, Sentence, Turn
from worker.providers.localnlp.person import to_third_person
from worker.providers.localnlp.rules import CC, EXAM, HPI, RESULTS, ROS, SECTIONS, SOAP_DESCRIPTIONS
from worker.providers.localnlp.spans import locate
from worker.providers.localnlp.turns import detect_gender, parse_turns, pieces

_SUBJECTS: dict[Gender, str] = {"male": "He", "female": "She", "unknown": "The patient"}


def _sentences(turns: list[Turn], deadline: Deadline = NO_DEADLINE) -> list[Sentence]:
    """The first MAX_SENTENCES sentences, cleaned, with their speaker, zone and turn."""
    zone = "history"
    out: list[Sentence] = []
    for index, turn in enumerate(turns):
        offset = turn.start
        for piece in pieces(turn.text):
            deadline.check()
            cleaned = split_sentences(clean(piece))
            for raw, span in zip(cleaned, locate(piece, offset, cleaned), strict=True):
                if len(out) >= rules.MAX_SENTENCES:
                    return out
                text = raw.strip()
                zone = _zone(turn, text, zone)
                question = text.rstrip().endswith("?")
                out.append(Sentence(turn.role, text, zone, index, question, span))
            offset += len(piece)
    return out


def _zone(turn: Turn, text: str, zone: str) -> str:
    """Where the visit is after this sentence: the clinician moves it to the exam, then the plan."""
    if turn.role == "doctor" and not rules.INTRO_RE.search(text):
        # An introduction ("a 53-year-old with a recent diagnosis of ...") is history.
        if rules.PLAN_START.search(text) and zone != "plan":
            return "plan"
        if rules.EXAM_START.search(text) and zone != "exam":
            return "exam"  # from the plan too: some visits examine after talking it over
    return zone


def _aside(text: str) -> bool:
    """Words for the dictation system, or a short announcement of the next step."""
    return bool(rules.DICTATION_RE.search(text)) or (
        len(text.split()) <= rules.MAX_ANNOUNCEMENT_WORDS
        and bool(rules.ANNOUNCEMENT_RE.search(text))
    )


def _third_person(sentence: Sentence, gender: Gender) -> str:
    text = sentence.text
    if sentence.role == "patient":
        text = to_third_person(text, "i", gender)
    else:
        text = to_third_person(text, "you", gender)
    return text


class _Parsed:
    """A transcript's first MAX_SENTENCES sentences, read once for both the note and the
    statements (the note writer needs both), each put in note style once when first needed."""

    def __init__(self, transcript: str, deadline: Deadline) -> None:
        turns = parse_turns(transcript, deadline)
        self.gender = detect_gender(turns)
        self.sentences = _sentences(turns, deadline)
        # Without speaker labels (plain ASR output) nobody knows who said "I": keep first
        # person and take statements about symptoms and their history as they were said.
        self.labelled = any(
            rules.TAG_LINE_RE.match(line) or rules.SPEAKER_LINE_RE.match(line)
            for line in transcript.splitlines()
        )
        self.deadline = deadline
        self._styled: dict[int, str] = {}
        # The transcript spans of each statement (statements()), for evidence.
        self.origins: dict[str, tuple[tuple[int, int], ...]] = {}

    def styled(self, position: int) -> str:
        """The sentence in third person, finished."""
        text = self._styled.get(position)
        if text is None:
            sentence = self.sentences[position]
            text = self._styled[position] = finish(_third_person(sentence, self.gender))
        return text

    def note(self) -> Note:
        note = Note(subject=_SUBJECTS[self.gender])
        sentences = self.sentences
        for position, s in enumerate(sentences):
            self.deadline.check()
            note.sources = (s.span,)
            if _aside(s.text):
                continue
            if not self.labelled and s.zone == "history" and not s.question:
                plain = finish(s.text)
                if plain and informative(plain) and rules.SYMPTOM_CUE.search(s.text):
                    note.add(HPI, plain)
                continue
            if s.question:
                if position + 1 < len(sentences):
                    note.sources = (s.span, sentences[position + 1].span)
                review_of_systems(note, sentences, position, self.gender)
                continue
            text = self.styled(position)
            if text and informative(text, rules.MIN_NOTE_WORDS):
                route(note, s, text)
        if not note.sections[CC]:
            chief_complaint(note, sentences)
        label_review(note)
        note.sources = ()
        return note

    def statements(self) -> list[str]:
        out: list[str] = []
        for position, s in enumerate(self.sentences):
            self.deadline.check()
            if s.question or rules.DICTATION_RE.search(s.text):
                continue
            text = self.styled(position)
            if text and informative(text, 2):
                out.append(text)
                self.origins.setdefault(text, (s.span,))
        return out


def build_note(transcript: str, deadline: Deadline = NO_DEADLINE) -> Note:
    """The note of a transcript's first MAX_SENTENCES sentences; deadline is checked per step."""
    return _Parsed(transcript, deadline).note()


def note_style_sentences(transcript: str, deadline: Deadline = NO_DEADLINE) -> list[str]:
    """Every statement of the transcript's first MAX_SENTENCES sentences (questions and small
    talk left out), in note style."""
    return _Parsed(transcript, deadline).statements()


def note_and_statements(
    transcript: str, deadline: Deadline = NO_DEADLINE
) -> tuple[Note, list[str]]:
    """build_note and note_style_sentences of one transcript, for the price of one."""
    parsed = _Parsed(transcript, deadline)
    return parsed.note(), parsed.statements()


def note_statements_origins(
    transcript: str, deadline: Deadline = NO_DEADLINE
) -> tuple[Note, list[str], dict[str, tuple[tuple[int, int], ...]]]:
    """note_and_statements, with the transcript spans of every sentence either holds."""
    parsed = _Parsed(transcript, deadline)
    note, statements = parsed.note(), parsed.statements()
    return note, statements, {**parsed.origins, **note.origin}


def render_summary(note: Note) -> str:
    return render_with_evidence(note, None)[0]


def joined_with_evidence(
    sentences: list[str],
    note: Note,
    segmap: SegmentMap | None,
    separator: str,
    start: int = 0,
) -> tuple[str, list[Evidence]]:
    """The sentences joined by separator, and (with a segment map) each one's evidence: its
    span in the joined text (from start) and the segments its transcript spans overlap."""
    evidence: list[Evidence] = []
    position = start
    for sentence in sentences:
        if segmap is not None:
            ids = segmap.covering(note.origin.get(sentence, ()))
            evidence.append(segmap.evidence(ids, (position, position + len(sentence))))
        position += len(sentence) + len(separator)
    return separator.join(sentences), evidence


def render_with_evidence(note: Note, segmap: SegmentMap | None) -> tuple[str, list[Evidence]]:
    """The sectioned note text and, with a segment map, the evidence of each sentence."""
    blocks: list[str] = []
    evidence: list[Evidence] = []
    position = 0
    for section in SECTIONS:
        if not note.sections[section]:
            continue
        head = section + "\n\n"
        position += len(head)
        body, found = joined_with_evidence(note.sections[section], note, segmap, "\n", position)
        blocks.append(head + body)
        evidence += found
        position += len(body) + 2
    return "\n\n".join(blocks), evidence


def soap_fields(note: Note, segmap: SegmentMap | None = None) -> tuple[SoapField, ...]:
    subjective = note.sections[CC] + note.sections[HPI] + note.sections[ROS]
    objective = note.sections[EXAM] + note.sections[RESULTS]
    values = {
        "Subjective": subjective,
        "Objective": objective,
        "Assessment": note.assessment,
        "Plan": note.plan,
    }
    fields: list[SoapField] = []
    for name, sentences in values.items():
        value, evidence = joined_with_evidence(sentences, note, segmap, " ")
        fields.append(
            SoapField(
                name=name,
                description=SOAP_DESCRIPTIONS[name],
                value=value,
                evidence=tuple(evidence) if segmap is not None else None,
            )
        )
    return tuple(fields)


def check_transcript_size(text: str) -> None:
    """transcriptTooLarge over MAX_TRANSCRIPT_BYTES of UTF-8 (encoded only when the number of
    characters does not already decide)."""
    chars = len(text)
    if chars * 4 <= MAX_TRANSCRIPT_BYTES:
        return
    if (
        chars > MAX_TRANSCRIPT_BYTES
        or len(text.encode("utf-8", "surrogatepass")) > MAX_TRANSCRIPT_BYTES
    ):
        raise PermanentError(
            ErrorType.TRANSCRIPT_TOO_LARGE,
            f"the transcript is over the {MAX_TRANSCRIPT_BYTES} bytes a local summary reads",
        )
