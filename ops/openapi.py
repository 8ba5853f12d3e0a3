"""The OpenAPI 3.1 document of the status API (worker/jobs_api.py), generated from its answer models
(schemas/status.py) and its parameters (run: make schemas, or python -m ops.openapi).

tests/unit/test_openapi.py regenerates it and compares it with the committed schemas/openapi.json;
tests/integration/test_jobs_api.py runs schemathesis from it against a live worker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.base import RFC3339_PATTERN, UUID_PATTERN
from schemas.status import (
    DEFAULT_PAGE_SIZE,
    ERROR_TYPE_PATTERN,
    JOB_OUTCOMES,
    MAX_PAGE_SIZE,
    PROVIDER_PATTERN,
    ApiError,
    JobPage,
    JobStatus,
)
from worker.constants import STAGES
from worker.jobs_api import JOB_PATH, JOBS_PATH

OPENAPI_FILE = Path(__file__).parents[1] / "schemas" / "openapi.json"
OPENAPI_VERSION = "3.1.0"
SCHEMA_REF = "#/components/schemas/{model}"


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model=ref)}}},
    }


def _refusals(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "A parameter is not accepted (the detail names it, never its value).",
        401: "SCRIBE_API_TOKEN is set and the request has no valid bearer token.",
        404: "The index holds no job with this jobId.",
        503: "The job index cannot be read now.",
    }
    return {str(status): _json("ApiError", reasons[status]) for status in statuses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _list_parameters() -> list[dict[str, Any]]:
    instant = {"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}
    return [
        _query("stage", {"type": "string", "enum": list(STAGES)}, "The latest transition's."),
        _query("outcome", {"type": "string", "enum": list(JOB_OUTCOMES)}, "The job's outcome."),
        _query(
            "errorType",
            {"type": "string", "pattern": ERROR_TYPE_PATTERN},
            "The job's errorType (a failure, or the last retried one).",
        ),
        _query(
            "provider",
            {"type": "string", "pattern": PROVIDER_PATTERN},
            "The provider of the latest transition.",
        ),
        _query("since", instant, "updatedAt at or after this instant."),
        _query("until", instant, "updatedAt before this instant."),
        _query(
            "limit",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PAGE_SIZE,
                "default": DEFAULT_PAGE_SIZE,
            },
            "At most this many jobs, newest first.",
        ),
    ]


def document() -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "serialization") for model in (JobStatus, JobPage, ApiError)],
        by_alias=True,
        ref_template=SCHEMA_REF,
    )
    job_id = {
        "name": "jobId",
        "in": "path",
        "required": True,
        "description": "The job's jobId.",
        "schema": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Clinical scribe worker: job status",
            "version": "1",
            "description": (
                "Where a job is, from the job index (SCRIBE_DATABASE_URL), on the worker's HTTP "
                "port. Stage transitions, providers, attempts, outcome and errorType; never "
                "patient text. Bearer token when SCRIBE_API_TOKEN is set."
            ),
        },
        "paths": {
            JOB_PATH: {
                "get": {
                    "operationId": "getJob",
                    "summary": "One job's state and its recorded stage transitions.",
                    "parameters": [job_id],
                    "responses": {
                        "200": _json("JobStatus", "The job."),
                        **_refusals(400, 401, 404, 503),
                    },
                }
            },
            JOBS_PATH: {
                "get": {
                    "operationId": "listJobs",
                    "summary": "Jobs matching every filter given, newest first.",
                    "parameters": _list_parameters(),
                    "responses": {
                        "200": _json("JobPage", "The matching jobs."),
                        **_refusals(400, 401, 503),
                    },
                }
            },
        },
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerToken": []}],
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    OPENAPI_FILE.write_text(render(), encoding="utf-8")
    print(f"wrote {OPENAPI_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
