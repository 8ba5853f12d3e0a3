"""Events on <prefix>.events, and what a dead letter says about itself."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from schemas.base import SchemaVersion, WireModel
from schemas.jobs import ClinicalNoteField, Summary, Transcript

StageName = Literal["transcribe", "poll", "summarize", "note"]


class JobCompleted(WireModel):
    """Routing key job.completed. eventId is stable per job, so consumers can de-duplicate."""

    schema_version: SchemaVersion = 1
    type: Literal["job.completed"] = "job.completed"
    event_id: UUID
    job_id: UUID
    consultation_session_id: str
    occurred_at: datetime
    transcript: Transcript
    summary: Summary
    clinical_note: tuple[ClinicalNoteField, ...] | None = None


class JobFailed(WireModel):
    """Routing key job.failed; sent together with the dead letter. Carries no patient data."""

    schema_version: SchemaVersion = 1
    type: Literal["job.failed"] = "job.failed"
    event_id: UUID
    job_id: UUID
    stage: StageName
    error_type: str
    message: str
    http_status: int | None = None
    attempts: int
    occurred_at: datetime


class StageProgress(WireModel):
    """Routing key job.stage.<stage>: a stage finished and the job moved on."""

    schema_version: SchemaVersion = 1
    type: Literal["job.stage"] = "job.stage"
    event_id: UUID
    job_id: UUID
    stage: StageName
    provider: str
    duration_ms: float
    occurred_at: datetime


class DeadLetterInfo(WireModel):
    """The dead-letter headers, parsed; the message body is the consumed message, unchanged."""

    job_id: str | None = None
    stage: StageName
    error_type: str
    message: str
    http_status: int | None = None
    attempts: int
    first_failure_at: datetime
    last_failure_at: datetime
