"""English number words, shared by the local summarizer (words -> digits) and scribe-eval (which
numbers a text says)."""

from __future__ import annotations

from typing import Final

_UNITS: Final = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
)
_TENS: Final = "twenty thirty forty fifty sixty seventy eighty ninety"

UNIT_WORDS: Final = {word: value for value, word in enumerate(_UNITS.split(" "))}
TEN_WORDS: Final = {word: 10 * (index + 2) for index, word in enumerate(_TENS.split(" "))}
