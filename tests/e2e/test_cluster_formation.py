"""Cluster mode, topology: three ``qcluster serve --node-id`` processes on
loopback form a Raft group by themselves whatever order they start in, elect
a leader, fail over after kill -9 of the leader, and take a restarted node
back as itself. Distributed collections: ``test_cluster_replication.py``."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient

from tests.e2e.conftest import REPO_ROOT, Node, cluster_nodes, free_port, stop_all

pytestmark = pytest.mark.e2e

SECRET = "formation-test-secret"
AGREE_WITHIN_S = 15.0


def _status(node: Node) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{node.url}/cluster", timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.json()["result"] if response.status_code == 200 else None


def _agreed_leader(nodes: list[Node], *, members: int, not_leader: int | None = None) -> int:
    """Poll until every node reports the same leader (other than ``not_leader``)
    and ``members`` registered peers."""
    deadline = time.monotonic() + AGREE_WITHIN_S
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = [_status(node) for node in nodes]
        leaders = {status["raft_info"]["leader"] for status in seen if status is not None}
        if (all(status is not None and len(status["peers"]) == members for status in seen)
                and len(leaders) == 1 and None not in leaders and not_leader not in leaders):
            return int(leaders.pop())
        time.sleep(0.1)
    raise AssertionError(f"no agreement within {AGREE_WITHIN_S} s: {seen}")


def _wait_liveness(nodes: list[Node], node_id: int, liveness: str) -> None:
    deadline = time.monotonic() + AGREE_WITHIN_S
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = [_status(node) for node in nodes]
        if all(status is not None and status["qcluster"]["nodes"][str(node_id)]["liveness"] == liveness
               for status in seen):
            return
        time.sleep(0.1)
    raise AssertionError(f"node {node_id} not {liveness} everywhere within {AGREE_WITHIN_S} s: {seen}")


@pytest.fixture
def three_nodes(tmp_path: pathlib.Path) -> Iterator[list[Node]]:
    nodes = cluster_nodes(tmp_path, 3, secret=SECRET, extra_env={"QCLUSTER__CLUSTER__DEAD_AFTER_S": "1"})
    try:
        yield nodes
    finally:
        stop_all(nodes)


def test_three_nodes_form_fail_over_and_rejoin(three_nodes: list[Node]) -> None:
    by_id = {index + 1: node for index, node in enumerate(three_nodes)}
    # Out of order and apart: 3, then 1, then 2.
    for node_id in (3, 1, 2):
        by_id[node_id].start()
        time.sleep(0.5)
    started = time.monotonic()
    leader = _agreed_leader(three_nodes, members=3)
    assert time.monotonic() - started < AGREE_WITHIN_S
    status = _status(by_id[1])
    assert status is not None and status["status"] == "enabled" and status["peer_id"] == 1
    assert sorted(status["peers"]) == ["1", "2", "3"]
    # qdrant-client reads the same shape.
    client = QdrantClient(url=by_id[2].url, check_compatibility=False)
    assert client.cluster_status().status == "enabled"
    client.close()

    by_id[leader].kill()  # kill -9 of the leader
    survivors = [node for node_id, node in by_id.items() if node_id != leader]
    killed_at = time.monotonic()
    new_leader = _agreed_leader(survivors, members=3, not_leader=leader)
    assert time.monotonic() - killed_at < AGREE_WITHIN_S
    # The new leader marks the killed node dead (dead_after_s = 1) on every node.
    _wait_liveness(survivors, leader, "dead")

    by_id[leader].start()  # same id, same data dir: rejoins as itself
    assert _agreed_leader(three_nodes, members=3) == new_leader
    _wait_liveness(three_nodes, leader, "alive")
    shown = subprocess.run([sys.executable, "-m", "qcluster", "cluster", "status", "--url", by_id[1].url,
                            "--grpc-port", str(by_id[1].grpc_port)],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert f"raft leader {new_leader}" in shown.stdout and shown.stdout.count("alive") == 3
    rejoined = _status(by_id[leader])
    assert rejoined is not None and rejoined["raft_info"]["role"] == "Follower"


@pytest.mark.parametrize(("arguments", "message"), [
    (["--node-id", "1", "--p2p-port", "7999"], "cluster.secret"),
    (["--peers", "127.0.0.1:7001"], "cluster.node_id"),
    (["--node-id", "1", "--cluster-secret", "long-enough-secret", "--host", "0.0.0.0"], "cluster.p2p_host"),
])
def test_cluster_mode_configuration_errors(tmp_path: pathlib.Path, arguments: list[str], message: str) -> None:
    command = [sys.executable, "-m", "qcluster", "serve", "--data-dir", str(tmp_path / "data"),
               "--http-port", str(free_port()), "--grpc-port", str(free_port()), *arguments]
    if "--host" not in arguments:
        command += ["--host", "127.0.0.1"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_dev_cluster_starts_and_stops_three_nodes(tmp_path: pathlib.Path) -> None:
    import signal

    # Ports base .. base + 22, below the ephemeral range (32768+) that the other
    # tests' outgoing connections take their local ports from.
    base = 20_000 + free_port() % 12_000
    process = subprocess.Popen([sys.executable, "-m", "qcluster", "dev-cluster", "--nodes", "3", "--base-port",
                                str(base), "--data-dir", str(tmp_path / "dev")],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]  # bounded: the banner is 5 lines
        urls = [line.strip() for line in lines if line.strip().startswith("http://")]
        assert urls == [f"http://127.0.0.1:{base + 10 * index}" for index in range(3)], lines
        deadline = time.monotonic() + AGREE_WITHIN_S
        leaders: set[Any] = set()
        while time.monotonic() < deadline:
            statuses = [httpx.get(f"{url}/cluster", timeout=2.0).json()["result"] for url in urls]
            leaders = {status["raft_info"]["leader"] for status in statuses}
            if len(leaders) == 1 and None not in leaders and all(len(s["peers"]) == 3 for s in statuses):
                break
            time.sleep(0.1)
        assert len(leaders) == 1 and None not in leaders
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    for url in urls:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/readyz", timeout=1.0)
