"""Spoken text into written sentences: punctuation, contractions, fillers, repeats, false
starts and voice-assistant commands; a sentence finished for the note."""

from __future__ import annotations

import re

from worker.providers.localnlp import rules
from worker.providers.localnlp.numbers import digits_for_numbers


def clean(text: str) -> str:
    """Spoken text -> written text: no fillers, repeats, false starts or assistant commands."""
    out = text.replace("…", "...").replace("\u2019", "'")
    out = re.sub(
        r"\b(\d+|" + rules.NUMBER_WORD_ALT + r") \. (\d|" + rules.NUMBER_WORD_ALT + r")\b",
        r"\1 point \2",
        out,
        flags=re.IGNORECASE,
    )
    out = re.sub(r"\s+([,.;:?!])", r"\1", out)  # ACI-Bench spaces out punctuation
    out = re.sub(r"(\w) '(\w)", r"\1'\2", out)
    for pattern, replacement in rules.CONTRACTION_RES:
        out = pattern.sub(replacement, out)
    # Tag questions ("..., okay?") are statements.
    out = re.sub(
        r",?\s*\b(?:okay|ok|right|alright|all right|you know|does that sound good|"
        r"sound good|does that make sense|is that okay|how does that sound)\s*\?",
        ".",
        out,
        flags=re.IGNORECASE,
    )
    out = rules.ASSISTANT_RE.sub(" ", out)
    out = rules.FALSE_START_RE.sub(" ", out)
    out = rules.FILLER_RE.sub(" ", out)
    out = rules.PHRASE_FILLER_RE.sub(" ", out)
    out = re.sub(r"\.\.\.+(?=\s*$)", ".", out)
    out = re.sub(r"\.\.\.+", ",", out)
    for _ in range(2):
        out = rules.REPEAT2_RE.sub(r"\1", out)
        out = rules.REPEAT_RE.sub(r"\1", out)
    out = re.sub(r"\s+([,.;:?!])", r"\1", out)
    out = re.sub(r",\s*(?=[,.?!])", "", out)
    out = re.sub(r"^[\s,.;:]+", "", out)
    return rules.SPACE_RE.sub(" ", out).strip()


def split_sentences(text: str) -> list[str]:
    # Keep decimals ("2.5") and titles ("dr.") together.
    guarded = re.sub(r"(\d)\.(\d)", r"\1<dot>\2", text)
    guarded = re.sub(r"\b(dr|mr|mrs|ms|st|vs)\.", r"\1<dot>", guarded, flags=re.IGNORECASE)
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
    out = re.sub(r"^[\s,;:]+", "", out)
    out = re.sub(r"[\s,;:]+$", "", out)
    out = digits_for_numbers(out)
    out = re.sub(r"\bi\b", "I", out)
    out = re.sub(r"\b(dr|mr|mrs|ms)\.?\s", lambda m: m.group(1).capitalize() + ". ", out)
    out = re.sub(r"\.{2,}", ".", out)
    if not out:
        return ""
    out = out[0].upper() + out[1:]
    if out[-1] not in ".?!":
        out += "."
    return out
