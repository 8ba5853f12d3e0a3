"""scribe-cluster: a three-node RabbitMQ cluster of our own on this machine (issue 19, item 1).

Each node is an ops/rabbit_node.PrivateNode (own node name, AMQP and distribution ports, data
and log directories owned by the `rabbitmq` user, the machine's Erlang cookie); nodes 2 and 3
join node 1 (`stop_app; join_cluster; start_app`). A JSON state file under --state-dir tells
later commands which nodes exist. The machine's own node on 5672 is never touched: every
rabbitmqctl call names a node of the cluster with `-n`.

    scribe-cluster start            # prints the AMQP URLs of the three nodes
    scribe-cluster status           # the running nodes, as node 1 (or any live node) sees them
    scribe-cluster kill 2           # SIGKILL of node 2's Erlang VM
    scribe-cluster restart 2        # start it again (or stop it gracefully and start it)
    scribe-cluster stop             # stop every node and remove all of their files
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.rabbit_node import NodeError, PrivateNode, free_port

NODES = 3
DEFAULT_STATE_DIR = Path.home() / ".cache" / "scribe-cluster"
STATE_FILE = "cluster.json"


@dataclass
class Cluster:
    nodes: list[PrivateNode]

    @property
    def seed(self) -> PrivateNode:
        return self.nodes[0]

    def node(self, which: str) -> PrivateNode:
        """A node by its number (1..3) or its full name."""
        for index, node in enumerate(self.nodes, start=1):
            if which in (str(index), node.name):
                return node
        raise NodeError(f"no node {which!r} in this cluster (use 1..{len(self.nodes)})")

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [
                {"name": n.name, "port": n.port, "dist_port": n.dist_port, "base": str(n.base)}
                for n in self.nodes
            ]
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cluster:
        return cls(
            [
                PrivateNode(str(n["name"]), int(n["port"]), int(n["dist_port"]), Path(n["base"]))
                for n in data["nodes"]
            ]
        )


async def running_nodes(cluster: Cluster) -> list[str]:
    """The running members, as the first live node answering cluster_status sees them."""
    for node in cluster.nodes:
        out = await node.ctl_output("cluster_status", "--formatter", "json")
        if out is None:
            continue
        try:
            status = json.loads(out)
        except ValueError:
            continue
        return sorted(str(name) for name in status.get("running_nodes", []))
    return []


async def start_cluster(label: str = "scribe-cluster") -> Cluster:
    """Three fresh nodes joined into one cluster; on failure, everything made is removed."""
    nodes = []
    for index in range(1, NODES + 1):
        port = free_port()
        base = Path(tempfile.mkdtemp(prefix=f"{label}{index}-rabbit-"))
        nodes.append(PrivateNode(f"{label}{index}-{port}@localhost", port, free_port(), base))
    cluster = Cluster(nodes)
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        for node in nodes[1:]:
            await node.ctl("stop_app")
            await node.ctl("join_cluster", cluster.seed.name)
            await node.ctl("start_app")
            await node.await_startup()
        members = await running_nodes(cluster)
        if members != sorted(n.name for n in nodes):
            raise NodeError(f"the cluster runs {len(members)} of {NODES} nodes after joining")
    except BaseException:
        await stop_cluster(cluster)
        raise
    return cluster


async def stop_cluster(cluster: Cluster) -> None:
    await asyncio.gather(*(node.stop() for node in cluster.nodes))


def beam_pid(node: PrivateNode) -> int:
    try:
        return int((node.base / "pid").read_text().strip())
    except (OSError, ValueError) as exc:
        raise NodeError(f"no pid file for {node.name}: is it running?") from exc


def kill_node(node: PrivateNode) -> int:
    """SIGKILL of the node's Erlang VM (no shutdown, no goodbye to its peers)."""
    pid = beam_pid(node)
    os.kill(pid, signal.SIGKILL)
    return pid


async def restart_node(node: PrivateNode) -> None:
    """Start a node that is down; stop a running one gracefully first. It rejoins the cluster
    from its own data directory."""
    if await node.ctl_ok("status"):
        await node.ctl("stop")
    await node.start()


@asynccontextmanager
async def running_cluster(label: str = "scribe-cluster") -> AsyncIterator[Cluster]:
    cluster = await start_cluster(label)
    try:
        yield cluster
    finally:
        await stop_cluster(cluster)


def _state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def save_state(state_dir: Path, cluster: Cluster) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    _state_path(state_dir).write_text(json.dumps(cluster.to_json(), indent=2))


def load_state(state_dir: Path) -> Cluster:
    try:
        return Cluster.from_json(json.loads(_state_path(state_dir).read_text()))
    except FileNotFoundError:
        raise NodeError(f"no cluster recorded under {state_dir}: run `start` first") from None


async def _command(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if args.command == "start":
        if _state_path(state_dir).exists():
            raise NodeError(f"a cluster is already recorded under {state_dir}: `stop` it first")
        began = time.monotonic()
        cluster = await start_cluster()
        save_state(state_dir, cluster)
        print(f"cluster of {NODES} nodes up in {time.monotonic() - began:.1f} s")
        for index, node in enumerate(cluster.nodes, start=1):
            print(f"node {index}: {node.name} {node.amqp_url}")
        return 0
    cluster = load_state(state_dir)
    if args.command == "stop":
        await stop_cluster(cluster)
        _state_path(state_dir).unlink(missing_ok=True)
        print("cluster stopped and removed")
    elif args.command == "status":
        members = await running_nodes(cluster)
        for node in cluster.nodes:
            print(f"{node.name} {'running' if node.name in members else 'down'}")
        return 0 if len(members) == len(cluster.nodes) else 1
    elif args.command == "kill":
        node = cluster.node(args.node)
        print(f"killed {node.name} (beam pid {kill_node(node)})")
    elif args.command == "restart":
        node = cluster.node(args.node)
        began = time.monotonic()
        await restart_node(node)
        print(f"restarted {node.name} in {time.monotonic() - began:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scribe-cluster", description="A three-node RabbitMQ cluster of our own."
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start three nodes and join them")
    sub.add_parser("stop", help="stop every node and remove its files")
    sub.add_parser("status", help="which nodes run (exit 1 unless all)")
    for name in ("kill", "restart"):
        one = sub.add_parser(name, help=f"{name} one node (1..{NODES} or its name)")
        one.add_argument("node")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_command(args))
    except (NodeError, OSError) as exc:
        print(f"scribe-cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
