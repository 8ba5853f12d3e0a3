"""Failover across the nodes of a real three-node cluster (issue 19, item 2; ops/cluster.py).

The worker gets all three node URLs and connects to the first, node 1; the watcher uses node
3. Node 1 is SIGKILLed while a job is on its way: the worker moves to another node, its
consumers are restored there, and that job and a later one complete. Then scribe-submit, given
a list whose first node is the dead one, publishes through a live one and waits for the job's
event. The cluster is removed afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from ops.cluster import kill_node, running_cluster
from ops.sandbox import RunningSandbox
from tests.harness import make_job, running_worker, unique_prefix, watching, worker_env
from worker.failover import broker_endpoint

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]


async def _submit_cli(env: dict[str, str], audio_file: Path) -> tuple[int, dict[str, object]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli_submit",
        "--audio-file",
        str(audio_file),
        "--wait",
        "--timeout-s",
        "60",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, json.loads(out.decode().strip().splitlines()[-1])


async def test_a_worker_keeps_working_when_its_node_is_killed(
    sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    prefix = unique_prefix()
    async with running_cluster("scribe-test-failover") as cluster:
        first, _second, third = cluster.nodes
        urls = ",".join(node.amqp_url for node in cluster.nodes)
        env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_AMQP_URL=urls)
        async with running_worker(env) as app, watching(prefix, third.amqp_url) as watcher:
            assert app.broker_endpoint == broker_endpoint(first.amqp_url)
            before = await watcher.submit(make_job(audio_file))
            assert (await watcher.outcome(before, timeout_s=60))["type"] == "job.completed"

            during = await watcher.submit(make_job(audio_file))
            kill_node(first)
            assert (await watcher.outcome(during, timeout_s=90))["type"] == "job.completed"
            assert app.broker_endpoint != broker_endpoint(first.amqp_url)
            assert app.reconnects >= 1
            assert await app.ready()

            after = await watcher.submit(make_job(audio_file))
            assert (await watcher.outcome(after, timeout_s=60))["type"] == "job.completed"

            # The CLI with the dead node first: it connects to a live one.
            code, printed = await _submit_cli(env, audio_file)
            assert code == 0, printed
            assert printed["type"] == "job.completed"
    assert not any(node.base.exists() for node in cluster.nodes)
