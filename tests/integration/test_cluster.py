"""A real three-node cluster (ops/cluster.py): replicated stage queues, a node killed mid-run.

The worker and the watcher use node 1; node 3 is SIGKILLed between two jobs. Quorum queues keep
a majority (2 of 3), so the second job completes too. The cluster is removed afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.cluster import kill_node, running_cluster, running_nodes
from ops.sandbox import RunningSandbox
from tests.harness import make_job, running_worker, unique_prefix, watching, worker_env
from worker.constants import STAGES
from worker.topology import Names

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(420)]


async def test_stage_queues_have_three_replicas_and_survive_a_killed_node(
    sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    prefix = unique_prefix()
    names = Names(prefix)
    async with running_cluster("scribe-test-cluster") as cluster:
        seed = cluster.seed
        env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_AMQP_URL=seed.amqp_url)
        async with running_worker(env), watching(prefix, seed.amqp_url) as watcher:
            first = await watcher.submit(make_job(audio_file))
            assert (await watcher.outcome(first, timeout_s=60))["type"] == "job.completed"

            out = await seed.ctl_output("list_queues", "name", "type", "members", "-q", "-s")
            assert out is not None
            rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
            for stage in STAGES:
                row = rows[names.stage_queue(stage)]
                assert "quorum" in row
                assert all(node.name in row for node in cluster.nodes), row

            victim = cluster.nodes[2]
            kill_node(victim)
            assert victim.name not in await running_nodes(cluster)

            second = await watcher.submit(make_job(audio_file))
            assert (await watcher.outcome(second, timeout_s=60))["type"] == "job.completed"
    assert not any(node.base.exists() for node in cluster.nodes)
