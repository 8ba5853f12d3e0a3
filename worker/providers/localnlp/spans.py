"""Where each cleaned sentence came from: its span in the transcript's text (for evidence).

Cleaning drops words (fillers, repeats, dictation commands) and rewrites a few (contractions),
so a cleaned sentence is found in its raw piece by walking the piece's words in order: each
word of the sentence is looked for among the next LOOKAHEAD words after the last one found
(a rewritten word is not found and skipped). The span runs from the first word found to the
last; the next sentence is looked for after it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from worker.providers.localnlp import rules

LOOKAHEAD: Final = 8


def locate(raw: str, offset: int, sentences: Sequence[str]) -> list[tuple[int, int]]:
    """The spans (offset-based) in raw of the sentences cleaned out of it, in order."""
    tokens = [(m.group(0), m.start(), m.end()) for m in rules.WORD_RE.finditer(raw.lower())]
    cursor = 0
    spans: list[tuple[int, int]] = []
    for sentence in sentences:
        first = last = -1
        position = cursor
        for word in rules.WORD_RE.findall(sentence.lower()):
            limit = min(len(tokens), position + LOOKAHEAD)
            found = next((k for k in range(position, limit) if tokens[k][0] == word), -1)
            if found >= 0:
                first = found if first < 0 else first
                last, position = found, found + 1
        if first < 0 and cursor < len(tokens):
            # Nothing found (every word rewritten): the words where the sentence should be.
            first, last = cursor, min(len(tokens), cursor + max(1, len(sentence.split()))) - 1
        if first < 0:
            spans.append((offset + len(raw), offset + len(raw)))
            continue
        spans.append((offset + tokens[first][1], offset + tokens[last][2]))
        cursor = last + 1
    return spans
