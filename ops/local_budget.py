"""The local providers' worst case: a job with every input at its cap (transcript, template,
document), timed against the default budgets. `python -m ops.local_budget` prints the seconds the
summary and the note take and their share of SCRIBE_LOCAL_SUMMARY_BUDGET_S /
SCRIBE_LOCAL_NOTE_BUDGET_S defaults, so that "the caps, not the budget, bound a valid job" is a
measured figure (on a shared machine a timed test would fail by load, not by code).
tests/unit/test_local_budget.py builds its over-budget inputs here too.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

from schemas.jobs import JobRequest, Summary, Template, Transcript
from worker import constants as c
from worker.providers import local_note
from worker.providers.base import PreparedDocument
from worker.providers.local_note import LocalNoteWriter
from worker.providers.local_summary import LocalSummarizer


def job(output_format: str = "SUMMARY") -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": "/x.wav"},
            "summary": {"outputFormat": output_format, "outputLanguage": "en"},
        }
    )


def template(*fields: dict[str, Any]) -> Template:
    return Template.model_validate(
        {"id": "t", "template_name": "T", "template_language": "en", "fields": list(fields)}
    )


def enum_field(index: int, options: list[str]) -> dict[str, Any]:
    return {
        "id": f"e{index}",
        "name": f"Pain location {index}",
        "type": "enum",
        "enumerableOptions": options,
        "value": "",
    }


def heavy_transcript() -> str:
    """Just under the transcript cap, in long sentences: the most work the caps let through."""
    words = [
        "i",
        "think",
        "my",
        "left",
        "knee",
        "pain",
        "gets",
        "worse",
        "when",
        "you",
        "ask",
        "me",
        "to",
        "walk",
        "and",
        "i",
        "feel",
        "it",
    ]
    line_words = [f"{w}{n}" if n % 3 else w for n, w in enumerate(words * 70)]
    line = "[patient] " + " ".join(line_words) + " .\n"
    # Model strings are capped at 5,000,000 characters, a little under the 5 MiB byte cap.
    return line * (4_990_000 // len(line))


def heavy_template() -> Template:
    """200 fields at the caps: enum fields with every option the template may have, the others
    with names of MAX_FIELD_KEYWORDS words and more, all of them found in the sources."""
    enums = local_note.MAX_TEMPLATE_OPTIONS // local_note.MAX_ENUM_OPTIONS
    types = ("string", "array", "number", "boolean")
    return template(
        *(
            enum_field(
                i, [f"knee{n} pain location {i}" for n in range(local_note.MAX_ENUM_OPTIONS)]
            )
            for i in range(enums)
        ),
        *(
            {"id": f"f{i}", "name": " ".join(f"w{i}k{j}" for j in range(40)), "type": types[i % 4]}
            for i in range(200 - enums)
        ),
    )


def heavy_document() -> bytes:
    sentences = (
        f"Pain location knee{n % 200} pain location {n % 10} "
        + " ".join(f"w{n % 190}k{j}" for j in range(40))
        + f" day {n}."
        for n in range(8_000)
    )
    return " ".join(sentences).encode()


HEAVY_TRANSCRIPT = heavy_transcript()
HEAVY_TEMPLATE = heavy_template()
HEAVY_DOCUMENT = heavy_document()


async def heavy_note(provider: LocalNoteWriter) -> tuple[Any, ...]:
    request = job()
    document = PreparedDocument("TXT", "big.txt", "text/plain", HEAVY_DOCUMENT)
    transcript = Transcript(provider="local", text=HEAVY_TRANSCRIPT)
    summary = Summary(provider="invox", output_format="SUMMARY", text="Knee pain.")
    return await provider.write_note(request, HEAVY_TEMPLATE, transcript, summary, [document])


async def _timed(call: Any) -> float:
    started = time.perf_counter()
    await call
    return time.perf_counter() - started


async def measure() -> dict[str, float]:
    summarizer = LocalSummarizer(budget_s=c.DEFAULT_LOCAL_SUMMARY_BUDGET_S * 100)
    writer = LocalNoteWriter(budget_s=c.DEFAULT_LOCAL_NOTE_BUDGET_S * 100)
    try:
        transcript = Transcript(provider="local", text=HEAVY_TRANSCRIPT)
        summary_s = await _timed(summarizer.summarize(job(), transcript))
        note_s = await _timed(heavy_note(writer))
    finally:
        summarizer.close()
        writer.close()
    return {
        "summarySeconds": round(summary_s, 2),
        "summaryShareOfDefaultBudget": round(summary_s / c.DEFAULT_LOCAL_SUMMARY_BUDGET_S, 3),
        "noteSeconds": round(note_s, 2),
        "noteShareOfDefaultBudget": round(note_s / c.DEFAULT_LOCAL_NOTE_BUDGET_S, 3),
    }


def main() -> int:
    print(json.dumps(asyncio.run(measure())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
