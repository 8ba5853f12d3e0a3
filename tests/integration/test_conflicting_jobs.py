"""The body's jobId is a job's identity (issue 13, item 1): a correlation_id that disagrees is
ignored, a second publish of the same job is dropped as a duplicate, and a different job under a
jobId already done is dead-lettered as conflictingJob instead of vanishing."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from ops.sandbox import RunningSandbox
from schemas.errors import ErrorType
from tests.harness import REDIS_URL, make_job, running_worker, watching, worker_env

pytestmark = [pytest.mark.broker, pytest.mark.redis]


@pytest.mark.parametrize("ledger", ["memory", "redis"])
async def test_same_job_id_other_content_is_dead_lettered_not_dropped(
    redis_prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path, ledger: str
) -> None:
    extra = {"SCRIBE_REDIS_URL": REDIS_URL} if ledger == "redis" else {}
    env = worker_env(redis_prefix, sandbox.base_url, storage_root, **extra)
    job = make_job(audio_file, consultationSessionId="visit-1")
    job_id = str(job.job_id)
    other = make_job(audio_file, jobId=job_id, consultationSessionId="visit-2")
    # The same job again, its members in another order: a duplicate, not a conflict.
    reordered = json.dumps(dict(reversed(list(json.loads(job.to_wire()).items())))).encode()
    async with running_worker(env) as app, watching(redis_prefix) as watcher:
        await watcher.submit(job)
        assert (await watcher.outcome(job_id))["type"] == "job.completed"
        await watcher.publish(reordered, correlation_id=job_id)
        await watcher.publish(other.to_wire(), correlation_id=job_id)
        [dead] = await watcher.dead_letters(1)
        await asyncio.sleep(0.3)  # no further event may arrive for this jobId
        duplicates = app.metrics.registry.get_sample_value(
            "scribe_duplicates_dropped_total", {"stage": "transcribe"}
        )
    assert dead.routing_key == f"transcribe.{ErrorType.CONFLICTING_JOB.value}"
    assert dead.body == other.to_wire()
    assert dead.headers["x-job-id"] == job_id
    assert [event["type"] for event in watcher.events[job_id]].count("job.failed") == 0
    assert [event["type"] for event in watcher.events[job_id]].count("job.completed") == 1
    assert duplicates == 1


async def test_a_correlation_id_that_disagrees_with_the_body_is_ignored(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """Two different jobs published with the same correlation_id (client frameworks set their
    own) both complete, each under its own body jobId."""
    env = worker_env(prefix, sandbox.base_url, storage_root)
    shared = str(uuid.uuid4())
    first, second = make_job(audio_file), make_job(audio_file)
    async with running_worker(env), watching(prefix) as watcher:
        await watcher.publish(first.to_wire(), correlation_id=shared)
        await watcher.publish(second.to_wire(), correlation_id=shared)
        outcomes = [await watcher.outcome(str(job.job_id)) for job in (first, second)]
    assert [outcome["type"] for outcome in outcomes] == ["job.completed", "job.completed"]
    assert shared not in watcher.events
