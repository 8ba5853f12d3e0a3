"""scribe-fuzz against the real broker and a real worker process (issue 12, "What must exist"):
hypothesis-generated AMQP properties and headers on otherwise valid jobs; every message ends as
exactly one outcome, valid jobs in between all complete, and the worker never reconnects."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
from pathlib import Path

import pytest

from ops.fuzz_amqp import Array, Case, Deep, Options, Scalar, run
from ops.sandbox import RunningSandbox
from tests.harness import make_job, running_worker, watching, worker_env
from tests.rawamqp import long_str

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(180)]

MESSAGES = 40


async def test_generated_properties_and_headers_each_end_as_exactly_one_outcome() -> None:
    report = await run(Options(messages=MESSAGES, valid_every=4, timeout_s=90, seed=12))
    assert report.ok, report.text()
    assert report.fuzzed == MESSAGES
    assert report.valid == report.valid_completed == MESSAGES // 4
    assert report.reconnects == 0
    refused = sum(report.refused.values())
    assert report.settled_outcomes() + refused == MESSAGES
    assert report.outcomes["job.completed"] > 0
    assert report.error_types["invalidMessage"] > 0
    assert report.generated["fieldTypesMissing"] == ""


def _text(raw: bytes) -> Scalar:
    return Scalar(b"S", long_str(raw))


def _long(value: int) -> Scalar:
    return Scalar(b"l", struct.pack(">q", value))


TRACEPARENT = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"
# Inputs that broke the worker once (issue 12 and this fuzzer), replayed through the same
# accounting: each must end as one outcome, and the worker must keep its connection.
REGRESSIONS = [
    Case(False, b"application/json", b"\xff\xfe-not-utf8", None, None, 2, None),
    Case(False, b"\xff", "own", b"\xc0\x80", None, 2, None),
    Case(False, b"application/json", "own", None, 2**63 - 1, 2, None),
    Case(False, b"application/json", "own", None, 2**64 - 1, 2, None),
    Case(False, None, "decoy", None, 0, 2, ((b"x-attempts", _long(2**63 - 1)),)),
    Case(False, None, "own", None, None, 2, ((b"x-attempts", _text(str(2**63).encode())),)),
    Case(False, None, "own", None, None, 2, ((b"x-polls", _text(b"9" * 4301)),)),
    Case(False, None, "own", None, None, 1, ((b"traceparent", _text(TRACEPARENT + b"\n")),)),
    Case(False, None, "own", None, None, 2, ((b"\xffkey", _text(b"\xff\xfe")),)),
    Case(False, None, "own", None, None, 2, ((b"deep", Deep(b"F", 5_000)),)),
    Case(False, None, "own", None, None, 2, ((b"deep", Deep(b"A", 5_000)),)),
    Case(False, None, "own", None, None, 2, ((b"x-death", _text(b"forged")),)),
    Case(False, None, "own", None, None, 2, ((b"CC", Array((_text(b"transcribe"),))),)),
    Case(True, None, "own", None, None, 2, ((b"x-stage", _text(b"note")),)),
    Case(True, None, b"\xff", None, 2**63 - 1, 2, None),
]


async def test_inputs_that_once_broke_the_worker_each_end_as_one_outcome() -> None:
    report = await run(Options(messages=len(REGRESSIONS), valid_every=3, timeout_s=60), REGRESSIONS)
    assert report.ok, report.text()
    assert sum(report.refused.values()) == 0
    assert report.settled_outcomes() == len(REGRESSIONS)
    assert report.reconnects == 0


async def test_the_command_prints_json_and_exits_zero() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.fuzz_amqp", "--messages", "8", "--timeout-s", "60", "--json",
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    figures = json.loads(out)
    assert process.returncode == 0, figures["violations"]
    assert figures["messagesFuzzed"] == 8
    assert figures["reconnects"] == 0
    assert figures["validJobsCompleted"] == figures["validJobs"] == 2


async def test_a_body_without_job_id_that_names_a_finished_job_is_dead_lettered(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        job_id = await watcher.submit(make_job(audio_file))
        assert (await watcher.outcome(job_id))["type"] == "job.completed"
        await watcher.publish(b"not a job", correlation_id=job_id)
        [dead] = await watcher.dead_letters(1, timeout_s=5.0)
    assert dead.routing_key == "transcribe.invalidMessage"
    assert dead.body == b"not a job"
    assert [event["type"] for event in watcher.events[job_id]].count("job.failed") == 0


async def test_a_body_without_job_id_never_announces_an_outcome_for_another_job(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """Found by scribe-fuzz: published before the job its correlation_id names, such a body
    announced a false job.failed for that job, which then completed too (two outcomes)."""
    env = worker_env(prefix, sandbox.base_url, storage_root)
    job = make_job(audio_file)
    job_id = str(job.job_id)
    async with running_worker(env), watching(prefix) as watcher:
        await watcher.publish(b"not a job", correlation_id=job_id)
        [dead] = await watcher.dead_letters(1, timeout_s=5.0)
        await watcher.submit(job)
        assert (await watcher.outcome(job_id))["type"] == "job.completed"
        await asyncio.sleep(0.3)
    assert dead.routing_key == "transcribe.invalidMessage"
    assert [event["type"] for event in watcher.events[job_id]].count("job.failed") == 0
