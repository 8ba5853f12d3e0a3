"""scribe-bench rate-limit: two workers sharing one Redis limiter against the emulator's upload
limit; how much of the limit they use without a 429."""

from __future__ import annotations

import asyncio
import time

from ops.bench.common import publish_all, responses_of, sandbox_config, sandbox_stats
from ops.bench.context import (
    Options,
    Result,
    bench_run,
    fmt,
    sample_every,
    sandbox_flags,
    vendor_job,
)
from worker import constants as c


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
    samples: list[tuple[float, int]] = []
    async with bench_run(options, "ratelimit", redis_keys=True) as run:
        flags = sandbox_flags(intron_upload_rate=str(per_window), intron_status_rate="0")
        base_url = await run.emulator(*flags)
        session = run.session
        await sandbox_config(session, base_url, {"rate_window_s": window})
        env = run.vendor_env(SCRIBE_STAGES="transcribe", SCRIBE_REDIS_URL=options.redis_url,
                             SCRIBE_RATE_LIMITS=f"intron.upload={per_minute_worker}",
                             **_scaled_timing(window / 60))  # fmt: skip
        for _ in range(2):
            await run.worker(env)
        connection = await run.connect()
        messages = []
        for _ in range(count):
            job = vendor_job(run.audio, "intron")
            messages.append(("transcribe", job.to_wire(), str(job.job_id)))
        await publish_all(connection, run.names.jobs_exchange, messages)
        began = time.monotonic()
        stop = asyncio.Event()

        async def sample() -> None:
            stats = await sandbox_stats(session, base_url)
            ok = responses_of(stats, "intron.upload").get("200", 0)
            samples.append((time.monotonic() - began, ok))

        sampler = asyncio.create_task(sample_every(0.5, stop, sample))
        await asyncio.sleep(duration)
        stop.set()
        await sampler
        stats = await sandbox_stats(session, base_url)
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
        ("run seconds", fmt(duration, 0)),
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
