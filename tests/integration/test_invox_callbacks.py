"""Invox callbacks through the real worker, broker and emulator: with SCRIBE_CALLBACK_BASE_URL the
emulator's callback advances the job before the first poll tier fires (the tier copy is still
waiting in its delay queue when the job completes), and that copy, when it arrives, is dropped
as a duplicate without another vendor call or outcome. Without callbacks, polling finishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from ops.bench.common import free_port
from ops.sandbox import RunningSandbox
from tests.harness import (
    AMQP_URL,
    INVOX_ALL,
    REDIS_URL,
    TEST_DELAY_TIERS_MS,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    watching,
    worker_env,
)
from worker.broker import Publisher, build_message
from worker.topology import Names

pytestmark = pytest.mark.broker

# A first poll a minute away: within the test, only a callback can advance the job.
LONG_TIER_MS = 60_000


@pytest.fixture
async def long_tier(prefix: str) -> AsyncIterator[str]:
    """The prefix, with a 60 s tier the shared clean-up does not know of (deleted here)."""
    yield f"{TEST_DELAY_TIERS_MS},{LONG_TIER_MS}"
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(Names(prefix).delay_queue(LONG_TIER_MS))


def completed_events(events: list[dict[str, Any]]) -> int:
    return sum(1 for event in events if event["type"] == "job.completed")


async def until(condition: Any, what: str) -> None:
    """Wait (bounded, 20 s) until condition() holds; no assertion on how long it took."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.parametrize("ledger", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_callback_advances_the_job_before_the_first_poll_tier(
    redis_prefix: str,
    long_tier: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    ledger: str,
) -> None:
    prefix = redis_prefix
    # Ready 1 s after the PUT: the transcribe stage has written its ticket well before, even on a
    # loaded machine (a callback before the ticket is 404 and is left to polling, by design).
    await sandbox_control(sandbox.base_url, "config", {"ready_after_ms": 1000})
    port = free_port()
    env = worker_env(
        prefix, sandbox.base_url, storage_root,
        SCRIBE_HTTP_PORT=str(port),
        SCRIBE_CALLBACK_BASE_URL=f"http://127.0.0.1:{port}",
        SCRIBE_DELAY_TIERS_MS=long_tier,
        SCRIBE_POLL_INTERVAL_MS=str(LONG_TIER_MS),
        **({"SCRIBE_REDIS_URL": REDIS_URL} if ledger == "redis" else {}),
    )  # fmt: skip
    names = Names(prefix)
    async with running_worker(env) as app, watching(prefix) as watcher:
        job_id = await watcher.submit(make_job(audio_file, **INVOX_ALL))
        outcome = await watcher.outcome(job_id, timeout_s=30)
        stats = await sandbox_stats(sandbox.base_url)
        tier = await watcher.channel.declare_queue(names.delay_queue(LONG_TIER_MS), passive=True)
        waiting = tier.declaration_result.message_count
        assert outcome["type"] == "job.completed"
        # The poll tier was not used: its copy still waits, and the poll stage ran once, on the
        # callback's message (one confirming status call by the receiver, one by the stage).
        assert waiting == 1
        assert app.metrics.stage("poll").consumed == 1
        assert app.metrics.callbacks.labels("advanced")._value.get() == 1
        assert stats["calls"]["invox.callback"] == 1
        assert stats["responses"]["invox.callback"] == {"202": 1}
        assert stats["calls"]["invox.transcription"] == 2

        # The tier copy arrives (what the broker does when its TTL runs out): a duplicate.
        copy = await tier.get(fail=False)
        assert copy is not None
        await Publisher(watcher.channel).publish(
            names.jobs_exchange,
            "poll",
            build_message(copy.body, correlation_id=job_id, headers=dict(copy.headers or {})),
        )
        await copy.ack()
        await until(lambda: app.metrics.duplicates.labels("poll")._value.get() == 1, "dropped")
        after = await sandbox_stats(sandbox.base_url)
        events = watcher.events[job_id]
    assert app.metrics.stage("poll").consumed == 2
    assert after["calls"]["invox.transcription"] == 2  # no vendor call for the duplicate
    assert len(after["paid_submissions"]) == 1
    assert after["calls"]["invox.summary"] == 1
    assert completed_events(events) == 1


@pytest.mark.parametrize("vendor_calls_back", [False, True])
async def test_without_a_callback_polling_completes_the_job(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    vendor_calls_back: bool,
) -> None:
    """Callbacks off at the worker (no callbackUrl sent), or on but the vendor never calls."""
    knobs: dict[str, Any] = {"ready_after_ms": 200}
    extra: dict[str, str] = {}
    if vendor_calls_back:
        knobs["callbacks"] = False
        port = free_port()
        extra = {"SCRIBE_HTTP_PORT": str(port),
                 "SCRIBE_CALLBACK_BASE_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    await sandbox_control(sandbox.base_url, "config", knobs)
    env = worker_env(prefix, sandbox.base_url, storage_root, **extra)
    async with running_worker(env) as app, watching(prefix) as watcher:
        job_id = await watcher.submit(make_job(audio_file, **INVOX_ALL))
        outcome = await watcher.outcome(job_id, timeout_s=30)
    assert outcome["type"] == "job.completed"
    [record] = sandbox.state.transcriptions.values()
    assert (record.callback_url is not None) == vendor_calls_back
    assert record.callback_status is None
    assert app.metrics.callbacks.labels("advanced")._value.get() == 0
    assert sandbox.state.stats.calls["invox.callback"] == 0
    assert sandbox.state.stats.calls["invox.transcription"] >= 1
