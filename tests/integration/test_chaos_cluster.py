"""scribe-chaos --cluster, small (issue 19, item 3): jobs through three workers that each know all
three nodes of a cluster started for the run, while node 1's Erlang VM is SIGKILLed and started
again, node 2 is restarted gracefully, workers are SIGKILLed and the emulator injects faults.
None may be lost, none may have two different outcomes, Invox is never billed twice; the
cluster and the topology are gone afterwards and the machine's own node is never touched."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

import aio_pika
import pytest

from tests.harness import AMQP_URL

pytestmark = [pytest.mark.broker, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(900)]

JOBS = 24
LAST_LINE = re.compile(
    r"jobs=(\d+) completed=(\d+) dead_lettered=(\d+) lost=(\d+) duplicated=(\d+) "
    r"resent=(\d+) double_billed=(\d+)"
)


def node_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("scribe-chaos-node*-rabbit-*"))


async def test_a_cluster_chaos_run_loses_and_duplicates_nothing() -> None:
    sentinel = await aio_pika.connect(AMQP_URL)  # the machine's node: must stay up throughout
    before = node_dirs()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.chaos", "--cluster",
        "--jobs", str(JOBS),
        "--workers", "3",
        "--kill-interval-s", "5",
        "--worker-min-age-s", "5",
        "--node-down-s", "3",
        "--fault-rate", "0.1",
        "--timeout-s", "600",
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 840)
    text = out.decode()
    assert not sentinel.is_closed, "the machine's own RabbitMQ node went away"
    await sentinel.close()
    lines = text.strip().splitlines()
    assert lines, err.decode()[-4000:]
    match = LAST_LINE.fullmatch(lines[-1])
    assert match, (text, err.decode()[-4000:])
    jobs, completed, dead, lost, duplicated, _resent, _double = map(int, match.groups())
    assert jobs == JOBS
    assert lost == 0, text
    assert duplicated == 0, text  # a re-sent identical event (resent=) is at-least-once, allowed
    assert completed + dead == JOBS
    assert "chaos: cluster: 1 node kills (SIGKILL), 1 graceful node restarts" in text, text
    assert "BROKER PROBLEM" not in text, text
    # Node 1 led the queues before its VM died, and none while it was down.
    leaders = dict(re.findall(r"quorum queue leaders (before the kill|with node 1 down): (\{.*?\})",
                              text))  # fmt: skip
    assert "'node 1'" in leaders["before the kill"], text
    assert "'node 1'" not in leaders["with node 1 down"], text
    billed = re.search(r"double billed: invox (\d+), intron (\d+) \((\d+) with a worker kill", text)
    assert billed is not None, text
    invox, _intron, _explained = map(int, billed.groups())
    assert invox == 0, text
    # Intron re-uploads after a node failure are reported (paid submissions per job), not
    # failed here: a node kill opens the window a worker kill does (docs/reliability.md), so the
    # harness's exit code, which fails on more double-billed Intron jobs than worker kills
    # explain, is not asserted.
    assert "chaos: paid transcription submissions per job {1: " in text, text
    assert "chaos: drained: every queue of the prefix empty" in text, text
    assert "chaos: clean-up ok, nothing left" in text, text
    # Another run's cluster may come and go meanwhile: only new directories count.
    assert not node_dirs() - before, "the run's cluster left node directories behind"
