"""The scenarios of scribe-bench. Each returns a Result: a table, the figures as JSON and one
machine-readable last line. Each cleans up its own queues, exchanges, Redis keys and processes."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aio_pika
import aiohttp

from ops.bench.common import (
    Collector,
    broker_pid,
    cpu_seconds,
    delete_all,
    delete_redis_keys,
    free_port,
    in_flight_of,
    list_queues,
    metric_value,
    percentile,
    publish_all,
    publish_at_rate,
    python_child,
    queue_depths,
    responses_of,
    rss_mb,
    sandbox_config,
    sandbox_stats,
    scribe_worker,
    unique_prefix,
    write_wav,
)
from ops.procs import sandbox_process
from schemas.jobs import (
    JobRequest,
    PollMessage,
    Providers,
    SummarizeMessage,
    Transcript,
    TranscriptionHandle,
)
from worker import constants as c
from worker.constants import STAGES
from worker.handles import HandleSigner
from worker.settings import Settings
from worker.topology import Names

SANDBOX_INTRON_KEY = "bench-intron-key"
SANDBOX_INVOX_TOKEN = "bench-invox-token"  # noqa: S105 - the emulator's, not a credential
HOPS = STAGES  # transcribe, poll, summarize, note: the hop that ends at each stage
TEMPLATE = {
    "id": "bench",
    "template_name": "Bench note",
    "template_language": "en",
    "fields": [{"id": "f1", "name": "Assessment", "type": "string"}],
}


@dataclass
class Options:
    amqp_url: str
    redis_url: str
    jobs: int | None
    runs: int | None
    prefetch: int | None
    rate: float
    duration_s: float
    timeout_s: float
    polls: int
    latency_ms: int
    rate_limit: int
    rate_window_s: float
    workdir: Path
    warmup_s: float = 1.0
    stage_events: bool = False
    worker_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    scenario: str
    header: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    data: dict[str, Any]
    last_line: str
    notes: list[str] = field(default_factory=list)


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


# ---------------------------------------------------------------- the two pipelines, side by side


def _our_job(audio: Path) -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": str(audio), "mimeType": "audio/wav"},
            "providers": {"transcriber": "local", "summarizer": "local", "note": "local"},
            "template": TEMPLATE,
            "noteLanguage": "en",
        }
    )


def _messages(side: str, count: int, audio: Path) -> list[tuple[str, bytes, str]]:
    """(routing key, body, jobId): our JobRequests, or floor messages padded to the same size."""
    messages = []
    for _ in range(count):
        job = _our_job(audio)
        body = job.to_wire()
        job_id = str(job.job_id)
        if side == "floor":
            floor = {"jobId": job_id, "stage": "transcribe", "t": {}, "pad": ""}
            floor["pad"] = "x" * max(0, len(body) - len(json.dumps(floor)))
            body = json.dumps(floor).encode()
        messages.append(("transcribe", body, job_id))
    return messages


@asynccontextmanager
async def _pipeline(
    side: str, prefix: str, options: Options, prefetch: int, stage_events: bool
) -> AsyncIterator[int]:
    """Start the floor or our worker (instant providers) as a subprocess; yields its pid.

    stage_events: whether the pipeline publishes a progress event per stage (ours by default
    does; the latency scenario needs them, the floor scenario compares like with like)."""
    log = options.workdir / f"{prefix}.log"
    if side == "floor":
        args = ["--amqp-url", options.amqp_url, "--prefix", prefix, "--prefetch", str(prefetch)]
        if stage_events:
            args.append("--events")
        async with python_child("ops.bench.floor_worker", args, {}, log) as process:
            yield process.pid
        return
    env = {
        "SCRIBE_AMQP_URL": options.amqp_url,
        "SCRIBE_PREFIX": prefix,
        "SCRIBE_PREFETCH": str(prefetch),
        "SCRIBE_DELAY_TIERS_MS": "1",
        "SCRIBE_POLL_INTERVAL_MS": "1",
        "SCRIBE_RATE_LIMITS": "none",
        "SCRIBE_STORAGE_ROOT": str(options.workdir),
        "SCRIBE_HTTP_PORT": str(free_port()),
        "SCRIBE_LOG_LEVEL": "info",
        # The instant provider's handles name "local": no vendor credentials to derive a key from.
        "SCRIBE_HANDLE_KEY": secrets.token_hex(32),
        **({} if stage_events else {"SCRIBE_STAGE_EVENTS": "none"}),
        **options.worker_env,
    }
    async with python_child("ops.bench.instant_worker", [], env, log) as process:
        yield process.pid


@dataclass
class SideRun:
    side: str
    jobs: int
    completed: int
    failed: int
    elapsed_s: float
    worker_cpu_s: float
    broker_cpu_s: float
    hops_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def jobs_s(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_ms_per_job(self) -> float:
        return 1000 * self.worker_cpu_s / max(self.completed, 1)

    @property
    def broker_cpu_ms_per_job(self) -> float:
        return 1000 * self.broker_cpu_s / max(self.completed, 1)


async def _run_side(
    side: str, options: Options, count: int, prefetch: int, rate: float | None, deadline: float
) -> SideRun:
    prefix = unique_prefix(f"{side}")
    audio = write_wav(options.workdir / "bench.wav")
    messages = _messages(side, count, audio)
    keys: tuple[str, ...] = ("job.completed", "job.failed")
    if rate is not None and side == "ours":
        keys += ("job.stage.#",)
    try:
        # latency times ours from its job.stage events, the floor from stamps in its messages
        events = options.stage_events or (rate is not None and side == "ours")
        async with _pipeline(side, prefix, options, prefetch, events) as pid:
            connection = await aio_pika.connect_robust(options.amqp_url)
            try:
                collector = Collector(connection, prefix, keys, keep_bodies=side == "floor")
                await collector.start()
                sent_at: dict[str, float] = {}
                beam = broker_pid()
                cpu_before = cpu_seconds(pid)
                broker_before = cpu_seconds(beam) if beam else 0.0
                started = time.time()
                exchange = Names(prefix).jobs_exchange
                if rate is None:
                    await publish_all(connection, exchange, messages)
                else:
                    await publish_at_rate(connection, exchange, messages, rate, sent_at)
                await collector.wait_for(count, deadline)
                cpu = cpu_seconds(pid) - cpu_before
                broker_cpu = (cpu_seconds(beam) - broker_before) if beam else 0.0
                last = max(collector.completed.values(), default=started)
            finally:
                await connection.close()
    finally:
        await delete_all(options.amqp_url, prefix)
    run = SideRun(
        side,
        count,
        len(collector.completed),
        len(collector.failed),
        last - started,
        cpu,
        broker_cpu,
    )
    if rate is not None:
        run.hops_ms = _hops(side, collector, sent_at, options.warmup_s)
    return run


def _hops(
    side: str, collector: Collector, sent_at: dict[str, float], warmup_s: float
) -> dict[str, list[float]]:
    """Per hop (the time from the previous stage's end, or the publish, to this stage's end) and
    end to end (publish to job.completed received), in ms; jobs published in the first
    warmup_s seconds are left out (first use of each code path: imports, thread pool)."""
    hops: dict[str, list[float]] = {hop: [] for hop in (*HOPS, "end_to_end")}
    measured_from = min(sent_at.values(), default=0.0) + warmup_s
    for job_id, done_at in collector.completed.items():
        submitted = sent_at.get(job_id)
        if submitted is None or submitted < measured_from:
            continue
        if side == "floor":
            stamps = collector.bodies[job_id]["t"]
        else:
            stamps = collector.stage_times.get(job_id, {})
        if not all(hop in stamps for hop in HOPS):
            continue
        previous = submitted
        for hop in HOPS:
            hops[hop].append(1000 * (stamps[hop] - previous))
            previous = stamps[hop]
        hops["end_to_end"].append(1000 * (done_at - submitted))
    return hops


async def _alternate(
    options: Options, count: int, runs: int, prefetch: int, rate: float | None
) -> dict[str, list[SideRun]]:
    deadline = time.monotonic() + options.timeout_s
    results: dict[str, list[SideRun]] = {"floor": [], "ours": []}
    for _ in range(runs):
        for side in ("floor", "ours"):
            run = await _run_side(side, options, count, prefetch, rate, deadline)
            if run.completed < count:
                raise RuntimeError(
                    f"{side}: only {run.completed} of {count} jobs completed "
                    f"({run.failed} failed) before the deadline"
                )
            results[side].append(run)
    return results


async def floor(options: Options) -> Result:
    count, runs, prefetch = options.jobs or 2000, options.runs or 3, options.prefetch or 16
    results = await _alternate(options, count, runs, prefetch, None)
    rows = []
    for index in range(runs):
        for side in ("floor", "ours"):
            run = results[side][index]
            rows.append((str(index + 1), side, str(run.completed), _fmt(run.elapsed_s, 2),
                         _fmt(run.jobs_s), _fmt(run.cpu_ms_per_job, 2),
                         _fmt(run.broker_cpu_ms_per_job, 2)))  # fmt: skip
    floor_s = statistics.median(run.jobs_s for run in results["floor"])
    ours_s = statistics.median(run.jobs_s for run in results["ours"])
    ratio = ours_s / floor_s if floor_s else 0.0
    paired = [o.jobs_s / f.jobs_s for f, o in zip(results["floor"], results["ours"], strict=True)]
    data = {
        "jobs": count,
        "runs": runs,
        "prefetch": prefetch,
        "stage_events": options.stage_events,
        "worker_env": options.worker_env,
        "floor_jobs_s": [run.jobs_s for run in results["floor"]],
        "ours_jobs_s": [run.jobs_s for run in results["ours"]],
        "floor_cpu_ms_per_job": [run.cpu_ms_per_job for run in results["floor"]],
        "ours_cpu_ms_per_job": [run.cpu_ms_per_job for run in results["ours"]],
        "floor_broker_cpu_ms_per_job": [run.broker_cpu_ms_per_job for run in results["floor"]],
        "ours_broker_cpu_ms_per_job": [run.broker_cpu_ms_per_job for run in results["ours"]],
        "paired_ratios": paired,
        "floor_median_jobs_s": floor_s,
        "ours_median_jobs_s": ours_s,
        "ratio": ratio,
        "target_ratio": 0.85,
        "met": ratio >= 0.85,
    }
    notes = [
        "median of the runs; jobs/s = jobs / (first publish -> last job.completed received)",
        "ratio of each run pair (ours / the floor just before it): "
        + " ".join(f"{value:.3f}" for value in paired),
        "cpu ms/job: user+system CPU of the pipeline process; broker: of the RabbitMQ node",
        "both: 4 consumer hops + one 1 ms per-queue-TTL delay queue between transcribe and poll",
        "both publish 9 confirmed messages per job: a job.stage event per stage (--stage-events)"
        if options.stage_events
        else "both publish 5 confirmed messages per job (ours: SCRIBE_STAGE_EVENTS=none)",
        "ours also: pydantic validation (the job once per process, then each stage's state),"
        " ledger (in memory) claims, a WAV header check,"
        " traceparent, metrics, JSON logs at info"
        + (f"; worker env {options.worker_env}" if options.worker_env else ""),
    ]
    line = f"floor_jobs_s={floor_s:.1f} ours_jobs_s={ours_s:.1f} ratio={ratio:.3f}"
    header = ("run", "pipeline", "jobs", "seconds", "jobs/s", "cpu ms/job", "broker cpu ms/job")
    return Result("floor", header, rows, data, line, notes)


async def latency(options: Options) -> Result:
    count, runs, prefetch = options.jobs or 1000, options.runs or 1, options.prefetch or 16
    results = await _alternate(options, count, runs, prefetch, options.rate)
    merged: dict[str, dict[str, list[float]]] = {}
    for side in ("floor", "ours"):
        merged[side] = {hop: [] for hop in (*HOPS, "end_to_end")}
        for run in results[side]:
            for hop, values in run.hops_ms.items():
                merged[side][hop].extend(values)
    rows = []
    figures: dict[str, Any] = {}
    worst = 0.0
    for hop in (*HOPS, "end_to_end"):
        cells = []
        for side in ("floor", "ours"):
            values = merged[side][hop]
            p = {f"p{q}": percentile(values, q) for q in (50, 95, 99)}
            figures.setdefault(side, {})[hop] = {**p, "samples": len(values)}
            cells += [_fmt(p["p50"]), _fmt(p["p95"]), _fmt(p["p99"])]
        overhead = figures["ours"][hop]["p99"] - figures["floor"][hop]["p99"]
        if hop != "end_to_end":
            worst = max(worst, overhead)
        rows.append((hop, *cells, _fmt(overhead)))
    data = {
        "jobs": count,
        "runs": runs,
        "rate_per_s": options.rate,
        "prefetch": prefetch,
        "warmup_s": options.warmup_s,
        "ms": figures,
        "max_hop_p99_overhead_ms": worst,
        "target_ms": 10,
        "met": worst < 10,
    }
    notes = [
        "hop = previous stage's end (or the publish) -> this stage's end; ours: job.stage.<stage> "
        "occurredAt, floor: timestamps carried in the message; end_to_end: publish -> "
        "job.completed received",
        "the poll hop includes the 1 ms-TTL delay queue on both sides",
        f"jobs published in the first {options.warmup_s:g} s of each run are left out (warm-up)",
    ]
    e2e_floor, e2e_ours = (
        figures["floor"]["end_to_end"]["p99"],
        figures["ours"]["end_to_end"]["p99"],
    )
    line = (
        f"floor_e2e_p99_ms={e2e_floor:.1f} ours_e2e_p99_ms={e2e_ours:.1f} "
        f"max_hop_p99_overhead_ms={worst:.1f}"
    )
    header = ("hop", "floor p50", "floor p95", "floor p99", "ours p50", "ours p95", "ours p99",
              "p99 overhead ms")  # fmt: skip
    return Result("latency", header, rows, data, line, notes)


# ---------------------------------------------------------------- the real worker, the emulator


def _vendor_env(options: Options, prefix: str, base_url: str, **extra: str) -> dict[str, str]:
    env = {
        "SCRIBE_AMQP_URL": options.amqp_url,
        "SCRIBE_PREFIX": prefix,
        "SCRIBE_INTRON_BASE_URL": base_url,
        "SCRIBE_INTRON_API_KEY": SANDBOX_INTRON_KEY,
        "SCRIBE_INVOX_BASE_URL": base_url,
        "SCRIBE_INVOX_ACCESS_TOKEN": SANDBOX_INVOX_TOKEN,
        "SCRIBE_URL_ALLOWLIST": "127.0.0.1",
        "SCRIBE_STORAGE_ROOT": str(options.workdir),
        "SCRIBE_LOG_LEVEL": "warning",
        "SCRIBE_SHUTDOWN_GRACE_S": "5",
    }
    env.update(extra)
    return env


def _sandbox_flags(**extra: str) -> list[str]:
    flags = ["--intron-api-key", SANDBOX_INTRON_KEY, "--invox-static-token", SANDBOX_INVOX_TOKEN]
    for name, value in extra.items():
        flags += [f"--{name.replace('_', '-')}", value]
    return flags


async def _sample_every(
    interval_s: float, stop: asyncio.Event, sample: Callable[[], Awaitable[None]]
) -> None:
    while not stop.is_set():
        with suppress(Exception):  # a sample that fails (broker restarting) is just skipped
            await sample()
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def slow_vendor(options: Options) -> Result:
    count = options.jobs or 1800
    prefetch = options.prefetch or 600
    prefix = unique_prefix("slow")
    audio = write_wav(options.workdir / "bench.wav")
    port = free_port()
    samples: list[tuple[float, int, float]] = []  # (t, emulator in-flight, worker gauge)
    try:
        flags = _sandbox_flags(latency_ms=str(options.latency_ms), polls_before_ready="0")
        async with sandbox_process(*flags) as base_url, aiohttp.ClientSession() as session:
            env = _vendor_env(options, prefix, base_url, SCRIBE_STAGES="summarize",
                              SCRIBE_PREFETCH_SUMMARIZE=str(prefetch), SCRIBE_RATE_LIMITS="none",
                              SCRIBE_HTTP_TIMEOUT_S="30")  # fmt: skip
            log = options.workdir / f"{prefix}.log"
            async with scribe_worker(env, port, log) as worker:
                connection = await aio_pika.connect_robust(options.amqp_url)
                try:
                    collector = Collector(connection, prefix)
                    await collector.start()
                    messages = []
                    for _ in range(count):
                        job = _our_job(audio).model_copy(
                            update={"providers": _providers("invox"), "template": None}
                        )
                        transcript = Transcript(provider="invox", text="Knee pain, three weeks.")
                        body = SummarizeMessage(job_id=job.job_id, job=job, transcript=transcript)
                        messages.append(("summarize", body.to_wire(), str(job.job_id)))
                    stop = asyncio.Event()
                    began = time.monotonic()

                    async def sample() -> None:
                        stats = await sandbox_stats(session, base_url)
                        gauge = await metric_value(
                            session, port, "scribe_in_flight", 'stage="summarize"'
                        )
                        samples.append(
                            (time.monotonic() - began, in_flight_of(stats, "invox.summary"), gauge)
                        )

                    sampler = asyncio.create_task(_sample_every(0.25, stop, sample))
                    started = time.time()
                    cpu_before = cpu_seconds(worker.pid)
                    await publish_all(connection, Names(prefix).jobs_exchange, messages)
                    await collector.wait_for(count, time.monotonic() + options.timeout_s)
                    cpu = cpu_seconds(worker.pid) - cpu_before
                    stop.set()
                    await sampler
                    last = max(collector.completed.values(), default=started)
                    stats = await sandbox_stats(session, base_url)
                    peak_rss = rss_mb(worker.pid)
                finally:
                    await connection.close()
    finally:
        await delete_all(options.amqp_url, prefix)
    completed, failed = len(collector.completed), len(collector.failed)
    responses = responses_of(stats, "invox.summary")
    errors = failed + sum(n for status, n in responses.items() if status != "200")
    max_emulator = max((s[1] for s in samples), default=0)
    max_gauge = max((s[2] for s in samples), default=0.0)
    elapsed = last - started
    jobs_s = completed / elapsed if elapsed > 0 else 0.0
    ideal = min(prefetch, count) / (options.latency_ms / 1000)
    data = {
        "jobs": count,
        "prefetch": prefetch,
        "vendor_latency_ms": options.latency_ms,
        "completed": completed,
        "failed": failed,
        "responses": responses,
        "errors": errors,
        "max_concurrent_vendor_calls": max_emulator,
        "max_scribe_in_flight": max_gauge,
        "jobs_s": jobs_s,
        "ideal_jobs_s": ideal,
        "worker_cpu_s": cpu,
        "worker_rss_mb_end": peak_rss,
        "samples": samples,
        "target_concurrent": 500,
        "met": max_emulator >= 500 and errors == 0,
    }
    rows = [
        ("vendor latency ms", str(options.latency_ms)),
        ("prefetch (summarize)", str(prefetch)),
        ("jobs completed / failed", f"{completed} / {failed}"),
        ("max concurrent calls at the emulator", str(max_emulator)),
        ("max scribe_in_flight{stage=summarize}", _fmt(max_gauge, 0)),
        ("jobs/s (ideal prefetch/latency)", f"{jobs_s:.1f} ({ideal:.0f})"),
        ("worker CPU s", _fmt(cpu, 1)),
        ("non-200 vendor responses + failed jobs", str(errors)),
    ]
    notes = ["emulator in-flight = requests received minus requests answered, sampled 4x/s"]
    line = f"max_in_flight={max_emulator} jobs_s={jobs_s:.1f} errors={errors}"
    return Result("slow-vendor", ("figure", "value"), rows, data, line, notes)


def _providers(transcriber: Literal["intron", "invox"]) -> Providers:
    return Providers(transcriber=transcriber, summarizer="invox", note="invox")


async def _create_invox_transcriptions(
    session: aiohttp.ClientSession, base_url: str, count: int, concurrency: int = 32
) -> list[str]:
    """What the transcribe stage would have done: presign + PUT, `count` times."""
    headers = {"Authorization": f"Bearer {SANDBOX_INVOX_TOKEN}",
               "X-Invox-Medical-Api-Version": "2026-03-01"}  # fmt: skip
    ids: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            url = f"{base_url}/api/v1/generate-presigned-url"
            async with session.post(url, json={"mimeType": "audio/wav"}, headers=headers) as r:
                body = await r.json()
            put_headers = {"Content-Type": "audio/wav"}
            async with session.put(body["presignedUrl"], data=b"RIFF", headers=put_headers) as r:
                r.raise_for_status()
            ids.append(str(body["requestId"]))

    await asyncio.gather(*(one() for _ in range(count)))
    return ids


async def polling(options: Options) -> Result:
    count = options.jobs or 10_000
    prefetch = options.prefetch or 16
    prefix = unique_prefix("polling")
    names = Names(prefix)
    audio = write_wav(options.workdir / "bench.wav")
    port = free_port()
    tiers = (1000, 5000, 30000)
    rss: list[tuple[float, float]] = []
    depths: list[tuple[float, dict[str, int]]] = []
    unacked: list[tuple[float, dict[str, tuple[int, int]]]] = []
    try:
        flags = _sandbox_flags(polls_before_ready=str(options.polls))
        async with sandbox_process(*flags) as base_url, aiohttp.ClientSession() as session:
            env = _vendor_env(options, prefix, base_url, SCRIBE_STAGES="poll,summarize",
                              SCRIBE_PREFETCH=str(prefetch), SCRIBE_RATE_LIMITS="none",
                              SCRIBE_DELAY_TIERS_MS=",".join(map(str, tiers)),
                              SCRIBE_POLL_INTERVAL_MS="1000")  # fmt: skip
            request_ids = await _create_invox_transcriptions(session, base_url, count)
            # Signed as the worker's transcribe stage would: its poll stage refuses others.
            signer = HandleSigner.from_settings(Settings.from_env(env))
            log = options.workdir / f"{prefix}.log"
            async with scribe_worker(env, port, log) as worker:
                connection = await aio_pika.connect_robust(options.amqp_url)
                try:
                    collector = Collector(connection, prefix)
                    await collector.start()
                    messages = []
                    now = datetime.now(UTC)
                    for request_id in request_ids:
                        job = _our_job(audio).model_copy(
                            update={"providers": _providers("invox"), "template": None}
                        )
                        handle = signer.sign(
                            str(job.job_id),
                            TranscriptionHandle(
                                provider="invox", handle=request_id, submitted_at=now
                            ),
                        )
                        body = PollMessage(job_id=job.job_id, job=job, transcription=handle)
                        messages.append(("poll", body.to_wire(), str(job.job_id)))
                    stop = asyncio.Event()
                    began = time.monotonic()
                    watched = [names.stage_queue("poll"), names.stage_queue("summarize"),
                               *(names.delay_queue(ms) for ms in tiers)]  # fmt: skip

                    async def sample_fast() -> None:
                        rss.append((time.monotonic() - began, rss_mb(worker.pid)))
                        depth = await queue_depths(connection, watched)
                        depths.append((time.monotonic() - began, depth))

                    async def sample_slow() -> None:
                        unacked.append((time.monotonic() - began, await list_queues(prefix)))

                    samplers = [
                        asyncio.create_task(_sample_every(1.0, stop, sample_fast)),
                        asyncio.create_task(_sample_every(3.0, stop, sample_slow)),
                    ]
                    rss_idle = rss_mb(worker.pid)
                    started = time.time()
                    await publish_all(connection, names.jobs_exchange, messages)
                    await collector.wait_for(count, time.monotonic() + options.timeout_s)
                    stop.set()
                    await asyncio.gather(*samplers)
                    last = max(collector.completed.values(), default=started)
                    stats = await sandbox_stats(session, base_url)
                finally:
                    await connection.close()
    finally:
        await delete_all(options.amqp_url, prefix)
    completed, failed = len(collector.completed), len(collector.failed)
    status_calls = int(stats.get("calls", {}).get("invox.transcription", 0))
    polls_per_job = status_calls / max(count, 1)
    min_polls = options.polls + 1
    values = [mb for _, mb in rss]
    half = len(values) // 2
    max_unacked_stage = max(
        (u for _, q in unacked for name, (_, u) in q.items() if ".delay." not in name), default=0
    )
    max_unacked_delay = max(
        (u for _, q in unacked for name, (_, u) in q.items() if ".delay." in name), default=0
    )
    max_waiting = max((sum(d.values()) for _, d in depths), default=0)
    elapsed = last - started
    rss_max = max(values, default=0.0)
    first_half = statistics.median(values[:half]) if half else rss_max
    second_half = statistics.median(values[half:]) if values else rss_max
    data = {
        "jobs": count,
        "polls_before_ready": options.polls,
        "poll_interval_ms": 1000,
        "prefetch": prefetch,
        "completed": completed,
        "failed": failed,
        "elapsed_s": elapsed,
        "status_calls": status_calls,
        "polls_per_job": polls_per_job,
        "min_polls_per_job": min_polls,
        "min_elapsed_s_per_job": options.polls * tiers[0] / 1000,
        "rss_mb_idle": rss_idle,
        "rss_mb_max": rss_max,
        "rss_mb_median_first_half": first_half,
        "rss_mb_median_second_half": second_half,
        "max_messages_waiting": max_waiting,
        "max_unacked_stage_queues": max_unacked_stage,
        "max_unacked_delay_queues": max_unacked_delay,
        "rss_samples": rss,
        "depth_samples": depths,
        "unacked_samples": [(t, {k: list(v) for k, v in q.items()}) for t, q in unacked],
        "target_rss_mb": 200,
        "met": rss_max < 200 and max_unacked_stage <= 2 * prefetch and max_unacked_delay == 0,
    }
    rows = [
        ("jobs completed / failed", f"{completed} / {failed}"),
        ("seconds (publish -> last completed)", _fmt(elapsed)),
        ("status calls per job (minimum)", f"{polls_per_job:.2f} ({min_polls})"),
        ("worker RSS MiB idle / max", f"{rss_idle:.0f} / {rss_max:.0f}"),
        ("RSS MiB median 1st half / 2nd half", f"{first_half:.0f} / {second_half:.0f}"),
        ("max messages waiting in poll + delay queues", str(max_waiting)),
        (
            "max unacked: stage queues (prefetch) / delay",
            f"{max_unacked_stage} ({prefetch}) / {max_unacked_delay}",
        ),
    ]
    notes = [
        "Invox transcriptions are created in the emulator up front (presign + PUT), then "
        "PollMessages go straight to the poll routing key; the worker consumes poll,summarize",
        "unacked from `rabbitmqctl list_queues` every 3 s; depths by passive declare every 1 s",
    ]
    line = (
        f"jobs={count} completed={completed} rss_max_mb={rss_max:.0f} "
        f"polls_per_job={polls_per_job:.2f} min_polls={min_polls} max_unacked={max_unacked_stage}"
    )
    return Result("polling", ("figure", "value"), rows, data, line, notes)


def _scaled_timing(scale: float) -> dict[str, str]:
    """The production defaults of the settings that shape deferral (delay tiers, poll interval,
    the longest wait for a slot), times scale: a shrunken rate window keeps its dynamics."""
    tiers = ",".join(str(max(1, round(ms * scale))) for ms in c.DEFAULT_DELAY_TIERS_MS)
    return {
        "SCRIBE_DELAY_TIERS_MS": tiers,
        "SCRIBE_POLL_INTERVAL_MS": str(max(1, round(c.DEFAULT_POLL_INTERVAL_MS * scale))),
        "SCRIBE_RATE_LIMIT_MAX_WAIT_S": f"{c.DEFAULT_RATE_LIMIT_MAX_WAIT_S * scale:.3f}",
    }


async def rate_limit(options: Options) -> Result:
    window = options.rate_window_s
    per_window = options.rate_limit
    per_minute_worker = round(per_window * 60 / window)
    duration = options.duration_s
    count = options.jobs or int(per_window * duration / window * 1.5) + 20
    prefix = unique_prefix("ratelimit")
    audio = write_wav(options.workdir / "bench.wav")
    samples: list[tuple[float, int]] = []
    try:
        flags = _sandbox_flags(intron_upload_rate=str(per_window), intron_status_rate="0")
        async with sandbox_process(*flags) as base_url, aiohttp.ClientSession() as session:
            await sandbox_config(session, base_url, {"rate_window_s": window})
            env = _vendor_env(options, prefix, base_url, SCRIBE_STAGES="transcribe",
                              SCRIBE_REDIS_URL=options.redis_url,
                              SCRIBE_RATE_LIMITS=f"intron.upload={per_minute_worker}",
                              **_scaled_timing(window / 60))  # fmt: skip
            logs = [options.workdir / f"{prefix}-{i}.log" for i in (1, 2)]
            async with (
                scribe_worker(env, free_port(), logs[0]),
                scribe_worker(env, free_port(), logs[1]),
            ):
                connection = await aio_pika.connect_robust(options.amqp_url)
                try:
                    messages = []
                    for _ in range(count):
                        job = _our_job(audio).model_copy(
                            update={"providers": _providers("intron"), "template": None}
                        )
                        messages.append(("transcribe", job.to_wire(), str(job.job_id)))
                    await publish_all(connection, Names(prefix).jobs_exchange, messages)
                    began = time.monotonic()
                    stop = asyncio.Event()

                    async def sample() -> None:
                        stats = await sandbox_stats(session, base_url)
                        ok = responses_of(stats, "intron.upload").get("200", 0)
                        samples.append((time.monotonic() - began, ok))

                    sampler = asyncio.create_task(_sample_every(0.5, stop, sample))
                    await asyncio.sleep(duration)
                    stop.set()
                    await sampler
                    stats = await sandbox_stats(session, base_url)
                finally:
                    await connection.close()
    finally:
        await delete_all(options.amqp_url, prefix)
        await delete_redis_keys(options.redis_url, prefix)
    responses = responses_of(stats, "intron.upload")
    rate_limited = int(stats.get("rate_limited", 0))
    # Steady state: from the first upload to the end, minus the one slot the first call takes.
    first = next((t for t, ok in samples if ok > 0), 0.0)
    total = samples[-1][1] if samples else 0
    span = (samples[-1][0] - first) if samples else 0.0
    achieved_per_window = (total - 1) / span * window if span > 0 else 0.0
    utilisation = achieved_per_window / per_window if per_window else 0.0
    data = {
        "limit_per_window": per_window,
        "window_s": window,
        "worker_limit_per_min": per_minute_worker,
        "duration_s": duration,
        "jobs_published": count,
        "uploads_ok": total,
        "responses": responses,
        "rate_limited": rate_limited,
        "uploads_per_window": achieved_per_window,
        "uploads_per_min_equivalent": achieved_per_window * 60 / window,
        "utilisation": utilisation,
        "samples": samples,
        "target_utilisation": 0.97,
        "met": utilisation >= 0.97 and rate_limited == 0,
    }
    rows = [
        ("emulator limit", f"{per_window} uploads / {window:g} s"),
        (
            "workers (shared Redis limiter)",
            f"2 x SCRIBE_RATE_LIMITS=intron.upload={per_minute_worker}",
        ),
        ("run seconds", _fmt(duration, 0)),
        ("uploads accepted", str(total)),
        ("uploads per window reached", f"{achieved_per_window:.2f}"),
        ("utilisation of the limit", f"{100 * utilisation:.1f} %"),
        ("429s sent by the emulator", str(rate_limited)),
    ]
    notes = [
        "rate = (accepted uploads - 1) / (time from the first accepted upload to the end)",
        "the limiter spaces calls 60/limit x 1.01 apart (worker/ratelimit.py): at most 99.0 %",
    ]
    line = (
        f"uploads_per_min={achieved_per_window * 60 / window:.2f} "
        f"limit_per_min={per_window * 60 / window:.0f} utilisation={utilisation:.3f} "
        f"rate_limited={rate_limited}"
    )
    return Result("rate-limit", ("figure", "value"), rows, data, line, notes)


async def asr(options: Options) -> Result:
    from ops.eval import DEFAULT_AUDIO, DEFAULT_AUDIO_TEXT, run_asr

    out = io.StringIO()
    wer, speed = await asyncio.to_thread(run_asr, DEFAULT_AUDIO, DEFAULT_AUDIO_TEXT, 1, out)
    rtf = 1 / speed if speed else float("inf")
    rows = [("audio", str(DEFAULT_AUDIO)), ("real-time factor", f"{rtf:.3f}"),
            ("speed", f"{speed:.1f}x real time"), ("WER", f"{100 * wer:.2f} %")]  # fmt: skip
    data = {"audio": str(DEFAULT_AUDIO), "rtf": rtf, "speed": speed, "wer": wer,
            "eval_output": out.getvalue().splitlines()}  # fmt: skip
    notes = [
        "ops/eval.py run_asr: the second transcription of the file (the first loads the model)"
    ]
    return Result("asr", ("figure", "value"), rows, data, f"asr_rtf={rtf:.3f} wer={wer:.4f}", notes)


SCENARIOS: dict[str, Callable[[Options], Awaitable[Result]]] = {
    "floor": floor,
    "latency": latency,
    "slow-vendor": slow_vendor,
    "polling": polling,
    "rate-limit": rate_limit,
    "asr": asr,
}
