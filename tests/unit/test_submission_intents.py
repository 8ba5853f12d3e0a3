"""Paid submissions are written down before they are made (issue 13, item 4): the ledger's
submission intents, Invox resuming from a recorded requestId and presigned URL, Intron's explicit
redelivery policy, and the transcribe stage counting what a redelivery did."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aioresponses import aioresponses
from yarl import URL

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, TranscriptionHandle
from tests.harness import REDIS_URL, write_wav
from worker.codec import StageCodec
from worker.errors import PermanentError, TransientError
from worker.handles import HandleSigner
from worker.ledger import (
    LedgerUnavailable,
    MemoryLedger,
    RedisLedger,
    SubmissionIntent,
    SubmissionJournal,
)
from worker.media import FetchPolicy, MediaFetcher
from worker.metrics import Metrics
from worker.outcomes import Advance, DeliveryContext
from worker.providers.base import PreparedAudio, Submitted
from worker.providers.factory import build_registry
from worker.providers.http import VendorHttp
from worker.providers.intron import IntronTranscriber
from worker.providers.invox import InvoxClient, InvoxTranscriber
from worker.providers.invox_auth import InvoxTokenSource
from worker.settings import IntronSettings, InvoxSettings, Secret, Settings
from worker.stages import Stages

JOB_ID = "0b7b3f0e-2a51-4d7c-9a4e-6b1f8d1c2e3f"
INVOX = "https://api.invox.test"
PRESIGNED = f"{INVOX}/api/v1/generate-presigned-url"
TRANSCRIPTION = f"{INVOX}/api/v1/get-transcription"
SIGNED_URL = "https://bucket.storage.test/audio/req-1?X-Amz-Signature=MARKER-SIG"
NEW_SIGNED_URL = "https://bucket.storage.test/audio/req-2?X-Amz-Signature=MARKER-SIG2"
INTRON = "https://infer.intron.test"
UPLOAD = f"{INTRON}/file/v1/upload"
AUDIO_URL = "https://audio.test/visit.wav?sig=MARKER-AUDIO-SIG"


@pytest.fixture
async def http() -> AsyncIterator[VendorHttp]:
    async with aiohttp.ClientSession() as session:
        yield VendorHttp(session, timeout_s=5.0)


@pytest.fixture
def audio(tmp_path: Path) -> PreparedAudio:
    path = tmp_path / "visit.wav"
    path.write_bytes(b"RIFF" * 64)
    return PreparedAudio(
        path=path,
        size_bytes=256,
        duration_s=5.0,
        mime_type="audio/wav",
        file_name="visit.wav",
        source_url=AUDIO_URL,
    )


def job(**fields: object) -> JobRequest:
    return JobRequest.model_validate({"jobId": JOB_ID, "audio": {"url": AUDIO_URL}, **fields})


def invox(http: VendorHttp) -> InvoxTranscriber:
    settings = InvoxSettings(
        base_url=INVOX,
        api_version="2026-03-01",
        access_token=Secret("static-token"),
        token_url=None,
        app_id=None,
        app_key=None,
    )
    return InvoxTranscriber(InvoxClient(settings, http, InvoxTokenSource(settings, http)))


def intron(http: VendorHttp, redelivery: str = "reupload") -> IntronTranscriber:
    settings = IntronSettings(
        base_url=INTRON,
        api_key=Secret("intron-key"),
        upload_path="/file/v1/upload",
        status_path="/file/v1/status/{file_id}",
        redelivery=redelivery,
    )
    return IntronTranscriber(settings, http)


def count(mocked: aioresponses, method: str, url: str) -> int:
    return len(mocked.requests.get((method, URL(url)), []))


def invox_intent(started_at: datetime | None = None) -> SubmissionIntent:
    return SubmissionIntent(
        provider="invox",
        started_at=started_at or datetime.now(UTC),
        request_id="req-1",
        upload_url=SIGNED_URL,
    )


# ------------------------------------------------------------------------------------ ledger


async def test_memory_ledger_keeps_an_intent_until_the_handle_supersedes_it() -> None:
    ledger = MemoryLedger()
    assert await ledger.submission_intent("j1") is None
    await ledger.record_submission_intent("j1", invox_intent())
    found = await ledger.submission_intent("j1")
    assert found is not None
    assert (found.request_id, found.upload_url) == ("req-1", SIGNED_URL)
    handle = TranscriptionHandle(provider="invox", handle="req-1", submitted_at=datetime.now(UTC))
    await ledger.record_transcription_handle("j1", handle)
    assert await ledger.submission_intent("j1") is None
    await ledger.record_submission_intent("j2", invox_intent())
    await ledger.clear_submission_intent("j2")
    assert await ledger.submission_intent("j2") is None


def test_an_intent_never_prints_its_presigned_url() -> None:
    assert "MARKER-SIG" not in repr(invox_intent())
    assert "MARKER-SIG" not in str(invox_intent())


async def test_a_journal_that_cannot_write_stops_the_submission() -> None:
    class DownLedger(MemoryLedger):
        async def record_submission_intent(self, job_id: str, intent: SubmissionIntent) -> None:
            raise LedgerUnavailable("ConnectionError")

    journal = SubmissionJournal(DownLedger(), JOB_ID)
    with pytest.raises(LedgerUnavailable):
        await journal.record(invox_intent())


# ------------------------------------------------------------------------------------- Invox


async def test_invox_writes_request_id_and_url_before_the_put(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    """A worker dying during the PUT leaves what a redelivery needs to resume."""
    ledger = MemoryLedger()
    mocked.post(PRESIGNED, payload={"presignedUrl": SIGNED_URL, "requestId": "req-1"})
    mocked.put(SIGNED_URL, exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(TransientError):
        await invox(http).submit(job(), audio, SubmissionJournal(ledger, JOB_ID))
    intent = await ledger.submission_intent(JOB_ID)
    assert intent is not None
    assert (intent.provider, intent.request_id, intent.upload_url) == ("invox", "req-1", SIGNED_URL)


async def test_invox_nothing_is_put_when_the_intent_cannot_be_written(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    class DownLedger(MemoryLedger):
        async def record_submission_intent(self, job_id: str, intent: SubmissionIntent) -> None:
            raise LedgerUnavailable("ConnectionError")

    mocked.post(PRESIGNED, payload={"presignedUrl": SIGNED_URL, "requestId": "req-1"})
    with pytest.raises(LedgerUnavailable):
        await invox(http).submit(job(), audio, SubmissionJournal(DownLedger(), JOB_ID))
    assert count(mocked, "PUT", SIGNED_URL) == 0


@pytest.mark.parametrize("status", ["PENDING", "COMPLETED", "ERROR"])
async def test_invox_redelivery_resumes_a_request_that_has_its_audio(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio, status: str
) -> None:
    """The PUT landed before the crash: no presign, no PUT, the recorded requestId is polled."""
    ledger = MemoryLedger()
    started = datetime.now(UTC) - timedelta(minutes=3)
    await ledger.record_submission_intent(JOB_ID, invox_intent(started))
    mocked.post(TRANSCRIPTION, payload={"transcription": [], "transcriptionStatus": status})
    journal = SubmissionJournal(ledger, JOB_ID)
    result = await invox(http).submit(job(), audio, journal)
    assert isinstance(result, Submitted)
    assert (result.handle.handle, result.handle.submitted_at) == ("req-1", started)
    assert count(mocked, "POST", PRESIGNED) == 0
    assert count(mocked, "PUT", SIGNED_URL) == 0
    assert journal.actions == ["resumed"]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(404, "transcriptionNotFound"), (400, "inconsistentInput")],
)
async def test_invox_redelivery_puts_again_to_the_same_request_only_when_invox_has_no_audio(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio, status: int, error_type: str
) -> None:
    ledger = MemoryLedger()
    await ledger.record_submission_intent(JOB_ID, invox_intent())
    body = {"message": "no such request", "errorType": error_type}
    mocked.post(TRANSCRIPTION, status=status, payload=body)
    mocked.put(SIGNED_URL, status=200)
    journal = SubmissionJournal(ledger, JOB_ID)
    result = await invox(http).submit(job(), audio, journal)
    assert isinstance(result, Submitted)
    assert result.handle.handle == "req-1"  # the same request: one transcription
    assert count(mocked, "POST", PRESIGNED) == 0
    assert count(mocked, "PUT", SIGNED_URL) == 1
    assert journal.actions == ["reput"]


async def test_invox_a_refused_recorded_url_starts_afresh(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    """An expired presigned URL (403) took nothing, so a new request is made."""
    ledger = MemoryLedger()
    await ledger.record_submission_intent(JOB_ID, invox_intent())
    mocked.post(TRANSCRIPTION, status=404, payload={"errorType": "transcriptionNotFound"})
    mocked.put(SIGNED_URL, status=403)
    mocked.post(PRESIGNED, payload={"presignedUrl": NEW_SIGNED_URL, "requestId": "req-2"})
    mocked.put(NEW_SIGNED_URL, status=200)
    result = await invox(http).submit(job(), audio, SubmissionJournal(ledger, JOB_ID))
    assert isinstance(result, Submitted)
    assert result.handle.handle == "req-2"
    assert count(mocked, "POST", PRESIGNED) == 1


async def test_invox_a_failing_status_check_keeps_the_intent(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    ledger = MemoryLedger()
    await ledger.record_submission_intent(JOB_ID, invox_intent())
    mocked.post(TRANSCRIPTION, status=503)
    with pytest.raises(TransientError):
        await invox(http).submit(job(), audio, SubmissionJournal(ledger, JOB_ID))
    assert count(mocked, "POST", PRESIGNED) == 0
    assert await ledger.submission_intent(JOB_ID) is not None


# ------------------------------------------------------------------------------------ Intron


def url_job() -> JobRequest:
    return job(intron={"uploadMode": "url"})


async def test_intron_writes_an_intent_before_the_upload_and_keeps_it_when_unsure(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    ledger = MemoryLedger()
    mocked.post(UPLOAD, exception=TimeoutError())
    with pytest.raises(TransientError) as info:
        await intron(http).submit(url_job(), audio, SubmissionJournal(ledger, JOB_ID))
    assert info.value.error_type == ErrorType.UPSTREAM_TIMEOUT
    intent = await ledger.submission_intent(JOB_ID)
    assert intent is not None
    assert (intent.provider, intent.uploads) == ("intron", 1)


@pytest.mark.parametrize("status", [503, 429, 400])
async def test_intron_an_error_answer_clears_the_intent(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio, status: int
) -> None:
    """Intron answered no: no file_id was issued, so the next delivery uploads without doubt."""
    ledger = MemoryLedger()
    mocked.post(UPLOAD, status=status, payload={"data": {}, "message": "no", "status": "Error"})
    with pytest.raises((TransientError, PermanentError)):
        await intron(http).submit(url_job(), audio, SubmissionJournal(ledger, JOB_ID))
    assert await ledger.submission_intent(JOB_ID) is None


async def test_intron_reupload_policy_uploads_again_and_says_so(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    ledger = MemoryLedger()
    await ledger.record_submission_intent(
        JOB_ID, SubmissionIntent(provider="intron", started_at=datetime.now(UTC))
    )
    mocked.post(UPLOAD, payload={"data": {"file_id": "file-2"}, "status": "Ok"})
    journal = SubmissionJournal(ledger, JOB_ID)
    result = await intron(http, "reupload").submit(url_job(), audio, journal)
    assert isinstance(result, Submitted)
    assert journal.actions == ["reupload"]
    intent = await ledger.submission_intent(JOB_ID)
    assert intent is not None
    assert intent.uploads == 2


async def test_intron_dead_letter_policy_leaves_the_choice_to_a_person(
    http: VendorHttp, mocked: aioresponses, audio: PreparedAudio
) -> None:
    ledger = MemoryLedger()
    await ledger.record_submission_intent(
        JOB_ID, SubmissionIntent(provider="intron", started_at=datetime.now(UTC))
    )
    journal = SubmissionJournal(ledger, JOB_ID)
    with pytest.raises(PermanentError) as info:
        await intron(http, "dead-letter").submit(url_job(), audio, journal)
    assert info.value.error_type == ErrorType.UPLOAD_OUTCOME_UNKNOWN
    assert "MARKER" not in info.value.message
    assert count(mocked, "POST", UPLOAD) == 0
    assert journal.actions == ["deadLetter"]
    # The person's replay (x-replays one higher) is the decision: it uploads.
    mocked.post(UPLOAD, payload={"data": {"file_id": "file-2"}, "status": "Ok"})
    replayed = SubmissionJournal(ledger, JOB_ID, replays=1)
    result = await intron(http, "dead-letter").submit(url_job(), audio, replayed)
    assert isinstance(result, Submitted)
    assert replayed.actions == ["replayed"]
    assert count(mocked, "POST", UPLOAD) == 1


# ----------------------------------------------------------------------- the transcribe stage


async def test_the_transcribe_stage_counts_what_a_redelivery_did(
    mocked: aioresponses, tmp_path: Path
) -> None:
    """Each action on an unfinished submission is one scribe_submission_redeliveries_total."""
    settings = Settings.from_env(
        {"SCRIBE_INTRON_BASE_URL": INTRON, "SCRIBE_INTRON_API_KEY": "intron-key"}
    )
    wav = write_wav(tmp_path / "visit.wav")
    the_job = JobRequest.model_validate(
        {
            "jobId": JOB_ID,
            "audio": {"path": str(wav), "mimeType": "audio/wav"},
            "providers": {"transcriber": "intron", "summarizer": "local", "note": "local"},
        }
    )
    ledger = MemoryLedger()
    await ledger.record_submission_intent(
        JOB_ID, SubmissionIntent(provider="intron", started_at=datetime.now(UTC))
    )
    metrics = Metrics()
    mocked.post(UPLOAD, payload={"data": {"file_id": "file-2"}, "status": "Ok"})
    async with aiohttp.ClientSession() as session:
        registry = build_registry(settings, VendorHttp(session, timeout_s=5.0))
        media = MediaFetcher(session, FetchPolicy(frozenset(), tmp_path, 5.0), 10**6, 60.0, 1)
        signer = HandleSigner.from_settings(settings)
        stages = Stages(
            registry, media, ledger, settings.retry, StageCodec(), signer, metrics=metrics
        )
        ctx = DeliveryContext(
            "transcribe", JOB_ID, 0, 0, 0, True, "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        )
        try:
            outcome = await stages.transcribe(the_job.to_wire(), ctx)
        finally:
            registry.close()
    assert isinstance(outcome, Advance)
    assert metrics.submission_redeliveries.labels("intron", "reupload")._value.get() == 1
    assert await ledger.submission_intent(JOB_ID) is None  # the handle superseded it
    handle = await ledger.transcription_handle(JOB_ID)
    assert handle is not None
    assert handle.handle == "file-2"


@pytest.mark.redis
async def test_redis_ledger_keeps_an_intent_until_the_handle_supersedes_it() -> None:
    """Shared by every replica: the one a killed worker's redelivery reaches is another."""
    prefix = f"test-intent-{uuid.uuid4().hex[:8]}"
    ledger = RedisLedger.from_url(REDIS_URL, prefix)
    try:
        await ledger.record_submission_intent("j1", invox_intent())
        found = await ledger.submission_intent("j1")
        assert found is not None
        assert (found.request_id, found.upload_url) == ("req-1", SIGNED_URL)
        handle = TranscriptionHandle(
            provider="invox", handle="req-1", submitted_at=datetime.now(UTC)
        )
        await ledger.record_transcription_handle("j1", handle)
        assert await ledger.submission_intent("j1") is None
        assert await ledger.transcription_handle("j1") == handle
        await ledger.record_submission_intent("j2", invox_intent())
        await ledger.clear_submission_intent("j2")
        assert await ledger.submission_intent("j2") is None
    finally:
        await ledger.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
