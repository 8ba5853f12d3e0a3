"""scribe-chaos --cluster (issue 19, item 3): the chaos run on a real three-node RabbitMQ cluster.

A fresh cluster of our own (ops/cluster.py: own node names and ports, never the machine's node
on 5672) carries the run. The topology is declared through node 1, so node 1 leads every quorum
queue of the prefix; the harness (publisher, observer, rabbitmqctl checks) uses node 3. Every
worker gets all three node URLs, comma-separated and rotated by its slot (worker 0 tries node 1
first, worker 1 node 2, worker 2 node 3), so the workers spread over the nodes and the ones on a
node that goes away have to move.

Besides the worker kills and the vendor faults of every chaos run, the drive:

1. publishes the first half of the jobs and waits until a quarter of all jobs are settled;
2. SIGKILLs node 1's Erlang VM (its beam pid from the pid file, checked against the node's own
   `os:getpid()`), publishes the next quarter of the jobs while it is down, waits
   --node-down-s, starts it again (it rejoins from its data directory) and waits until the
   cluster runs all three nodes;
3. publishes the last quarter and at once stops node 2 gracefully (`rabbitmqctl stop`) and
   starts it again, then waits for all three nodes.

So jobs are in flight during both: the settled count at each step is printed. The quorum queues'
leaders are listed before the kill and after it (they must move off node 1). The run fails if a
node does not come back or the pid file and the VM disagree, besides everything a chaos run
fails on (a lost job, two different outcomes, Invox billed twice, queues left, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ops.chaos import Drive, Options, Stage, run
from ops.cluster import (
    NODES,
    Cluster,
    beam_pid,
    kill_node,
    load_state,
    restart_node,
    running_cluster,
    running_nodes,
)
from ops.rabbit_node import NodeError, PrivateNode

KILLED, GRACEFUL, HARNESS = 0, 1, 2  # node indexes: node 1 is killed, node 2 restarted
RUNNING_TIMEOUT_S = 180.0


def rotated_urls(urls: list[str], workers: int, one_each: bool = False) -> tuple[str, ...]:
    """Worker i's SCRIBE_AMQP_URL: every node, starting at node i mod len (or only that one)."""
    rotations = [urls[i % len(urls) :] + urls[: i % len(urls)] for i in range(workers)]
    return tuple(rotation[0] if one_each else ",".join(rotation) for rotation in rotations)


@dataclass
class NodeChaos:
    """The cluster drive: waves of jobs around a node kill and a graceful node restart."""

    cluster: Cluster
    down_s: float
    log: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    node_kills: int = 0
    graceful_restarts: int = 0
    started: float = 0.0  # time.monotonic() when the first job was published

    def drive(self) -> Drive:
        return Drive(self.run, self.lines, lambda: list(self.errors))

    def lines(self) -> list[str]:
        done = (f"chaos: cluster: {self.node_kills} node kills (SIGKILL), "
                f"{self.graceful_restarts} graceful node restarts")  # fmt: skip
        return [*self.log, done]

    def say(self, stage: Stage, text: str) -> None:
        at_s = time.monotonic() - self.started
        settled = f"{stage.ledger.settled()}/{stage.options.jobs} settled"
        line = f"chaos: cluster: {text} (+{at_s:.0f} s, {settled})"
        self.log.append(line)
        print(line, file=sys.stderr, flush=True)

    async def run(self, stage: Stage) -> None:
        waves = wave_bounds(len(stage.jobs))
        self.started = time.monotonic()
        await stage.submit(stage.jobs[: waves[0]])
        workers = asyncio.create_task(stage.kill_workers())
        try:
            await self.nodes(stage, waves)
        except BaseException:
            workers.cancel()
            raise
        await workers  # it ends when every job is settled or at the deadline

    async def nodes(self, stage: Stage, waves: tuple[int, int]) -> None:
        try:
            await self.schedule(stage, waves)
        finally:
            await self.revive_nodes()

    async def revive_nodes(self) -> None:
        """Start again any node the schedule left down (it failed half-way): the clean-up
        and the next run need all three."""
        members = await running_nodes(self.cluster)
        for node in self.cluster.nodes:
            if node.name not in members:
                await restart_node(node)

    async def schedule(self, stage: Stage, waves: tuple[int, int]) -> None:
        await until_settled(stage, stage.options.jobs // 4)
        await self.leaders(stage, "before the kill")
        await self.kill(stage, self.cluster.nodes[KILLED])
        await stage.submit(stage.jobs[waves[0] : waves[1]])
        self.say(stage, f"published jobs {waves[0] + 1}..{waves[1]} with node 1 down")
        await asyncio.sleep(self.down_s)
        await self.leaders(stage, "with node 1 down")
        began = time.monotonic()
        await restart_node(self.cluster.nodes[KILLED])
        await self.all_running(stage, f"node 1 started again in {time.monotonic() - began:.1f} s")
        await stage.submit(stage.jobs[waves[1] :])
        self.say(stage, f"published jobs {waves[1] + 1}..{len(stage.jobs)}")
        began = time.monotonic()
        self.say(stage, "stopping node 2 gracefully")
        await restart_node(self.cluster.nodes[GRACEFUL])
        self.graceful_restarts += 1
        await self.all_running(
            stage, f"node 2 stopped and started in {time.monotonic() - began:.1f} s"
        )
        await self.leaders(stage, "at the end")

    async def kill(self, stage: Stage, node: PrivateNode) -> None:
        pid = beam_pid(node)
        own = await node.ctl_output("eval", "os:getpid().")
        if own is None or own.strip().strip('"') != str(pid):
            raise NodeError(f"{node.name}: pid file {pid}, but os:getpid() says {own!r}")
        kill_node(node)  # SIGKILL: no shutdown, no goodbye to its peers
        self.node_kills += 1
        self.say(stage, f"SIGKILL of node 1's Erlang VM (beam pid {pid}, as os:getpid() says)")

    async def all_running(self, stage: Stage, what: str) -> None:
        """Wait until the cluster runs every node again; a node that stays away fails the run."""
        expected = sorted(node.name for node in self.cluster.nodes)
        deadline = time.monotonic() + RUNNING_TIMEOUT_S
        while (members := await running_nodes(self.cluster)) != expected:
            if time.monotonic() > deadline:
                self.errors.append(f"{what}, but after {RUNNING_TIMEOUT_S:.0f} s the cluster "
                                   f"runs only {members}")  # fmt: skip
                return
            await asyncio.sleep(1.0)
        self.say(stage, f"{what}; all {len(expected)} nodes running")

    async def leaders(self, stage: Stage, when: str) -> None:
        """Which node leads the prefix's quorum queues (from the harness's node)."""
        node = self.cluster.nodes[HARNESS]
        out = await node.ctl_output("list_queues", "-q", "--no-table-headers", "name", "leader")
        counts: Counter[str] = Counter()
        for line in (out or "").splitlines():
            name, _, leader = line.partition("\t")
            if name.startswith(f"{stage.names.prefix}."):
                counts[self.number(leader.strip())] += 1
        self.say(stage, f"quorum queue leaders {when}: {dict(sorted(counts.items()))}")

    def number(self, node_name: str) -> str:
        for index, node in enumerate(self.cluster.nodes, start=1):
            if node.name == node_name:
                return f"node {index}"
        return node_name or "none"


def wave_bounds(jobs: int) -> tuple[int, int]:
    """The first half at once, the third quarter while node 1 is down, the rest before node 2
    stops: (end of the first wave, end of the second)."""
    return max(1, jobs // 2), max(1, jobs * 3 // 4)


async def until_settled(stage: Stage, count: int) -> None:
    """Until count jobs have their outcome (the observer sets ledger.changed at each)."""
    while stage.ledger.settled() < count and time.monotonic() < stage.deadline:
        stage.ledger.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stage.ledger.changed.wait(), 1.0)


async def run_in_cluster(
    options: Options, down_s: float, one_url_each: bool = False, state_dir: Path | None = None
) -> int:
    """The chaos run on a cluster started for it and removed afterwards, or on the one
    `scribe-cluster start` recorded under state_dir (left running, all three nodes again)."""
    if state_dir is not None:
        return await run_on(load_state(state_dir), options, down_s, one_url_each)
    began = time.monotonic()
    async with running_cluster("scribe-chaos-node") as cluster:
        print(f"chaos: cluster of {len(cluster.nodes)} nodes up in "
              f"{time.monotonic() - began:.0f} s", file=sys.stderr)  # fmt: skip
        return await run_on(cluster, options, down_s, one_url_each)


async def run_on(cluster: Cluster, options: Options, down_s: float, one_url_each: bool) -> int:
    if len(cluster.nodes) != NODES:
        raise NodeError(f"a cluster run needs {NODES} nodes, not {len(cluster.nodes)}")
    members = await running_nodes(cluster)
    if members != sorted(node.name for node in cluster.nodes):
        raise NodeError(f"the cluster runs {members}: start every node first")
    urls = [node.amqp_url for node in cluster.nodes]
    harness = cluster.nodes[HARNESS]
    options = replace(
        options,
        amqp_url=harness.amqp_url,
        rabbit_node=harness.name,
        topology_url=cluster.nodes[KILLED].amqp_url,
        worker_urls=rotated_urls(urls, options.workers, one_url_each),
        broker_restarts=0,
    )
    return await run(options, NodeChaos(cluster, down_s).drive())
