"""Intron Health file API: multipart upload, then status polling until transcribed."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Final

from aiohttp import BodyPartReader, web

from ops.sandbox import content
from ops.sandbox.faults import STATUS_KINDS
from ops.sandbox.replies import Abort, intron_ok, vendor_error
from ops.sandbox.state import IntronFile, SandboxState, audio_digest

UPLOAD: Final = "intron.upload"
STATUS: Final = "intron.status"
CATEGORIES: Final = frozenset(
    {
        "file_category_general",
        "file_category_telehealth",
        "file_category_procedure",
        "file_category_call_center",
    }
)
POST_PROCESSING_FLAGS: Final = (
    "get_summary",
    "get_entity_list",
    "get_treatment_plan",
    "get_soap_note",
    "get_clerking",
    "get_op_note",
    "get_icd_codes",
    "get_suggestions",
    "get_call_center_results",
    "get_call_center_agent_score",
    "get_call_center_product_insights",
)
_CHUNK: Final = 1 << 16


def _bad_request(message: str) -> Abort:
    return Abort(vendor_error(UPLOAD, 400, message))


async def _read_form(request: web.Request) -> tuple[dict[str, str], int | None, str]:
    """Text fields, the blob's size and its sha256; the blob is streamed and discarded, never
    held."""
    fields: dict[str, str] = {}
    digest = hashlib.sha256()
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        texts = {key: value for key, value in form.items() if isinstance(value, str)}
        return texts, None, digest.hexdigest()
    if request.content_type != "multipart/form-data":
        raise _bad_request("request body must be multipart/form-data")
    blob_size: int | None = None
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "audio_file_blob":
            blob_size = 0
            while chunk := await part.read_chunk(_CHUNK):
                blob_size += len(chunk)
                digest.update(chunk)
        else:
            fields[part.name] = await part.text()
    return fields, blob_size, digest.hexdigest()


def _flag(fields: dict[str, str], name: str) -> bool:
    value = fields.get(name, "FALSE").strip().upper()
    if value not in ("TRUE", "FALSE"):
        raise _bad_request(f"{name} must be TRUE or FALSE")
    return value == "TRUE"


async def upload(request: web.Request, state: SandboxState) -> web.Response:
    fields, blob_size, blob_sha256 = await _read_form(request)
    name = fields.get("audio_file_name", "").strip()
    url = fields.get("audio_file_url", "").strip()
    if not name:
        raise _bad_request("audio_file_name is required")
    if blob_size is None and not url:
        raise _bad_request("audio_file_url or audio_file_blob is required")
    if blob_size is not None and blob_size > state.config.intron_max_upload_bytes:
        raise Abort(vendor_error(UPLOAD, 413, "file size exceeds the 100MB limit"))
    category = fields.get("use_category", "file_category_telehealth")
    if category not in CATEGORIES:
        raise _bad_request(f"use_category must be one of {', '.join(sorted(CATEGORIES))}")
    record = IntronFile(
        file_id=str(uuid.uuid4()),
        name=name,
        diarize=_flag(fields, "use_diarization"),
        category=category,
        post_processing=tuple(f for f in POST_PROCESSING_FLAGS if _flag(fields, f)),
        source="blob" if blob_size is not None else "url",
        size_bytes=blob_size or 0,
    )
    state.intron_files[record.file_id] = record
    state.stats.paid_submission(
        "intron", blob_sha256 if blob_size is not None else audio_digest(url)
    )
    return intron_ok({"file_id": record.file_id}, "file queued for processing")


def _transcribed(record: IntronFile, state: SandboxState) -> dict[str, Any]:
    turns = () if state.knobs.no_speech else state.config.transcript_turns
    transcript = content.plain_transcript(turns)
    data: dict[str, Any] = {
        "processing_status": "FILE_TRANSCRIBED",
        "audio_file_name": record.name,
        "audio_transcript": (content.diarized_transcript(turns) if record.diarize else transcript),
        "processed_audio_duration_in_seconds": content.duration_s(turns),
    }
    for flag in record.post_processing:
        kind = flag.removeprefix("get_")
        data[f"transcript_{kind}"] = content.intron_markdown(kind, transcript)
    return data


async def status(request: web.Request, state: SandboxState) -> web.Response:
    """Queued, then processing, then transcribed after `polls_before_ready` polls."""
    record = state.intron_files.get(request.match_info["file_id"])
    if record is None:
        raise Abort(vendor_error(STATUS, 404, "file not found"))
    earlier_polls = record.polls
    record.polls += 1
    fault = state.faults.take(STATUS, STATUS_KINDS)
    if fault is not None:
        default = "FILE_PROCESSING_FAILED" if fault.kind == "failed_status" else "FILE_WEIRD_STATUS"
        data = {"processing_status": fault.status_value or default, "audio_file_name": record.name}
    elif earlier_polls >= state.knobs.polls_before_ready:
        data = _transcribed(record, state)
    else:
        pending = "FILE_QUEUED" if earlier_polls == 0 else "FILE_PROCESSING"
        data = {"processing_status": pending, "audio_file_name": record.name}
    return intron_ok(data, "file status found")
