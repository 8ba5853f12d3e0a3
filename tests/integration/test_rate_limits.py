"""Two replicas share the vendor's rate limit through Redis and cause no 429 by themselves."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from ops.sandbox import RunningSandbox
from tests.harness import (
    REDIS_URL,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    watching,
    worker_env,
)

pytestmark = [pytest.mark.broker, pytest.mark.redis]

JOBS = 6


@pytest.mark.parametrize(("limits", "expect_429"), [("intron.upload=90", False), ("none", True)])
async def test_shared_limit_causes_no_429(
    redis_prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    limits: str,
    expect_429: bool,
) -> None:
    # The emulator allows 3 uploads per 2 s window; 90/min is the same budget.
    knobs = {"intron_upload_rate_per_min": 3, "rate_window_s": 2}
    await sandbox_control(sandbox.base_url, "config", knobs)
    env = worker_env(
        redis_prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_REDIS_URL=REDIS_URL,
        SCRIBE_RATE_LIMITS=limits,
        SCRIBE_MAX_ATTEMPTS="10",
        SCRIBE_RATE_LIMIT_MAX_WAIT_S="0.2",
    )
    jobs = [make_job(audio_file, jobId=str(uuid.uuid4())) for _ in range(JOBS)]
    async with running_worker(env), running_worker(env), watching(redis_prefix) as watcher:
        ids = [await watcher.submit(job) for job in jobs]
        outcomes = await asyncio.gather(*(watcher.outcome(i, timeout_s=60) for i in ids))
    assert [o["type"] for o in outcomes] == ["job.completed"] * JOBS
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["calls"]["intron.upload"] >= JOBS
    if expect_429:
        assert stats["rate_limited"] > 0  # the control run shows the emulator does enforce
    else:
        assert stats["rate_limited"] == 0
        assert stats["calls"]["intron.upload"] == JOBS
