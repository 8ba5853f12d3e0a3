"""The four stage handlers. Each parses its message, calls one provider, and returns an Outcome;
worker/delivery.py alone decides what to publish, ack or dead-letter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from schemas.errors import ErrorType
from schemas.events import JobCompleted
from schemas.jobs import (
    ClinicalNoteField,
    JobRequest,
    NoteState,
    PollState,
    SummarizeState,
    Summary,
    Transcript,
    TranscriptionHandle,
)
from worker.callbacks import CallbackTicket
from worker.chunk_flow import ChunkedTranscription, Step, check_chunk, roles_within_chunk
from worker.codec import StageCodec
from worker.constants import Stage
from worker.errors import PermanentError
from worker.evidence import note_with_evidence, summary_with_evidence
from worker.fhir import note_bundle
from worker.handles import HandleSigner
from worker.ledger import JobLedger, LedgerUnavailable, SubmissionJournal
from worker.media import MediaFetcher
from worker.metrics import Metrics
from worker.outcomes import (
    Advance,
    Complete,
    DeliveryContext,
    Handler,
    Outcome,
    PollLater,
    stable_event_id,
)
from worker.providers.base import Transcribed
from worker.providers.registry import ProviderRegistry
from worker.roles import with_roles_in_thread
from worker.settings import RetrySettings

log = structlog.get_logger("scribe.stages")


def completed_event(
    job: JobRequest,
    transcript: Transcript,
    summary: Summary,
    note: tuple[ClinicalNoteField, ...] | None,
) -> JobCompleted:
    occurred_at = datetime.now(UTC)
    # A note also goes out as a FHIR R4 Bundle (worker/fhir.py), dated by the event.
    fhir = None
    if note is not None:
        fhir = note_bundle(job, transcript.provider, summary.provider, note, occurred_at)
    return JobCompleted(
        event_id=stable_event_id(str(job.job_id), "completed"),
        job_id=job.job_id,
        consultation_session_id=job.session_id,
        occurred_at=occurred_at,
        transcript=transcript,
        summary=summary,
        clinical_note=note,
        fhir=fhir,
    )


def spoken(transcript: Transcript) -> Transcript:
    """The transcript, if it holds a word; else noSpeech. A recording of silence would otherwise
    pay for a summary and a note of nothing and complete as if it were a consultation. With
    segments, they decide (Intron's diarized "SPEAKER_01:" lines carry a label and no word)."""
    words = transcript.text.strip() and (
        not transcript.segments or any(s.text.strip() for s in transcript.segments)
    )
    if not words:
        raise PermanentError(
            ErrorType.NO_SPEECH, f"the {transcript.provider} transcript has no words"
        )
    return transcript


@dataclass(frozen=True)
class Stages:
    providers: ProviderRegistry
    media: MediaFetcher
    ledger: JobLedger
    retry: RetrySettings
    codec: StageCodec
    handles: HandleSigner
    # Counts what transcribe deliveries did about submissions an earlier one left unfinished.
    metrics: Metrics | None = None
    # Long recordings, one chunk per message (worker/chunk_flow.py); None: never split.
    chunks: ChunkedTranscription | None = None

    def handler(self, stage: Stage) -> Handler:
        handlers: dict[Stage, Handler] = {
            "transcribe": self.transcribe,
            "poll": self.poll,
            "summarize": self.summarize,
            "note": self.note,
        }
        return handlers[stage]

    async def transcribe(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        if ctx.chunk:
            return await self._after_chunk(await self._chunked().transcribe_next(body, ctx))
        job = self.codec.decode_job(body)
        # The door: a job this worker cannot finish is refused before the audio is read and
        # before any vendor call (incompatibleProviders, providerNotConfigured, templateTooLarge).
        self.providers.admit(job)
        provider = self.providers.transcriber(job.providers.transcriber)
        job_id = str(job.job_id)
        handle = await self.ledger.transcription_handle(job_id)
        if handle is None:
            # The provider writes its paid submission here before making it, and resumes one an
            # earlier delivery of this job left unfinished (killed before its handle was written).
            journal = SubmissionJournal(self.ledger, job_id, replays=ctx.replays)
            try:
                async with self.media.audio(job.audio, provider.name) as audio:
                    if self.chunks is not None and self.chunks.splits(audio, provider.name):
                        step = await self.chunks.transcribe_first(job, provider, audio, ctx)
                        return await self._after_chunk(step)
                    # Over the transcriber's limit: chunked (worker/chunking.py), else refused.
                    self.media.require_one_upload(audio, provider.name)
                    result = await provider.submit(job, audio, journal)
            finally:
                self._count_redeliveries(job_id, provider.name, journal)
            if isinstance(result, Transcribed):
                # Every segment gets a speaker and a role (worker/roles.py), whoever transcribed.
                transcript = await with_roles_in_thread(spoken(result.transcript))
                summarize = SummarizeState(transcript=transcript)
                return Advance("summarize", self.codec.encode(job, summarize), provider.name)
            handle = result.handle
            if result.callback_nonce is not None:
                await self._record_callback(job, handle, result.callback_nonce, ctx)
            # Recorded before the ack: a redelivery polls this handle instead of paying again.
            # If Redis is down now, go on: retrying would certainly pay for a second upload.
            try:
                await self.ledger.record_transcription_handle(job_id, handle)
            except LedgerUnavailable:
                log.warning("ledger.write_failed", job_id=job_id, stage="transcribe")
        # Signed for this job: the poll stage refuses any handle it did not sign (untrustedHandle).
        signed = self.handles.sign(job_id, handle)
        poll = self.codec.encode(job, PollState(transcription=signed))
        return Advance("poll", poll, provider.name, delay_ms=self.retry.poll_interval_ms)

    async def _record_callback(
        self, job: JobRequest, handle: TranscriptionHandle, nonce: str, ctx: DeliveryContext
    ) -> None:
        """The ticket the vendor's callback redeems (worker/callbacks.py): the very poll message
        this stage is about to send through the delay tier, so that the copy published early
        and the one that arrives later are the same message, and the second is a duplicate.
        Best effort: without it the callback is refused (404) and polling finds the result."""
        job_id = str(job.job_id)
        poll = self.codec.encode(job, PollState(transcription=self.handles.sign(job_id, handle)))
        ticket = CallbackTicket(
            nonce=nonce, poll_body=poll.decode("utf-8"), traceparent=ctx.traceparent
        )
        try:
            await self.ledger.record_callback_ticket(
                job_id, ticket.model_dump_json(), self.retry.poll_deadline_s
            )
        except LedgerUnavailable:
            log.warning("ledger.write_failed", job_id=job_id, stage="transcribe")

    def _count_redeliveries(self, job_id: str, provider: str, journal: SubmissionJournal) -> None:
        for action in journal.actions:
            log.warning(
                "transcribe.unfinished_submission",
                job_id=job_id,
                stage="transcribe",
                provider=provider,
                outcome=action,
            )
            if self.metrics is not None:
                self.metrics.submission_redeliveries.labels(provider, action).inc()

    async def _after_chunk(self, step: Step) -> Outcome:
        """A chunk's outcome; once the last is in, its stitched transcript goes on as any does."""
        if isinstance(step, Advance):
            return step
        transcript = await with_roles_in_thread(spoken(step.transcript))
        summarize = SummarizeState(transcript=transcript)
        return Advance("summarize", self.codec.encode(step.job, summarize), step.provider)

    def _chunked(self) -> ChunkedTranscription:
        if self.chunks is None:
            raise PermanentError(
                ErrorType.INCONSISTENT_INPUT, "a chunk's message, and this worker splits nothing"
            )
        return self.chunks

    async def poll(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        message = self.codec.decode(PollState, body)
        job, handle = message.job, message.state.transcription
        check_chunk(message.state.chunks, ctx.chunk)
        # Before any vendor call: the handle's syntax, and that we signed it for this job.
        self.handles.verify(str(job.job_id), handle)
        provider = self.providers.transcriber(handle.provider)
        transcript = await provider.status(job, handle)
        if transcript is None:
            # A future submittedAt (a replica's clock ahead) counts as now. Each poll came back
            # through a delay queue at least min(interval, longest tier) later, so the polls made
            # so far bound the wait from below too: no submittedAt holds the deadline off.
            now = datetime.now(UTC)
            since_submitted_s = (now - min(handle.submitted_at, now)).total_seconds()
            cycle_s = min(self.retry.poll_interval_ms, max(self.retry.delay_tiers_ms)) / 1000
            waited_s = max(since_submitted_s, ctx.polls * cycle_s)
            if waited_s >= self.retry.poll_deadline_s:
                raise PermanentError(
                    ErrorType.TRANSCRIPTION_TIMED_OUT,
                    f"still pending after {ctx.polls + 1} polls over {waited_s:.0f} s",
                )
            return PollLater(provider.name)
        if message.state.chunks is not None:
            transcript = await asyncio.to_thread(roles_within_chunk, transcript)
            step = self._chunked().transcribed(job, message.state.chunks, transcript, provider.name)
            return await self._after_chunk(step)
        transcript = await with_roles_in_thread(spoken(transcript))
        summarize = self.codec.encode(job, SummarizeState(transcript=transcript))
        return Advance("summarize", summarize, provider.name)

    async def summarize(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        message = self.codec.decode(SummarizeState, body)
        job, transcript = message.job, message.state.transcript
        provider = self.providers.summarizer(job.providers.summarizer)
        summary = await provider.summarize(job, transcript)
        # Evidence for a provider that gives none (the local one records its own): aligned in a
        # thread, bounded by worker.evidence's caps.
        summary = await asyncio.to_thread(summary_with_evidence, summary, transcript)
        if job.template is None:
            self.codec.forget(job.job_id)
            return Complete(completed_event(job, transcript, summary, None), provider.name)
        note = self.codec.encode(job, NoteState(transcript=transcript, summary=summary))
        return Advance("note", note, provider.name)

    async def note(self, body: bytes, ctx: DeliveryContext) -> Outcome:
        message = self.codec.decode(NoteState, body)
        job, state = message.job, message.state
        if job.template is None:
            raise PermanentError(ErrorType.TEMPLATE_IS_REQUIRED, "the job has no template")
        writer = self.providers.note_writer(job.providers.note)
        documents = [await self.media.document(ref) for ref in job.documents]
        fields = await writer.write_note(
            job, job.template, state.transcript, state.summary, documents
        )
        fields = await asyncio.to_thread(note_with_evidence, fields, state.transcript)
        self.codec.forget(job.job_id)
        return Complete(completed_event(job, state.transcript, state.summary, fields), writer.name)
