"""A job through every stage over the real RabbitMQ, against the emulator, per provider mix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ops.sandbox import RunningSandbox
from tests.harness import (
    SAMPLE_TEMPLATE,
    make_job,
    running_worker,
    sandbox_stats,
    watching,
    worker_env,
)

pytestmark = pytest.mark.broker

COMBINATIONS = [
    pytest.param("intron", "invox", True, id="intron-invox-note"),
    pytest.param("invox", "invox", True, id="invox-invox-note"),
    pytest.param("intron", "intron", True, id="intron-intronpp-note"),
    pytest.param("invox", "invox", False, id="invox-invox-summary-only"),
]


@pytest.mark.parametrize(("transcriber", "summarizer", "with_template"), COMBINATIONS)
async def test_job_completes_through_all_stages(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    transcriber: str,
    summarizer: str,
    with_template: bool,
) -> None:
    extra: dict[str, Any] = {
        "providers": {"transcriber": transcriber, "summarizer": summarizer, "note": "invox"},
    }
    if with_template:
        extra["template"] = SAMPLE_TEMPLATE
    if summarizer == "intron":
        extra["intron"] = {"postProcessing": ["get_summary", "get_soap_note"]}
    job = make_job(audio_file, **extra)
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        job_id = await watcher.submit(job)
        outcome = await watcher.outcome(job_id)

    assert outcome["type"] == "job.completed", outcome
    assert outcome["jobId"] == job_id
    assert outcome["transcript"]["provider"] == transcriber
    assert outcome["transcript"]["text"]
    assert outcome["summary"]["provider"] == summarizer
    if with_template:
        names = [field["name"] for field in outcome["clinicalNote"]]
        assert names == [field["name"] for field in SAMPLE_TEMPLATE["fields"]]
    else:
        assert "clinicalNote" not in outcome
    stages = [e["_routingKey"] for e in watcher.events[job_id] if e["type"] == "job.stage"]
    expected = ["job.stage.transcribe", "job.stage.poll", "job.stage.summarize"]
    assert stages == expected + (["job.stage.note"] if with_template else [])
    completed = [e for e in watcher.events[job_id] if e["type"] == "job.completed"]
    assert len(completed) == 1


async def test_supporting_documents_are_uploaded_before_the_note(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    pdf = storage_root / "referral.pdf"
    pdf.write_bytes(b"%PDF-1.4 referral letter")
    txt = storage_root / "labs.txt"
    txt.write_text("haemoglobin 13.1")
    job = make_job(
        audio_file,
        providers={"transcriber": "invox", "summarizer": "invox", "note": "invox"},
        template=SAMPLE_TEMPLATE,
        documents=[
            {"path": str(pdf), "documentType": "PDF", "documentName": "referral.pdf"},
            {"path": str(txt), "documentType": "TXT", "documentName": "labs.txt"},
        ],
        consultationSessionId="session-42",
    )
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job))
    assert outcome["type"] == "job.completed", outcome
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["documents_uploaded"]["session-42"] == 2, stats


async def test_traceparent_travels_from_the_job_to_every_event(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    job = make_job(audio_file, template=SAMPLE_TEMPLATE)
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        job_id = await watcher.submit(job, headers={"traceparent": traceparent})
        await watcher.outcome(job_id)
        other = await watcher.submit(make_job(audio_file))  # no trace context: one is started
        await watcher.outcome(other)
    assert {event["_traceparent"] for event in watcher.events[job_id]} == {traceparent}
    started = {event["_traceparent"] for event in watcher.events[other]}
    assert len(started) == 1
    assert started != {traceparent}
    assert started.pop().startswith("00-")


@pytest.mark.parametrize(("chosen", "expected"), [("none", []), ("poll,note", ["poll", "note"])])
async def test_stage_events_can_be_chosen(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    chosen: str,
    expected: list[str],
) -> None:
    job = make_job(audio_file, template=SAMPLE_TEMPLATE)
    env = {**worker_env(prefix, sandbox.base_url, storage_root), "SCRIBE_STAGE_EVENTS": chosen}
    async with running_worker(env), watching(prefix) as watcher:
        job_id = await watcher.submit(job)
        outcome = await watcher.outcome(job_id)
    assert outcome["type"] == "job.completed", outcome
    routing_keys = [event["_routingKey"] for event in watcher.events[job_id]]
    assert routing_keys == [f"job.stage.{stage}" for stage in expected] + ["job.completed"]
