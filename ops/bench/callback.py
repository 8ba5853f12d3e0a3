"""scribe-bench callback: time from "the vendor has the transcript" to "the summarize stage gets
the job", Invox callbacks against polling, in one run.

One real worker (stages transcribe,poll; SCRIBE_CALLBACK_BASE_URL on its HTTP port; the default
poll interval and delay tiers) against the emulator, whose transcriptions turn ready
--ready-ms after the audio PUT (ready_after_ms, a different value each round, so that the
polling arm meets the poll schedule at different phases). Each round sends a batch of jobs with
the emulator calling back (knob callbacks=true) and a batch with it silent (callbacks=false: the
same worker finds the transcript through its poll tiers). This program consumes
<prefix>.summarize itself: a job's latency is the wall time its summarize message reached a
consumer minus the emulator's readyAt for its transcription (matched by the recording's
sha256; every job's audio is its own), both clocks of this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from ops.bench.common import free_port, metric_value, percentile, publish_all, sandbox_stats
from ops.bench.context import BenchRun, Options, Result, bench_run, fmt, sandbox_flags
from ops.wav import write_wav
from schemas.jobs import JobRequest
from worker.constants import DEFAULT_POLL_INTERVAL_MS

ARMS = ("callbacks", "polling")
# Ready this long after the PUT, one value per round (cycled): phases of the 5 s poll interval.
READY_MS = (1_500, 3_700, 6_100, 8_300)
TARGET_P95_S = 1.0
# Jobs of a batch are published this far apart (consultations arrive one by one, not in a burst).
SPACING_S = 0.25


async def _control(run: BenchRun, path: str, payload: Any) -> None:
    async with run.session.post(f"{run.base_url}/_sandbox/{path}", json=payload) as response:
        response.raise_for_status()


def _job(run: BenchRun) -> tuple[JobRequest, str]:
    """An Invox job (no template) with a recording of its own, and that recording's sha256."""
    job_id = str(uuid.uuid4())
    audio = write_wav(
        run.options.workdir / f"{job_id}.wav", seconds=0.25, lead=job_id.encode("ascii")
    )
    job = JobRequest.model_validate(
        {
            "jobId": job_id,
            "audio": {"path": str(audio), "mimeType": "audio/wav"},
            "providers": {"transcriber": "invox", "summarizer": "invox", "note": "invox"},
        }
    )
    return job, hashlib.sha256(audio.read_bytes()).hexdigest()


class Arrivals:
    """When each job's summarize message reached this consumer (time.time())."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.at.setdefault(str(message.correlation_id), time.time())
        self.changed.set()

    async def wait_for(self, job_ids: set[str], deadline: float) -> None:
        while not job_ids <= self.at.keys():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = len(job_ids - self.at.keys())
                raise RuntimeError(f"{missing} jobs never reached the summarize stage")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue


async def _batch(
    run: BenchRun, arrivals: Arrivals, size: int, deadline: float
) -> tuple[dict[str, str], int]:
    """Publish `size` jobs and wait until each reached summarize; ({sha256: jobId}, status
    calls the batch cost)."""
    before = (await sandbox_stats(run.session, run.base_url))["calls"]
    jobs = [_job(run) for _ in range(size)]
    for job, _ in jobs:
        message = ("transcribe", job.to_wire(), str(job.job_id))
        await publish_all(run.connection, run.names.jobs_exchange, [message])
        await asyncio.sleep(SPACING_S)
    await arrivals.wait_for({str(job.job_id) for job, _ in jobs}, deadline)
    after = (await sandbox_stats(run.session, run.base_url))["calls"]
    calls = int(after.get("invox.transcription", 0)) - int(before.get("invox.transcription", 0))
    return {sha: str(job.job_id) for job, sha in jobs}, calls


def _summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "max_s": max(latencies, default=float("nan")),
    }


async def _worker_figures(run: BenchRun, port: int) -> tuple[dict[str, float], float]:
    """The worker's callback outcomes and busy poll deferrals, from its /metrics."""
    outcomes = {
        outcome: await metric_value(
            run.session, port, "scribe_invox_callbacks_total", f'outcome="{outcome}"'
        )
        for outcome in ("advanced", "pending", "alreadyAdvanced", "unknown", "replayed")
    }
    deferred = await metric_value(
        run.session, port, "scribe_stage_deferred_total", 'reason="busy",stage="poll"'
    )
    return outcomes, deferred


def _latencies(
    stats: dict[str, Any], owners: dict[str, tuple[str, str]], arrivals: Arrivals
) -> dict[str, list[float]]:
    """Per arm: summarize arrival minus the emulator's readyAt, for each job matched by sha256."""
    latencies: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for record in stats.get("invox_transcriptions", []):
        owner = owners.get(str(record.get("audioSha256")))
        ready_at = record.get("readyAt")
        if owner is None or ready_at is None:
            continue
        arm, job_id = owner
        latencies[arm].append(arrivals.at[job_id] - float(ready_at))
    return latencies


async def callback(options: Options) -> Result:
    per_arm = options.jobs or 40
    rounds = options.runs or len(READY_MS)
    size = max(1, per_arm // rounds)
    async with bench_run(options, "callback") as run:
        await run.emulator(*sandbox_flags())
        port = free_port()
        env = run.vendor_env(
            SCRIBE_STAGES="transcribe,poll",
            SCRIBE_RATE_LIMITS="none",
            SCRIBE_CALLBACK_BASE_URL=f"http://127.0.0.1:{port}",
        )
        await run.worker(env, http_port=port)
        connection = await run.connect()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        arrivals = Arrivals()
        summarize = await channel.declare_queue(run.names.stage_queue("summarize"), passive=True)
        await summarize.consume(arrivals.on_message, no_ack=True)
        deadline = time.monotonic() + options.timeout_s
        owners: dict[str, tuple[str, str]] = {}  # sha256 -> (arm, jobId)
        status_calls = dict.fromkeys(ARMS, 0)
        for round_index in range(rounds):
            ready_ms = READY_MS[round_index % len(READY_MS)]
            for arm in ARMS:
                knobs = {"ready_after_ms": ready_ms, "callbacks": arm == "callbacks"}
                await _control(run, "config", knobs)
                batch, calls = await _batch(run, arrivals, size, deadline)
                owners.update({sha: (arm, job_id) for sha, job_id in batch.items()})
                status_calls[arm] += calls
        stats = await sandbox_stats(run.session, run.base_url)
        outcomes, deferred = await _worker_figures(run, port)
    latencies = _latencies(stats, owners, arrivals)
    figures = {arm: _summary(values) for arm, values in latencies.items()}
    jobs = {arm: len(values) for arm, values in latencies.items()}
    callbacks_sent = stats.get("responses", {}).get("invox.callback", {})
    met = figures["callbacks"]["p95_s"] < TARGET_P95_S
    data: dict[str, Any] = {
        "jobs_per_arm": jobs,
        "rounds": rounds,
        "spacing_s": SPACING_S,
        "ready_after_ms": [READY_MS[i % len(READY_MS)] for i in range(rounds)],
        "poll_interval_ms": DEFAULT_POLL_INTERVAL_MS,
        "figures": figures,
        "status_calls": status_calls,
        "callbacks_sent_by_status": callbacks_sent,
        "callback_outcomes": outcomes,
        "poll_deferred_busy": deferred,
        "latencies_s": latencies,
        "target_p95_s": TARGET_P95_S,
        "met": met,
    }
    rows = [
        (
            arm,
            str(jobs[arm]),
            fmt(figures[arm]["p50_s"], 3),
            fmt(figures[arm]["p95_s"], 3),
            fmt(figures[arm]["max_s"], 3),
            fmt(status_calls[arm] / max(jobs[arm], 1), 2),
        )
        for arm in ARMS
    ]
    notes = [
        "latency: the summarize message reaching a consumer minus the emulator's readyAt "
        "(ready_after_ms after the audio PUT), per job; both arms run on one worker, one "
        f"batch of each per round, its jobs published {SPACING_S} s apart",
        f"polling arm: the emulator does not call back; default poll interval "
        f"{DEFAULT_POLL_INTERVAL_MS} ms and delay tiers",
        f"callbacks answered by the worker, by HTTP status: {callbacks_sent}; by outcome: "
        f"{ {k: int(v) for k, v in outcomes.items()} }; poll deliveries deferred busy: "
        f"{deferred:.0f}",
    ]
    line = (
        f"callbacks_p50_s={figures['callbacks']['p50_s']:.3f} "
        f"callbacks_p95_s={figures['callbacks']['p95_s']:.3f} "
        f"polling_p50_s={figures['polling']['p50_s']:.3f} "
        f"polling_p95_s={figures['polling']['p95_s']:.3f} met={met}"
    )
    header = ("arm", "jobs", "p50 s", "p95 s", "max s", "status calls/job")
    return Result("callback", header, rows, data, line, notes)
