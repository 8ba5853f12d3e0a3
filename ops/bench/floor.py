"""scribe-bench floor: jobs/s of our worker against two floors, alternated run by run.

The floor has the worker's topology (direct, topic and headers exchanges, the stage queues'
arguments) with no worker code; the raw floor is a plain aio-pika pipeline on the default
exchange. ours / floor is what our code costs; floor / raw floor is what the topology costs.
With --encryption, ours-sealed (ours with payload encryption on) runs in the same rounds, right
after ours: ours-sealed / ours is what AES-256-GCM on every stage message costs."""

from __future__ import annotations

import statistics
from typing import Any

from ops.bench.context import Options, Result, fmt
from ops.bench.sides import Side, SideRun, alternate

SIDES: tuple[Side, ...] = ("raw-floor", "floor", "ours")


def _median(runs: list[SideRun]) -> float:
    return statistics.median(run.jobs_s for run in runs)


def _paired(base: list[SideRun], ours: list[SideRun]) -> list[float]:
    return [o.jobs_s / b.jobs_s if b.jobs_s else 0.0 for b, o in zip(base, ours, strict=True)]


def _figures(results: dict[Side, list[SideRun]]) -> dict[str, Any]:
    """Per side: jobs/s, worker and broker CPU per job of each run (JSON names as before)."""
    data: dict[str, Any] = {}
    for side in results:
        name = side.replace("-", "_")
        data[f"{name}_jobs_s"] = [run.jobs_s for run in results[side]]
        data[f"{name}_cpu_ms_per_job"] = [run.cpu_ms_per_job for run in results[side]]
        data[f"{name}_broker_cpu_ms_per_job"] = [run.broker_cpu_ms_per_job for run in results[side]]
    return data


async def floor(options: Options) -> Result:
    count, runs, prefetch = options.jobs or 2000, options.runs or 3, options.prefetch or 16
    sides = (*SIDES, "ours-sealed") if options.encryption else SIDES
    results = await alternate(options, sides, count, runs, prefetch, None)
    rows = []
    for index in range(runs):
        for side in sides:
            run = results[side][index]
            rows.append((str(index + 1), side, str(run.completed), fmt(run.elapsed_s, 2),
                         fmt(run.jobs_s), fmt(run.cpu_ms_per_job, 2),
                         fmt(run.broker_cpu_ms_per_job, 2)))  # fmt: skip
    raw_s, floor_s, ours_s = (_median(results[side]) for side in SIDES)
    ratio = ours_s / floor_s if floor_s else 0.0
    ratio_raw = ours_s / raw_s if raw_s else 0.0
    paired = _paired(results["floor"], results["ours"])
    paired_raw = _paired(results["raw-floor"], results["ours"])
    data = {
        "jobs": count,
        "runs": runs,
        "prefetch": prefetch,
        "stage_events": options.stage_events,
        "worker_env": options.worker_env,
        **_figures(results),
        "paired_ratios": paired,
        "paired_ratios_raw": paired_raw,
        "raw_floor_median_jobs_s": raw_s,
        "floor_median_jobs_s": floor_s,
        "ours_median_jobs_s": ours_s,
        "ratio": ratio,
        "ratio_raw": ratio_raw,
        "target_ratio": 0.85,
        "met": ratio >= 0.85,
    }
    notes = [
        "median of the runs; jobs/s = jobs / (first publish -> last job.completed received)",
        "ratio of each run pair (ours / the floor just before it): "
        + " ".join(f"{value:.3f}" for value in paired),
        "ratio against the raw floor (ours / the raw floor of the same run): "
        + " ".join(f"{value:.3f}" for value in paired_raw),
        "cpu ms/job: user+system CPU of the pipeline process; broker: of the RabbitMQ node",
        "all: 4 consumer hops + one 1 ms per-queue-TTL delay queue between transcribe and poll",
        "raw-floor: default exchange only, plain quorum queues, job.completed to a plain queue,"
        " 5 confirmed messages per job, no progress events",
        "floor and ours publish 9 confirmed messages per job: a job.stage event per stage"
        " (--stage-events)"
        if options.stage_events
        else "floor and ours publish 5 confirmed messages per job (ours: SCRIBE_STAGE_EVENTS=none)",
        "ours also: pydantic validation (the job once per process, then each stage's state),"
        " ledger (in memory) claims, a WAV header check,"
        " traceparent, metrics, JSON logs at info"
        + (f"; worker env {options.worker_env}" if options.worker_env else ""),
    ]
    line = (
        f"floor_jobs_s={floor_s:.1f} ours_jobs_s={ours_s:.1f} ratio={ratio:.3f} "
        f"raw_floor_jobs_s={raw_s:.1f} ratio_raw={ratio_raw:.3f}"
    )
    if options.encryption:
        sealed_s = _median(results["ours-sealed"])
        sealed = _paired(results["ours"], results["ours-sealed"])
        sealed_ratio = sealed_s / ours_s if ours_s else 0.0
        data.update(
            ours_sealed_median_jobs_s=sealed_s,
            encryption_ratio=sealed_ratio,
            paired_encryption_ratios=sealed,
            encryption_target_ratio=0.90,
            encryption_met=sealed_ratio >= 0.90,
        )
        notes.append(
            "ours-sealed: ours with SCRIBE_PAYLOAD_KEY_ID set (jobs published in clear; the "
            "worker seals poll, summarize and note messages and opens them); ratio of each pair "
            "(ours-sealed / the ours just before it): " + " ".join(f"{v:.3f}" for v in sealed)
        )
        line += f" ours_sealed_jobs_s={sealed_s:.1f} encryption_ratio={sealed_ratio:.3f}"
    header = ("run", "pipeline", "jobs", "seconds", "jobs/s", "cpu ms/job", "broker cpu ms/job")
    return Result("floor", header, rows, data, line, notes)
