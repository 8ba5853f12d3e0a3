"""First and second person into third: the patient's 'I'/'my' and the clinician's 'you'/'your'
about the patient become 'he'/'his', 'she'/'her' or 'the patient'/'their'."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from worker.providers.localnlp import rules
from worker.providers.localnlp.model import Gender


def _conjugate(word: str) -> str:
    lower = word.lower()
    if lower in rules.THIRD_PERSON_IRREGULAR:
        return rules.THIRD_PERSON_IRREGULAR[lower]
    if (
        lower in rules.NO_CHANGE
        or lower in rules.IRREGULAR_PAST
        or not lower.isalpha()
        or lower.endswith("ed")
    ):
        return word
    if lower.endswith(("s", "sh", "ch", "x", "z", "o")):
        return word + "es" if not lower.endswith("s") else word
    if lower.endswith("y") and len(lower) > 2 and lower[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _adverb(word: str) -> bool:
    """'I immediately had' keeps its verb's place: an adverb, listed or in -ly, is skipped."""
    return word in rules.ADVERBS or (
        word.endswith("ly") and len(word) > 4 and word not in rules.LY_VERBS
    )


def _pronouns(gender: Gender) -> tuple[str, str, str]:
    if gender == "male":
        return "he", "his", "him"
    if gender == "female":
        return "she", "her", "her"
    return "the patient", "their", "them"


def _sub_subjects(
    pattern: re.Pattern[str],
    repl: Callable[[re.Match[str]], str],
    sentence: str,
    obj: str,
) -> str:
    """Rewrite a pronoun as a subject only where a subject can stand (sentence or clause start);
    after a verb or preposition ("sent you", "for you") it is an object, unless a finite verb
    follows ("on exam you have ..."). "I" is always a subject ("yeah i did" is "he did"): the
    object is "me"."""
    pieces: list[str] = []
    last = 0
    for match in pattern.finditer(sentence):
        before, previous = _word_before(sentence, match.start())
        is_subject = (
            match.group(0)[:1] in "iI"
            or not before
            or before[-1] in ",;:.?!"
            or previous.strip(",;") in rules.SUBJECT_CONTEXT
            or (match.group(2) or "").lower() in rules.FINITE_VERBS
        )
        pieces.append(sentence[last : match.start()])
        if is_subject or match.group(1):
            pieces.append(repl(match))
        else:
            word = match.group(0)
            pronoun = word.split()[0] if " " in word else word
            pieces.append(obj + word[len(pronoun) :])
        last = match.end()
    pieces.append(sentence[last:])
    return "".join(pieces)


def _word_before(text: str, end: int) -> tuple[str, str]:
    """(the end of text[:end].rstrip(), "" if that is empty; its last word in lower case),
    reading back only as far as that word starts: copying and splitting the whole prefix, per
    pronoun, made a long sentence quadratic."""
    lookback = 64
    while True:
        start = max(0, end - lookback)
        before = text[start:end].rstrip()
        words = before.split()
        if start == 0 or len(words) >= 2:  # the window holds the whole last word
            return before, (words[-1].lower() if words else "")
        lookback *= 4


def to_third_person(sentence: str, person: Literal["i", "you"], gender: Gender) -> str:
    """'I feel'/'you feel' -> 'he feels'; 'my'/'your' -> 'his'; 'me'/'you' (object) -> 'him'."""
    subject, possessive, obj = _pronouns(gender)
    pattern = rules.SUBJECT_RES[person]

    def subject_repl(match: re.Match[str]) -> str:
        contraction, word, following = match.group(1), match.group(2), match.group(3)
        if contraction:
            verb = rules.CONTRACTED[contraction.lower()]
            if contraction.lower() == "'ve" and following and following.lower() == "got":
                verb = "has"
            tail = f" {following}" if following else ""
            return f"{subject} {verb}{tail}"
        assert word is not None
        lower = word.lower()
        if _adverb(lower) and following:
            return f"{subject} {word} {_conjugate(following)}"
        if lower in rules.NOT_VERBS:
            tail = f" {following}" if following else ""
            return f"{subject} {word}{tail}"
        verb = _conjugate(word)
        tail = f" {following}" if following else ""
        return f"{subject} {verb}{tail}"

    out = _sub_subjects(pattern, subject_repl, sentence, obj)
    out = rules.POSSESSIVE_RES[person].sub(
        lambda m: {
            "my": possessive,
            "your": possessive,
            "mine": possessive,
            "yours": possessive,
            "myself": obj + "self" if obj in ("him", "her") else "themselves",
            "yourself": obj + "self" if obj in ("him", "her") else "themselves",
        }[m.group(1).lower()],
        out,
    )
    return rules.OBJECT_RES[person].sub(obj, out)
