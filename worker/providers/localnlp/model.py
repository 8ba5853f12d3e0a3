"""The engine's data: speaker turns, cleaned sentences and the note they are sorted into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from worker.providers.localnlp import rules
from worker.providers.localnlp.rules import SECTIONS

Role = Literal["doctor", "patient"]
Gender = Literal["male", "female", "unknown"]


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str
    start: int = 0  # where text starts in the transcript's text (for evidence)


@dataclass
class Note:
    """Sentences per section, in transcript order."""

    sections: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SECTIONS})
    assessment: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    # The keys of each section's sentences: a set, as comparing each new sentence with every
    # one before it made a long transcript quadratic.
    _keys: dict[str, set[str]] = field(default_factory=dict, repr=False, compare=False)
    # Evidence: the transcript spans (character offsets) of the sentences being routed now,
    # set by the note builder before each routing step, and each written sentence's spans.
    sources: tuple[tuple[int, int], ...] = ()
    origin: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict, compare=False)
    # How the note names the patient as a subject: "He", "She" or "The patient".
    subject: str = "The patient"

    def add(self, section: str, sentence: str) -> None:
        bucket = self.sections[section]
        keys = self._keys.get(section)
        if keys is None:
            keys = self._keys[section] = {sentence_key(s) for s in bucket}
        key = sentence_key(sentence)
        if key and key not in keys:
            keys.add(key)
            bucket.append(sentence)
            self.origin.setdefault(sentence, self.sources)


@dataclass(frozen=True)
class Sentence:
    role: Role
    text: str  # cleaned, first/second person intact
    zone: str
    turn: int
    question: bool
    span: tuple[int, int] = (0, 0)  # the raw sentence's characters in the transcript's text


def sentence_key(sentence: str) -> str:
    return " ".join(rules.WORD_RE.findall(sentence.lower()))
