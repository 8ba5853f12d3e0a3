"""Long recordings through the stages, one chunk per message (docs/architecture.md, "Long
recordings").

A recording over its transcriber's chunk limit (worker/chunking.py) is transcribed chunk after
chunk: the transcribe message uploads chunk 0 and hands its handle to a poll message; the poll
message that finds chunk i transcribed stitches it onto the transcript so far and sends a
transcribe message for chunk i+1 (the local model, synchronous, goes from one transcribe message
to the next); the last chunk's transcript, stitched, goes to summarize as any transcript does.

- No message is held for the whole recording, only for one chunk's upload or transcription.
- A chunk that fails retries alone: its message is retried, the chunks before it are done and
  carried, stitched, in the message (ChunkProgress.so_far).
- Each chunk's upload is a vendor call of its own, so the rate limiter counts each one.
- Paid once: each chunk's submission intent and handle live in the ledger under
  "<jobId>#<index>", each chunk's done-mark and claim under ledger_key(jobId, index) (the x-chunk
  header tells the delivery which); every message re-derives the same chunks (the split is
  deterministic), so a redelivered or replayed message finds what was already paid for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from schemas.errors import ErrorType
from schemas.jobs import (
    ChunkProgress,
    ChunkState,
    JobRequest,
    PollState,
    Transcript,
)
from worker.chunking import ChunkLimit, ChunkMaker, Piece, over_limit, stitch
from worker.codec import StageCodec
from worker.errors import PermanentError
from worker.handles import HandleSigner
from worker.ledger import JobLedger, LedgerUnavailable, SubmissionJournal
from worker.media import MediaFetcher
from worker.metrics import Metrics
from worker.outcomes import Advance, DeliveryContext
from worker.providers.base import PreparedAudio, Transcribed, TranscriptionProvider
from worker.providers.registry import ProviderRegistry
from worker.roles import UNLABELLED, labelled_by_role, speaker_lines
from worker.settings import RetrySettings

log = structlog.get_logger("scribe.chunks")


def roles_within_chunk(transcript: Transcript) -> Transcript:
    """A vendor chunk's speakers relabelled by role within the chunk (SPEAKER_00 the clinician,
    SPEAKER_01 the patient, ...), with their roles set, and its text rewritten in those labels.

    A diarizer numbers the speakers of each upload on its own: Intron's SPEAKER_00 of one chunk
    may be the patient and of the next the clinician. Stitched as they come, the two would be
    one speaker and get one role for the whole recording. The local engine labels its chunks
    this way already (its segments arrive with roles set): those are left alone. Pure CPU work:
    run it off the event loop."""
    segments = transcript.segments
    labelled = [s for s in segments if s.speaker]
    if not labelled or all(s.role is not None for s in segments):
        return transcript
    renamed = labelled_by_role([(s.speaker or UNLABELLED, s.text) for s in segments])
    relabelled = tuple(
        s.model_copy(update={"speaker": label, "role": s.role or role})
        for s, (label, role) in zip(segments, renamed, strict=True)
    )
    return transcript.model_copy(
        update={"segments": relabelled, "text": speaker_lines(relabelled) or transcript.text}
    )


def chunk_handle_key(job_id: str, index: int) -> str:
    """Where chunk `index`'s submission intent and handle live in the ledger. Never the bare
    jobId: a redelivered job must not take its first chunk's handle for the whole recording's."""
    return f"{job_id}#{index}"


def check_chunk(progress: ChunkProgress | None, header_chunk: int) -> None:
    """The x-chunk header (which keys the ledger) must name the chunk the body is about."""
    expected = progress.index if progress is not None else 0
    if progress is not None and not (
        0 <= progress.index < progress.count and 0 <= progress.start_s <= progress.end_s
    ):
        raise PermanentError(ErrorType.INCONSISTENT_INPUT, "the chunk's position is impossible")
    if expected != header_chunk:
        raise PermanentError(
            ErrorType.INCONSISTENT_INPUT,
            f"the message is about chunk {expected + 1} but its x-chunk header says {header_chunk}",
        )


@dataclass(frozen=True)
class Stitched:
    """The last chunk is transcribed: the whole recording's transcript, for the stage to finish
    as it finishes any transcript (no words: noSpeech; speakers and roles; then summarize)."""

    job: JobRequest
    transcript: Transcript
    provider: str


Step = Advance | Stitched


@dataclass(frozen=True)
class ChunkedTranscription:
    providers: ProviderRegistry
    media: MediaFetcher
    ledger: JobLedger
    retry: RetrySettings
    codec: StageCodec
    handles: HandleSigner
    maker: ChunkMaker
    limits: Mapping[str, ChunkLimit]
    # Counts what a chunk's delivery did about a submission an earlier one left unfinished.
    metrics: Metrics | None = None

    def splits(self, audio: PreparedAudio, transcriber: str) -> bool:
        limit = self.limits.get(transcriber)
        return limit is not None and over_limit(audio, limit)

    async def transcribe_first(
        self,
        job: JobRequest,
        provider: TranscriptionProvider,
        audio: PreparedAudio,
        ctx: DeliveryContext,
    ) -> Step:
        return await self._transcribe(job, provider, audio, None, ctx)

    async def transcribe_next(self, body: bytes, ctx: DeliveryContext) -> Step:
        """A transcribe message for a chunk after the first."""
        message = self.codec.decode(ChunkState, body)
        job, progress = message.job, message.state.chunks
        check_chunk(progress, ctx.chunk)
        self.providers.admit(job)
        provider = self.providers.transcriber(job.providers.transcriber)
        async with self.media.audio(job.audio) as audio:
            return await self._transcribe(job, provider, audio, progress, ctx)

    async def _transcribe(
        self,
        job: JobRequest,
        provider: TranscriptionProvider,
        audio: PreparedAudio,
        progress: ChunkProgress | None,
        ctx: DeliveryContext,
    ) -> Step:
        index = progress.index if progress is not None else 0
        limit = self.limits[provider.name]
        job_id = str(job.job_id)
        key = chunk_handle_key(job_id, index)
        async with self.maker.piece(audio, limit, index) as piece:
            here = _here(piece, progress)
            handle = await self.ledger.transcription_handle(key)
            if handle is None:
                journal = SubmissionJournal(self.ledger, key, replays=ctx.replays)
                result = await provider.submit(_uploading_files(job), piece.audio, journal)
                for action in journal.actions:
                    log.warning(
                        "transcribe.unfinished_submission",
                        job_id=job_id,
                        stage="transcribe",
                        chunk=index,
                        provider=provider.name,
                        outcome=action,
                    )
                    if self.metrics is not None:
                        self.metrics.submission_redeliveries.labels(provider.name, action).inc()
                if isinstance(result, Transcribed):
                    return self.transcribed(job, here, result.transcript, provider.name)
                handle = result.handle
                try:
                    await self.ledger.record_transcription_handle(key, handle)
                except LedgerUnavailable:
                    log.warning(
                        "ledger.write_failed", job_id=job_id, stage="transcribe", chunk=index
                    )
        signed = self.handles.sign(job_id, handle)
        poll = self.codec.encode(job, PollState(transcription=signed, chunks=here))
        return Advance(
            "poll", poll, provider.name, delay_ms=self.retry.poll_interval_ms, chunk=index
        )

    def transcribed(
        self, job: JobRequest, here: ChunkProgress, transcript: Transcript, provider: str
    ) -> Step:
        """Chunk `here` is transcribed: on to the next chunk, or, after the last, the whole."""
        stitched = stitch(here.so_far, transcript, here.start_s, here.end_s)
        if here.index + 1 < here.count:
            following = ChunkProgress(
                index=here.index + 1,
                count=here.count,
                start_s=here.end_s,
                end_s=here.end_s,
                so_far=stitched,
            )
            body = self.codec.encode(job, ChunkState(chunks=following))
            return Advance("transcribe", body, provider, chunk=following.index)
        return Stitched(job, stitched, provider)


def _here(piece: Piece, progress: ChunkProgress | None) -> ChunkProgress:
    """This chunk's progress, checked against what the message before it derived: a recording
    that no longer splits the same way (its file replaced under the same name) is refused."""
    if progress is not None and (
        piece.count != progress.count or abs(piece.span.start_s - progress.start_s) > 1e-6
    ):
        raise PermanentError(
            ErrorType.INCONSISTENT_INPUT,
            "the recording no longer splits into the chunks its earlier chunks were cut from",
        )
    return ChunkProgress(
        index=piece.span.index,
        count=piece.count,
        start_s=piece.span.start_s,
        end_s=piece.span.end_s,
        so_far=progress.so_far if progress is not None else None,
    )


def _uploading_files(job: JobRequest) -> JobRequest:
    """A chunk is a file of the worker's: Intron gets it uploaded, never the job's own URL."""
    if job.intron.upload_mode == "file":
        return job
    intron = job.intron.model_copy(update={"upload_mode": "file"})
    return job.model_copy(update={"intron": intron})
