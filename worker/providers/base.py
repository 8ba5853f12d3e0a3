"""The interfaces a stage calls. Implementations raise worker.errors types, never vendor errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from schemas.jobs import (
    ClinicalNoteField,
    JobRequest,
    Summary,
    Template,
    Transcript,
    TranscriptionHandle,
)


@dataclass(frozen=True)
class PreparedAudio:
    """Audio checked against the limits, in a local file the worker owns until the stage ends.

    source_url is the job's own URL (if it gave one), for vendors that can fetch it themselves.
    It is patient data: never log it.
    """

    path: Path
    size_bytes: int
    duration_s: float
    mime_type: str
    file_name: str
    source_url: str | None


@dataclass(frozen=True)
class PreparedDocument:
    document_type: str  # "PDF" | "TXT"
    document_name: str
    mime_type: str
    content: bytes


@dataclass(frozen=True)
class Submitted:
    """The vendor accepted the audio; poll the handle later."""

    handle: TranscriptionHandle


@dataclass(frozen=True)
class Transcribed:
    """The provider transcribed synchronously (local models); no polling needed."""

    transcript: Transcript


class TranscriptionProvider(Protocol):
    name: str

    async def submit(self, job: JobRequest, audio: PreparedAudio) -> Submitted | Transcribed: ...

    async def status(self, job: JobRequest, handle: TranscriptionHandle) -> Transcript | None:
        """The transcript when ready, None while pending; raises on failure or unknown status."""
        ...


class SummaryProvider(Protocol):
    name: str

    async def summarize(self, job: JobRequest, transcript: Transcript) -> Summary: ...


class NoteProvider(Protocol):
    name: str

    async def attach_documents(
        self, job: JobRequest, documents: Sequence[PreparedDocument]
    ) -> None: ...

    async def write_note(
        self, job: JobRequest, template: Template, transcript: Transcript, summary: Summary
    ) -> tuple[ClinicalNoteField, ...]: ...
