"""jobId is the idempotency key: a recorded vendor handle is never paid for twice, and a job
published twice runs once (Redis ledger shared by every replica)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from ops.sandbox import RunningSandbox
from schemas.jobs import TranscriptionHandle
from tests.harness import (
    INVOX_ALL,
    INVOX_TOKEN,
    REDIS_URL,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    watching,
    worker_env,
)
from worker.ledger import RedisLedger

pytestmark = [pytest.mark.broker, pytest.mark.redis]


async def vendor_submission(base_url: str) -> str:
    """What a worker that crashed after submitting would have left at the vendor."""
    headers = {
        "Authorization": f"Bearer {INVOX_TOKEN}",
        "X-Invox-Medical-Api-Version": "2026-03-01",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base_url}/api/v1/generate-presigned-url",
            json={"mimeType": "audio/wav"},
            headers=headers,
        ) as response:
            body = await response.json()
        async with session.put(
            body["presignedUrl"], data=b"RIFF", headers={"Content-Type": "audio/wav"}
        ) as put:
            put.raise_for_status()
    return str(body["requestId"])


async def test_recorded_handle_is_polled_not_resubmitted(
    redis_prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    job = make_job(audio_file, **INVOX_ALL)
    request_id = await vendor_submission(sandbox.base_url)
    ledger = RedisLedger.from_url(REDIS_URL, redis_prefix)
    handle = TranscriptionHandle(
        provider="invox", handle=request_id, submitted_at=datetime.now(UTC)
    )
    await ledger.record_transcription_handle(str(job.job_id), handle)
    await ledger.close()

    env = worker_env(redis_prefix, sandbox.base_url, storage_root, SCRIBE_REDIS_URL=REDIS_URL)
    async with running_worker(env), watching(redis_prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job))
    assert outcome["type"] == "job.completed"
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["calls"]["invox.presign"] == 1  # only the one made before the "crash"


async def test_job_published_twice_runs_once(
    redis_prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    job = make_job(audio_file, **INVOX_ALL, jobId=str(uuid.uuid4()))
    env = worker_env(redis_prefix, sandbox.base_url, storage_root, SCRIBE_REDIS_URL=REDIS_URL)
    async with running_worker(env) as first, watching(redis_prefix) as watcher:
        job_id = await watcher.submit(job)
        await watcher.outcome(job_id)
        await watcher.submit(job)
        for _ in range(100):
            if first.metrics.duplicates.labels("transcribe")._value.get() >= 1:
                break
            await asyncio.sleep(0.05)
        # A second replica shares the ledger through Redis.
        async with running_worker(env) as second:
            await watcher.submit(job)
            for _ in range(100):
                dropped = sum(
                    app.metrics.duplicates.labels("transcribe")._value.get()
                    for app in (first, second)
                )
                if dropped >= 2:
                    break
                await asyncio.sleep(0.05)
    completed = [e for e in watcher.events[job_id] if e["type"] == "job.completed"]
    assert len(completed) == 1
    assert dropped == 2
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["calls"]["invox.presign"] == 1


@pytest.mark.parametrize("ledger", ["memory", "redis"])
async def test_concurrent_duplicate_publish_pays_once(
    redis_prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path, ledger: str
) -> None:
    # A slow upload keeps the first delivery inside the transcribe stage while the copy arrives.
    await sandbox_control(sandbox.base_url, "config", {"latency_ms": 300})
    job = make_job(audio_file, **INVOX_ALL)
    extra = {"SCRIBE_REDIS_URL": REDIS_URL} if ledger == "redis" else {}
    env = worker_env(redis_prefix, sandbox.base_url, storage_root, **extra)
    async with running_worker(env) as app, watching(redis_prefix) as watcher:
        job_id = await watcher.submit(job)
        await watcher.submit(job)
        outcome = await watcher.outcome(job_id, timeout_s=30)
        for _ in range(100):
            if app.metrics.duplicates.labels("transcribe")._value.get() >= 1:
                break
            await asyncio.sleep(0.05)
        deferred = app.metrics.deferred.labels("transcribe", "busy")._value.get()
    assert outcome["type"] == "job.completed"
    assert deferred >= 1
    completed = [e for e in watcher.events[job_id] if e["type"] == "job.completed"]
    assert len(completed) == 1
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["calls"]["invox.presign"] == 1


async def test_redis_outage_defers_jobs_until_it_is_back(
    redis_prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    job = make_job(audio_file, **INVOX_ALL)
    down = worker_env(
        redis_prefix, sandbox.base_url, storage_root, SCRIBE_REDIS_URL="redis://127.0.0.1:1/0"
    )
    async with running_worker(down) as app, watching(redis_prefix) as watcher:
        job_id = await watcher.submit(job)
        for _ in range(200):
            if app.metrics.deferred.labels("transcribe", "ledger_unavailable")._value.get() >= 2:
                break
            await asyncio.sleep(0.05)
        assert app.metrics.deferred.labels("transcribe", "ledger_unavailable")._value.get() >= 2
    assert job_id not in watcher.events  # neither completed nor failed while Redis was down
    assert (await sandbox_stats(sandbox.base_url))["calls"].get("invox.presign", 0) == 0
    up = worker_env(redis_prefix, sandbox.base_url, storage_root, SCRIBE_REDIS_URL=REDIS_URL)
    async with running_worker(up), watching(redis_prefix) as watcher:
        outcome = await watcher.outcome(job_id, timeout_s=30)
    assert outcome["type"] == "job.completed"
