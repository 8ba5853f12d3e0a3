"""Offline, extractive consultation summary ("local" summarizer): the provider over the rule-based
engine in worker.providers.localnlp (this module keeps the names other modules import).

Every sentence it writes comes from this consultation's transcript: it is selected, cleaned
(fillers, false starts, voice-assistant commands and ACI-Bench tokenisation removed) and put in
note style (the patient's "I"/"my", and the clinician's "you"/"your" addressed to the patient,
become third person). Nothing is retrieved from other patients' notes; the only things learned
from ACI-Bench's train split are the section names and the cue words that route a sentence to a
section (see docs/quality.md).

Input: ACI-Bench style turns (`[doctor] ...` / `[patient] ...`), speaker lines
(`SPEAKER_01: ...`, `Doctor: ...`; a diarized label's role comes from what that speaker says,
worker/roles.py, not from who spoke first) or plain text (one speaker, treated as the clinician's
dictation and conversation).

Output, in the Summary model shape every provider returns:
- SUMMARY: a sectioned note (CHIEF COMPLAINT, HISTORY OF PRESENT ILLNESS, REVIEW OF SYSTEMS,
  PHYSICAL EXAMINATION, RESULTS, ASSESSMENT AND PLAN), one sentence per line; empty sections are
  left out.
- SOAP_TEMPLATE: fields Subjective, Objective, Assessment, Plan (name, description, value), like
  Invox's ISOAPTemplate; a value with nothing found is "".
"""

from __future__ import annotations

from typing import Final, Literal

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, Summary, Transcript
from worker.constants import DEFAULT_LOCAL_SUMMARY_BUDGET_S
from worker.errors import PermanentError
from worker.evidence import SegmentMap
from worker.providers.local_budget import NO_DEADLINE, BudgetExceeded, CpuPool, Deadline
from worker.providers.localnlp.cleaning import clean, split_sentences
from worker.providers.localnlp.model import Gender, Note, Role, Turn
from worker.providers.localnlp.note import (
    build_note,
    check_transcript_size,
    note_and_statements,
    note_style_sentences,
    render_summary,
    render_with_evidence,
    soap_fields,
)
from worker.providers.localnlp.numbers import digits_for_numbers
from worker.providers.localnlp.person import to_third_person
from worker.providers.localnlp.rules import (
    AP,
    CC,
    EXAM,
    HPI,
    MAX_SENTENCES,
    MAX_TURN_CHARS,
    RESULTS,
    ROS,
    SECTIONS,
    SOAP_DESCRIPTIONS,
)
from worker.providers.localnlp.turns import detect_gender, parse_turns

__all__ = [
    "AP",
    "CC",
    "EXAM",
    "HPI",
    "MAX_SENTENCES",
    "MAX_TURN_CHARS",
    "PROVIDER",
    "RESULTS",
    "ROS",
    "SECTIONS",
    "SOAP_DESCRIPTIONS",
    "Gender",
    "LocalSummarizer",
    "Note",
    "Role",
    "Turn",
    "build_note",
    "check_transcript_size",
    "clean",
    "detect_gender",
    "digits_for_numbers",
    "note_and_statements",
    "note_style_sentences",
    "parse_turns",
    "render_summary",
    "soap_fields",
    "split_sentences",
    "summarize_text",
    "to_third_person",
]

PROVIDER: Final = "local"


def summarize_text(
    transcript: str,
    output_format: Literal["SUMMARY", "SOAP_TEMPLATE"],
    deadline: Deadline = NO_DEADLINE,
    segmap: SegmentMap | None = None,
) -> Summary:
    """The summary of a transcript's text, each sentence with its evidence: the segments of
    segmap (by default the text's pseudo-segments, worker.evidence) its source sentences
    overlap."""
    check_transcript_size(transcript)
    note = build_note(transcript, deadline)
    if segmap is None:
        segmap = SegmentMap.of(Transcript(provider="local", text=transcript))
    if output_format == "SOAP_TEMPLATE":
        fields = soap_fields(note, segmap)
        return Summary(provider=PROVIDER, output_format="SOAP_TEMPLATE", fields=fields)
    text, evidence = render_with_evidence(note, segmap)
    return Summary(provider=PROVIDER, output_format="SUMMARY", text=text, evidence=tuple(evidence))


class LocalSummarizer:
    """SummaryProvider "local": extractive, offline, milliseconds per consultation.

    The work runs in a thread of its own pool, within budget_s (SCRIBE_LOCAL_SUMMARY_BUDGET_S):
    over it, summaryTimedOut (permanent: the same transcript would take as long again)."""

    name = PROVIDER

    def __init__(self, budget_s: float = DEFAULT_LOCAL_SUMMARY_BUDGET_S) -> None:
        self._budget_s = budget_s
        self._pool = CpuPool("scribe-local-summary")

    async def summarize(self, job: JobRequest, transcript: Transcript) -> Summary:
        text, output_format = transcript.text, job.summary.output_format
        try:
            return await self._pool.run(
                lambda deadline: summarize_text(
                    text, output_format, deadline, SegmentMap.of(transcript)
                ),
                self._budget_s,
            )
        except BudgetExceeded:
            raise PermanentError(
                ErrorType.SUMMARY_TIMED_OUT,
                f"the local summary did not finish within its {self._budget_s:g} s budget",
            ) from None

    def close(self) -> None:
        self._pool.close()
