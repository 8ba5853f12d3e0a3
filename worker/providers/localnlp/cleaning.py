"""Spoken text into written sentences: punctuation, contractions, fillers, repeats, false
starts and voice-assistant commands; a sentence finished for the note."""

from __future__ import annotations

from worker.providers.localnlp import rules
from worker.providers.localnlp.numbers import digits_for_numbers


def clean(text: str) -> str:
    """Spoken text -> written text: no fillers, repeats, false starts or assistant commands."""
    out = text.replace("…", "...").replace("\u2019", "'")
    out = punctuate(rules.SPOKEN_POINT_RE.sub(r"\1 point \2", out))
    out = rules.SPACE_BEFORE_MARK_RE.sub(r"\1", out)  # ACI-Bench spaces out punctuation
    out = rules.SPACED_APOSTROPHE_RE.sub(r"\1'\2", out)
    for pattern, replacement in rules.CONTRACTION_RES:
        out = pattern.sub(replacement, out)
    # Tag questions ("..., okay?") are statements.
    out = rules.TAG_QUESTION_RE.sub(".", out)
    out = rules.ASSISTANT_RE.sub(" ", out)
    out = rules.FALSE_START_RE.sub(" ", out)
    out = rules.DANGLING_HYPHEN_RE.sub("", out)
    out = rules.FILLER_RE.sub(" ", out)
    out = rules.PHRASE_FILLER_RE.sub(" ", out)
    out = rules.SCAFFOLD_RE.sub("", out)
    out = rules.FINAL_ELLIPSIS_RE.sub(".", out)
    out = rules.ELLIPSIS_RE.sub(",", out)
    for _ in range(2):
        out = rules.REPEAT2_RE.sub(r"\1", out)
        out = rules.REPEAT_RE.sub(r"\1", out)
    out = rules.SPACE_BEFORE_MARK_RE.sub(r"\1", out)
    out = rules.COMMA_BEFORE_MARK_RE.sub("", out)
    out = rules.LEADING_MARKS_RE.sub("", out)
    return rules.SPACE_RE.sub(" ", out).strip()


def punctuate(text: str) -> str:
    """Unpunctuated speech cut into clauses (rules.CLAUSE_BOUNDARY_RE), each ended with "." or,
    when it opens like a question, "?"; punctuated text is returned as it is."""
    if rules.SENTENCE_END_RE.search(text) or not text.strip():
        return text
    clauses: list[str] = []
    for part in rules.CLAUSE_BOUNDARY_RE.split(text.strip()):
        if clauses and _unfinished(clauses[-1]):
            clauses[-1] += " " + part
        else:
            clauses.append(part)
    if len(clauses) > 1 and len(clauses[-1].split()) < rules.MIN_CLAUSE_WORDS:
        last = clauses.pop()
        clauses[-1] += " " + last
    return " ".join(
        clause + ("?" if rules.QUESTION_OPENING_RE.match(clause) else ".") for clause in clauses
    )


def _unfinished(clause: str) -> bool:
    """Too short to stand as a clause, or ending in a question word ("how long")."""
    return len(clause.split()) < rules.MIN_CLAUSE_WORDS or bool(
        rules.OPEN_QUESTION_END_RE.search(clause)
    )


def split_sentences(text: str) -> list[str]:
    # Keep decimals ("2.5") and titles ("dr.") together.
    guarded = rules.DECIMAL_POINT_RE.sub(r"\1<dot>\2", text)
    guarded = rules.TITLE_DOT_RE.sub(r"\1<dot>", guarded)
    return [
        s.replace("<dot>", ".").strip()
        for s in rules.SENTENCE_RE.findall(guarded)
        if s.strip(" .?!,")
    ]


def content_words(sentence: str) -> list[str]:
    return [w for w in rules.WORD_RE.findall(sentence.lower()) if w not in rules.SPEECH_STOP_WORDS]


def finish(sentence: str) -> str:
    """Capitalised, one final full stop, 'i' -> 'I', tidy commas."""
    out = rules.LEADING_RE.sub("", sentence.strip())
    out = rules.LEADING_PUNCTUATION_RE.sub("", out)
    out = rules.TRAILING_PUNCTUATION_RE.sub("", out)
    out = digits_for_numbers(out)
    out = rules.LOWER_I_RE.sub("I", out)
    out = rules.TITLE_RE.sub(lambda m: m.group(1).capitalize() + ". ", out)
    out = rules.DOTS_RE.sub(".", out)
    if not out:
        return ""
    out = out[0].upper() + out[1:]
    if out[-1] not in ".?!":
        out += "."
    return out
