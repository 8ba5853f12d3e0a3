"""scribe-cluster's state file and node lookup (ops/cluster.py); the cluster itself runs in
tests/integration/test_cluster.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.cluster import Cluster, load_state, main, save_state
from ops.rabbit_node import NodeError, PrivateNode


def _cluster() -> Cluster:
    return Cluster(
        [
            PrivateNode(f"c{i}-{5700 + i}@localhost", 5700 + i, 25700 + i, Path(f"/b{i}"))
            for i in (1, 2, 3)
        ]
    )


def test_the_state_file_round_trips(tmp_path: Path) -> None:
    save_state(tmp_path / "state", _cluster())
    loaded = load_state(tmp_path / "state")
    assert loaded.to_json() == _cluster().to_json()
    assert loaded.node("2").port == 5702
    assert loaded.node("c3-5703@localhost").dist_port == 25703
    with pytest.raises(NodeError):
        loaded.node("4")


def test_commands_without_a_cluster_fail_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state-dir", str(tmp_path), "kill", "1"]) == 1
    assert "run `start` first" in capsys.readouterr().err
