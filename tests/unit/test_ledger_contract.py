"""One contract, two ledgers: MemoryLedger (one worker, no Redis) and RedisLedger (shared) must
answer the same way, so a test of the worker against either says the same about both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from schemas.jobs import TranscriptionHandle
from tests.harness import REDIS_URL, unique_prefix
from worker.ledger import JobLedger, MemoryLedger, RedisLedger, SubmissionIntent

STARTED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[JobLedger]:
    if request.param == "memory":
        memory = MemoryLedger()
        yield memory
        await memory.close()
        return
    prefix = unique_prefix()
    redis = RedisLedger.from_url(REDIS_URL, prefix)
    yield redis
    await redis.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def handle(name: str) -> TranscriptionHandle:
    return TranscriptionHandle(provider="intron", handle=name, submitted_at=STARTED_AT)


async def test_a_stage_is_done_once_marked_with_its_fingerprint(ledger: JobLedger) -> None:
    assert not await ledger.is_done("j1", "transcribe")
    assert await ledger.done_mark("j1", "transcribe") is None
    await ledger.mark_done("j1", "transcribe", fingerprint="sha256:abc")
    await ledger.mark_done("j1", "poll")
    assert await ledger.is_done("j1", "transcribe")
    assert await ledger.done_mark("j1", "transcribe") == "sha256:abc"
    assert await ledger.done_mark("j1", "poll") == ""  # done, without a fingerprint
    assert not await ledger.is_done("j1", "note")
    assert not await ledger.is_done("j2", "transcribe")


async def test_a_handle_is_remembered_and_supersedes_the_intent(ledger: JobLedger) -> None:
    assert await ledger.transcription_handle("j1") is None
    intent = SubmissionIntent(provider="invox", started_at=STARTED_AT, request_id="r-1")
    await ledger.record_submission_intent("j1", intent)
    assert await ledger.submission_intent("j1") == intent
    await ledger.record_transcription_handle("j1", handle("f-1"))
    assert await ledger.transcription_handle("j1") == handle("f-1")
    assert await ledger.submission_intent("j1") is None


async def test_a_cleared_intent_is_gone(ledger: JobLedger) -> None:
    intent = SubmissionIntent(provider="intron", started_at=STARTED_AT, uploads=2)
    await ledger.record_submission_intent("j1", intent)
    await ledger.clear_submission_intent("j1")
    assert await ledger.submission_intent("j1") is None
    assert await ledger.submission_intent("j2") is None


async def test_a_claim_is_exclusive_until_released(ledger: JobLedger) -> None:
    assert await ledger.claim("j1", "note", ttl_s=30)
    assert not await ledger.claim("j1", "note", ttl_s=30)
    assert await ledger.claim("j1", "summarize", ttl_s=30)  # per stage
    assert await ledger.claim("j2", "note", ttl_s=30)  # per job
    await ledger.release("j1", "note")
    assert await ledger.claim("j1", "note", ttl_s=30)


async def test_a_callback_ticket_is_replaced_and_each_token_redeemed_once(
    ledger: JobLedger,
) -> None:
    assert await ledger.callback_ticket("job-c") is None
    await ledger.record_callback_ticket("job-c", '{"nonce": "n1"}', 60.0)
    await ledger.record_callback_ticket("job-c", '{"nonce": "n2"}', 60.0)
    assert await ledger.callback_ticket("job-c") == '{"nonce": "n2"}'
    assert await ledger.use_callback("job-c", "n2")
    assert not await ledger.use_callback("job-c", "n2")
    assert await ledger.use_callback("job-c", "n1")
    assert await ledger.use_callback("job-d", "n2")
