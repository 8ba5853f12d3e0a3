"""How long a worker takes to consume again after its broker node dies (issue 19, item 2).

    python -m ops.bench.failover --kills 5

Starts a three-node cluster of our own (ops/cluster.py; never the machine's node on 5672) and a
worker (WorkerApp, transcribe stage, prefetch 1) given all three node URLs. Before each kill a
backlog of --backlog messages is put in the transcribe queue (through a node the kill spares),
each a body the worker dead-letters at once (invalidMessage): no vendor is involved, every
consumption is counted (the stage's `consumed`), and the queue is never empty when the node
dies, so what is timed does not depend on publishing during the failover. Then, --kills times:
SIGKILL of the node the worker is connected to, and two times from the kill: `reconnected` (the
worker's connection restored on another node, channels and consumers re-registered) and
`consuming` (the first message consumed after that). The killed node is started again and its
quorum replicas are back online before the next kill. Prints a row per kill, p50/p95 of both,
and one key=value line; the cluster is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiormq.exceptions import AMQPError

from ops.bench.common import percentile
from ops.cluster import Cluster, kill_node, restart_node, running_cluster, running_nodes
from ops.rabbit_node import PrivateNode
from worker.app import WorkerApp
from worker.broker import Publication, Publisher, build_message
from worker.failover import broker_endpoint, connect_failover
from worker.logs import configure_logging
from worker.providers.factory import build_registry
from worker.settings import Settings
from worker.topology import Names

PREFIX = "bench-failover"
WAIT_S = 120.0  # for one failover, or one restarted node to rejoin
SETTLE_S = 3.0  # after a rejoin, before the next kill: the quorum queues add it back


@dataclass(frozen=True)
class Kill:
    node: str
    reconnected_s: float
    consuming_s: float


def _node_of(cluster: Cluster, endpoint: str | None) -> PrivateNode:
    for node in cluster.nodes:
        if broker_endpoint(node.amqp_url) == endpoint:
            return node
    raise RuntimeError(f"the worker is on no node of the cluster ({endpoint})")


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> float:
    """Polls every 5 ms; returns the monotonic time at which condition() first held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout_s:g} s")
        await asyncio.sleep(0.005)
    return time.monotonic()


async def _fill(cluster: Cluster, spare: PrivateNode, names: Names, count: int) -> None:
    """count undecodable job bodies into the transcribe queue, confirmed, through a node other
    than spare (the one about to be killed); a batch the broker nacks (a queue just declared,
    a replica catching up) is sent again, within WAIT_S."""
    urls = [node.amqp_url for node in cluster.nodes if node is not spare]
    message = build_message(b"not a job", correlation_id=None)
    batch = [Publication(names.jobs_exchange, "transcribe", message) for _ in range(count)]
    deadline = time.monotonic() + WAIT_S
    connection = await connect_failover(urls)
    try:
        publisher = await Publisher.open(connection)
        while True:
            try:
                await publisher.publish_in_order(*batch)
                return
            except AMQPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the backlog was not confirmed within {WAIT_S:g} s"
                    ) from None
                await asyncio.sleep(1.0)
    finally:
        await connection.close()


async def _one_kill(app: WorkerApp, cluster: Cluster, backlog: int) -> Kill:
    victim = _node_of(cluster, app.broker_endpoint)
    await _fill(cluster, victim, app.names, backlog)
    figures = app.metrics.stage("transcribe")
    reconnects = app.reconnects
    killed_at = time.monotonic()
    kill_node(victim)
    reconnected_at = await _until(lambda: app.reconnects > reconnects, "the reconnect")
    consumed = figures.consumed
    try:
        consuming_at = await _until(lambda: figures.consumed > consumed, "a consumption")
    except RuntimeError as exc:
        state = await _queue_state(cluster, victim)
        raise RuntimeError(f"{exc}; ready={await app.ready()}; queues: {state}") from None
    await restart_node(victim)
    await _until_healthy(cluster)
    return Kill(victim.name, reconnected_at - killed_at, consuming_at - killed_at)


async def _queue_state(cluster: Cluster, down: PrivateNode | None = None) -> str:
    """The bench's queues as a live node lists them (name, type, leader, online members, ready
    messages, consumers), tab-separated; empty if no node answers."""
    for node in cluster.nodes:
        if node is down:
            continue
        out = await node.ctl_output(
            "list_queues",
            "name",
            "type",
            "leader",
            "online",
            "messages_ready",
            "consumers",
            "-q",
            "-s",
        )
        if out is not None:
            return " | ".join(line for line in out.splitlines() if PREFIX in line)
    return ""


async def _until_healthy(cluster: Cluster) -> None:
    """Every node running, and every quorum queue of the bench with all members online again
    (a kill before that would test a cluster already missing a replica)."""
    names = sorted(node.name for node in cluster.nodes)
    deadline = time.monotonic() + WAIT_S
    while True:
        if await running_nodes(cluster) == names:
            state = await _queue_state(cluster)
            quorum = [line for line in state.split(" | ") if "\tquorum\t" in line]
            if quorum and all(line.count("@") == 1 + len(names) for line in quorum):
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster did not recover within {WAIT_S:g} s")
        await asyncio.sleep(0.5)
    await asyncio.sleep(SETTLE_S)


async def run(kills: int, backlog: int, workdir: Path) -> list[Kill]:
    async with running_cluster("scribe-bench-failover") as cluster:
        urls = [node.amqp_url for node in cluster.nodes]
        env = {
            "SCRIBE_AMQP_URL": ",".join(urls),
            "SCRIBE_PREFIX": PREFIX,
            "SCRIBE_STAGES": "transcribe",
            "SCRIBE_PREFETCH": "1",
            "SCRIBE_HTTP_PORT": "0",
            "SCRIBE_WORK_DIR": str(workdir / "chunks"),
        }
        app = WorkerApp(Settings.from_env(env), build_registry)
        await app.start()
        try:
            results = []
            for number in range(1, kills + 1):
                kill = await _one_kill(app, cluster, backlog)
                print(
                    f"kill {number}: {kill.node} reconnected {kill.reconnected_s:.2f} s, "
                    f"consuming {kill.consuming_s:.2f} s",
                    flush=True,
                )
                results.append(kill)
            return results
        finally:
            await app.stop()


def _report(results: list[Kill], backlog: int) -> str:
    reconnected = [kill.reconnected_s for kill in results]
    consuming = [kill.consuming_s for kill in results]
    lines = [
        "| from the SIGKILL of the worker's node to | p50 | p95 | max |",
        "|---|---|---|---|",
    ]
    for label, values in (("reconnected on another node", reconnected), ("consuming", consuming)):
        lines.append(
            f"| {label} | {percentile(values, 50):.2f} s | {percentile(values, 95):.2f} s "
            f"| {max(values):.2f} s |"
        )
    lines.append(
        f"kills={len(results)} backlog={backlog} "
        f"reconnected_p50_s={percentile(reconnected, 50):.3f} "
        f"reconnected_p95_s={percentile(reconnected, 95):.3f} "
        f"consuming_p50_s={percentile(consuming, 50):.3f} "
        f"consuming_p95_s={percentile(consuming, 95):.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.failover", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--kills", type=int, default=5, help="node kills (1..50)")
    parser.add_argument("--backlog", type=int, default=2000, help="messages queued per kill")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="bound for the run")
    args = parser.parse_args(argv)
    if not 1 <= args.kills <= 50 or not 1 <= args.backlog <= 20_000:
        parser.error("--kills must be within 1..50 and --backlog within 1..20000")
    workdir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    # The worker's JSON log (a line per dead-lettered message, the failovers) goes to a file.
    with (workdir / "worker.log").open("w", encoding="utf-8") as log_file:
        configure_logging("info", stream=log_file)
        try:
            results = asyncio.run(
                asyncio.wait_for(run(args.kills, args.backlog, workdir), args.timeout_s)
            )
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(
                f"bench failover: failed: {exc}; the worker's log: {log_file.name}", file=sys.stderr
            )
            return 1
    print(_report(results, args.backlog))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
