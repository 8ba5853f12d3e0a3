"""The status API's answers (GET /jobs/{jobId}, GET /jobs): what the job index holds of a job.

Never patient text: a job's stage transitions, with times, providers, attempts, its outcome and
errorType. ops/openapi.py builds schemas/openapi.json from these models; the worker writes its
answers through them (worker/jobs_api.py), so the document and the answers cannot disagree.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from schemas.base import Stage, WireDatetime, WireModel, WireUuid

# running: a stage is done or being retried, the job goes on; completed: job.completed was
# published; failed: job.failed was published (the dead letter holds the job).
JobOutcome = Literal["running", "completed", "failed"]
JOB_OUTCOMES: Final[tuple[JobOutcome, ...]] = ("running", "completed", "failed")
# What one recorded transition says happened at its stage: done (the next stage's message is
# confirmed), retry (a transient failure went to a delay tier), completed, failed.
TransitionKind = Literal["done", "retry", "completed", "failed"]

# errorType values: the catalogue's (schemas/errors.py), or what a vendor's 403 carries (the
# shape worker/providers/http.py accepts there).
ERROR_TYPE_PATTERN: Final = "^[A-Za-z][A-Za-z0-9_-]{0,63}$"
PROVIDER_PATTERN: Final = "^[a-z][a-z0-9_.-]{0,31}$"
# One page of GET /jobs holds at most this many jobs.
MAX_PAGE_SIZE: Final = 500
DEFAULT_PAGE_SIZE: Final = 50


class Transition(WireModel):
    stage: Stage
    kind: TransitionKind
    at: WireDatetime
    provider: str | None = Field(default=None, pattern=PROVIDER_PATTERN)
    attempts: int = Field(ge=0)
    error_type: str | None = Field(default=None, pattern=ERROR_TYPE_PATTERN)
    duration_ms: float | None = Field(default=None, ge=0)


class JobSummary(WireModel):
    """One job's latest state: the stage of its latest transition and what came of it."""

    job_id: WireUuid
    stage: Stage
    outcome: JobOutcome
    provider: str | None = Field(default=None, pattern=PROVIDER_PATTERN)
    attempts: int = Field(ge=0)
    error_type: str | None = Field(default=None, pattern=ERROR_TYPE_PATTERN)
    created_at: WireDatetime
    updated_at: WireDatetime


class JobStatus(JobSummary):
    """GET /jobs/{jobId}: the summary and every recorded transition, oldest first."""

    transitions: list[Transition] = Field(max_length=10_000)


class JobPage(WireModel):
    """GET /jobs: the newest matching jobs first (by updatedAt), at most `limit` of them."""

    jobs: list[JobSummary] = Field(max_length=MAX_PAGE_SIZE)
    limit: int = Field(ge=1, le=MAX_PAGE_SIZE)


class ApiError(WireModel):
    """A refused request: a code, and a sentence that never repeats the request's values."""

    error: Literal["badRequest", "unauthorized", "notFound", "indexUnavailable"]
    detail: str = Field(max_length=300)
