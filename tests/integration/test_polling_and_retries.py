"""Pending transcriptions wait in delay queues, never in a consumer; transient failures retry
with backoff (Retry-After honoured) and then dead-letter with the last errorType."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from ops.sandbox import RunningSandbox
from tests.harness import (
    INVOX_ALL,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    watching,
    worker_env,
)
from worker.topology import Names

pytestmark = pytest.mark.broker


async def test_pending_transcription_waits_in_a_delay_queue(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    await sandbox_control(sandbox.base_url, "config", {"polls_before_ready": 3})
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_POLL_INTERVAL_MS="1000")
    names = Names(prefix)
    async with running_worker(env) as app, watching(prefix) as watcher:
        job_id = await watcher.submit(make_job(audio_file, **INVOX_ALL))
        # Wait for the first "pending" answer, then look at where the message is.
        for _ in range(200):
            stats = await sandbox_stats(sandbox.base_url)
            if stats["calls"].get("invox.transcription", 0) >= 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        delay_queue = await watcher.channel.declare_queue(names.delay_queue(1000), passive=True)
        poll_queue = await watcher.channel.declare_queue(names.stage_queue("poll"), passive=True)
        assert delay_queue.declaration_result.message_count == 1
        assert poll_queue.declaration_result.message_count == 0
        assert app.metrics.stage("poll").in_flight == 0
        outcome = await watcher.outcome(job_id)
    assert outcome["type"] == "job.completed"
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["calls"]["invox.transcription"] == 4  # three pending answers, then ready


async def test_polling_stops_at_the_deadline(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    await sandbox_control(sandbox.base_url, "config", {"polls_before_ready": 100_000})
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_POLL_DEADLINE_S="0.5")
    async with running_worker(env), watching(prefix) as watcher:
        job_id = await watcher.submit(make_job(audio_file, **INVOX_ALL))
        outcome = await watcher.outcome(job_id)
        [dead] = await watcher.dead_letters(1)
    assert (outcome["type"], outcome["errorType"]) == ("job.failed", "transcriptionTimedOut")
    assert dead.routing_key == "poll.transcriptionTimedOut"


async def test_5xx_retries_then_completes(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    rule = {"endpoint": "invox.summary", "kind": "http_error", "status": 503, "times": 2}
    await sandbox_control(sandbox.base_url, "faults", [rule])
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env) as app, watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(make_job(audio_file, **INVOX_ALL)))
        retried = app.metrics.retried.labels("summarize", "upstreamUnavailable")._value.get()
    assert outcome["type"] == "job.completed"
    assert retried == 2


@pytest.mark.parametrize(
    ("rule", "error_type", "extra_env"),
    [
        ({"kind": "http_error", "status": 502}, "upstreamUnavailable", {}),
        ({"kind": "rate_limit", "retryAfterS": 0}, "rateLimited", {}),
        ({"kind": "timeout", "delayS": 1.0}, "upstreamTimeout", {"SCRIBE_HTTP_TIMEOUT_S": "0.2"}),
        ({"kind": "malformed"}, "malformedResponse", {}),
    ],
    ids=["5xx", "429", "timeout", "malformed"],
)
async def test_transient_failures_dead_letter_when_attempts_run_out(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    rule: dict[str, object],
    error_type: str,
    extra_env: dict[str, str],
) -> None:
    await sandbox_control(sandbox.base_url, "faults", [{"endpoint": "invox.summary", **rule}])
    env = worker_env(prefix, sandbox.base_url, storage_root, **extra_env)
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(make_job(audio_file, **INVOX_ALL)))
        [dead] = await watcher.dead_letters(1)
    assert (outcome["errorType"], outcome["attempts"]) == (error_type, 3)
    assert dead.routing_key == f"summarize.{error_type}"
    assert dead.headers["x-attempts"] == 3
    assert str(dead.headers["x-first-failure-at"]) < str(dead.headers["x-last-failure-at"])


async def test_retry_after_picks_a_delay_tier_at_least_that_long(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    rule = {"endpoint": "invox.summary", "kind": "rate_limit", "retryAfterS": 1, "times": 1}
    await sandbox_control(sandbox.base_url, "faults", [rule])
    env = worker_env(prefix, sandbox.base_url, storage_root)
    with structlog.testing.capture_logs() as logs:
        async with running_worker(env), watching(prefix) as watcher:
            outcome = await watcher.outcome(await watcher.submit(make_job(audio_file, **INVOX_ALL)))
    assert outcome["type"] == "job.completed"
    retries = [entry for entry in logs if entry["event"] == "stage.retry"]
    assert [(r["error_type"], r["delay_ms"]) for r in retries] == [("rateLimited", 1000)]
