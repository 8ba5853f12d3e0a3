"""The interfaces a stage calls. Implementations raise worker.errors types, never vendor errors."""

from __future__ import annotations

import codecs
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from schemas.jobs import (
    ClinicalNoteField,
    JobRequest,
    Summary,
    Template,
    Transcript,
    TranscriptionHandle,
)
from worker.audio import AudioInfo
from worker.ledger import SubmissionJournal


@dataclass(frozen=True)
class PreparedAudio:
    """Audio checked against the limits, in a local file the worker owns until the stage ends.

    source_url is the job's own URL (if it gave one), for vendors that can fetch it themselves.
    It is patient data: never log it. `info` is what worker/audio.py's probe found (container,
    codec, rate, channels); None only where a test builds the audio by hand.
    """

    path: Path
    size_bytes: int
    duration_s: float
    mime_type: str
    file_name: str
    source_url: str | None
    info: AudioInfo | None = None


@dataclass(frozen=True)
class PreparedDocument:
    """A supporting document checked against the size limit, left on disk to be streamed.

    Never held whole in memory (twenty 20 MB documents and their decoded copies took one job to
    935 MiB): vendors get `open()` streamed to them, text readers take a bounded prefix with
    `read_text(max_bytes)`. `source` is the file (the job's own under the storage root, or a
    download that `keep` holds on disk for as long as this object lives), or the bytes themselves
    for small documents built in memory (tests). Both methods block: call them in a thread.
    """

    document_type: str  # "PDF" | "TXT"
    document_name: str
    mime_type: str
    source: Path | bytes
    size_bytes: int = -1  # -1: unknown (in-memory documents know their length)
    keep: object = field(default=None, repr=False, compare=False)

    def open(self) -> IO[bytes]:
        """A binary stream of the whole document, for uploads (the caller closes it)."""
        if isinstance(self.source, bytes):
            return io.BytesIO(self.source)
        return self.source.open("rb")

    def read_text(self, max_bytes: int) -> str:
        """At most max_bytes of the document as UTF-8 text: undecodable bytes are replaced, and a
        character cut by the bound at the end is dropped."""
        if isinstance(self.source, bytes):
            data = self.source[:max_bytes]
        else:
            with self.source.open("rb") as stream:
                data = stream.read(max_bytes)
        return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=False)

    @property
    def content(self) -> bytes:
        """The whole document. Transitional, for readers not yet on read_text(): prefer that."""
        if isinstance(self.source, bytes):
            return self.source
        return self.source.read_bytes()


@dataclass(frozen=True)
class Submitted:
    """The vendor accepted the audio; poll the handle later."""

    handle: TranscriptionHandle
    # The nonce of the callbackUrl the vendor will call when it is ready (Invox), if one was sent.
    callback_nonce: str | None = None


@dataclass(frozen=True)
class Transcribed:
    """The provider transcribed synchronously (local models); no polling needed."""

    transcript: Transcript


class TranscriptionProvider(Protocol):
    name: str

    async def submit(
        self, job: JobRequest, audio: PreparedAudio, journal: SubmissionJournal | None = None
    ) -> Submitted | Transcribed:
        """A paid submission is written in the journal before it is made, and a submission an
        earlier delivery left in it is resumed, not paid for blindly again (worker/ledger.py)."""
        ...

    async def status(self, job: JobRequest, handle: TranscriptionHandle) -> Transcript | None:
        """The transcript when ready, None while pending; raises on failure or unknown status."""
        ...

    def close(self) -> None:
        """Release what the provider holds (a thread pool); the registry calls it once."""
        ...


class SummaryProvider(Protocol):
    name: str

    async def summarize(self, job: JobRequest, transcript: Transcript) -> Summary: ...

    def close(self) -> None:
        """Release what the provider holds (a thread pool); the registry calls it once."""
        ...


class NoteProvider(Protocol):
    name: str

    async def write_note(
        self,
        job: JobRequest,
        template: Template,
        transcript: Transcript,
        summary: Summary,
        documents: Sequence[PreparedDocument] = (),
    ) -> tuple[ClinicalNoteField, ...]:
        """The job's supporting documents come in the same call (Invox uploads them before the
        note; text readers take their TXT text): nothing is parked between two calls."""
        ...

    def close(self) -> None:
        """Release what the provider holds (a thread pool); the registry calls it once."""
        ...
