"""Deterministic stand-ins for the vendors' generated text.

Nothing clever: sentences of the input, cut and arranged, so tests can predict
the output and a client cannot tell it is not talking to a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

SECONDS_PER_WORD: Final = 0.4
SOAP_SECTIONS: Final = (
    ("Subjective", "What the patient reports"),
    ("Objective", "Findings on examination"),
    ("Assessment", "Working diagnosis"),
    ("Plan", "Treatment and follow-up"),
)
_SPEAKER = re.compile(r"\bSPEAKER_\d+:\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def speaker(index: int) -> str:
    return f"SPEAKER_{index % 2 + 1:02d}"


def plain_transcript(turns: Sequence[str]) -> str:
    return " ".join(turns)


def diarized_transcript(turns: Sequence[str]) -> str:
    return "\n".join(f"{speaker(i)}: {turn}" for i, turn in enumerate(turns))


def segments(turns: Sequence[str]) -> list[dict[str, Any]]:
    """Invox-style timed segments, one per turn, timed by word count."""
    out: list[dict[str, Any]] = []
    start = 0.0
    for turn in turns:
        end = start + max(1.0, len(turn.split()) * SECONDS_PER_WORD)
        out.append({"text": turn, "start": round(start, 2), "end": round(end, 2)})
        start = end
    return out


def duration_s(turns: Sequence[str]) -> int:
    return round(segments(turns)[-1]["end"]) if turns else 0


def sentences(text: str) -> list[str]:
    """Sentences of a transcript or summary, speaker labels removed."""
    flat = " ".join(_SPEAKER.sub("", text).split())
    return [s for s in _SENTENCE_END.split(flat) if s]


def excerpt(text: str, count: int = 2, skip: int = 0) -> str:
    chosen = sentences(text)[skip : skip + count]
    return " ".join(chosen) if chosen else " ".join(text.split())


def soap_values(text: str) -> list[tuple[str, str, str]]:
    """(name, description, value) for S/O/A/P: the sentences split into four runs."""
    parts = sentences(text)
    n = len(parts)
    out = []
    for i, (name, description) in enumerate(SOAP_SECTIONS):
        chunk = parts[i * n // 4 : (i + 1) * n // 4]
        out.append((name, description, " ".join(chunk) or "Not discussed."))
    return out


def summary_text(transcript: str, language: str) -> str:
    return f"Consultation summary [{language}]: {excerpt(transcript, count=3)}"


def intron_markdown(kind: str, transcript: str) -> str:
    """Markdown for one Intron post-processing option (`kind` = flag without "get_")."""
    if kind == "soap_note":
        return "\n\n".join(f"## {name}\n\n{value}" for name, _, value in soap_values(transcript))
    title = kind.replace("_", " ").title()
    bullets = "\n".join(f"- {s}" for s in sentences(transcript)[:3])
    return f"## {title}\n\n{bullets}"


def fill_field(field: dict[str, Any], summary: str, index: int) -> dict[str, Any]:
    """A copy of a template field with a `value` of its declared type."""
    kind = field["type"]
    value: Any
    if kind == "string":
        value = excerpt(summary, count=1, skip=index)
    elif kind == "number":
        value = 0
    elif kind == "boolean":
        value = False
    elif kind == "enum":
        value = field["enumerableOptions"][0]
    else:
        value = sentences(summary)[:3] or [summary]
    return {**field, "value": value}
