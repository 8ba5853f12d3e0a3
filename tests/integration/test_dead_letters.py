"""Failures end in <prefix>.dead-letters keyed <stage>.<errorType>, with the documented headers
and the consumed body unchanged; bad input never crashes or loops."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ops.sandbox import RunningSandbox
from schemas.errors import ErrorType
from schemas.jobs import JobRequest
from tests.harness import (
    INVOX_ALL,
    SAMPLE_TEMPLATE,
    Watcher,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    watching,
    worker_env,
)

pytestmark = pytest.mark.broker


# (endpoint the emulator fails, HTTP status, documented errorType, stage where it surfaces)
VENDOR_ERRORS = [
    ("invox.presign", 400, "invalidRequestBody", "transcribe"),
    ("invox.transcription", 400, "inconsistentInput", "poll"),
    ("invox.transcription", 404, "transcriptionNotFound", "poll"),
    ("invox.summary", 400, "invalidOutputFormat", "summarize"),
    ("invox.summary", 400, "missingOutputLanguage", "summarize"),
    ("invox.summary", 400, "invalidLanguage", "summarize"),
    ("invox.note", 400, "summaryIsRequired", "note"),
    ("invox.note", 400, "templateIsRequired", "note"),
    ("invox.note", 400, "invalidTemplate", "note"),
    ("invox.note", 400, "invalidLanguage", "note"),
    ("invox.documents", 400, "inconsistentInput", "note"),
    ("invox.documents", 400, "invalidApiVersionForEndpoint", "note"),
]


def assert_dead_letter_headers(headers: dict[str, Any], stage: str, error_type: str) -> None:
    assert headers["x-error-type"] == error_type
    assert headers["x-stage"] == stage
    assert isinstance(headers["x-error-message"], str)
    assert headers["x-error-message"]
    assert int(headers["x-attempts"]) >= 1
    first = datetime.fromisoformat(str(headers["x-first-failure-at"]))
    last = datetime.fromisoformat(str(headers["x-last-failure-at"]))
    assert first <= last


async def run_until_dead(
    watcher: Watcher, job: JobRequest, stage: str, error_type: str
) -> tuple[dict[str, Any], Any]:
    job_id = await watcher.submit(job)
    outcome = await watcher.outcome(job_id)
    assert outcome["type"] == "job.failed", outcome
    assert (outcome["stage"], outcome["errorType"]) == (stage, error_type)
    [dead] = await watcher.dead_letters(1)
    assert dead.routing_key == f"{stage}.{error_type}"
    assert dead.correlation_id == job_id
    return outcome, dead


@pytest.mark.parametrize(("endpoint", "status", "error_type", "stage"), VENDOR_ERRORS)
async def test_documented_vendor_error_is_dead_lettered(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    endpoint: str,
    status: int,
    error_type: str,
    stage: str,
) -> None:
    doc = storage_root / "letter.txt"
    doc.write_text("referral")
    job = make_job(
        audio_file,
        **INVOX_ALL,
        template=SAMPLE_TEMPLATE,
        documents=[{"path": str(doc), "documentType": "TXT", "documentName": "letter.txt"}],
    )
    rule = {
        "endpoint": endpoint,
        "kind": "http_error",
        "status": status,
        "errorType": error_type,
        "message": "rejected by vendor",
    }
    await sandbox_control(sandbox.base_url, "faults", [rule])
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        outcome, dead = await run_until_dead(watcher, job, stage, error_type)
    assert outcome["httpStatus"] == status
    assert_dead_letter_headers(dead.headers, stage, error_type)
    assert dead.headers["x-http-status"] == status
    assert dead.headers["x-attempts"] == 1  # permanent: no retries
    body = json.loads(dead.body)
    assert body["jobId"] == str(job.job_id)
    if stage == "transcribe":
        assert dead.body == job.to_wire()


async def test_wrong_api_version_is_dead_lettered_without_injection(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    job = make_job(audio_file, **INVOX_ALL)
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_INVOX_API_VERSION="2024-01-01")
    async with running_worker(env), watching(prefix) as watcher:
        await run_until_dead(watcher, job, "transcribe", "invalidApiVersionForEndpoint")


async def test_forbidden_carries_the_vendor_error_type(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    await sandbox_control(sandbox.base_url, "config", {"forbidden": ["invox.summary"]})
    job = make_job(audio_file, **INVOX_ALL)
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        _, dead = await run_until_dead(watcher, job, "summarize", "missingPermission")
    assert dead.headers["x-http-status"] == 403


@pytest.mark.parametrize(
    ("endpoint", "error_type"),
    [("intron.status", "unknownVendorStatus"), ("invox.transcription", "unknownVendorStatus")],
)
async def test_unknown_vendor_status_fails_instead_of_polling_forever(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    endpoint: str,
    error_type: str,
) -> None:
    transcriber = endpoint.split(".")[0]
    await sandbox_control(
        sandbox.base_url, "faults", [{"endpoint": endpoint, "kind": "unknown_status"}]
    )
    job = make_job(audio_file, providers={"transcriber": transcriber, "summarizer": "invox"})
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        await run_until_dead(watcher, job, "poll", error_type)


@pytest.mark.parametrize("endpoint", ["intron.status", "invox.transcription"])
async def test_failed_transcription_is_dead_lettered(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path, endpoint: str
) -> None:
    transcriber = endpoint.split(".")[0]
    await sandbox_control(
        sandbox.base_url, "faults", [{"endpoint": endpoint, "kind": "failed_status"}]
    )
    job = make_job(audio_file, providers={"transcriber": transcriber, "summarizer": "invox"})
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        await run_until_dead(watcher, job, "poll", "transcriptionFailed")


BAD_BODIES = [
    pytest.param(b"{not json", ErrorType.INVALID_MESSAGE, id="not-json"),
    pytest.param(b"\xff\xfe\x00garbage", ErrorType.INVALID_MESSAGE, id="not-utf8"),
    pytest.param(b"[1, 2, 3]", ErrorType.INVALID_MESSAGE, id="not-an-object"),
    pytest.param(b'{"schemaVersion": 1, "jobId": "nope"}', ErrorType.INVALID_MESSAGE, id="schema"),
    pytest.param(
        b'{"schemaVersion": 7, "jobId": "x"}',
        ErrorType.UNSUPPORTED_SCHEMA_VERSION,
        id="future-version",
    ),
]


@pytest.mark.parametrize(("body", "error_type"), BAD_BODIES)
async def test_bad_message_is_dead_lettered_once_never_requeued(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    body: bytes,
    error_type: str,
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env) as app, watching(prefix) as watcher:
        await watcher.publish(body, correlation_id="7d0c31f6-52c5-4f53-a1b4-2a3c0dfc6a4e")
        [dead] = await watcher.dead_letters(1)
        assert dead.routing_key == f"transcribe.{error_type}"
        assert dead.body == body
        assert_dead_letter_headers(dead.headers, "transcribe", error_type)
        consumed = app.metrics.stage("transcribe").consumed
    assert consumed == 1  # no requeue loop


@pytest.mark.parametrize("stage", ["poll", "summarize", "note"])
async def test_bad_message_on_later_stages(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, stage: str
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        await watcher.publish(b'{"schemaVersion": 1}', routing_key=stage)
        [dead] = await watcher.dead_letters(1)
    assert dead.routing_key == f"{stage}.invalidMessage"
    assert "jobId: missing" in str(dead.headers["x-error-message"])


@pytest.mark.parametrize(
    ("limit", "error_type"),
    [
        ({"SCRIBE_MAX_JOB_AUDIO_S": "1"}, "audioTooLong"),
        ({"SCRIBE_MAX_AUDIO_BYTES": "1000"}, "fileTooLarge"),
    ],
)
async def test_audio_over_a_limit_never_reaches_a_vendor(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    limit: dict[str, str],
    error_type: str,
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root, **limit)
    async with running_worker(env), watching(prefix) as watcher:
        await run_until_dead(watcher, make_job(audio_file), "transcribe", error_type)
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["calls"].get("intron.upload", 0) == 0
