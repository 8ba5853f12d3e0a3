"""Long recordings over the real RabbitMQ and the vendor emulator (issue 15, item 1): split at
silences into chunks within the transcriber's limit, one message per chunk, stitched.

The recordings are tone bursts between pauses (ops/wav.py write_long_recording) at 8 kHz, cheap
to write and decode; the emulator reads each uploaded WAV's duration and, like Intron, refuses one
over 10 minutes (FILE_INVALID_DURATION).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ops.bench.long_recording import long_consultation
from ops.sandbox import RunningSandbox
from ops.sandbox.config import DEFAULT_TRANSCRIPT_TURNS
from ops.wav import write_long_recording
from tests.harness import (
    REDIS_URL,
    SAMPLE_TEMPLATE,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    wait_for_call,
    watching,
    worker_env,
)
from worker import constants as c

pytestmark = pytest.mark.broker

INTRON_LIMIT_S = 600.0
# 1300 s of 17 s bursts and 1.5 s pauses: cut at 591.25 s and 1183.25 s (the latest pause in
# the second half of each 600 s window), so three chunks.
LONG_S = 1300.0
CHUNK_STARTS = (0.0, 591.25, 1183.25)


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "visit.wav"
    write_long_recording(path, LONG_S)
    return path


def place(long_wav: Path, storage_root: Path) -> Path:
    """The recording under the storage root (a hard link: no copy of its 20 MB)."""
    target = storage_root / "visit.wav"
    try:
        os.link(long_wav, target)
    except OSError:
        shutil.copyfile(long_wav, target)
    return target


INTRON_JOB: dict[str, object] = {
    "providers": {"transcriber": "intron", "summarizer": "invox", "note": "invox"},
    "template": SAMPLE_TEMPLATE,
}


def uploads(stats: dict[str, object]) -> list[dict[str, object]]:
    paid = stats["paid_submissions"]
    assert isinstance(paid, list)
    return [entry for entry in paid if entry["vendor"] == "intron"]


async def forget_done_marks(prefix: str) -> int:
    """What a crash between a chunk's paid upload and its message's ack leaves: the handles
    recorded, no stage marked done."""
    client = aioredis.Redis.from_url(REDIS_URL)
    pattern = f"{prefix}:{c.REDIS_LEDGER_NAMESPACE}:done:*"
    keys = [key async for key in client.scan_iter(pattern)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    return len(keys)


async def test_a_long_recording_goes_in_chunks_within_the_limit_and_is_stitched(
    redis_prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    long_wav: Path,
    tmp_path: Path,
) -> None:
    audio = place(long_wav, storage_root)
    work_dir = tmp_path / "work"
    job = make_job(audio, **INTRON_JOB)
    env = worker_env(
        redis_prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_REDIS_URL=REDIS_URL,
        SCRIBE_WORK_DIR=str(work_dir),
    )
    async with running_worker(env), watching(redis_prefix) as watcher:
        job_id = await watcher.submit(job)
        # The second chunk's upload fails once (a 503): it alone is retried.
        await wait_for_call(sandbox.base_url, "intron.upload", 1)
        fault = {"endpoint": "intron.upload", "kind": "http_error", "status": 503, "times": 1}
        await sandbox_control(sandbox.base_url, "faults", [fault])
        outcome = await watcher.outcome(job_id, timeout_s=90)
    assert outcome["type"] == "job.completed", outcome
    stats = await sandbox_stats(sandbox.base_url)

    # Three uploads paid, each its own audio and within Intron's 10 minutes, together the whole
    # recording; four upload calls: the failed one was retried, no other repeated.
    paid = uploads(stats)
    assert len(paid) == len(CHUNK_STARTS)
    assert len({entry["audioSha256"] for entry in paid}) == len(paid)
    durations = [float(entry["durationS"]) for entry in paid]  # type: ignore[arg-type]
    assert all(0 < seconds <= INTRON_LIMIT_S for seconds in durations), durations
    assert sum(durations) == pytest.approx(LONG_S)
    assert stats["calls"]["intron.upload"] == len(paid) + 1
    assert stats["responses"]["intron.upload"] == {"200": 3, "503": 1}

    # One transcript: each chunk's turns once, in order, each chunk's segments at its start.
    transcript = outcome["transcript"]
    turns = list(DEFAULT_TRANSCRIPT_TURNS)
    assert [s["text"] for s in transcript["segments"]] == turns * len(CHUNK_STARTS)
    starts = [s["start"] for s in transcript["segments"]]
    assert starts == [start for start in CHUNK_STARTS for _ in turns]
    assert transcript["durationS"] == pytest.approx(LONG_S)
    assert len(transcript["text"].splitlines()) == len(turns) * len(CHUNK_STARTS)
    assert list(work_dir.iterdir()) == []

    # Each chunk's stage events are events of their own: a consumer that drops repeated
    # eventIds must not take chunk 2's poll for a redelivery of chunk 1's.
    events = watcher.events[job_id]
    polls = [e for e in events if e["_routingKey"] == f"{c.EVENT_STAGE_PREFIX}poll"]
    assert len(polls) == len(CHUNK_STARTS)
    event_ids = [e["eventId"] for e in events]
    assert len(set(event_ids)) == len(event_ids)

    # Redelivered as after a crash (the handles recorded, no stage done): the same chunks are
    # derived, each found paid for, none uploaded again.
    assert await forget_done_marks(redis_prefix) > 0
    async with running_worker(env), watching(redis_prefix) as again:
        await again.submit(job)
        second = await again.outcome(job_id, timeout_s=90)
    assert second["type"] == "job.completed", second
    assert second["transcript"]["segments"] == transcript["segments"]
    stats = await sandbox_stats(sandbox.base_url)
    assert len(uploads(stats)) == len(CHUNK_STARTS)
    assert stats["calls"]["intron.upload"] == len(CHUNK_STARTS) + 1
    assert list(work_dir.iterdir()) == []


async def test_a_failed_chunk_leaves_no_file_behind(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, long_wav: Path, tmp_path: Path
) -> None:
    audio = place(long_wav, storage_root)
    work_dir = tmp_path / "work"
    refused = {"endpoint": "intron.upload", "kind": "http_error", "status": 400}
    await sandbox_control(sandbox.base_url, "faults", [refused])
    job = make_job(audio, **INTRON_JOB)
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_WORK_DIR=str(work_dir))
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job), timeout_s=60)
    assert outcome["type"] == "job.failed", outcome
    assert (outcome["stage"], outcome["errorType"]) == ("transcribe", "badRequest")
    assert list(work_dir.iterdir()) == []
    assert uploads(await sandbox_stats(sandbox.base_url)) == []


async def test_invox_segments_are_moved_to_the_recording_time(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, long_wav: Path, tmp_path: Path
) -> None:
    """Invox's segments are timed: each chunk's are moved by its start. SCRIBE_INVOX_MAX_AUDIO_S
    sets its chunk length."""
    audio = place(long_wav, storage_root)
    job = make_job(
        audio,
        providers={"transcriber": "invox", "summarizer": "invox", "note": "invox"},
    )
    env = worker_env(
        prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_WORK_DIR=str(tmp_path / "work"),
        SCRIBE_INVOX_MAX_AUDIO_S="600",
    )
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job), timeout_s=90)
    assert outcome["type"] == "job.completed", outcome
    segments = outcome["transcript"]["segments"]
    per_chunk = len(segments) // len(CHUNK_STARTS)
    assert len(segments) == per_chunk * len(CHUNK_STARTS)
    firsts = [segments[i * per_chunk]["start"] for i in range(len(CHUNK_STARTS))]
    assert firsts == list(CHUNK_STARTS)
    assert all(a["start"] <= b["start"] for a, b in itertools.pairwise(segments))
    paid = [p for p in (await sandbox_stats(sandbox.base_url))["paid_submissions"]]
    assert len(paid) == len(CHUNK_STARTS)


@pytest.mark.slow
async def test_the_local_model_transcribes_chunk_by_chunk(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, tmp_path: Path
) -> None:
    """The sample consultation twice, a 1.5 s pause between, with local chunks of at most 60 s:
    two chunks cut in the pause, each one transcribe message. The second chunk is the same speech
    as the first, so its words come back once more, at the recording's time: nothing lost or
    doubled at the seam."""
    pytest.importorskip("faster_whisper", reason="needs the 'local' extra")
    audio = storage_root / "twice.wav"
    seconds = long_consultation(audio, 2 * 57.16 + 1.5)
    cut = 57.16 + 0.75  # the middle of the pause
    job = make_job(
        audio, providers={"transcriber": "local", "summarizer": "local", "note": "local"}
    )
    work_dir = tmp_path / "work"
    env = worker_env(
        prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_LOCAL_CHUNK_S="60",
        SCRIBE_WORK_DIR=str(work_dir),
    )
    async with running_worker(env), watching(prefix) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job), timeout_s=300)
    assert outcome["type"] == "job.completed", outcome
    segments = outcome["transcript"]["segments"]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    first = " ".join(s["text"] for s in segments if s["start"] < cut).split()
    second = " ".join(s["text"] for s in segments if s["start"] >= cut).split()
    assert len(first) > 50
    assert abs(len(first) - len(second)) <= len(first) // 10, (len(first), len(second))
    # The same speech, 0.75 s of pause later in its chunk: its first words at the same place.
    first_start = min(s["start"] for s in segments if s["start"] < cut)
    second_start = min(s["start"] for s in segments if s["start"] >= cut)
    assert abs((second_start - cut - 0.75) - first_start) < 2.0, (first_start, second_start)
    assert max(s["end"] for s in segments) <= seconds + 1.0
    assert list(work_dir.iterdir()) == []
