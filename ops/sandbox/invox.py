"""Invox Medical API: tokens, batch transcription via a signed audio URL, summary,
clinical note from a template, and signed-URL upload of supporting documents."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any, Final

from aiohttp import web

from ops.sandbox import content
from ops.sandbox.callbacks import ready_later
from ops.sandbox.faults import STATUS_KINDS
from ops.sandbox.replies import Abort, invox_abort, json_object, vendor_error
from ops.sandbox.state import InvoxDocument, InvoxTranscription, SandboxState, same_secret
from schemas.errors import ErrorType

OUTPUT_FORMATS: Final = ("SUMMARY", "SOAP_TEMPLATE")
NOTE_LANGUAGES: Final = frozenset({"es", "en", "ca", "pt-BR", "pt-PT"})
FIELD_TYPES: Final = frozenset({"string", "number", "array", "boolean", "enum"})
DOCUMENT_TYPES: Final = {"PDF": ("application/pdf", ".pdf"), "TXT": ("text/plain", ".txt")}
TEMPLATE_KEYS: Final = ("id", "template_name", "template_description", "template_language")
FIELD_KEYS: Final = ("id", "name", "description")
_ISO_639: Final = re.compile(r"[A-Za-z]{2,3}(?:-(?:[A-Za-z]{2}|[0-9]{3}))?")
_CHUNK: Final = 1 << 16


def _bad_body(message: str) -> Abort:
    return invox_abort(400, ErrorType.INVALID_REQUEST_BODY, message)


def _base_url(request: web.Request, state: SandboxState) -> str:
    return state.config.public_base_url or str(request.url.origin())


def _generation_time(text: str) -> float:
    return round(0.5 + len(text) / 5000, 2)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


async def token(request: web.Request, state: SandboxState) -> web.Response:
    """Stand-in for the non-public token endpoint: app id + key for a bearer token."""
    body = await json_object(request)
    app_id, app_key = body.get("appId"), body.get("appKey")
    if not (
        isinstance(app_id, str)
        and isinstance(app_key, str)
        and same_secret(app_id, state.config.invox_app_id)
        and same_secret(app_key, state.config.invox_app_key)
    ):
        raise Abort(vendor_error("invox.token", 401, "Unauthorized"))
    ttl = state.knobs.token_ttl_s
    return web.json_response(
        {"accessToken": state.issue_token(), "expiresIn": int(ttl) if ttl.is_integer() else ttl}
    )


async def presign(request: web.Request, state: SandboxState) -> web.Response:
    body = await json_object(request)
    mime_type, callback_url = body.get("mimeType"), body.get("callbackUrl")
    if not isinstance(mime_type, str) or not mime_type.startswith("audio/"):
        raise _bad_body("mimeType must be an audio/* MIME type")
    if callback_url is not None and not isinstance(callback_url, str):
        raise _bad_body("callbackUrl must be a string")
    request_id = str(uuid.uuid4())
    state.transcriptions[request_id] = InvoxTranscription(request_id, mime_type, callback_url)
    return web.json_response(
        {
            "presignedUrl": f"{_base_url(request, state)}/_uploads/audio/{request_id}",
            "requestId": request_id,
        }
    )


async def _signed_put(request: web.Request, endpoint: str, content_type: str) -> tuple[int, str]:
    """Storage rules for signed URLs: the URL is the credential, the type is signed in. Returns
    the body's size and sha256."""
    if "Authorization" in request.headers:
        raise Abort(vendor_error(endpoint, 400, "Signed URL uploads must not send Authorization"))
    if request.headers.get("Content-Type", "").strip() != content_type:
        raise Abort(vendor_error(endpoint, 400, f"Content-Type must be exactly {content_type}"))
    size = 0
    digest = hashlib.sha256()
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


async def audio_put(request: web.Request, state: SandboxState) -> web.Response:
    record = state.transcriptions.get(request.match_info["request_id"])
    if record is None:
        raise Abort(vendor_error("invox.audio_put", 404, "No such upload URL"))
    record.size_bytes, sha256 = await _signed_put(request, "invox.audio_put", record.mime_type)
    if not record.uploaded:  # a second PUT to the same requestId replaces the audio: one bill
        state.stats.paid_submission("invox", sha256)
        record.audio_sha256 = sha256
        if state.knobs.ready_after_ms > 0:
            record.timed = True
            delay_s = state.knobs.ready_after_ms / 1000
            state.spawn(ready_later(state, record, delay_s, state.knobs.callbacks))
    record.uploaded = True
    return web.Response(status=200)


async def transcription(request: web.Request, state: SandboxState) -> web.Response:
    """PENDING, then COMPLETED after `polls_before_ready` polls of an uploaded request."""
    request_id = (await json_object(request)).get("requestId")
    if not _is_text(request_id):
        raise _bad_body("requestId must be a non-empty string")
    record = state.transcriptions.get(str(request_id))
    if record is None:
        raise invox_abort(404, ErrorType.TRANSCRIPTION_NOT_FOUND, "Transcription not found")
    if not record.uploaded:
        raise invox_abort(
            400, ErrorType.INCONSISTENT_INPUT, "No audio was uploaded for this requestId"
        )
    earlier_polls = record.polls
    record.polls += 1
    key = state.knobs.invox_status_key
    body: dict[str, Any] = {"transcription": []}
    fault = state.faults.take("invox.transcription", STATUS_KINDS)
    if fault is not None and fault.kind == "failed_status":
        body[key] = fault.status_value or "ERROR"
        body["errorMessage"] = fault.message or "Audio could not be transcribed"
    elif fault is not None:
        body[key] = fault.status_value or "WEIRD"
    elif _ready(record, earlier_polls, state):
        turns = () if state.knobs.no_speech else state.config.transcript_turns
        body = {"transcription": content.segments(turns), key: "COMPLETED"}
    else:
        body[key] = "PENDING"
    return web.json_response(body)


def _ready(record: InvoxTranscription, earlier_polls: int, state: SandboxState) -> bool:
    """A timed transcription (ready_after_ms) once its timer fired; else after enough polls."""
    if record.timed:
        return record.ready_at_s is not None
    return earlier_polls >= state.knobs.polls_before_ready


async def summary(request: web.Request, state: SandboxState) -> web.Response:
    body = await json_object(request)
    transcript = body.get("transcript")
    output_format, language = body.get("outputFormat"), body.get("outputLanguage")
    if not isinstance(transcript, str) or not transcript.strip():
        raise _bad_body("transcript must be a non-empty string")
    if output_format not in OUTPUT_FORMATS:
        raise invox_abort(
            400, ErrorType.INVALID_OUTPUT_FORMAT, f"outputFormat must be one of {OUTPUT_FORMATS}"
        )
    if language is None or language == "":
        raise invox_abort(400, ErrorType.MISSING_OUTPUT_LANGUAGE, "outputLanguage is required")
    if not isinstance(language, str) or not _ISO_639.fullmatch(language):
        raise invox_abort(400, ErrorType.INVALID_LANGUAGE, "outputLanguage must be an ISO 639 code")
    note: str | dict[str, Any]
    if output_format == "SUMMARY":
        note = content.summary_text(transcript, language)
    else:
        note = {
            "fields": [
                {"name": name, "description": description, "value": value}
                for name, description, value in content.soap_values(transcript)
            ]
        }
    return web.json_response({"clinicalNote": note, "generationTime": _generation_time(transcript)})


def _template_fields(template: object) -> list[dict[str, Any]] | None:
    """The template's fields, normalised, if it matches IAPITemplate; else None."""
    if not isinstance(template, dict) or not all(
        isinstance(template.get(key), str) for key in TEMPLATE_KEYS
    ):
        return None
    fields = template.get("fields")
    if not isinstance(fields, list):
        return None
    out = []
    for field in fields:
        if not isinstance(field, dict) or field.get("type") not in FIELD_TYPES:
            return None
        if not all(isinstance(field.get(key), str) for key in FIELD_KEYS):
            return None
        clean = {key: field[key] for key in (*FIELD_KEYS, "type")}
        options = field.get("enumerableOptions")
        if options is not None or field["type"] == "enum":
            if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
                return None
            if field["type"] == "enum" and not options:
                return None
            clean["enumerableOptions"] = options
        out.append(clean)
    return out


async def note(request: web.Request, state: SandboxState) -> web.Response:
    body = await json_object(request)
    summary_text, template = body.get("summary"), body.get("template")
    language = body.get("language")
    if not _is_text(summary_text):
        raise invox_abort(400, ErrorType.SUMMARY_IS_REQUIRED, "summary is required")
    if template is None:
        raise invox_abort(400, ErrorType.TEMPLATE_IS_REQUIRED, "template is required")
    fields = _template_fields(template)
    if fields is None:
        raise invox_abort(400, ErrorType.INVALID_TEMPLATE, "template does not match IAPITemplate")
    if language is not None and language not in NOTE_LANGUAGES:
        raise invox_abort(
            400, ErrorType.INVALID_LANGUAGE, "language must be es, en, ca, pt-BR or pt-PT"
        )
    filled = [content.fill_field(f, str(summary_text), i) for i, f in enumerate(fields)]
    return web.json_response(
        {"clinicalNote": filled, "generationTime": _generation_time(str(summary_text))}
    )


async def documents(request: web.Request, state: SandboxState) -> web.Response:
    body = await json_object(request)
    session_id, requested = body.get("consultationSessionId"), body.get("documents")
    if not _is_text(session_id) or not isinstance(requested, list) or not requested:
        raise _bad_body("consultationSessionId and a non-empty documents list are required")
    for doc in requested:
        if (
            not isinstance(doc, dict)
            or doc.get("documentType") not in DOCUMENT_TYPES
            or not _is_text(doc.get("documentName"))
        ):
            raise _bad_body("each document needs documentType PDF|TXT and a documentName")
    for doc in requested:
        extension = DOCUMENT_TYPES[doc["documentType"]][1]
        if not doc["documentName"].lower().endswith(extension):
            raise invox_abort(
                400, ErrorType.INCONSISTENT_INPUT, "documentType does not match documentName"
            )
    base = _base_url(request, state)
    out = []
    for doc in requested:
        record = InvoxDocument(
            str(uuid.uuid4()), str(session_id), doc["documentType"], doc["documentName"]
        )
        state.documents[record.document_id] = record
        out.append(
            {
                "documentId": record.document_id,
                "documentType": record.document_type,
                "documentName": record.document_name,
                "signedUrl": f"{base}/_uploads/documents/{record.document_id}",
            }
        )
    return web.json_response({"documents": out})


async def document_put(request: web.Request, state: SandboxState) -> web.Response:
    record = state.documents.get(request.match_info["document_id"])
    if record is None:
        raise Abort(vendor_error("invox.document_put", 404, "No such upload URL"))
    content_type = DOCUMENT_TYPES[record.document_type][0]
    record.size_bytes, _ = await _signed_put(request, "invox.document_put", content_type)
    record.uploaded = True
    return web.Response(status=200)
