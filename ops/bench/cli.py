"""scribe-bench SCENARIO: bounded, loopback-only benchmarks of the pipeline.

Scenarios: floor (our worker against a minimal aio-pika pipeline with the worker's topology and
a raw one on the default exchange, jobs/s), latency (per-hop
p50/p95/p99 at a fixed rate, floor beside ours), slow-vendor (vendor calls one process holds in
flight), polling (memory and broker state while 10,000 transcriptions are pending), rate-limit
(shared limiter against the emulator's limit), asr (local speech recognition real-time factor),
index (job index: 100,000 jobs recorded, status lookup p50/p95/p99, jobs/s index on vs off),
callback (Invox vendor ready -> summarize start, p50/p95, callbacks against polling),
long-recording (a 40-minute consultation through Intron and through local, in chunks).

Prints a table and, last, one key=value line; writes the figures as JSON to --out (default
bench-results/<scenario>.json). Every scenario deletes its queues and Redis keys and stops the
processes it started; --timeout-s bounds it. docs/benchmarks.md has the figures and commands.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ops.bench.asr import asr
from ops.bench.callback import callback
from ops.bench.context import Options, Result
from ops.bench.floor import floor
from ops.bench.index import index_bench
from ops.bench.latency import latency
from ops.bench.long_recording import long_recording
from ops.bench.polling import polling
from ops.bench.rate_limit import rate_limit
from ops.bench.slow_vendor import slow_vendor
from worker import constants as c

SCENARIOS: dict[str, Callable[[Options], Awaitable[Result]]] = {
    "floor": floor,
    "latency": latency,
    "slow-vendor": slow_vendor,
    "polling": polling,
    "rate-limit": rate_limit,
    "asr": asr,
    "index": index_bench,
    "callback": callback,
    "long-recording": long_recording,
}

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scribe-bench",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--jobs", type=int, help="jobs per run (scenario default if omitted)")
    p.add_argument("--runs", type=int, help="alternating floor/ours runs (floor: 3, latency: 1)")
    p.add_argument("--prefetch", type=int, help="consumer prefetch (16; slow-vendor: 600)")
    p.add_argument("--rate", type=float, default=50.0, help="latency: offered jobs/s")
    p.add_argument("--warmup-s", type=float, default=1.0, help="latency: jobs left out")
    p.add_argument(
        "--stage-events",
        action="store_true",
        help="floor: both pipelines publish a progress event per stage (ours by default does)",
    )
    p.add_argument(
        "--encryption",
        action="store_true",
        help="floor: also run ours with payload encryption on (AES-256-GCM), same runs",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="SCRIBE_X=VALUE",
        help="floor, latency: a setting for our worker (repeatable), e.g. SCRIBE_LOG_LEVEL=debug",
    )
    p.add_argument("--duration-s", type=float, default=180.0, help="rate-limit: run length")
    p.add_argument("--rate-limit", type=int, default=30, help="rate-limit: uploads per window")
    p.add_argument("--rate-window-s", type=float, default=60.0, help="rate-limit: window")
    p.add_argument("--polls", type=int, default=5, help="polling: polls_before_ready")
    p.add_argument("--latency-ms", type=int, default=2000, help="slow-vendor: vendor latency")
    p.add_argument("--timeout-s", type=float, default=900.0, help="bound for the whole scenario")
    p.add_argument(
        "--recording-s", type=float, default=2400.0, help="long-recording: its length (s)"
    )
    p.add_argument("--amqp-url", default=c.DEFAULT_AMQP_URL)
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="index: a PostgreSQL server to make a scratch database on",
    )
    p.add_argument("--index-jobs", type=int, default=100_000, help="index: jobs recorded")
    p.add_argument("--out", type=Path, help="JSON results (default bench-results/<scenario>.json)")
    return p


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.jobs is not None and not 1 <= args.jobs <= 20_000:
        p.error("--jobs must be within 1..20000")
    if args.runs is not None and not 1 <= args.runs <= 10:
        p.error("--runs must be within 1..10")
    if args.prefetch is not None and not 1 <= args.prefetch <= 2000:
        p.error("--prefetch must be within 1..2000")
    if not 0 <= args.warmup_s <= 60:
        p.error("--warmup-s must be within 0..60")
    if not 0 < args.rate <= 1000 or not 0 < args.timeout_s <= 7200:
        p.error("--rate must be within (0, 1000] and --timeout-s within (0, 7200]")
    if not 1 <= args.duration_s <= 3600 or not 1 <= args.rate_window_s <= 600:
        p.error("--duration-s must be within 1..3600 and --rate-window-s within 1..600")
    if not 1 <= args.rate_limit <= 10_000 or not 0 <= args.polls <= 100:
        p.error("--rate-limit must be within 1..10000 and --polls within 0..100")
    for item in args.worker_env:
        name, sep, _value = item.partition("=")
        if not sep or not name.startswith("SCRIBE_"):
            p.error(f"--worker-env takes SCRIBE_NAME=VALUE, not {item[:40]!r}")
    if not 1 <= args.index_jobs <= 1_000_000:
        p.error("--index-jobs must be within 1..1000000")
    for url in (args.amqp_url, args.redis_url, args.database_url):
        host = urlsplit(url).hostname
        if host not in LOOPBACK:
            p.error(f"loopback only: {host!r} is not a loopback address")


def render_table(result: Result) -> str:
    rows = [result.header, *result.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(result.header))]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        )
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    workdir = Path(tempfile.mkdtemp(prefix="scribe-bench-"))
    options = Options(
        amqp_url=args.amqp_url,
        redis_url=args.redis_url,
        jobs=args.jobs,
        runs=args.runs,
        prefetch=args.prefetch,
        rate=args.rate,
        duration_s=args.duration_s,
        recording_s=args.recording_s,
        timeout_s=args.timeout_s,
        polls=args.polls,
        latency_ms=args.latency_ms,
        rate_limit=args.rate_limit,
        rate_window_s=args.rate_window_s,
        workdir=workdir,
        warmup_s=args.warmup_s,
        stage_events=args.stage_events,
        worker_env=dict(item.split("=", 1) for item in args.worker_env),
        database_url=args.database_url,
        index_jobs=args.index_jobs,
        encryption=args.encryption,
    )
    started = time.monotonic()
    try:
        # On timeout the scenario is cancelled: its finally blocks still stop the processes and
        # delete the queues before wait_for returns.
        result = asyncio.run(asyncio.wait_for(SCENARIOS[args.scenario](options), args.timeout_s))
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"scribe-bench {args.scenario}: failed: {exc}", file=sys.stderr)
        print(f"scribe-bench: process logs kept in {workdir}", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    out = args.out or Path("bench-results") / f"{args.scenario}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "scenario": args.scenario,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "machine": _machine(),
        "argv": list(argv if argv is not None else sys.argv[1:]),
        **asdict(result),
    }
    out.write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"# scribe-bench {args.scenario} ({document['seconds']} s); JSON in {out}")
    print(render_table(result))
    for note in result.notes:
        print(f"# {note}")
    print(result.last_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
