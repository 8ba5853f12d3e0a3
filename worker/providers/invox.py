"""Invox Medical API: batch transcription, consultation summary, clinical note, documents.

`InvoxClient` owns everything every endpoint shares (configuration check, bearer token, API
version header, one token refresh on a 401); the provider classes are thin and only build
payloads and read answers. Uploads to pre-signed URLs go through `VendorHttp.upload`, which sends
only Content-Type: the signed URL carries its own credentials and may be on another host.

Decisions the vendor pages leave open:
- The status key is `processingStatus` in the type and `transcriptionStatus` in the example: both
  are read. COMPLETED -> transcript, PENDING -> None, ERROR -> transcriptionFailed (the vendor's
  errorMessage is not forwarded: it is free text), anything else, missing or not a string ->
  unknownVendorStatus (named in the message only when it is an upper-case status word).
- A transcript over MAX_TRANSCRIPT_BYTES or MAX_TRANSCRIPT_SEGMENTS -> transcriptTooLarge,
  checked before any model is built; a start or end that is not a finite number counts as absent.
- 404 on get-transcription without an errorType is still transcriptionNotFound.
- A summary asked for as SOAP_TEMPLATE that comes back as a string is parsed as JSON
  {"fields": [...]} when it is one; otherwise it is kept as SUMMARY text.
- The note call gets the summary text, or for SOAP summaries one "Name: value" line per field.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Final

from pydantic import ValidationError

from schemas.errors import ErrorType
from schemas.jobs import (
    ClinicalNoteField,
    JobRequest,
    SoapField,
    Summary,
    Template,
    Transcript,
    TranscriptionHandle,
    TranscriptSegment,
)
from worker.callbacks import CallbackTokens
from worker.constants import INVOX_API_VERSION_HEADER
from worker.errors import PermanentError, ScribeError
from worker.ledger import SubmissionIntent, SubmissionJournal
from worker.media import check_upload_url
from worker.providers.base import PreparedAudio, PreparedDocument, Submitted, Transcribed
from worker.providers.http import (
    AuthenticationRejected,
    JsonObject,
    VendorHttp,
    check_transcript_size,
    expect_str,
    finite_number,
    malformed,
    parse_json,
    status_name,
)
from worker.providers.invox_auth import InvoxTokenSource
from worker.settings import InvoxSettings

VENDOR: Final = "invox"
PRESIGNED_URL_ENDPOINT: Final = "invox.presign"
AUDIO_UPLOAD_ENDPOINT: Final = "invox.audio_put"
TRANSCRIPTION_ENDPOINT: Final = "invox.transcription"
SUMMARY_ENDPOINT: Final = "invox.summary"
NOTE_ENDPOINT: Final = "invox.note"
DOCUMENTS_ENDPOINT: Final = "invox.documents"
DOCUMENT_UPLOAD_ENDPOINT: Final = "invox.document_put"

DOCUMENT_CONTENT_TYPES: Final = {"PDF": "application/pdf", "TXT": "text/plain"}


@dataclass(frozen=True)
class InvoxPaths:
    """Endpoint paths, relative to the base URL (the documents path really has no /api)."""

    presigned_url: str = "/api/v1/generate-presigned-url"
    transcription: str = "/api/v1/get-transcription"
    summary: str = "/api/v1/generate-consultation-summary"
    note: str = "/api/v1/generate-clinical-note-from-summary"
    documents: str = "/v1/generate-signed-urls-for-documents"


class InvoxClient:
    def __init__(
        self,
        settings: InvoxSettings,
        http: VendorHttp,
        tokens: InvoxTokenSource,
        *,
        paths: InvoxPaths | None = None,
        upload_allowlist: frozenset[str] = frozenset(),
    ) -> None:
        self._settings = settings
        self._http = http
        self._tokens = tokens
        self.paths = paths or InvoxPaths()
        # Hosts a signed upload URL may name although private (SCRIBE_URL_ALLOWLIST).
        self._upload_allowlist = upload_allowlist

    def __repr__(self) -> str:
        return "InvoxClient()"

    async def post(
        self,
        endpoint: str,
        path: str,
        payload: JsonObject,
        *,
        status_errors: dict[int, str] | None = None,
    ) -> JsonObject:
        """POST JSON to an Invox endpoint; on a 401 refresh the token once and try again."""
        if not self._settings.configured or self._settings.base_url is None:
            raise PermanentError(ErrorType.PROVIDER_NOT_CONFIGURED, "invox is not configured")
        url = f"{self._settings.base_url}{path}"
        body = json.dumps(payload, ensure_ascii=False).encode()
        token = await self._tokens.token()
        try:
            return await self._post_once(endpoint, url, body, token, status_errors)
        except AuthenticationRejected:
            token = await self._tokens.refresh(token)
        # A second 401 propagates: AuthenticationRejected is PermanentError(unauthorized).
        return await self._post_once(endpoint, url, body, token, status_errors)

    async def _post_once(
        self,
        endpoint: str,
        url: str,
        body: bytes,
        token: str,
        status_errors: dict[int, str] | None,
    ) -> JsonObject:
        return await self._http.request_json(
            VENDOR,
            endpoint,
            "POST",
            url,
            headers=self._headers(token),
            data=body,
            status_errors=status_errors,
        )

    async def upload(
        self,
        endpoint: str,
        signed_url: str,
        content: bytes | PreparedAudio | PreparedDocument,
        content_type: str,
    ) -> None:
        """PUT to a pre-signed URL, without our Authorization header.

        Files (audio, documents) are streamed from disk in aiohttp's 64 KiB chunks, with their
        Content-Length, never read whole into memory.

        The URL comes from the vendor's answer, so the fetch policy applies to it first (https,
        no private, loopback, link-local or IPv4-embedding address literal): a vendor answer
        must not make the worker send patient audio to an internal address."""
        check_upload_url(signed_url, self._upload_allowlist)
        if isinstance(content, PreparedDocument) and isinstance(content.source, bytes):
            content = content.source
        if isinstance(content, bytes):
            await self._http.upload(
                VENDOR, endpoint, signed_url, content, content_type=content_type
            )
            return
        stream: IO[bytes]
        if isinstance(content, PreparedDocument):
            stream = await asyncio.to_thread(content.open)
        else:
            stream = await asyncio.to_thread(content.path.open, "rb")
        try:
            await self._http.upload(VENDOR, endpoint, signed_url, stream, content_type=content_type)
        finally:
            stream.close()

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            INVOX_API_VERSION_HEADER: self._settings.api_version,
        }


def _signed_url(entry: JsonObject, key: str, endpoint: str) -> str:
    url = expect_str(entry, key, endpoint)
    if not url.lower().startswith(("https://", "http://")):
        raise malformed(endpoint, f"{key} is not an http(s) URL")
    return url


class InvoxTranscriber:
    name = "invox"

    def __init__(self, client: InvoxClient, callbacks: CallbackTokens | None = None) -> None:
        self._client = client
        # SCRIBE_CALLBACK_BASE_URL: each presign carries a callbackUrl with a fresh token.
        self._callbacks = callbacks

    def close(self) -> None:
        """Nothing of its own to release (the shared HTTP session is closed by the worker)."""

    async def submit(
        self, job: JobRequest, audio: PreparedAudio, journal: SubmissionJournal | None = None
    ) -> Submitted | Transcribed:
        """Presign, write the requestId and URL in the journal, then PUT (the PUT is what is
        paid). A delivery that finds them written resumes: it asks get-transcription whether the
        audio arrived, and PUTs to the same URL (the same requestId: one transcription) only if
        Invox says the request does not exist."""
        journal = journal or SubmissionJournal(None, "")
        intent = await journal.recorded()
        if intent is not None and intent.provider == self.name:
            resumed = await self._resume(intent, audio, journal)
            if resumed is not None:
                return resumed
        payload: JsonObject = {"mimeType": audio.mime_type}
        nonce = None
        if self._callbacks is not None:
            nonce, payload["callbackUrl"] = self._callbacks.issue(str(job.job_id))
        body = await self._client.post(
            PRESIGNED_URL_ENDPOINT, self._client.paths.presigned_url, payload
        )
        signed_url = _signed_url(body, "presignedUrl", PRESIGNED_URL_ENDPOINT)
        request_id = expect_str(body, "requestId", PRESIGNED_URL_ENDPOINT)
        if len(request_id) > 512:
            raise malformed(PRESIGNED_URL_ENDPOINT, "requestId is too long")
        started_at = datetime.now(UTC)
        await journal.record(
            SubmissionIntent(
                provider=self.name,
                started_at=started_at,
                replays=journal.replays,
                request_id=request_id,
                upload_url=signed_url,
                callback_nonce=nonce,
            )
        )
        await self._client.upload(AUDIO_UPLOAD_ENDPOINT, signed_url, audio, audio.mime_type)
        return Submitted(
            TranscriptionHandle(provider="invox", handle=request_id, submitted_at=started_at),
            callback_nonce=nonce,
        )

    async def _resume(
        self, intent: SubmissionIntent, audio: PreparedAudio, journal: SubmissionJournal
    ) -> Submitted | None:
        """The earlier delivery's requestId as this one's handle, PUT again only if Invox has no
        audio for it; None if the recorded URL is refused (expired, say): start afresh."""
        if intent.request_id is None or intent.upload_url is None:
            return None
        handle = TranscriptionHandle(
            provider="invox", handle=intent.request_id, submitted_at=intent.started_at
        )
        if await self._has_request(intent.request_id):
            journal.note("resumed")
            return Submitted(handle, intent.callback_nonce)
        journal.note("reput")
        try:
            await self._client.upload(
                AUDIO_UPLOAD_ENDPOINT, intent.upload_url, audio, audio.mime_type
            )
        except PermanentError:
            # Refused, so nothing was uploaded under it either (a 5xx stays transient: the next
            # delivery asks get-transcription again).
            await journal.clear()
            return None
        return Submitted(handle, intent.callback_nonce)

    async def _has_request(self, request_id: str) -> bool:
        """Whether get-transcription knows the request with its audio: 404 transcriptionNotFound,
        or the 400 inconsistentInput Invox answers for a request without audio, mean no."""
        try:
            await self._client.post(
                TRANSCRIPTION_ENDPOINT,
                self._client.paths.transcription,
                {"requestId": request_id},
                status_errors={404: ErrorType.TRANSCRIPTION_NOT_FOUND},
            )
        except PermanentError as exc:
            if exc.error_type in (ErrorType.TRANSCRIPTION_NOT_FOUND, ErrorType.INCONSISTENT_INPUT):
                return False
            raise
        return True

    async def status(self, job: JobRequest, handle: TranscriptionHandle) -> Transcript | None:
        body = await self._client.post(
            TRANSCRIPTION_ENDPOINT,
            self._client.paths.transcription,
            {"requestId": handle.handle},
            status_errors={404: ErrorType.TRANSCRIPTION_NOT_FOUND},
        )
        status = body.get("processingStatus", body.get("transcriptionStatus"))
        if status == "PENDING":
            return None
        if status == "COMPLETED":
            return _transcript(body)
        if status == "ERROR":
            # errorMessage is vendor free text (it may quote the recording): never forwarded.
            raise PermanentError(ErrorType.TRANSCRIPTION_FAILED, f"{TRANSCRIPTION_ENDPOINT}: ERROR")
        raise PermanentError(
            ErrorType.UNKNOWN_VENDOR_STATUS,
            f"{TRANSCRIPTION_ENDPOINT}: unknown status {status_name(status)}",
        )


def _transcript(body: JsonObject) -> Transcript:
    """Segments in order; a start or end that is not a finite number (1e400) counts as absent.

    The size caps are checked on the vendor's data before any model is built."""
    raw_segments = body.get("transcription")
    if not isinstance(raw_segments, list):
        raise malformed(TRANSCRIPTION_ENDPOINT, "response has no list 'transcription'")
    check_transcript_size(TRANSCRIPTION_ENDPOINT, (), len(raw_segments))
    if not all(isinstance(e, dict) and isinstance(e.get("text"), str) for e in raw_segments):
        raise malformed(TRANSCRIPTION_ENDPOINT, "a transcription segment has no text")
    texts = [entry["text"].strip() for entry in raw_segments]
    text = " ".join(t for t in texts if t)
    check_transcript_size(TRANSCRIPTION_ENDPOINT, (text,))
    segments: list[TranscriptSegment] = []
    try:
        for entry, segment_text in zip(raw_segments, texts, strict=True):
            start = finite_number(entry.get("start"))
            end = finite_number(entry.get("end"))
            segments.append(
                TranscriptSegment(
                    start=start or 0.0,
                    end=end if end is not None else (start or 0.0),
                    text=segment_text,
                )
            )
        return Transcript(
            provider="invox",
            text=text,
            segments=tuple(segments),
            duration_s=max((segment.end for segment in segments), default=None),
        )
    except ValidationError:
        # The message would quote the transcript: name the endpoint only.
        raise PermanentError(
            ErrorType.MALFORMED_RESPONSE, f"{TRANSCRIPTION_ENDPOINT}: the transcript does not fit"
        ) from None


class InvoxSummarizer:
    name = "invox"

    def __init__(self, client: InvoxClient) -> None:
        self._client = client

    def close(self) -> None:
        """Nothing of its own to release (the shared HTTP session is closed by the worker)."""

    async def summarize(self, job: JobRequest, transcript: Transcript) -> Summary:
        body = await self._client.post(
            SUMMARY_ENDPOINT,
            self._client.paths.summary,
            {
                "transcript": transcript.text,
                "outputFormat": job.summary.output_format,
                "outputLanguage": job.summary.output_language,
            },
        )
        note = body.get("clinicalNote")
        if isinstance(note, str) and job.summary.output_format == "SOAP_TEMPLATE":
            decoded = _json_in_string(note)
            if isinstance(decoded, dict) and "fields" in decoded:
                note = decoded
        try:
            if isinstance(note, str):
                return Summary(provider="invox", output_format="SUMMARY", text=note)
            if isinstance(note, dict):
                return Summary(
                    provider="invox", output_format="SOAP_TEMPLATE", fields=_soap_fields(note)
                )
        except ValidationError:
            # Over the schema's string bound, say: the message would quote the summary.
            raise PermanentError(
                ErrorType.MALFORMED_RESPONSE, f"{SUMMARY_ENDPOINT}: the summary does not fit"
            ) from None
        raise malformed(SUMMARY_ENDPOINT, "response has no clinicalNote")


def _json_in_string(text: str) -> object:
    """A SOAP clinicalNote sent as a JSON string, decoded (depth-limited); None if it is not
    JSON, which keeps it as SUMMARY text."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        return parse_json(text, SUMMARY_ENDPOINT)
    except ScribeError:
        return None


def _soap_fields(note: JsonObject) -> tuple[SoapField, ...]:
    fields = note.get("fields")
    if not isinstance(fields, list):
        raise malformed(SUMMARY_ENDPOINT, "clinicalNote has no list 'fields'")
    result: list[SoapField] = []
    for entry in fields:
        if not isinstance(entry, dict):
            raise malformed(SUMMARY_ENDPOINT, "a clinicalNote field is not an object")
        name, value = entry.get("name"), entry.get("value")
        description = entry.get("description", "")
        if not isinstance(name, str) or not isinstance(description, str):
            raise malformed(SUMMARY_ENDPOINT, "a clinicalNote field has no name")
        if value is None:
            value = ""
        if not isinstance(value, str):
            # Printable: pydantic_core refuses integers over Python's 4300-digit str() limit.
            value = json.dumps(value, ensure_ascii=False)
        result.append(SoapField(name=name, description=description, value=value))
    return tuple(result)


def summary_text(summary: Summary) -> str:
    """What the note endpoint receives as `summary`: the text, or one line per SOAP field."""
    if summary.text is not None and summary.text.strip():
        return summary.text
    return "\n".join(f"{field.name}: {field.value}" for field in summary.fields or ())


_NOTE_FIELD_KEYS: Final = ("id", "name", "description", "type", "enumerableOptions", "value")


class InvoxNoteWriter:
    name = "invox"

    def __init__(self, client: InvoxClient) -> None:
        self._client = client

    def close(self) -> None:
        """Nothing of its own to release (the shared HTTP session is closed by the worker)."""

    async def write_note(
        self,
        job: JobRequest,
        template: Template,
        transcript: Transcript,
        summary: Summary,
        documents: Sequence[PreparedDocument] = (),
    ) -> tuple[ClinicalNoteField, ...]:
        """The documents are uploaded to the consultation session first, so the note can use
        them."""
        await self.upload_documents(job, documents)
        text = summary_text(summary)
        if not text.strip():
            raise PermanentError(ErrorType.SUMMARY_IS_REQUIRED, f"{NOTE_ENDPOINT}: empty summary")
        payload: JsonObject = {
            "template": template.model_dump(mode="json", by_alias=True, exclude_none=True),
            "summary": text,
        }
        if job.note_language is not None:
            payload["language"] = job.note_language
        body = await self._client.post(NOTE_ENDPOINT, self._client.paths.note, payload)
        fields = body.get("clinicalNote")
        if not isinstance(fields, list):
            raise malformed(NOTE_ENDPOINT, "response has no list 'clinicalNote'")
        return tuple(_note_field(entry) for entry in fields)

    async def upload_documents(
        self, job: JobRequest, documents: Sequence[PreparedDocument]
    ) -> None:
        """Signed URLs for the session's documents, then one streamed upload each."""
        if not documents:
            return
        if any(doc.document_type not in DOCUMENT_CONTENT_TYPES for doc in documents):
            raise PermanentError(
                ErrorType.INVALID_MESSAGE, f"{DOCUMENTS_ENDPOINT}: a document is not PDF or TXT"
            )
        body = await self._client.post(
            DOCUMENTS_ENDPOINT,
            self._client.paths.documents,
            {
                "consultationSessionId": job.session_id,
                "documents": [
                    {"documentType": doc.document_type, "documentName": doc.document_name}
                    for doc in documents
                ],
            },
        )
        for doc, signed_url in zip(documents, _signed_urls(body, documents), strict=True):
            content_type = DOCUMENT_CONTENT_TYPES[doc.document_type]
            await self._client.upload(DOCUMENT_UPLOAD_ENDPOINT, signed_url, doc, content_type)


def _note_field(entry: Any) -> ClinicalNoteField:
    if not isinstance(entry, dict):
        raise malformed(NOTE_ENDPOINT, "a clinicalNote field is not an object")
    known = {key: entry[key] for key in _NOTE_FIELD_KEYS if entry.get(key) is not None}
    try:
        return ClinicalNoteField.model_validate(known)
    except ValidationError:
        # The validation message would quote the note's values: say only which endpoint.
        raise malformed(NOTE_ENDPOINT, "a clinicalNote field does not match the schema") from None


def _signed_urls(body: JsonObject, documents: Sequence[PreparedDocument]) -> list[str]:
    """Each document's signed URL: the entry of the same name when the name is unique in the
    request, the entry at the same position otherwise."""
    entries = body.get("documents")
    if (
        not isinstance(entries, list)
        or len(entries) != len(documents)
        or not all(isinstance(entry, dict) for entry in entries)
    ):
        raise malformed(DOCUMENTS_ENDPOINT, "response 'documents' does not match the request")
    by_name: dict[str, JsonObject] = {}
    for entry in entries:
        name = entry.get("documentName")
        if isinstance(name, str):
            by_name.setdefault(name, entry)
    names = [doc.document_name for doc in documents]
    urls = []
    for index, doc in enumerate(documents):
        unique = names.count(doc.document_name) == 1
        entry = by_name.get(doc.document_name) if unique else None
        urls.append(_signed_url(entry or entries[index], "signedUrl", DOCUMENTS_ENDPOINT))
    return urls
