"""scribe-bench polling: the worker's memory and the broker's state while --jobs Invox
transcriptions are pending (each ready after --polls status calls)."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from ops.bench.common import list_queues, publish_all, queue_depths, rss_mb, sandbox_stats
from ops.bench.context import (
    SANDBOX_INVOX_TOKEN,
    BenchRun,
    Options,
    Result,
    bench_run,
    fmt,
    sample_every,
    sandbox_flags,
    vendor_job,
)
from schemas.jobs import PollMessage, TranscriptionHandle
from worker.handles import HandleSigner
from worker.settings import Settings

TIERS_MS = (1000, 5000, 30000)


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


def _poll_messages(
    run: BenchRun, signer: HandleSigner, request_ids: list[str]
) -> list[tuple[str, bytes, str]]:
    """PollMessages for the created transcriptions, their handles signed as the worker's
    transcribe stage would sign them (its poll stage refuses any other)."""
    messages = []
    now = datetime.now(UTC)
    for request_id in request_ids:
        job = vendor_job(run.audio, "invox")
        handle = signer.sign(
            str(job.job_id),
            TranscriptionHandle(provider="invox", handle=request_id, submitted_at=now),
        )
        body = PollMessage(job_id=job.job_id, job=job, transcription=handle)
        messages.append(("poll", body.to_wire(), str(job.job_id)))
    return messages


async def polling(options: Options) -> Result:
    count = options.jobs or 10_000
    prefetch = options.prefetch or 16
    rss: list[tuple[float, float]] = []
    depths: list[tuple[float, dict[str, int]]] = []
    unacked: list[tuple[float, dict[str, tuple[int, int]]]] = []
    async with bench_run(options, "polling") as run:
        names = run.names
        base_url = await run.emulator(*sandbox_flags(polls_before_ready=str(options.polls)))
        env = run.vendor_env(SCRIBE_STAGES="poll,summarize", SCRIBE_PREFETCH=str(prefetch),
                             SCRIBE_RATE_LIMITS="none",
                             SCRIBE_DELAY_TIERS_MS=",".join(map(str, TIERS_MS)),
                             SCRIBE_POLL_INTERVAL_MS="1000")  # fmt: skip
        request_ids = await _create_invox_transcriptions(run.session, base_url, count)
        signer = HandleSigner.from_settings(Settings.from_env(env))
        worker = await run.worker(env)
        connection = await run.connect()
        collector = await run.collect()
        messages = _poll_messages(run, signer, request_ids)
        stop = asyncio.Event()
        began = time.monotonic()
        watched = [names.stage_queue("poll"), names.stage_queue("summarize"),
                   *(names.delay_queue(ms) for ms in TIERS_MS)]  # fmt: skip

        async def sample_fast() -> None:
            rss.append((time.monotonic() - began, rss_mb(worker.pid)))
            depth = await queue_depths(connection, watched)
            depths.append((time.monotonic() - began, depth))

        async def sample_slow() -> None:
            unacked.append((time.monotonic() - began, await list_queues(run.prefix)))

        samplers = [
            asyncio.create_task(sample_every(1.0, stop, sample_fast)),
            asyncio.create_task(sample_every(3.0, stop, sample_slow)),
        ]
        rss_idle = rss_mb(worker.pid)
        started = time.time()
        await publish_all(connection, names.jobs_exchange, messages)
        await collector.wait_for(count, time.monotonic() + options.timeout_s)
        stop.set()
        await asyncio.gather(*samplers)
        last = max(collector.completed.values(), default=started)
        stats = await sandbox_stats(run.session, base_url)
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
    data: dict[str, Any] = {
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
        "min_elapsed_s_per_job": options.polls * TIERS_MS[0] / 1000,
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
        ("seconds (publish -> last completed)", fmt(elapsed)),
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
