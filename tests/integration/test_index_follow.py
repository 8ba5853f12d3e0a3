"""scribe-db follow: the job index kept from <prefix>.events through a durable queue. Rebuilds
what a worker without the index (or with the index down) did not write; agrees with the worker's
own writes (one row per transition); a database that is down loses nothing (the batch goes back
to the queue)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from ops import index_follow
from ops.sandbox import RunningSandbox
from tests.harness import (
    AMQP_URL,
    INVOX_ALL,
    SAMPLE_TEMPLATE,
    make_job,
    running_worker,
    watching,
    worker_env,
)
from worker.payload_crypto import PayloadCipher
from worker.settings import Settings
from worker.topology import Names

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

DEAD_URL = "postgresql://postgres@127.0.0.1:1/none"


@pytest.fixture
async def follow_queue(prefix: str) -> AsyncIterator[Names]:
    """<prefix>.job-index declared before any job runs, deleted afterwards."""
    names = Names(prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await index_follow.declare(channel, names)
        yield names
        await channel.queue_delete(names.index_events_queue)


async def _follow(names: Names, url: str) -> index_follow.FollowReport:
    return await index_follow.follow(
        AMQP_URL, names, url, True, asyncio.Event(), retry_pause_s=0.05
    )


async def _transitions(url: str) -> dict[str, list[tuple[str, str]]]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT job_id, stage, kind FROM scribe_job_transitions ORDER BY at, key"
        )
        jobs = await connection.fetch("SELECT job_id, stage, outcome, error_type FROM scribe_jobs")
    finally:
        await connection.close()
    found: dict[str, list[tuple[str, str]]] = {}
    for row in rows:  # as a sorted list: one job's end and its last stage can share an instant
        found.setdefault(str(row["job_id"]), []).append((row["stage"], row["kind"]))
    found = {job_id: sorted(steps) for job_id, steps in found.items()}
    for job in jobs:
        found[str(job["job_id"])].append((job["stage"], f"{job['outcome']}:{job['error_type']}"))
    return found


async def _run(
    prefix: str,
    env: dict[str, str],
    audio_file: Path,
    storage_root: Path,
    cipher: PayloadCipher | None = None,
) -> list[str]:
    good = make_job(audio_file, **INVOX_ALL, template=SAMPLE_TEMPLATE)
    failing = make_job(storage_root / "no-such-recording.wav")
    async with running_worker(env) as app, watching(prefix, cipher=cipher) as watcher:
        ids = [await watcher.submit(job) for job in (good, failing)]
        for job_id in ids:
            await watcher.outcome(job_id)
        if app.index is not None:
            assert await app.index.flush(20.0)
    return ids


EXPECTED_GOOD = [
    *sorted(
        [
            ("transcribe", "done"),
            ("poll", "done"),
            ("summarize", "done"),
            ("note", "done"),
            ("note", "completed"),
        ]
    ),
    ("note", "completed:None"),  # the job's row
]
EXPECTED_FAILING = [("transcribe", "failed"), ("transcribe", "failed:audioUnavailable")]


async def test_follow_rebuilds_the_index_and_waits_out_a_database_that_is_down(
    prefix: str,
    follow_queue: Names,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    database_url: str,
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)  # the worker writes no index
    good, failing = await _run(prefix, env, audio_file, storage_root)
    down = await _follow(follow_queue, DEAD_URL)
    assert down.written == 0
    assert down.write_failures == index_follow.UNTIL_EMPTY_MAX_FAILURES
    assert down.unwritten
    report = await _follow(follow_queue, database_url)
    assert (report.written, report.unwritten) == (
        6,
        False,
    )  # 4 stage events, job.completed, job.failed
    found = await _transitions(database_url)
    assert found == {good: EXPECTED_GOOD, failing: EXPECTED_FAILING}
    # Drained: the command finds nothing more to write.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli_db", "follow", "--until-empty",
        env={**os.environ, "SCRIBE_DATABASE_URL": database_url, "SCRIBE_AMQP_URL": AMQP_URL,
             "SCRIBE_PREFIX": prefix},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert stdout.decode().strip().splitlines()[-1] == "written=0 skipped=0 write_failures=0"


async def test_follow_and_the_worker_write_each_transition_once(
    prefix: str,
    follow_queue: Names,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    database_url: str,
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_DATABASE_URL=database_url)
    good, failing = await _run(prefix, env, audio_file, storage_root)
    before = await _transitions(database_url)
    assert len(before[good]) == 5  # the worker: three stages done, the note completed
    await _follow(follow_queue, database_url)
    assert await _transitions(database_url) == {good: EXPECTED_GOOD, failing: EXPECTED_FAILING}


def test_events_it_cannot_read_are_skipped() -> None:
    assert index_follow.entry_of("job.completed", b"{not json") is None
    assert index_follow.entry_of("job.stage.poll", b'{"type": "job.stage"}') is None
    assert index_follow.entry_of("job.other", b"{}") is None
    assert index_follow.entry_of("job.completed", b" " * (index_follow.MAX_EVENT_BYTES + 1)) is None


async def test_follow_opens_sealed_events_with_the_keys(
    prefix: str,
    follow_queue: Names,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    database_url: str,
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    sealing = {"SCRIBE_PAYLOAD_KEYS": f"k1:{key}", "SCRIBE_PAYLOAD_KEY_ID": "k1"}
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_ENCRYPT_EVENTS="on", **sealing)
    cipher = PayloadCipher(Settings.from_env(sealing).payload_keys)
    good, failing = await _run(prefix, env, audio_file, storage_root, cipher)
    report = await index_follow.follow(
        AMQP_URL, follow_queue, database_url, True, asyncio.Event(), 0.05, cipher=cipher
    )
    assert (report.written, report.skipped) == (6, 0)
    assert await _transitions(database_url) == {good: EXPECTED_GOOD, failing: EXPECTED_FAILING}
