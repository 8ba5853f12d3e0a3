"""scribe-bench latency: per-hop p50/p95/p99 at a fixed offered rate, the floor (the worker's
topology, no worker code) beside ours; a hop's p99 above the floor's is what our code adds."""

from __future__ import annotations

from typing import Any

from ops.bench.common import percentile
from ops.bench.context import Options, Result, fmt
from ops.bench.sides import HOPS, Side, alternate

SIDES: tuple[Side, ...] = ("floor", "ours")


async def latency(options: Options) -> Result:
    count, runs, prefetch = options.jobs or 1000, options.runs or 1, options.prefetch or 16
    results = await alternate(options, SIDES, count, runs, prefetch, options.rate)
    merged: dict[Side, dict[str, list[float]]] = {}
    for side in SIDES:
        merged[side] = {hop: [] for hop in (*HOPS, "end_to_end")}
        for run in results[side]:
            for hop, values in run.hops_ms.items():
                merged[side][hop].extend(values)
    rows = []
    figures: dict[str, Any] = {}
    worst = 0.0
    for hop in (*HOPS, "end_to_end"):
        cells = []
        for side in SIDES:
            values = merged[side][hop]
            p = {f"p{q}": percentile(values, q) for q in (50, 95, 99)}
            figures.setdefault(side, {})[hop] = {**p, "samples": len(values)}
            cells += [fmt(p["p50"]), fmt(p["p95"]), fmt(p["p99"])]
        overhead = figures["ours"][hop]["p99"] - figures["floor"][hop]["p99"]
        if hop != "end_to_end":
            worst = max(worst, overhead)
        rows.append((hop, *cells, fmt(overhead)))
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
