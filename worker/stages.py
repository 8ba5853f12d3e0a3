"""The four stage handlers. Each parses its message, calls one provider, and returns an Outcome;
worker/delivery.py alone decides what to publish, ack or dead-letter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from schemas.base import describe_validation_error
from schemas.errors import ErrorType
from schemas.events import JobCompleted
from schemas.jobs import (
    ClinicalNoteField,
    JobRequest,
    NoteMessage,
    PollMessage,
    SummarizeMessage,
    Summary,
    Transcript,
)
from worker.constants import Stage
from worker.delivery import (
    Advance,
    Complete,
    DeliveryContext,
    Handler,
    Outcome,
    PollLater,
    stable_event_id,
)
from worker.errors import InvalidMessage, PermanentError
from worker.ledger import JobLedger, LedgerUnavailable
from worker.media import MediaFetcher
from worker.providers.base import Transcribed
from worker.providers.registry import ProviderRegistry
from worker.settings import RetrySettings

M = TypeVar("M", bound=BaseModel)
log = structlog.get_logger("scribe.stages")

MAX_BODY_BYTES = 32 * 1024 * 1024


def parse_message(model: type[M], body: bytes) -> M:
    """The message as model, or an error that says what is wrong without quoting the body.

    Valid messages take pydantic's JSON parser in one pass; only a failure pays for the
    step-by-step diagnosis below.
    """
    if len(body) > MAX_BODY_BYTES:
        raise InvalidMessage(f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(body)
    except ValidationError:
        pass  # diagnosed below, in the order a sender would fix things
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage("the body is not valid UTF-8 JSON") from exc
    if not isinstance(data, dict):
        raise InvalidMessage("the body is not a JSON object")
    version = data.get("schemaVersion", 1)
    if type(version) is not int or version != 1:
        shown = version if isinstance(version, int) and not isinstance(version, bool) else "?"
        raise PermanentError(
            ErrorType.UNSUPPORTED_SCHEMA_VERSION, f"schemaVersion {shown} is not supported (use 1)"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(describe_validation_error(exc)) from exc


def completed_event(
    job: JobRequest,
    transcript: Transcript,
    summary: Summary,
    note: tuple[ClinicalNoteField, ...] | None,
) -> JobCompleted:
    return JobCompleted(
        event_id=stable_event_id(str(job.job_id), "completed"),
        job_id=job.job_id,
        consultation_session_id=job.session_id,
        occurred_at=datetime.now(UTC),
        transcript=transcript,
        summary=summary,
        clinical_note=note,
    )


@dataclass(frozen=True)
class Stages:
    providers: ProviderRegistry
    media: MediaFetcher
    ledger: JobLedger
    retry: RetrySettings

    def handler(self, stage: Stage) -> Handler:
        handlers: dict[Stage, Handler] = {
            "transcribe": self.transcribe,
            "poll": self.poll,
            "summarize": self.summarize,
            "note": self.note,
        }
        return handlers[stage]

    async def transcribe(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        job = parse_message(JobRequest, body)
        provider = self.providers.transcriber(job.providers.transcriber)
        job_id = str(job.job_id)
        handle = await self.ledger.transcription_handle(job_id)
        if handle is None:
            async with self.media.audio(job.audio) as audio:
                result = await provider.submit(job, audio)
            if isinstance(result, Transcribed):
                message = SummarizeMessage(job_id=job.job_id, job=job, transcript=result.transcript)
                return Advance("summarize", message.to_wire(), provider.name)
            handle = result.handle
            # Recorded before the ack: a redelivery polls this handle instead of paying again.
            # If Redis is down now, go on: retrying would certainly pay for a second upload.
            try:
                await self.ledger.record_transcription_handle(job_id, handle)
            except LedgerUnavailable:
                log.warning("ledger.write_failed", job_id=job_id, stage="transcribe")
        poll = PollMessage(job_id=job.job_id, job=job, transcription=handle)
        return Advance("poll", poll.to_wire(), provider.name, delay_ms=self.retry.poll_interval_ms)

    async def poll(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        message = parse_message(PollMessage, body)
        provider = self.providers.transcriber(message.transcription.provider)
        transcript = await provider.status(message.job, message.transcription)
        if transcript is None:
            waited_s = (datetime.now(UTC) - message.transcription.submitted_at).total_seconds()
            if waited_s >= self.retry.poll_deadline_s:
                raise PermanentError(
                    ErrorType.TRANSCRIPTION_TIMED_OUT,
                    f"still pending after {ctx.polls + 1} polls over {waited_s:.0f} s",
                )
            return PollLater(provider.name)
        summarize = SummarizeMessage(job_id=message.job_id, job=message.job, transcript=transcript)
        return Advance("summarize", summarize.to_wire(), provider.name)

    async def summarize(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        message = parse_message(SummarizeMessage, body)
        job = message.job
        provider = self.providers.summarizer(job.providers.summarizer)
        summary = await provider.summarize(job, message.transcript)
        if job.template is None:
            return Complete(completed_event(job, message.transcript, summary, None), provider.name)
        note = NoteMessage(
            job_id=job.job_id, job=job, transcript=message.transcript, summary=summary
        )
        return Advance("note", note.to_wire(), provider.name)

    async def note(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        message = parse_message(NoteMessage, body)
        job = message.job
        if job.template is None:
            raise PermanentError(ErrorType.TEMPLATE_IS_REQUIRED, "the job has no template")
        writer = self.providers.note_writer(job.providers.note)
        documents = [await self.media.document(ref) for ref in job.documents]
        if documents:
            await writer.attach_documents(job, documents)
        fields = await writer.write_note(job, job.template, message.transcript, message.summary)
        event = completed_event(job, message.transcript, message.summary, fields)
        return Complete(event, writer.name)
