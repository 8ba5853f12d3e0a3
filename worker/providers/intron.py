"""Intron Health file API: upload audio -> file_id, then poll its status.

Decisions the vendor pages leave open (documented here and in the tests):

- Upload mode "auto" sends audio_file_url when the job's audio came from an https URL (Intron
  fetches it), otherwise streams the prepared local file as audio_file_blob.
- 404 on the status endpoint -> PermanentError(transcriptionNotFound): Intron does not know the
  file_id, exactly what Invox's documented errorType means. 404 on upload -> badRequest.
- FILE_PROCESSING_TIMEOUT -> PermanentError(transcriptionFailed): polling the same file_id again
  cannot change a vendor-side timeout; a replay of the dead letter resubmits the audio.
- Any status we do not know -> PermanentError(unknownVendorStatus), never "still pending"; so is
  a processing_status that is not a string (a list, an object, a number).
- A transcript over MAX_TRANSCRIPT_BYTES of UTF-8 (or its post-processing outputs over the same,
  together), or more than MAX_TRANSCRIPT_SEGMENTS diarized turns -> PermanentError
  (transcriptTooLarge). A duration that is not a finite number (1e400, 10**400) is ignored.
- Diarized transcripts ("SPEAKER_01: ..." lines) become segments with the speaker set and
  start = end = 0.0, because Intron gives no timings; 0.0/0.0 means "untimed". Undiarized
  transcripts have no segments. Each speaker's role (clinician, patient, other) is given at the
  poll stage from what that speaker says (worker/roles.py), never from who spoke first.
- The Intron summarizer makes no HTTP call: it returns the post-processing output the transcriber
  already fetched (job.intron.summary_source), which the upload asks for by itself when the job's
  summarizer is "intron" (JobRequest.intron_post_processing). Its transcript from another
  transcriber is incompatibleProviders (the door refuses such jobs first); the output missing or
  blank in Intron's answer is malformedResponse.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import BinaryIO, Final
from urllib.parse import quote

import aiohttp
from pydantic import ValidationError

from schemas.errors import ErrorType
from schemas.jobs import (
    IntronPostProcessing,
    JobRequest,
    Summary,
    Transcript,
    TranscriptionHandle,
    TranscriptSegment,
)
from worker.errors import Deferred, PermanentError, ScribeError
from worker.ledger import SubmissionIntent, SubmissionJournal
from worker.providers.base import PreparedAudio, Submitted, Transcribed
from worker.providers.http import (
    JsonObject,
    VendorHttp,
    check_transcript_size,
    expect_dict,
    expect_str,
    finite_number,
    malformed,
    status_name,
)
from worker.settings import IntronSettings

VENDOR: Final = "intron"
UPLOAD_ENDPOINT: Final = "intron.upload"
STATUS_ENDPOINT: Final = "intron.status"

PENDING_STATUSES: Final = frozenset({"FILE_QUEUED", "FILE_PENDING", "FILE_PROCESSING"})
DONE_STATUS: Final = "FILE_TRANSCRIBED"
FAILED_STATUSES: Final[dict[str, ErrorType]] = {
    "FILE_PROCESSING_FAILED": ErrorType.TRANSCRIPTION_FAILED,
    "FILE_INVALID": ErrorType.TRANSCRIPTION_FAILED,
    "FILE_PROCESSING_CANCELLED": ErrorType.TRANSCRIPTION_FAILED,
    "FILE_PROCESSING_TIMEOUT": ErrorType.TRANSCRIPTION_FAILED,
    "FILE_INVALID_SIZE": ErrorType.FILE_TOO_LARGE,
    "FILE_INVALID_DURATION": ErrorType.AUDIO_TOO_LONG,
}

_POST_PROCESSING_PREFIX: Final = "transcript_"
_SPEAKER_LINE_RE: Final = re.compile(r"^(SPEAKER_[A-Za-z0-9]+)\s*:\s*(.*)$")


class IntronTranscriber:
    name = "intron"

    def __init__(self, settings: IntronSettings, http: VendorHttp) -> None:
        self._settings = settings
        self._http = http

    def close(self) -> None:
        """Nothing of its own to release (the shared HTTP session is closed by the worker)."""

    def _headers(self) -> dict[str, str]:
        if self._settings.api_key is None:
            raise PermanentError(ErrorType.PROVIDER_NOT_CONFIGURED, "intron: no API key configured")
        return {"Authorization": f"Bearer {self._settings.api_key.value}"}

    async def submit(
        self, job: JobRequest, audio: PreparedAudio, journal: SubmissionJournal | None = None
    ) -> Submitted | Transcribed:
        journal = journal or SubmissionJournal(None, "")
        headers = self._headers()
        url = _upload_url(job.intron.upload_mode, audio.source_url)
        await self._before_upload(journal)
        form, blob = await _upload_form(job, audio, url)
        try:
            body = await self._http.request_json(
                VENDOR,
                UPLOAD_ENDPOINT,
                "POST",
                f"{self._settings.base_url}{self._settings.upload_path}",
                headers=headers,
                data=form,
            )
        except ScribeError as exc:
            if isinstance(exc, Deferred) or exc.http_status is not None:
                # Not sent (a rate-limit slot), or Intron answered with an error: no file_id was
                # issued, nothing to be unsure about. A timeout, a dropped connection or a 2xx we
                # cannot read leave the intent: the upload may have been taken.
                await journal.clear()
            raise
        finally:
            if blob is not None:
                blob.close()
        file_id = expect_str(expect_dict(body, "data", UPLOAD_ENDPOINT), "file_id", UPLOAD_ENDPOINT)
        if len(file_id) > 512:
            raise malformed(UPLOAD_ENDPOINT, "file_id is too long")
        return Submitted(
            TranscriptionHandle(provider="intron", handle=file_id, submitted_at=datetime.now(UTC))
        )

    async def _before_upload(self, journal: SubmissionJournal) -> None:
        """Intron has no way to ask whether an upload arrived: an upload an earlier delivery
        started and never saw answered (killed, restarted, timed out) may have been paid.
        SCRIBE_INTRON_REDELIVERY decides between uploading again and a dead letter for a person;
        a replay of that dead letter is the person's decision, and uploads. Then this upload's
        intent is written, before the upload."""
        intent = await journal.recorded()
        uploads = 1
        if intent is not None and intent.provider == self.name:
            uploads = intent.uploads + 1
            if journal.replays > intent.replays:
                journal.note("replayed")
            elif self._settings.redelivery == "dead-letter":
                journal.note("deadLetter")
                raise PermanentError(
                    ErrorType.UPLOAD_OUTCOME_UNKNOWN,
                    f"{UPLOAD_ENDPOINT}: an earlier upload of this job got no answer and may have "
                    "been accepted; check Intron, then replay (uploads again) or purge",
                )
            else:
                journal.note("reupload")
        await journal.record(
            SubmissionIntent(
                provider=self.name,
                started_at=datetime.now(UTC),
                replays=journal.replays,
                uploads=uploads,
            )
        )

    async def status(self, job: JobRequest, handle: TranscriptionHandle) -> Transcript | None:
        headers = self._headers()
        path = self._settings.status_path.replace("{file_id}", quote(handle.handle, safe=""))
        body = await self._http.request_json(
            VENDOR,
            STATUS_ENDPOINT,
            "GET",
            f"{self._settings.base_url}{path}",
            headers=headers,
            params={"get_structured_post_processing": "f"},
            status_errors={404: ErrorType.TRANSCRIPTION_NOT_FOUND},
        )
        data = expect_dict(body, "data", STATUS_ENDPOINT)
        status = data.get("processing_status")
        if not isinstance(status, str):
            # A list or an object is not hashable: testing it against the sets would crash.
            raise PermanentError(
                ErrorType.UNKNOWN_VENDOR_STATUS,
                f"{STATUS_ENDPOINT}: processing_status is {status_name(status)}, not a string",
            )
        if status in PENDING_STATUSES:
            return None
        if status == DONE_STATUS:
            return _transcript(job, data)
        if status in FAILED_STATUSES:
            raise PermanentError(FAILED_STATUSES[status], f"{STATUS_ENDPOINT}: {status}")
        raise PermanentError(
            ErrorType.UNKNOWN_VENDOR_STATUS,
            f"{STATUS_ENDPOINT}: unknown processing_status {status_name(status)}",
        )


def post_processing_output(transcript: Transcript, flag: IntronPostProcessing) -> str | None:
    """What Intron's post-processing `flag` produced for this transcript, None if it did not.

    The outputs ride in Transcript.post_processing, a wire field (job.completed, stage messages)
    typed dict[str, str] on the wire; it is kept as it is so the exported JSON Schemas do not
    change. Inside the worker it is read only here, by a flag the schema names."""
    return transcript.post_processing.get(flag)


def _transcript(job: JobRequest, data: JsonObject) -> Transcript:
    raw = expect_str(data, "audio_transcript", STATUS_ENDPOINT, allow_empty=True)
    check_transcript_size(STATUS_ENDPOINT, (raw,))
    post_processing = {
        "get_" + key.removeprefix(_POST_PROCESSING_PREFIX): value
        for key, value in data.items()
        if key.startswith(_POST_PROCESSING_PREFIX) and isinstance(value, str)
    }
    check_transcript_size(STATUS_ENDPOINT, post_processing.values())
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    segments = _speaker_segments(lines) if job.intron.use_diarization else ()
    try:
        return Transcript(
            provider="intron",
            text="\n".join(lines),
            segments=segments,
            duration_s=finite_number(data.get("processed_audio_duration_in_seconds")),
            post_processing=post_processing,
        )
    except ValidationError:
        # The message would quote the transcript: name the endpoint only.
        raise PermanentError(
            ErrorType.MALFORMED_RESPONSE, f"{STATUS_ENDPOINT}: the transcript does not fit"
        ) from None


def _speaker_segments(lines: list[str]) -> tuple[TranscriptSegment, ...]:
    """Untimed segments from "SPEAKER_01: text" lines; other lines continue the previous turn."""
    turns: list[tuple[str | None, str]] = []
    for line in lines:
        match = _SPEAKER_LINE_RE.match(line)
        if match:
            turns.append((match.group(1), match.group(2).strip()))
        elif turns:
            speaker, text = turns[-1]
            turns[-1] = (speaker, f"{text} {line}".strip())
        else:
            turns.append((None, line))
    if not any(speaker for speaker, _ in turns):
        return ()
    # Counted before any model is built: 5 MB of "SPEAKER_1: a" lines is 400,000 turns.
    check_transcript_size(STATUS_ENDPOINT, (), len(turns))
    return tuple(
        TranscriptSegment(start=0.0, end=0.0, text=text, speaker=speaker) for speaker, text in turns
    )


class IntronSummarizer:
    """Returns the summary Intron's post-processing produced alongside the transcript."""

    name = "intron"

    def close(self) -> None:
        """Nothing to release: it reads what the transcriber fetched."""

    async def summarize(self, job: JobRequest, transcript: Transcript) -> Summary:
        source = job.intron.summary_source
        if transcript.provider != "intron":
            raise PermanentError(
                ErrorType.INCOMPATIBLE_PROVIDERS,
                f"intron summarizer needs the intron transcriber, not {transcript.provider}",
            )
        markdown = post_processing_output(transcript, source)
        if markdown is None or not markdown.strip():
            raise PermanentError(
                ErrorType.MALFORMED_RESPONSE,
                f"{STATUS_ENDPOINT}: the transcript came without its {source} output",
            )
        return Summary(provider="intron", output_format="SUMMARY", text=markdown)


def _upload_url(mode: str, url: str | None) -> str | None:
    """The https URL Intron fetches itself, or None to send the file: upload_mode 'url' insists
    on a URL, 'auto' uses one when there is one."""
    has_https_url = url is not None and url.lower().startswith("https://")
    if mode == "url" and not has_https_url:
        raise PermanentError(
            ErrorType.INVALID_MESSAGE, "intron upload_mode 'url' needs an https audio url"
        )
    return url if has_https_url and mode in ("url", "auto") else None


async def _upload_form(
    job: JobRequest, audio: PreparedAudio, url: str | None
) -> tuple[aiohttp.FormData, BinaryIO | None]:
    """The upload's form, and the open file it streams (the caller closes it)."""
    options = job.intron
    # The vendor documents multipart form-data (curl --form), also when no file is attached.
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("audio_file_name", audio.file_name)
    blob = None
    if url is not None:
        form.add_field("audio_file_url", url)
    else:
        blob = await asyncio.to_thread(audio.path.open, "rb")
        form.add_field(
            "audio_file_blob", blob, filename=audio.file_name, content_type=audio.mime_type
        )
    form.add_field("use_diarization", "TRUE" if options.use_diarization else "FALSE")
    form.add_field("use_category", options.category)
    # With the output named by summarySource when Intron writes the summary: without it,
    # the paid transcription would come back with nothing to summarize from.
    for flag in job.intron_post_processing:
        form.add_field(flag, "TRUE")
    return form, blob
