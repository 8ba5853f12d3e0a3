"""scribe-bench long-recording: one 40-minute consultation through Intron (the emulator, its
30 uploads/min limit, the worker's production poll interval and rate limits) and through the local
model, each split at silences into chunks within the transcriber's limit and stitched: wall time
from publish to job.completed, the vendor calls, each upload's duration (the emulator reads it
from the WAV) against Intron's documented 10 minutes and 100 MB.

The recording is the sample consultation (an espeak-ng dialogue, ops/samples) repeated with
1.5 s pauses to the length asked for (--recording-s, default 2400 s), so the local model has speech
to transcribe; the emulator answers every chunk with its own scripted transcript.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

from ops.bench.common import publish_all, sandbox_stats
from ops.bench.context import BenchRun, Options, Result, bench_run, fmt, our_job, sandbox_flags
from schemas.jobs import JobRequest, Providers
from worker import constants as c
from worker.chunking import SAMPLE_BYTES, SAMPLE_RATE, WAV_HEADER_BYTES

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "consultation.wav"
PAUSE_S = 1.5


def long_consultation(target: Path, seconds: float) -> float:
    """The sample consultation again and again, PAUSE_S of silence between, `seconds` long (cut
    at the end); returns its duration."""
    with wave.open(str(SAMPLE)) as sample:
        params = sample.getparams()
        speech = sample.readframes(sample.getnframes())
    pause = b"\x00" * (int(PAUSE_S * params.framerate) * params.sampwidth * params.nchannels)
    frame_bytes = params.sampwidth * params.nchannels
    wanted = int(seconds * params.framerate) * frame_bytes
    written = 0
    with wave.open(str(target), "wb") as out:
        out.setparams(params)
        while written < wanted:
            for block in (speech, pause):
                piece = block[: wanted - written]
                out.writeframes(piece)
                written += len(piece)
    return float(written / frame_bytes / params.framerate)


def _job(audio: Path, transcriber: str) -> JobRequest:
    providers = Providers.model_validate(
        {"transcriber": transcriber, "summarizer": "local", "note": "local"}
    )
    return our_job(audio).model_copy(update={"providers": providers, "template": None})


async def _one_job(
    run: BenchRun, job: JobRequest, timeout_s: float
) -> tuple[float, dict[str, Any]]:
    """Publish the job; its wall time to job.completed (or job.failed) and that event."""
    collector = await run.collect(keep_bodies=True)
    job_id = str(job.job_id)
    began = time.monotonic()
    await publish_all(
        run.connection, run.names.jobs_exchange, [("transcribe", job.to_wire(), job_id)]
    )
    if not await collector.wait_for(1, began + timeout_s):
        raise TimeoutError(f"the job did not finish within {timeout_s:.0f} s")
    took = time.monotonic() - began
    if job_id in collector.failed:
        return took, {"type": "job.failed", **collector.failed[job_id]}
    return took, {"type": "job.completed", **collector.bodies[job_id]}


def _transcript_figures(event: dict[str, Any]) -> dict[str, Any]:
    transcript = event.get("transcript") or {}
    segments = transcript.get("segments") or []
    return {
        "outcome": event.get("type"),
        "error_type": event.get("errorType"),
        "segments": len(segments),
        "words": len(str(transcript.get("text", "")).split()),
        "transcript_duration_s": transcript.get("durationS"),
        "last_segment_end_s": max((s["end"] for s in segments), default=None),
    }


async def _intron(options: Options, audio: Path, duration_s: float) -> dict[str, Any]:
    async with bench_run(options, "long-intron") as run:
        base_url = await run.emulator(*sandbox_flags(intron_upload_rate="30"))
        env = run.vendor_env(SCRIBE_WORK_DIR=str(options.workdir / "work-intron"))
        await run.worker(env)
        await run.connect()
        took, event = await _one_job(run, _job(audio, "intron"), options.timeout_s)
        stats = await sandbox_stats(run.session, base_url)
    paid = [p for p in stats.get("paid_submissions", []) if p["vendor"] == "intron"]
    durations = [float(p["durationS"]) for p in paid if p.get("durationS") is not None]
    return {
        "wall_s": took,
        "realtime_x": duration_s / took,
        "calls": stats.get("calls", {}),
        "rate_limited": stats.get("rate_limited"),
        "uploads": len(paid),
        "distinct_uploads": len({p["audioSha256"] for p in paid}),
        "upload_durations_s": durations,
        "max_upload_s": max(durations, default=0.0),
        "max_upload_bytes": WAV_HEADER_BYTES
        + int(max(durations, default=0.0) * SAMPLE_RATE) * SAMPLE_BYTES,
        "work_dir_left": _left(options.workdir / "work-intron"),
        **_transcript_figures(event),
    }


async def _local(options: Options, audio: Path, duration_s: float) -> dict[str, Any]:
    async with bench_run(options, "long-local") as run:
        env = run.vendor_env(SCRIBE_WORK_DIR=str(options.workdir / "work-local"))
        await run.worker(env)
        await run.connect()
        took, event = await _one_job(run, _job(audio, "local"), options.timeout_s)
    return {
        "wall_s": took,
        "realtime_x": duration_s / took,
        "chunk_s": c.DEFAULT_LOCAL_CHUNK_S,
        "work_dir_left": _left(options.workdir / "work-local"),
        **_transcript_figures(event),
    }


def _left(folder: Path) -> int:
    return len(list(folder.iterdir())) if folder.is_dir() else 0


async def long_recording(options: Options) -> Result:
    seconds = options.recording_s
    audio = options.workdir / "long-consultation.wav"
    duration_s = long_consultation(audio, seconds)
    intron = await _intron(options, audio, duration_s)
    local = await _local(options, audio, duration_s)
    rows = [
        ("recording", f"{duration_s / 60:.1f} min", f"{duration_s / 60:.1f} min"),
        ("outcome", str(intron["outcome"]), str(local["outcome"])),
        ("wall time", f"{fmt(intron['wall_s'])} s", f"{fmt(local['wall_s'])} s"),
        ("x real time", fmt(intron["realtime_x"]), fmt(local["realtime_x"])),
        ("uploads (distinct)", f"{intron['uploads']} ({intron['distinct_uploads']})", "0"),
        ("longest upload", f"{fmt(intron['max_upload_s'])} s", "-"),
        ("largest upload", f"{intron['max_upload_bytes'] / 1e6:.1f} MB", "-"),
        ("vendor calls", _calls(intron["calls"]), "none"),
        ("segments", str(intron["segments"]), str(local["segments"])),
        ("work dir after", str(intron["work_dir_left"]), str(local["work_dir_left"])),
    ]
    data = {"duration_s": duration_s, "intron": intron, "local": local}
    notes = [
        "Intron: the emulator with 30 uploads/min; the worker's defaults (5 s poll interval, "
        "intron.upload=30/min); the emulator is ready after 2 polls.",
        f"local: the default model (SCRIBE_LOCAL_ASR_MODEL={c.DEFAULT_LOCAL_ASR_MODEL}), chunks "
        f"of at most {c.DEFAULT_LOCAL_CHUNK_S:.0f} s (SCRIBE_LOCAL_CHUNK_S), summary and note "
        "local.",
        "An upload over 600 s or 100 MB would fail the job (the emulator refuses both).",
    ]
    last = (
        f"intron_wall_s={intron['wall_s']:.1f} intron_uploads={intron['uploads']} "
        f"intron_max_upload_s={intron['max_upload_s']:.1f} local_wall_s={local['wall_s']:.1f}"
    )
    return Result(
        "long-recording", ("figure", "intron (emulator)", "local"), rows, data, last, notes
    )


def _calls(calls: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(calls.items()))
