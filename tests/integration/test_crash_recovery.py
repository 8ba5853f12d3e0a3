"""A worker killed between consume and ack loses nothing: the broker redelivers the message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ops.sandbox import RunningSandbox
from tests.harness import (
    INVOX_ALL,
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
