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
_HEAD_BYTES: Final = 4096  # enough for a WAV's RIFF, fmt and data headers


def _bad_request(message: str) -> Abort:
    return Abort(vendor_error(UPLOAD, 400, message))


def wav_seconds(head: bytes, size: int) -> float | None:
    """The duration a RIFF/WAVE blob's headers give (its first bytes and its size), or None."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset, byte_rate = 12, 0
    while offset + 8 <= len(head):
        chunk_id, length = (
            head[offset : offset + 4],
            int.from_bytes(head[offset + 4 : offset + 8], "little"),
        )
        offset += 8
        if chunk_id == b"fmt " and offset + 12 <= len(head):
            byte_rate = int.from_bytes(head[offset + 8 : offset + 12], "little")
        elif chunk_id == b"data":
            return (size - offset) / byte_rate if byte_rate > 0 else None
        offset += length + length % 2
    return None


class _Form:
    """An upload's text fields and what the worker can know of its blob."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.blob_size: int | None = None
        self.digest = hashlib.sha256()
        self.head = b""


async def _read_upload(request: web.Request) -> _Form:
    """Text fields, the blob's size, sha256 and first bytes; the blob is streamed and
    discarded, never held."""
    result = _Form()
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        result.fields = {key: value for key, value in form.items() if isinstance(value, str)}
        return result
    if request.content_type != "multipart/form-data":
        raise _bad_request("request body must be multipart/form-data")
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "audio_file_blob":
            result.blob_size = 0
            while chunk := await part.read_chunk(_CHUNK):
                if len(result.head) < _HEAD_BYTES:
                    result.head += chunk[: _HEAD_BYTES - len(result.head)]
                result.blob_size += len(chunk)
                result.digest.update(chunk)
        else:
            result.fields[part.name] = await part.text()
    return result


def _flag(fields: dict[str, str], name: str) -> bool:
    value = fields.get(name, "FALSE").strip().upper()
    if value not in ("TRUE", "FALSE"):
        raise _bad_request(f"{name} must be TRUE or FALSE")
    return value == "TRUE"


async def upload(request: web.Request, state: SandboxState) -> web.Response:
    form = await _read_upload(request)
    fields, blob_size, blob_sha256 = form.fields, form.blob_size, form.digest.hexdigest()
    duration_s = wav_seconds(form.head, blob_size) if blob_size is not None else None
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
        duration_s=duration_s,
    )
    state.intron_files[record.file_id] = record
    state.stats.paid_submission(
        "intron", blob_sha256 if blob_size is not None else audio_digest(url), duration_s
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
        if (record.duration_s or 0.0) > state.config.intron_max_audio_s:
            data = {"processing_status": "FILE_INVALID_DURATION", "audio_file_name": record.name}
    else:
        pending = "FILE_QUEUED" if earlier_polls == 0 else "FILE_PROCESSING"
        data = {"processing_status": pending, "audio_file_name": record.name}
    return intron_ok(data, "file status found")
