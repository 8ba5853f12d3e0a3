"""A worker killed between consume and ack loses nothing: the broker redelivers the message."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ops.sandbox import RunningSandbox
from tests.harness import (
    INVOX_ALL,
    REDIS_URL,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    wait_for_call,
    watching,
    worker_env,
)

pytestmark = pytest.mark.broker


def start_worker_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli_worker"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_sigkill_between_consume_and_ack_redelivers(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    # The first summary call hangs, so the worker is killed while holding the message unacked.
    hang = {"endpoint": "invox.summary", "kind": "timeout", "delayS": 30, "times": 1}
    await sandbox_control(sandbox.base_url, "faults", [hang])
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_HTTP_TIMEOUT_S="60")
    job = make_job(audio_file, **INVOX_ALL)

    process = start_worker_process(env)
    try:
        # The subprocess declares the topology; wait for it before watching events.
        async with running_worker({**env, "SCRIBE_STAGES": "note"}), watching(prefix) as watcher:
            job_id = await watcher.submit(job)
            await wait_for_call(sandbox.base_url, "invox.summary")
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)
            async with running_worker(env):
                outcome = await watcher.outcome(job_id, timeout_s=30)
                await asyncio.sleep(0.3)  # any duplicate event would arrive by now
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    assert outcome["type"] == "job.completed"
    completed = [e for e in watcher.events[job_id] if e["type"] == "job.completed"]
    assert len(completed) == 1
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["calls"]["invox.summary"] == 2  # the killed attempt, then the redelivery
    assert stats["calls"]["invox.presign"] == 1  # earlier stages were acked and not repeated


def paid_for(stats: dict[str, object], audio: Path) -> list[str]:
    """The vendors that billed a transcription of this recording, once per submission."""
    digest = hashlib.sha256(audio.read_bytes()).hexdigest()
    submissions = stats["paid_submissions"]
    assert isinstance(submissions, list)
    return [entry["vendor"] for entry in submissions if entry["audioSha256"] == digest]


async def kill_inside_the_window(env: dict[str, str], base_url: str, endpoint: str) -> None:
    """A worker process whose upload the vendor took, SIGKILLed before it hears the answer."""
    process = start_worker_process(env)
    try:
        await wait_for_call(base_url, endpoint)
        await asyncio.sleep(0.5)  # the emulator has taken the upload, the answer is 30 s away
    finally:
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)


@pytest.mark.redis
async def test_invox_killed_after_its_put_resumes_and_pays_once(
    redis_prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """Issue 13, item 4: the requestId and URL were recorded before the PUT, so the redelivery
    asks get-transcription, finds the audio and polls that request (before: presign + PUT)."""
    slow = {"endpoint": "invox.audio_put", "kind": "slow_answer", "delayS": 30, "times": 1}
    await sandbox_control(sandbox.base_url, "faults", [slow])
    env = worker_env(
        redis_prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_REDIS_URL=REDIS_URL,
        SCRIBE_STAGE_CLAIM_TTL_S="1",
        SCRIBE_HTTP_TIMEOUT_S="60",
    )
    job = make_job(audio_file, **INVOX_ALL)
    async with running_worker({**env, "SCRIBE_STAGES": "note"}), watching(redis_prefix) as watcher:
        job_id = await watcher.submit(job)
        await kill_inside_the_window(env, sandbox.base_url, "invox.audio_put")
        async with running_worker(env) as resumed:
            outcome = await watcher.outcome(job_id, timeout_s=30)
            counted = resumed.metrics.registry.get_sample_value(
                "scribe_submission_redeliveries_total", {"provider": "invox", "action": "resumed"}
            )
    assert outcome["type"] == "job.completed"
    assert counted == 1  # the worker app wires its metrics into the stages
    stats = await sandbox_stats(sandbox.base_url)
    assert paid_for(stats, audio_file) == ["invox"]
    assert stats["calls"]["invox.presign"] == 1
    assert stats["calls"]["invox.audio_put"] == 1


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["dead-letter", "reupload"])
async def test_intron_killed_after_its_upload_follows_the_redelivery_policy(
    redis_prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path, policy: str
) -> None:
    """Intron cannot be asked whether an upload arrived: SCRIBE_INTRON_REDELIVERY decides.
    dead-letter: uploadOutcomeUnknown at transcribe, paid once; reupload: completed, paid twice
    (the remaining window, docs/reliability.md)."""
    slow = {"endpoint": "intron.upload", "kind": "slow_answer", "delayS": 30, "times": 1}
    await sandbox_control(sandbox.base_url, "faults", [slow])
    env = worker_env(
        redis_prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_REDIS_URL=REDIS_URL,
        SCRIBE_STAGE_CLAIM_TTL_S="1",
        SCRIBE_HTTP_TIMEOUT_S="60",
        SCRIBE_INTRON_REDELIVERY=policy,
    )
    providers = {"transcriber": "intron", "summarizer": "invox", "note": "invox"}
    job = make_job(audio_file, providers=providers)
    async with running_worker({**env, "SCRIBE_STAGES": "note"}), watching(redis_prefix) as watcher:
        job_id = await watcher.submit(job)
        await kill_inside_the_window(env, sandbox.base_url, "intron.upload")
        async with running_worker(env):
            outcome = await watcher.outcome(job_id, timeout_s=30)
    stats = await sandbox_stats(sandbox.base_url)
    if policy == "dead-letter":
        assert (outcome["type"], outcome["stage"]) == ("job.failed", "transcribe")
        assert outcome["errorType"] == "uploadOutcomeUnknown"
        assert paid_for(stats, audio_file) == ["intron"]
    else:
        assert outcome["type"] == "job.completed"
        assert paid_for(stats, audio_file) == ["intron", "intron"]
