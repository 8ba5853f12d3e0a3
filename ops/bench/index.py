"""scribe-bench index: what the job index costs and how fast it answers.

1. Recording: --index-jobs jobs (100,000 by default), four transitions each (transcribe, poll,
   summarize done; note completed; one job in 20 failed at summarize instead), recorded through
   the worker's IndexWriter into a scratch database: entries/s.
2. Lookups: GET /jobs/{jobId} and GET /jobs?outcome=failed&limit=50 through the status API's
   aiohttp routes (worker/jobs_api.py) on loopback, over that table, one request at a time:
   p50/p95/p99 ms.
3. Floor: our worker (instant providers, the floor scenario's settings) with the index off and
   on, the same run, alternated pair by pair (on/off order swapped each round); jobs/s and the
   paired ratio on/off.

The scratch database (scribe_bench_<hex>, on --database-url's server) is dropped at the end.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web

from ops.bench.common import CLOCK_TICKS, percentile
from ops.bench.context import Options, Result, fmt
from ops.bench.sides import SideRun, run_side
from schemas.errors import ErrorType
from worker.jobindex import IndexEntry, IndexReader, IndexWriter, migrate, open_pool
from worker.jobs_api import JobsApi

LOOKUPS = 5000
LIST_LOOKUPS = 500


def _on(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@asynccontextmanager
async def scratch_database(admin_url: str) -> AsyncIterator[str]:
    name = f"scribe_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _on(admin_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _job_entries(job_id: str, start: datetime, failed: bool) -> list[IndexEntry]:
    at = [start + timedelta(milliseconds=step * 50) for step in range(4)]
    entries = [
        IndexEntry(job_id, "transcribe", "done", at[0], "intron", 1, duration_ms=20.0),
        IndexEntry(job_id, "poll", "done", at[1], "intron", 1, duration_ms=5.0),
    ]
    if failed:
        entries.append(
            IndexEntry(job_id, "summarize", "failed", at[2], "invox", 3, ErrorType.RATE_LIMITED)
        )
    else:
        entries.append(IndexEntry(job_id, "summarize", "done", at[2], "invox", 1, None, 40.0))
        entries.append(IndexEntry(job_id, "note", "completed", at[3], "invox", 1, None, 41.0))
    return entries


async def _drained(writer: IndexWriter, below: int) -> None:
    for _ in range(600_000):  # bounded: 10 minutes
        if writer.pending < below:
            return
        await asyncio.sleep(0.001)
    raise RuntimeError("the index writer stopped draining")


async def _record(url: str, jobs: int) -> tuple[list[str], float, int]:
    """Record `jobs` jobs through the writer; (jobIds, seconds, entries)."""
    pool = await open_pool(url)
    writer = IndexWriter(pool, max_queue=20_000)
    writer.start()
    ids: list[str] = []
    start = datetime.now(UTC) - timedelta(days=1)
    started = time.perf_counter()
    try:
        for number in range(jobs):
            job_id = str(uuid.uuid4())
            ids.append(job_id)
            for entry in _job_entries(job_id, start + timedelta(seconds=number), number % 20 == 0):
                if writer.pending >= 19_000:  # the bench waits; the worker would drop
                    await _drained(writer, 10_000)
                writer.record(entry)
        if not await writer.flush(600.0):
            raise RuntimeError("the index did not take every entry within 600 s")
        elapsed = time.perf_counter() - started
        counts = writer.counts
        if counts.dropped_full or counts.dropped_failed:
            raise RuntimeError(f"entries were dropped: {counts}")
        return ids, elapsed, counts.written
    finally:
        await writer.close(5.0)
        await pool.close()


async def _lookups(url: str, ids: list[str]) -> dict[str, list[float]]:
    """ms per request, GET /jobs/{jobId} (random known jobs) and a filtered GET /jobs."""
    pool = await open_pool(url)
    app = web.Application()
    JobsApi(IndexReader(pool), None).add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rng = random.Random(17)
    times: dict[str, list[float]] = {"job": [], "list": []}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            lookups = min(LOOKUPS, 2 * len(ids))  # a smoke run stays short
            for kind, count in (("job", lookups), ("list", min(LIST_LOOKUPS, lookups))):
                for _ in range(count):
                    path = f"/jobs/{rng.choice(ids)}" if kind == "job" else "/jobs"
                    params = {} if kind == "job" else {"outcome": "failed", "limit": "50"}
                    started = time.perf_counter()
                    async with session.get(path, params=params) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"GET {kind} answered {response.status}")
                    times[kind].append(1000 * (time.perf_counter() - started))
    finally:
        await runner.cleanup()
        await pool.close()
    return times


def postgres_cpu_s() -> float:
    """CPU seconds of the local PostgreSQL so far: its live processes, and the backends that
    have exited (the postmaster's reaped children). Other sessions' use of it counts too."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            if int(fields[1]) == 1 or (entry / "cmdline").read_bytes().count(b"-D"):
                total += int(fields[13]) + int(fields[14])  # the postmaster: reaped backends
    return total / CLOCK_TICKS


async def _floor_pairs(
    options: Options, url: str, count: int, runs: int, prefetch: int
) -> tuple[list[SideRun], list[SideRun], dict[str, list[float]]]:
    """(off runs, on runs, PostgreSQL CPU ms per job of each), alternated; every job must
    complete."""
    deadline = time.monotonic() + options.timeout_s
    on_options = replace(options, worker_env={**options.worker_env, "SCRIBE_DATABASE_URL": url})
    off: list[SideRun] = []
    on: list[SideRun] = []
    pg_ms: dict[str, list[float]] = {"off": [], "on": []}
    for index in range(runs):
        order = [(options, off, "off"), (on_options, on, "on")]
        for chosen, into, name in order if index % 2 == 0 else reversed(order):
            before = postgres_cpu_s()
            run = await run_side("ours", chosen, count, prefetch, None, deadline)
            pg_ms[name].append(1000 * (postgres_cpu_s() - before) / max(run.completed, 1))
            if run.completed < count:
                raise RuntimeError(f"only {run.completed} of {count} jobs completed")
            into.append(run)
    return off, on, pg_ms


async def index_bench(options: Options) -> Result:
    admin_url, index_jobs = options.database_url, options.index_jobs
    count, runs, prefetch = options.jobs or 2000, options.runs or 3, options.prefetch or 16
    async with scratch_database(admin_url) as url:
        connection = await asyncpg.connect(url)
        try:
            await migrate(connection)
        finally:
            await connection.close()
        ids, record_s, entries = await _record(url, index_jobs)
        times = await _lookups(url, ids)
    async with scratch_database(admin_url) as url:
        off, on, pg_ms = await _floor_pairs(options, url, count, runs, prefetch)
        connection = await asyncpg.connect(url)
        try:
            indexed = await connection.fetchval("SELECT count(*) FROM scribe_jobs")
        finally:
            await connection.close()
    if indexed != count * runs:
        raise RuntimeError(f"the index-on runs indexed {indexed} of {count * runs} jobs")
    ratios = [o.jobs_s / f.jobs_s if f.jobs_s else 0.0 for f, o in zip(off, on, strict=True)]
    median_ratio = statistics.median(ratios)
    cpu_off = statistics.median(run.cpu_ms_per_job for run in off)
    cpu_ratio = statistics.median(run.cpu_ms_per_job for run in on) / cpu_off if cpu_off else 0.0
    rows = [
        ("record", f"{index_jobs} jobs, {entries} entries", fmt(record_s, 1) + " s",
         fmt(entries / record_s, 0) + " entries/s", ""),
        *(
            (f"GET {'/jobs/{jobId}' if kind == 'job' else '/jobs?outcome=failed&limit=50'}",
             f"{len(values)} requests", fmt(percentile(values, 50), 2) + " ms",
             fmt(percentile(values, 95), 2) + " ms", fmt(percentile(values, 99), 2) + " ms")
            for kind, values in times.items()
        ),
        *(
            (f"floor pair {n + 1}", f"{count} jobs",
             f"{fmt(f.jobs_s)} off, {fmt(f.cpu_ms_per_job, 2)} ms CPU/job",
             f"{fmt(o.jobs_s)} on, {fmt(o.cpu_ms_per_job, 2)} ms CPU/job",
             fmt(o.jobs_s / f.jobs_s if f.jobs_s else 0.0, 3))
            for n, (f, o) in enumerate(zip(off, on, strict=True))
        ),
        ("floor median", f"{runs} pairs", "", f"CPU/job on/off {fmt(cpu_ratio, 3)}",
         fmt(median_ratio, 3)),
        ("PostgreSQL CPU/job", f"{runs} pairs",
         f"{fmt(statistics.median(pg_ms['off']), 2)} ms off",
         f"{fmt(statistics.median(pg_ms['on']), 2)} ms on", ""),
    ]  # fmt: skip
    data = {
        "index_jobs": index_jobs,
        "entries": entries,
        "record_s": record_s,
        "entries_per_s": entries / record_s,
        "lookup_ms": {
            kind: {p: percentile(v, p) for p in (50, 95, 99)} for kind, v in times.items()
        },
        "floor_jobs": count,
        "floor_off_jobs_s": [run.jobs_s for run in off],
        "floor_on_jobs_s": [run.jobs_s for run in on],
        "floor_off_cpu_ms_per_job": [run.cpu_ms_per_job for run in off],
        "floor_on_cpu_ms_per_job": [run.cpu_ms_per_job for run in on],
        "paired_ratios": ratios,
        "median_ratio": median_ratio,
        "cpu_ratio": cpu_ratio,
        "postgres_cpu_ms_per_job_off": pg_ms["off"],
        "postgres_cpu_ms_per_job_on": pg_ms["on"],
    }
    lookup_p99 = percentile(times["job"], 99)
    return Result(
        scenario="index",
        header=("step", "size", "p50 / time / off", "p95 / rate / on", "p99 / ratio"),
        rows=rows,
        data=data,
        last_line=(
            f"index_jobs={index_jobs} entries_per_s={entries / record_s:.0f} "
            f"lookup_p99_ms={lookup_p99:.2f} ratio_on_off={median_ratio:.3f}"
            f" cpu_ratio_on_off={cpu_ratio:.3f}"
        ),
        notes=[
            "floor pairs: our worker with instant providers, index off then on (order swapped "
            "each round); ratio = on / off jobs/s"
        ],
    )
