"""A browser's recording (WebM/Opus, made here from the sample consultation) through the worker
over the real RabbitMQ: the local path decodes it as it is; Intron and Invox (the emulator)
receive the 16 kHz mono WAV it converts to, byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from ops.sandbox import RunningSandbox
from tests.audio_files import encode_pcm
from tests.harness import make_job, running_worker, sandbox_stats, watching, worker_env
from worker.audio import convert, decode_pcm, probe_audio

pytestmark = pytest.mark.broker

SAMPLE = Path(__file__).resolve().parents[2] / "ops" / "samples" / "consultation.wav"
SECONDS = 12.0


@pytest.fixture
def webm(storage_root: Path) -> Path:
    pcm = decode_pcm(SAMPLE, 16_000, duration_s=SECONDS)
    path = encode_pcm(storage_root / "visit.webm", "webm", pcm, 16_000)
    assert probe_audio(path).codec == "opus"
    return path


@pytest.mark.slow
async def test_a_webm_recording_completes_through_the_local_path(
    prefix: str, storage_root: Path, webm: Path
) -> None:
    local = {"transcriber": "local", "summarizer": "local", "note": "local"}
    job = make_job(webm, providers=local, audio={"path": str(webm), "mimeType": "audio/webm"})
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job), timeout_s=120)
    assert outcome["type"] == "job.completed", outcome
    assert outcome["transcript"]["provider"] == "local"
    assert len(outcome["transcript"]["text"].split()) > 10
    assert outcome["transcript"]["durationS"] == pytest.approx(SECONDS, abs=0.1)


@pytest.mark.parametrize("transcriber", ["intron", "invox"])
async def test_a_webm_recording_reaches_the_vendor_as_wav(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    webm: Path,
    tmp_path: Path,
    transcriber: str,
) -> None:
    expected = convert(webm, tmp_path / "expected.wav")  # deterministic: the same bytes
    assert (expected.container, expected.sample_rate, expected.channels) == ("wav", 16_000, 1)
    wav_sha256 = hashlib.sha256((tmp_path / "expected.wav").read_bytes()).hexdigest()
    providers: dict[str, Any] = {"transcriber": transcriber, "summarizer": "invox"}
    job = make_job(webm, providers=providers)
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job))
    assert outcome["type"] == "job.completed", outcome
    stats = await sandbox_stats(sandbox.base_url)
    paid = [p for p in stats["paid_submissions"] if p["vendor"] == transcriber]
    assert [p["audioSha256"] for p in paid] == [wav_sha256]
    assert await asyncio.to_thread(webm.is_file)  # the job's own file is left alone


async def test_a_webm_over_the_transcribers_limit_is_chunked_not_refused(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, webm: Path
) -> None:
    """Within the job maximum, over what Invox is set to take in one upload: split into chunks
    (worker/chunking.py cuts them from the WebM as WAV), never audioTooLong."""
    job = make_job(webm, providers={"transcriber": "invox", "summarizer": "invox"})
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_INVOX_MAX_AUDIO_S="5")
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job), timeout_s=60)
    assert outcome["type"] == "job.completed", outcome
    stats = await sandbox_stats(sandbox.base_url)
    uploads = [p for p in stats["paid_submissions"] if p["vendor"] == "invox"]
    assert len(uploads) >= 3  # 12 s in chunks of at most 5 s
    assert outcome["transcript"]["segments"][-1]["end"] > 5.0  # times are the recording's
