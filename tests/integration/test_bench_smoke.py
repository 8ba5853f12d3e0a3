"""scribe-bench runs end to end with tiny counts: it finishes and prints its last line in the
documented format. No figures are checked (benchmarks are programs, not timed tests)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

NUMBER = r"\d+(?:\.\d+)?"


async def _bench(tmp_path: Path, *args: str) -> tuple[str, Path]:
    out = tmp_path / "result.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.bench.cli", *args, "--out", str(out), "--timeout-s", "90",
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    stdout, _ = await asyncio.wait_for(process.communicate(), 110)
    text = stdout.decode()
    assert process.returncode == 0, text
    return text.strip().splitlines()[-1], out


async def test_floor_finishes_and_prints_the_ratio_line(tmp_path: Path) -> None:
    """The line starts as it always has (floor, ours, ratio); the raw floor's figures follow."""
    last, out = await _bench(tmp_path, "floor", "--jobs", "20", "--runs", "1")
    pattern = (
        rf"floor_jobs_s={NUMBER} ours_jobs_s={NUMBER} ratio={NUMBER}"
        rf" raw_floor_jobs_s={NUMBER} ratio_raw={NUMBER}"
    )
    assert re.fullmatch(pattern, last), last
    assert out.is_file()


async def test_polling_finishes_and_prints_its_line(tmp_path: Path) -> None:
    last, out = await _bench(tmp_path, "polling", "--jobs", "20", "--polls", "1")
    pattern = (
        rf"jobs=20 completed=20 rss_max_mb=\d+ polls_per_job={NUMBER} min_polls=2 max_unacked=\d+"
    )
    assert re.fullmatch(pattern, last), last
    assert out.is_file()


@pytest.mark.postgres
async def test_index_finishes_and_prints_its_line(tmp_path: Path) -> None:
    last, out = await _bench(tmp_path, "index", "--index-jobs", "40", "--jobs", "20", "--runs", "1")
    pattern = (
        rf"index_jobs=40 entries_per_s={NUMBER} lookup_p99_ms={NUMBER} ratio_on_off={NUMBER}"
        rf" cpu_ratio_on_off={NUMBER}"
    )
    assert re.fullmatch(pattern, last), last
    assert out.is_file()


async def test_callback_finishes_and_prints_its_line(tmp_path: Path) -> None:
    last, out = await _bench(tmp_path, "callback", "--jobs", "1", "--runs", "1")
    pattern = (
        rf"callbacks_p50_s={NUMBER} callbacks_p95_s={NUMBER} polling_p50_s={NUMBER}"
        rf" polling_p95_s={NUMBER} met=(True|False)"
    )
    assert re.fullmatch(pattern, last), last
    assert out.is_file()
