"""The pipelines floor and latency run side by side: the raw floor (default exchange, plain
queues), the floor (the worker's topology, no worker) and ours (WorkerApp with instant
providers), each a subprocess in its own BenchRun, alternated run by run."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ops.bench.common import Collector, broker_pid, cpu_seconds, publish_all, publish_at_rate
from ops.bench.context import EVENT_KEYS, BenchRun, Options, bench_run, our_job
from ops.bench.floor_worker import raw_queue
from worker.constants import STAGES

Side = Literal["raw-floor", "floor", "ours", "ours-sealed"]
HOPS = STAGES  # transcribe, poll, summarize, note: the hop that ends at each stage


def is_ours(side: Side) -> bool:
    """Our worker, with payload encryption (ours-sealed) or without."""
    return side in ("ours", "ours-sealed")


def sealing_env() -> dict[str, str]:
    """Payload encryption on for ours-sealed: a fresh key, current. The jobs are published in
    clear (as an upstream system without the keys would): the worker seals and opens the
    poll, summarize and note messages, and seals what it sends to a delay tier."""
    key = base64.b64encode(os.urandom(32)).decode()
    return {"SCRIBE_PAYLOAD_KEYS": f"bench:{key}", "SCRIBE_PAYLOAD_KEY_ID": "bench"}


def _messages(side: Side, count: int, run: BenchRun) -> list[tuple[str, bytes, str]]:
    """(routing key, body, jobId): our JobRequests, or floor messages padded to the same size."""
    key = raw_queue(run.prefix, "transcribe") if side == "raw-floor" else "transcribe"
    messages = []
    for _ in range(count):
        job = our_job(run.audio)
        body = job.to_wire()
        job_id = str(job.job_id)
        if not is_ours(side):
            floor = {"jobId": job_id, "stage": "transcribe", "t": {}, "pad": ""}
            floor["pad"] = "x" * max(0, len(body) - len(json.dumps(floor)))
            body = json.dumps(floor).encode()
        messages.append((key, body, job_id))
    return messages


async def _start(run: BenchRun, side: Side, prefetch: int, stage_events: bool) -> int:
    """Start the raw floor, the floor or our worker (instant providers); returns its pid.

    stage_events: whether the pipeline publishes a progress event per stage (ours by default
    does; the latency scenario needs them, the floor scenario compares like with like; the raw
    floor has none)."""
    options = run.options
    if not is_ours(side):
        args = ["--amqp-url", options.amqp_url, "--prefix", run.prefix, "--prefetch", str(prefetch)]
        if side == "raw-floor":
            args.append("--raw")
        elif stage_events:
            args.append("--events")
        return (await run.child("ops.bench.floor_worker", args, {})).pid
    env = {
        "SCRIBE_AMQP_URL": options.amqp_url,
        "SCRIBE_PREFIX": run.prefix,
        "SCRIBE_PREFETCH": str(prefetch),
        "SCRIBE_DELAY_TIERS_MS": "1",
        "SCRIBE_POLL_INTERVAL_MS": "1",
        "SCRIBE_RATE_LIMITS": "none",
        "SCRIBE_STORAGE_ROOT": str(options.workdir),
        "SCRIBE_LOG_LEVEL": "info",
        # The instant provider's handles name "local": no vendor credentials to derive a key from.
        "SCRIBE_HANDLE_KEY": secrets.token_hex(32),
        **({} if stage_events else {"SCRIBE_STAGE_EVENTS": "none"}),
        **(sealing_env() if side == "ours-sealed" else {}),
        **options.worker_env,
    }
    return (await run.child("ops.bench.instant_worker", [], env)).pid


@dataclass
class SideRun:
    side: Side
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


async def _collect(run: BenchRun, side: Side, rate: float | None) -> Collector:
    await run.connect()
    if side == "raw-floor":
        return await run.collect(
            keep_bodies=True, completed_queue=raw_queue(run.prefix, "completed")
        )
    keys = EVENT_KEYS + (("job.stage.#",) if rate is not None and is_ours(side) else ())
    return await run.collect(keys, keep_bodies=side == "floor")


async def run_side(
    side: Side, options: Options, count: int, prefetch: int, rate: float | None, deadline: float
) -> SideRun:
    """One run of one pipeline: `count` jobs published at once (rate None) or at `rate`/s."""
    prefix_name = "raw" if side == "raw-floor" else side
    async with bench_run(options, prefix_name) as run:
        messages = _messages(side, count, run)
        # latency times ours from its job.stage events, the floor from stamps in its messages
        events = options.stage_events or (rate is not None and is_ours(side))
        pid = await _start(run, side, prefetch, events)
        collector = await _collect(run, side, rate)
        sent_at: dict[str, float] = {}
        beam = broker_pid()
        cpu_before = cpu_seconds(pid)
        broker_before = cpu_seconds(beam) if beam else 0.0
        started = time.time()
        exchange = "" if side == "raw-floor" else run.names.jobs_exchange
        if rate is None:
            await publish_all(run.connection, exchange, messages)
        else:
            await publish_at_rate(run.connection, exchange, messages, rate, sent_at)
        await collector.wait_for(count, deadline)
        cpu = cpu_seconds(pid) - cpu_before
        broker_cpu = (cpu_seconds(beam) - broker_before) if beam else 0.0
        last = max(collector.completed.values(), default=started)
    result = SideRun(
        side,
        count,
        len(collector.completed),
        len(collector.failed),
        last - started,
        cpu,
        broker_cpu,
    )
    if rate is not None:
        result.hops_ms = _hops(side, collector, sent_at, options.warmup_s)
    return result


def _hops(
    side: Side, collector: Collector, sent_at: dict[str, float], warmup_s: float
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
        if is_ours(side):
            stamps = collector.stage_times.get(job_id, {})
        else:
            stamps = collector.bodies[job_id]["t"]
        if not all(hop in stamps for hop in HOPS):
            continue
        previous = submitted
        for hop in HOPS:
            hops[hop].append(1000 * (stamps[hop] - previous))
            previous = stamps[hop]
        hops["end_to_end"].append(1000 * (done_at - submitted))
    return hops


async def alternate(
    options: Options,
    sides: Sequence[Side],
    count: int,
    runs: int,
    prefetch: int,
    rate: float | None,
) -> dict[Side, list[SideRun]]:
    """`runs` rounds of the sides in order (raw-floor, floor, ours, raw-floor, ...); every job
    of every run must complete before the scenario's deadline."""
    deadline = time.monotonic() + options.timeout_s
    results: dict[Side, list[SideRun]] = {side: [] for side in sides}
    for _ in range(runs):
        for side in sides:
            run = await run_side(side, options, count, prefetch, rate, deadline)
            if run.completed < count:
                raise RuntimeError(
                    f"{side}: only {run.completed} of {count} jobs completed "
                    f"({run.failed} failed) before the deadline"
                )
            results[side].append(run)
    return results
