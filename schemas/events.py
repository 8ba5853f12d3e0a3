"""Events on <prefix>.events, and what a dead letter says about itself."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import WithJsonSchema

from schemas.base import (
    SCHEMA_REVISION,
    SchemaVersion,
    Stage,
    WireDatetime,
    WireInt,
    WireModel,
    WireUuid,
)
from schemas.jobs import ClinicalNoteField, Summary, Transcript

# A FHIR R4 Bundle (type collection) as FHIR's own JSON: its schema is FHIR's (fhir.schema.json,
# R4 4.0.1), not restated here; worker/fhir.py builds it and the tests validate it against R4.
FhirBundle = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "title": "FhirBundle",
            "description": "A FHIR R4 (4.0.1) Bundle of type collection: DocumentReference, "
            "Composition, Provenance and Device resources (see README, FHIR R4 output).",
        }
    ),
]


class JobCompleted(WireModel):
    """Routing key job.completed. eventId is stable per job, so consumers can de-duplicate."""

    schema_version: SchemaVersion = 1
    schema_revision: WireInt = SCHEMA_REVISION
    type: Literal["job.completed"] = "job.completed"
    event_id: WireUuid
    job_id: WireUuid
    consultation_session_id: str
    occurred_at: WireDatetime
    transcript: Transcript
    summary: Summary
    clinical_note: tuple[ClinicalNoteField, ...] | None = None
    # The note as a FHIR R4 Bundle (schemaRevision 2; README "FHIR R4 output"): present when the
    # job had a template, absent in older events.
    fhir: FhirBundle | None = None


class JobFailed(WireModel):
    """Routing key job.failed; sent together with the dead letter. Carries no patient data."""

    schema_version: SchemaVersion = 1
    schema_revision: WireInt = SCHEMA_REVISION
    type: Literal["job.failed"] = "job.failed"
    event_id: WireUuid
    job_id: WireUuid
    stage: Stage
    error_type: str
    message: str
    http_status: WireInt | None = None
    attempts: WireInt
    occurred_at: WireDatetime


class StageProgress(WireModel):
    """Routing key job.stage.<stage>: a stage finished and the job moved on."""

    schema_version: SchemaVersion = 1
    schema_revision: WireInt = SCHEMA_REVISION
    type: Literal["job.stage"] = "job.stage"
    event_id: WireUuid
    job_id: WireUuid
    stage: Stage
    provider: str
    duration_ms: float
    occurred_at: WireDatetime


class DeadLetterInfo(WireModel):
    """The dead-letter headers, parsed; the message body is the consumed message, unchanged."""

    job_id: str | None = None
    stage: Stage
    error_type: str
    message: str
    http_status: WireInt | None = None
    attempts: WireInt
    first_failure_at: WireDatetime
    last_failure_at: WireDatetime
