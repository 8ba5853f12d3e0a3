"""Issue 13, items 3 and 13, over the real RabbitMQ and the vendor emulator: jobs that cannot give
a result cost no vendor call that would be paid for nothing.

- A job whose providers cannot give its result on this worker is refused at the door (the
  transcribe stage, before the audio is read) with its own errorType, and no vendor is called.
- Intron's summary needs no post-processing flag from the publisher: the worker asks for it.
- A recording with no speech is dead-lettered as noSpeech where its transcript becomes known
  (poll for the vendors, transcribe for the local model), before any summary or note call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.sandbox import RunningSandbox
from tests.harness import (
    SAMPLE_TEMPLATE,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    watching,
    worker_env,
    write_wav,
)

pytestmark = pytest.mark.broker

DOOR = [
    pytest.param(
        {"transcriber": "invox", "summarizer": "intron", "note": "invox"},
        "incompatibleProviders",
        id="intron-summary-of-invox-transcript",
    ),
    pytest.param(
        {"transcriber": "intron", "summarizer": "invox", "note": "llm"},
        "providerNotConfigured",
        id="note-provider-not-configured",
    ),
    pytest.param(
        {"transcriber": "intron", "summarizer": "llm", "note": "invox"},
        "providerNotConfigured",
        id="summarizer-not-configured",
    ),
]


@pytest.mark.parametrize(("providers", "error_type"), DOOR)
async def test_unservable_job_is_refused_at_the_door_without_a_vendor_call(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    providers: dict[str, str],
    error_type: str,
) -> None:
    job = make_job(audio_file, providers=providers, template=SAMPLE_TEMPLATE)
    async with (
        running_worker(worker_env(prefix, sandbox.base_url, storage_root)),
        watching(prefix) as watcher,
    ):
        outcome = await watcher.outcome(await watcher.submit(job))
        (letter,) = await watcher.dead_letters(1)

    assert outcome["type"] == "job.failed", outcome
    assert (outcome["errorType"], outcome["stage"]) == (error_type, "transcribe")
    assert letter.routing_key == f"transcribe.{error_type}"
    assert (await sandbox_stats(sandbox.base_url))["calls"] == {}


async def test_intron_summary_without_a_post_processing_flag_completes(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """The README's job with `postProcessing` left out: the worker asks Intron for the output
    named by summarySource itself (before, a paid transcription, then inconsistentInput)."""
    job = make_job(
        audio_file,
        providers={"transcriber": "intron", "summarizer": "intron", "note": "invox"},
        intron={"summarySource": "get_soap_note"},
        template=SAMPLE_TEMPLATE,
    )
    async with (
        running_worker(worker_env(prefix, sandbox.base_url, storage_root)),
        watching(prefix) as watcher,
    ):
        outcome = await watcher.outcome(await watcher.submit(job))

    assert outcome["type"] == "job.completed", outcome
    assert outcome["summary"]["provider"] == "intron"
    assert outcome["summary"]["text"].startswith("## Subjective")
    assert (await sandbox_stats(sandbox.base_url))["calls"]["intron.upload"] == 1


SILENCE = [
    pytest.param("intron", "poll", id="intron"),
    pytest.param("invox", "poll", id="invox"),
    pytest.param("local", "transcribe", id="local"),
]


@pytest.mark.parametrize(("transcriber", "stage"), SILENCE)
async def test_silence_is_dead_lettered_as_no_speech(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, transcriber: str, stage: str
) -> None:
    if transcriber == "local":
        pytest.importorskip("faster_whisper", reason="needs the 'local' extra")
    silence = write_wav(storage_root / "silence.wav", seconds=10.0, rate=16000)
    await sandbox_control(sandbox.base_url, "config", {"no_speech": True})
    job = make_job(
        silence,
        providers={"transcriber": transcriber, "summarizer": "invox", "note": "invox"},
        template=SAMPLE_TEMPLATE,
    )
    async with (
        running_worker(worker_env(prefix, sandbox.base_url, storage_root)),
        watching(prefix) as watcher,
    ):
        outcome = await watcher.outcome(await watcher.submit(job), timeout_s=60)
        (letter,) = await watcher.dead_letters(1)

    assert outcome["type"] == "job.failed", outcome
    assert (outcome["errorType"], outcome["stage"]) == ("noSpeech", stage)
    assert letter.routing_key == f"{stage}.noSpeech"
    calls = (await sandbox_stats(sandbox.base_url))["calls"]
    assert not {"invox.summary", "invox.note", "invox.documents"} & set(calls), calls
