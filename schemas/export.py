"""Writes the JSON Schema of every wire model into schemas/json/ (run: make schemas).

A test fails when the committed files differ from what the models produce.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.errors import ERROR_CATALOGUE, is_documented_by_vendor
from schemas.events import DeadLetterInfo, JobCompleted, JobFailed, StageProgress
from schemas.jobs import (
    ChunkMessage,
    JobRequest,
    NoteMessage,
    PollMessage,
    SummarizeMessage,
    Template,
)

JSON_DIR = Path(__file__).parent / "json"

MODELS: dict[str, type[BaseModel]] = {
    "job-request": JobRequest,
    "poll-message": PollMessage,
    "summarize-message": SummarizeMessage,
    "note-message": NoteMessage,
    "chunk-message": ChunkMessage,
    "job-completed": JobCompleted,
    "job-failed": JobFailed,
    "job-stage-progress": StageProgress,
    "dead-letter-info": DeadLetterInfo,
    "invox-template": Template,
}


def error_catalogue() -> list[dict[str, object]]:
    return [
        {
            "errorType": error_type.value,
            "meaning": meaning,
            "documentedByVendor": is_documented_by_vendor(error_type),
        }
        for error_type, meaning in ERROR_CATALOGUE.items()
    ]


def render() -> dict[str, str]:
    """File name -> exact file content."""
    files = {
        f"{name}.schema.json": model.model_json_schema(by_alias=True, mode="validation")
        for name, model in MODELS.items()
    }
    rendered = {
        name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in files.items()
    }
    rendered["error-types.json"] = json.dumps(error_catalogue(), indent=2) + "\n"
    return rendered


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for name, content in render().items():
        (JSON_DIR / name).write_text(content, encoding="utf-8")
    print(f"wrote {len(MODELS) + 1} files to {JSON_DIR}", file=sys.stderr)
    # schemas/ imports nothing from worker/ or ops/: the AsyncAPI document, which also needs
    # the topology, is ops/asyncapi.py's to write (make schemas runs both).
    print("schemas/asyncapi.yaml: python -m ops.asyncapi (make schemas runs both)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
