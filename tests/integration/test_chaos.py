"""A small chaos run: jobs through two worker processes while one is SIGKILLed and the run's
own private RabbitMQ node restarts once, with vendor faults injected. Every job must be
accounted for: none lost, none with two different outcomes."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import aio_pika
import pytest

from tests.harness import AMQP_URL

pytestmark = [pytest.mark.broker, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(400)]

JOBS = 50


async def test_small_chaos_run_loses_and_duplicates_nothing() -> None:
    # A connection to the machine's own node, held through the run: the broker restarts happen
    # on the run's private node, so this one must never be closed.
    sentinel = await aio_pika.connect(AMQP_URL)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.chaos",
        "--jobs", str(JOBS),
        "--workers", "2",
        "--kill-interval-s", "3",
        "--broker-restarts", "1",
        "--fault-rate", "0.1",
        "--timeout-s", "300",
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 380)
    text = out.decode()
    assert "chaos: private RabbitMQ node" in err.decode()
    assert not sentinel.is_closed, "the machine's own RabbitMQ node was restarted"
    await sentinel.close()
    last = text.strip().splitlines()[-1]
    match = re.fullmatch(
        r"jobs=(\d+) completed=(\d+) dead_lettered=(\d+) lost=(\d+) duplicated=(\d+) "
        r"resent=(\d+) double_billed=(\d+)",
        last,
    )
    assert match, text
    jobs, completed, dead, lost, duplicated, _resent, _double = map(int, match.groups())
    assert jobs == JOBS
    assert lost == 0, text
    # At-least-once: a crash or broker restart right after a confirmed job.completed can make a
    # worker send that same event again (resent=, same eventId, for consumers to de-duplicate).
    # Two *different* outcomes for one job are never allowed.
    assert duplicated == 0, text
    assert completed + dead == JOBS
    assert "1 broker restarts" in text
    kills = re.search(r"(\d+) worker kills,", text)
    assert kills is not None
    assert int(kills.group(1)) >= 1
    # Issue 13, item 4: Invox is never billed twice; Intron only for a kill inside its window.
    billed = re.search(r"double billed: invox (\d+), intron (\d+) \((\d+) with a worker kill", text)
    assert billed is not None, text
    invox, intron, explained = map(int, billed.groups())
    assert invox == 0, text
    assert intron <= explained, text
    # Issue 13, item 16: the queues drained before the workers stopped, what the shutdown left
    # is reported, no completed job has a dead letter, and the topology is gone.
    assert "chaos: drained: every queue of the prefix empty" in text, text
    assert "after the workers stopped: " in text, text  # still empty, or stale copies named
    assert "for jobs that completed: 0 []" in text, text
    assert "chaos: clean-up ok, nothing left" in text, text
    assert process.returncode == 0, text
