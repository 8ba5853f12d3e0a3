"""scribe-bench slow-vendor: how many vendor calls one worker process holds in flight when the
vendor (the emulator) takes --latency-ms to answer each summary."""

from __future__ import annotations

import asyncio
import time

from ops.bench.common import (
    cpu_seconds,
    free_port,
    in_flight_of,
    metric_value,
    publish_all,
    responses_of,
    rss_mb,
    sandbox_stats,
)
from ops.bench.context import (
    Options,
    Result,
    bench_run,
    fmt,
    sample_every,
    sandbox_flags,
    vendor_job,
)
from schemas.jobs import SummarizeMessage, Transcript


async def slow_vendor(options: Options) -> Result:
    count = options.jobs or 1800
    prefetch = options.prefetch or 600
    port = free_port()
    samples: list[tuple[float, int, float]] = []  # (t, emulator in-flight, worker gauge)
    async with bench_run(options, "slow") as run:
        flags = sandbox_flags(latency_ms=str(options.latency_ms), polls_before_ready="0")
        base_url = await run.emulator(*flags)
        session = run.session
        env = run.vendor_env(SCRIBE_STAGES="summarize", SCRIBE_PREFETCH_SUMMARIZE=str(prefetch),
                             SCRIBE_RATE_LIMITS="none", SCRIBE_HTTP_TIMEOUT_S="30")  # fmt: skip
        worker = await run.worker(env, port)
        connection = await run.connect()
        collector = await run.collect()
        messages = []
        for _ in range(count):
            job = vendor_job(run.audio, "invox")
            transcript = Transcript(provider="invox", text="Knee pain, three weeks.")
            body = SummarizeMessage(job_id=job.job_id, job=job, transcript=transcript)
            messages.append(("summarize", body.to_wire(), str(job.job_id)))
        stop = asyncio.Event()
        began = time.monotonic()

        async def sample() -> None:
            stats = await sandbox_stats(session, base_url)
            gauge = await metric_value(session, port, "scribe_in_flight", 'stage="summarize"')
            samples.append((time.monotonic() - began, in_flight_of(stats, "invox.summary"), gauge))

        sampler = asyncio.create_task(sample_every(0.25, stop, sample))
        started = time.time()
        cpu_before = cpu_seconds(worker.pid)
        await publish_all(connection, run.names.jobs_exchange, messages)
        await collector.wait_for(count, time.monotonic() + options.timeout_s)
        cpu = cpu_seconds(worker.pid) - cpu_before
        stop.set()
        await sampler
        last = max(collector.completed.values(), default=started)
        stats = await sandbox_stats(session, base_url)
        peak_rss = rss_mb(worker.pid)
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
        ("max scribe_in_flight{stage=summarize}", fmt(max_gauge, 0)),
        ("jobs/s (ideal prefetch/latency)", f"{jobs_s:.1f} ({ideal:.0f})"),
        ("worker CPU s", fmt(cpu, 1)),
        ("non-200 vendor responses + failed jobs", str(errors)),
    ]
    notes = ["emulator in-flight = requests received minus requests answered, sampled 4x/s"]
    line = f"max_in_flight={max_emulator} jobs_s={jobs_s:.1f} errors={errors}"
    return Result("slow-vendor", ("figure", "value"), rows, data, line, notes)
