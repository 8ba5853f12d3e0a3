"""Providers that answer at once, so a benchmark measures the pipeline and not a vendor.

The transcriber hands out a handle whose status is ready on the first poll, so a job still
makes the four hops transcribe -> poll -> summarize -> note (like the floor pipeline).
Registered under the name "local" (the only offline name the wire schema accepts).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from schemas.jobs import (
    ClinicalNoteField,
    JobRequest,
    Summary,
    Template,
    Transcript,
    TranscriptionHandle,
)
from worker.ledger import SubmissionJournal
from worker.providers.base import PreparedAudio, PreparedDocument, Submitted, Transcribed
from worker.providers.http import VendorHttp
from worker.providers.registry import ProviderRegistry
from worker.settings import Settings

NAME: Final = "local"
TRANSCRIPT = Transcript(provider=NAME, text="Patient reports knee pain for three weeks.")
SUMMARY = Summary(provider=NAME, output_format="SUMMARY", text="Knee pain, three weeks.")


class InstantTranscriber:
    """Stands in for a vendor's upload: what it returns is built, not validated (a vendor's
    answer is validated by the real clients, and costs the benchmark nothing here)."""

    name = NAME

    async def submit(
        self, job: JobRequest, audio: PreparedAudio, journal: SubmissionJournal | None = None
    ) -> Submitted | Transcribed:
        handle = TranscriptionHandle.model_construct(
            provider=NAME, handle=str(job.job_id), submitted_at=datetime.now(UTC)
        )
        return Submitted(handle)

    async def status(self, job: JobRequest, handle: TranscriptionHandle) -> Transcript | None:
        return TRANSCRIPT

    def close(self) -> None:
        """Nothing to release."""


class InstantSummarizer:
    name = NAME

    async def summarize(self, job: JobRequest, transcript: Transcript) -> Summary:
        return SUMMARY

    def close(self) -> None:
        """Nothing to release."""


class InstantNoteWriter:
    """Fills every field of the template with the same value; one note per template, kept."""

    name = NAME

    def __init__(self) -> None:
        self._notes: dict[tuple[tuple[str, str], ...], tuple[ClinicalNoteField, ...]] = {}

    def close(self) -> None:
        """Nothing to release."""

    async def write_note(
        self,
        job: JobRequest,
        template: Template,
        transcript: Transcript,
        summary: Summary,
        documents: Sequence[PreparedDocument] = (),
    ) -> tuple[ClinicalNoteField, ...]:
        key = tuple((field.id, field.name) for field in template.fields)
        note = self._notes.get(key)
        if note is None:
            note = self._notes[key] = tuple(
                ClinicalNoteField(id=field.id, name=field.name, type="string", value="knee pain")
                for field in template.fields
            )
        return note


def instant_registry(settings: Settings, http: VendorHttp) -> ProviderRegistry:
    """A RegistryFactory (worker.app) serving the instant providers only."""
    return ProviderRegistry(
        transcribers={NAME: InstantTranscriber()},
        summarizers={NAME: InstantSummarizer()},
        note_writers={NAME: InstantNoteWriter()},
    )
