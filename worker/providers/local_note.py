"""Offline template filling ("local" note provider, over worker.providers.localnlp.template):
an Invox IAPITemplate filled from the summary, the transcript and any TXT supporting
documents, returned like Invox's generate-clinical-note-from-summary (one ClinicalNoteField
per template field, same order, same id/name/description/type/enumerableOptions).

Nothing is invented: every value is text found in those sources (sentences put in note style by
worker.providers.localnlp), a number read from them, or an enum option they mention.

How each field type is filled:
- string: the summary section the field's name points at (chief complaint, history, review of
  systems, examination, results, assessment, plan, subjective, objective, ...); otherwise the
  sentences that mention the field's key words (at most 3).
- array: the same sentences, one item each.
- number: a number stated next to one of the field's key words ("heart rate 72", "pain is a
  7 out of 10", "blood pressure 120 over 80" -> 120 for systolic, 80 for diastolic).
- boolean: true if a sentence mentions the field's key words, false if every mention is negated
  ("denies", "no", "not", "never"); not mentioned -> empty.
- enum: the one listed option the sources mention (preferably next to the field's key words);
  several equally supported or none -> empty. Never an unlisted value.

"Empty" (the decision for a value that cannot be found, whatever the type) is "" for string,
number, boolean and enum and [] for array. A number field is never filled with 0 or with the
template's placeholder value: either would read as a measurement nobody took.

Documents: `write_note` reads TXT documents' text (UTF-8, undecodable bytes replaced; the
first MAX_TXT_DOCUMENT_BYTES of each) in the same call, within the same budget; PDFs are ignored
(no PDF parser ships with the worker). Nothing is kept between calls.

Cost (issue 12: a valid job may be hostile): the work runs in a thread of the writer's own pool
within budget_s (SCRIBE_LOCAL_NOTE_BUDGET_S; over it: noteTimedOut), on capped inputs: at most
MAX_ENUM_OPTIONS options of MAX_OPTION_CHARS characters per enum field and MAX_TEMPLATE_OPTIONS
in the template (over them: templateTooLarge), a transcript of MAX_TRANSCRIPT_BYTES
(transcriptTooLarge), the first MAX_NOTE_SENTENCES sentences of the sources (MAX_NOTE_SOURCE_CHARS
characters at most) and the first MAX_FIELD_KEYWORDS key words of a field. Each key word and each
option is looked up once per note (fields share them), not once per field and sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from schemas.errors import ErrorType
from schemas.jobs import ClinicalNoteField, JobRequest, Summary, Template, Transcript
from worker.constants import DEFAULT_LOCAL_NOTE_BUDGET_S
from worker.errors import PermanentError
from worker.providers.base import PreparedDocument
from worker.providers.local_budget import BudgetExceeded, CpuPool, Deadline
from worker.providers.localnlp.template import (
    MAX_ENUM_OPTIONS,
    MAX_FIELD_KEYWORDS,
    MAX_LIST_ITEMS,
    MAX_MATCHES,
    MAX_NOTE_SENTENCES,
    MAX_NOTE_SOURCE_CHARS,
    MAX_OPTION_CHARS,
    MAX_TEMPLATE_OPTIONS,
    check_template,
    fill_template,
)

__all__ = [
    "MAX_ENUM_OPTIONS",
    "MAX_FIELD_KEYWORDS",
    "MAX_LIST_ITEMS",
    "MAX_MATCHES",
    "MAX_NOTE_SENTENCES",
    "MAX_NOTE_SOURCE_CHARS",
    "MAX_OPTION_CHARS",
    "MAX_TEMPLATE_OPTIONS",
    "MAX_TXT_DOCUMENT_BYTES",
    "PROVIDER",
    "LocalNoteWriter",
    "fill_template",
]

T = TypeVar("T")

PROVIDER: Final = "local"
MAX_TXT_DOCUMENT_BYTES: Final = 1024 * 1024  # read of each TXT document; the rest is left out


def _document_text(document: PreparedDocument) -> str | None:
    """The text a note reads of a document: the first MAX_TXT_DOCUMENT_BYTES of a TXT one (UTF-8,
    undecodable bytes replaced), None for a PDF. The one place that reads a document; it blocks
    (the document is streamed from disk), so it runs in the writer's thread."""
    if document.document_type != "TXT":
        return None
    return document.read_text(MAX_TXT_DOCUMENT_BYTES)


class LocalNoteWriter:
    """NoteProvider "local": offline template filling, no network.

    The work (reading documents, filling the template) runs in a thread of the writer's own
    pool, within budget_s (SCRIBE_LOCAL_NOTE_BUDGET_S): over it, noteTimedOut (permanent: the
    same job would take as long again)."""

    name = PROVIDER

    def __init__(self, budget_s: float = DEFAULT_LOCAL_NOTE_BUDGET_S) -> None:
        self._budget_s = budget_s
        self._pool = CpuPool("scribe-local-note")

    def check_template(self, template: Template) -> None:
        """templateTooLarge over the option caps: the transcribe stage asks this at the door
        (registry.admit), before a transcription and a summary are paid for."""
        check_template(template)

    async def write_note(
        self,
        job: JobRequest,
        template: Template,
        transcript: Transcript,
        summary: Summary,
        documents: Sequence[PreparedDocument] = (),
    ) -> tuple[ClinicalNoteField, ...]:
        """The documents' text is read first, then the template filled: each in the pool,
        each within budget_s."""

        def read(deadline: Deadline) -> list[str]:
            texts: list[str] = []
            for document in documents:
                deadline.check()
                text = _document_text(document)
                if text is not None:
                    texts.append(text)
            return texts

        texts = await self._run(read) if documents else []
        return await self._run(
            lambda deadline: fill_template(template, transcript, summary, texts, deadline)
        )

    async def _run(self, work: Callable[[Deadline], T]) -> T:
        try:
            return await self._pool.run(work, self._budget_s)
        except BudgetExceeded:
            raise PermanentError(
                ErrorType.NOTE_TIMED_OUT,
                f"the local note did not finish within its {self._budget_s:g} s budget",
            ) from None

    def close(self) -> None:
        self._pool.close()
