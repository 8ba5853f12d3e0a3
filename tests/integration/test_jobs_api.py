"""The job index and its status API with the real worker, RabbitMQ and PostgreSQL: jobs through
the pipeline show their stages and outcome; the API checks its token and its parameters
(schemathesis, from schemas/openapi.json, against the live port); an index that is down or
drops its connections holds up no ack and loses no job; without SCRIBE_DATABASE_URL nothing
changes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis.core.result import Ok

from ops.openapi import OPENAPI_FILE
from ops.sandbox import RunningSandbox
from schemas.jobs import JobRequest
from tests.harness import INVOX_ALL, SAMPLE_TEMPLATE, make_job, running_worker, watching, worker_env
from worker.app import WorkerApp

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

TOKEN = "status-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEAD_URL = "postgresql://postgres@127.0.0.1:1/none"
PATIENT_TEXT = "Mrs Jones chest pain"


def _base(app: WorkerApp) -> str:
    return f"http://127.0.0.1:{app.http_port}"


async def _get(
    app: WorkerApp,
    path: str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            _base(app) + path, headers=AUTH if headers is None else headers, params=params
        ) as response,
    ):
        if response.content_type != "application/json":
            return response.status, await response.text()
        return response.status, await response.json()


def _jobs(audio_file: Path, storage_root: Path) -> tuple[list[JobRequest], JobRequest]:
    good = [make_job(audio_file, **INVOX_ALL, template=SAMPLE_TEMPLATE) for _ in range(2)]
    failing = make_job(storage_root / "no-such-recording.wav")
    return good, failing


def _indexed_env(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, database_url: str
) -> dict[str, str]:
    """A worker with the index on and the status API behind TOKEN."""
    return worker_env(
        prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_DATABASE_URL=database_url,
        SCRIBE_API_TOKEN=TOKEN,
    )


async def _run_jobs(prefix: str, app: WorkerApp, jobs: list[JobRequest]) -> dict[str, str]:
    async with watching(prefix) as watcher:
        ids = [await watcher.submit(job) for job in jobs]
        outcomes = [await watcher.outcome(job_id) for job_id in ids]
    return {job_id: outcome["type"] for job_id, outcome in zip(ids, outcomes, strict=True)}


async def test_jobs_through_the_pipeline_show_their_stages_and_outcome(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path, database_url: str
) -> None:
    env = _indexed_env(prefix, sandbox, storage_root, database_url)
    good, failing = _jobs(audio_file, storage_root)
    async with running_worker(env) as app:
        outcomes = await _run_jobs(prefix, app, [*good, failing])
        assert app.index is not None
        assert await app.index.flush(20.0)
        for job in good:
            assert outcomes[str(job.job_id)] == "job.completed"
            status, body = await _get(app, f"/jobs/{job.job_id}")
            assert status == 200, body
            assert (body["stage"], body["outcome"], body["provider"]) == (
                "note",
                "completed",
                "invox",
            )
            assert [(t["stage"], t["kind"]) for t in body["transitions"]] == [
                ("transcribe", "done"),
                ("poll", "done"),
                ("summarize", "done"),
                ("note", "completed"),
            ]
            assert all(t["attempts"] == 1 and t["durationMs"] >= 0 for t in body["transitions"])
        assert outcomes[str(failing.job_id)] == "job.failed"
        status, body = await _get(app, f"/jobs/{failing.job_id}")
        assert status == 200, body
        assert (body["stage"], body["outcome"], body["errorType"]) == (
            "transcribe",
            "failed",
            "audioUnavailable",
        )
        status, page = await _get(
            app, "/jobs", params={"outcome": "failed", "errorType": "audioUnavailable"}
        )
        assert status == 200
        assert [job["jobId"] for job in page["jobs"]] == [str(failing.job_id)]
        status, page = await _get(app, "/jobs", params={"stage": "note", "limit": "1"})
        assert (status, len(page["jobs"]), page["limit"]) == (200, 1, 1)
        # Only names, counts and times: nothing of the job's content reached the index.
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch("SELECT * FROM scribe_jobs")
            rows += await connection.fetch("SELECT * FROM scribe_job_transitions")
        finally:
            await connection.close()
        stored = " ".join(str(value) for row in rows for value in row.values())
        assert str(audio_file) not in stored
        assert "no-such-recording" not in stored


async def test_the_api_checks_its_token_and_parameters_and_echoes_nothing(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, database_url: str
) -> None:
    env = _indexed_env(prefix, sandbox, storage_root, database_url)
    async with running_worker(env) as app:
        job_path = "/jobs/0b6c0f0e-8d5f-4b8e-9a56-2f0c1b7a9e11"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, body = await _get(app, job_path, headers)
            assert (status, body["error"]) == (401, "unauthorized")
        status, body = await _get(app, job_path)
        assert (status, body["error"]) == (404, "notFound")
        for params in (
            {"stage": PATIENT_TEXT},
            {"outcome": PATIENT_TEXT},
            {"errorType": PATIENT_TEXT},
            {"provider": PATIENT_TEXT},
            {"since": PATIENT_TEXT},
            {"limit": "501"},
            {"limit": "0"},
            {"patient": PATIENT_TEXT},
        ):
            status, body = await _get(app, "/jobs", params=params)
            assert (status, body["error"]) == (400, "badRequest"), params
            assert PATIENT_TEXT not in body["detail"]
            assert "501" not in body["detail"]
        status, body = await _get(app, f"/jobs/{PATIENT_TEXT}")
        assert status == 400
        assert PATIENT_TEXT not in str(body)
        status, _ = await _get(app, "/healthz", {})
        assert status == 200  # the probes need no token


def _schemathesis_run(base_url: str) -> None:
    """Every operation of schemas/openapi.json against the live port, with valid and with invalid
    input, each response checked against the document (status codes, content types, schemas;
    invalid input refused)."""
    schema = schemathesis.openapi.from_path(OPENAPI_FILE)
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        for mode in schemathesis.GenerationMode:
            strategy = result.ok().as_strategy(generation_mode=mode)

            @hypothesis.settings(
                max_examples=20,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def check(case: schemathesis.Case[Any]) -> None:
                response = case.call(base_url=base_url, headers=AUTH, timeout=10)
                case.validate_response(response)

            check()


async def test_schemathesis_against_the_live_status_api(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path, database_url: str
) -> None:
    env = _indexed_env(prefix, sandbox, storage_root, database_url)
    async with running_worker(env) as app:
        await _run_jobs(prefix, app, [make_job(audio_file, **INVOX_ALL)])
        assert app.index is not None
        assert await app.index.flush(20.0)
        await asyncio.to_thread(_schemathesis_run, _base(app))


async def test_an_index_that_is_down_holds_up_no_ack_and_loses_no_job(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_DATABASE_URL=DEAD_URL)
    jobs = [make_job(audio_file, **INVOX_ALL) for _ in range(3)]
    async with running_worker(env) as app:
        outcomes = await _run_jobs(prefix, app, jobs)
        assert set(outcomes.values()) == {"job.completed"}
        assert await app.ready()
        assert app.index is not None
        assert app.index.counts.written == 0
        assert app.index.counts.recorded == 3 * 3  # transcribe, poll, summarize (its end)
        status, body = await _get(app, f"/jobs/{jobs[0].job_id}", {})
        assert (status, body["error"]) == (503, "indexUnavailable")


async def test_connections_cut_by_the_database_are_replaced(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path, database_url: str
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_DATABASE_URL=database_url)
    first, second = (make_job(audio_file, **INVOX_ALL) for _ in range(2))
    async with running_worker(env) as app:
        await _run_jobs(prefix, app, [first])
        assert app.index is not None
        assert await app.index.flush(20.0)
        admin = await asyncpg.connect(database_url)
        try:
            cut = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert cut >= 1
        outcomes = await _run_jobs(prefix, app, [second])
        assert outcomes == {str(second.job_id): "job.completed"}
        assert await app.index.flush(30.0)
        for job in (first, second):
            status, body = await _get(app, f"/jobs/{job.job_id}", {})
            assert (status, body["outcome"]) == (200, "completed"), body
            assert body["stage"] == "summarize"  # no template: the summary is the last stage


async def test_without_a_database_url_the_worker_runs_as_before(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)
    job = make_job(audio_file, **INVOX_ALL)
    async with running_worker(env) as app:
        assert app.index is None
        outcomes = await _run_jobs(prefix, app, [job])
        assert outcomes == {str(job.job_id): "job.completed"}
        status, _ = await _get(app, f"/jobs/{job.job_id}", {})
        assert status == 404
