"""Number words into digits ('fifty eight year old' -> '58-year-old')."""

from __future__ import annotations

import re

from worker.providers.localnlp import rules


def _words_to_number(run: str) -> int | None:
    total = 0
    for word in rules.LETTERS_RE.findall(run.lower()):
        if word == "and":
            continue
        if word in rules.UNIT_WORDS:
            total += rules.UNIT_WORDS[word]
        elif word in rules.TEN_WORDS:
            total += rules.TEN_WORDS[word]
        elif word == "hundred":
            total = max(total, 1) * 100
        else:
            return None
    return total


def digits_for_numbers(text: str) -> str:
    """'fifty eight year old' -> '58 year old'; 'one' only before a unit ('one week')."""

    def repl(match: re.Match[str]) -> str:
        run = match.group(0).rstrip(" -")
        trailing = match.group(0)[len(run) :]
        words = rules.LETTERS_RE.findall(run.lower())
        if words and words[-1] == "and":  # "seventy two and ..." -> the run ends before "and"
            run = run[: run.lower().rindex("and")].rstrip(" -")
            trailing = match.group(0)[len(run) :]
            words = words[:-1]
        if not words:
            return match.group(0)
        value = _words_to_number(run)
        if (
            value is not None
            and len(words) > 1
            and words[0] in rules.UNIT_WORDS
            and 1 <= rules.UNIT_WORDS[words[0]] <= 9
            and words[1] in rules.TEN_WORDS
        ):
            rest_value = _words_to_number(" ".join(words[1:]))
            value = rules.UNIT_WORDS[words[0]] * 100 + (rest_value or 0)  # "one twenty" = 120
        if value is None:
            return match.group(0)
        rest = text[match.end() :]
        if value <= 1 and not rules.COUNTABLE_RE.match(rest):
            return match.group(0)
        return f"{value}{trailing}"

    out = rules.NUMBER_RUN_RE.sub(repl, text)
    out = rules.POINT_RE.sub(r"\1.\2", out)
    out = rules.MILLIGRAMS_RE.sub("mg", out)
    out = rules.YEAR_OLD_RE.sub(r"\1-year-old", out)
    return out
